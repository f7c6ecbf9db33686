"""The SQLite databases a driver writes (MLflow's embedded store, the Optuna study): WAL journal.

In its default (rollback) journal SQLite syncs the database and its journal to disk several
times per commit; the driver commits tens of times per trial (MLflow opens a session per
write, Optuna one per parameter), so on a shared disk the fsyncs cost more than the work
(docs/stack.md §4). In write-ahead-log mode with ``synchronous=NORMAL`` a commit appends to
``<db>-wal`` and syncs only at checkpoints: the database stays consistent after a crash of the
driver or of the machine, and a power loss can only take back the last commits, which the
driver writes again from results.parquet and Tune's storage on ``--resume``
(:mod:`sweeps.tracking.sync`). Readers (``mlflow ui``, ``optuna-dashboard``, the report) go on
reading while the driver writes. WAL mode stays with the file; copies of a database in use go
through SQLite's backup (:mod:`sweeps.runtime.mirror`), never a plain file copy.

NOTE: like every SQLite database shared between processes, keep it on a local disk: WAL needs
the processes that open it on one machine (not a network file system).

A leaf module: SQLAlchemy is imported where used.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

#: Statements run on every new connection.
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL")


def apply_pragmas(connection: sqlite3.Connection) -> None:
    """WAL journal and ``synchronous=NORMAL`` on ``connection``. A database that cannot switch
    now (another process holds it in a transaction) keeps its journal: slower, not wrong."""
    cursor = connection.cursor()
    try:
        for statement in PRAGMAS:
            with contextlib.suppress(sqlite3.OperationalError):
                cursor.execute(statement)
    finally:
        cursor.close()


class WalConnection(sqlite3.Connection):
    """A ``sqlite3`` connection in WAL mode: ``connect_args={"factory": WalConnection}`` of a
    SQLAlchemy engine (kept when the engine is pickled and made again, as Optuna's storage is
    with Ray's searcher state)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        apply_pragmas(self)


def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
    """SQLAlchemy ``connect`` event: WAL on each new connection of a SQLite engine."""
    if isinstance(dbapi_connection, sqlite3.Connection):
        apply_pragmas(dbapi_connection)


def use_wal(engine: Any) -> bool:
    """Put an existing SQLAlchemy engine's SQLite file database in WAL mode, on every connection
    it opens from now on (its pooled connections are closed). False for other databases."""
    from sqlalchemy import event

    database = getattr(engine.url, "database", None)
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return False
    if not event.contains(engine, "connect", _on_connect):
        event.listen(engine, "connect", _on_connect)
        engine.dispose()  # NOTE: connections opened before the listener would keep the old mode
    return True
