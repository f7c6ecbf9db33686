"""Access to the MLflow tracking store: URI checks, the client, time limits and back-off.

A sweep must not wait minutes on a tracking store: :func:`probe` answers in seconds whether a
URI can serve MLflow (docs/stack.md §4: file stores are refused, a SQLite path must be absolute,
a server must answer ``/health``), every setup call runs under a time limit, and the driver's
logging goes through :class:`Store`, which after a failure leaves MLflow alone for
``OFFLINE_S`` seconds instead of failing again on every report.
"""

from __future__ import annotations

import fcntl
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlparse

from analysis.probe import Overdue, run_within
from ssr.config import ConfigError
from sweeps.runtime.rundir import MLFLOW_ARTIFACTS, MLFLOW_DB

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Seconds MLflow is left alone after a failed operation.
OFFLINE_S = 60.0
#: Process environment for MLflow's HTTP client, set by the entry point (unless already set).
#: NOTE: MLflow's defaults retry for about 4 minutes; a sweep driver must not block that long.
#: Ending a run on a server, MLflow reads the whole run back to print its link: per trial, a
#: request and two lines among the progress lines (the sweep prints its views at the end).
HTTP_LIMITS: Mapping[str, str] = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
#: MLflow cuts a param value at 6000 characters.
PARAM_LIMIT = 6000


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used; the message says what to do."""


class NameTaken(TrackingError, ConfigError):
    """A new sweep's name is already taken in its experiment: a tracking error the user made
    (bad input, exit status 2), not an unreachable store."""


def default_uri(run_dir: Path) -> str:
    """The embedded default: one SQLite store for every sweep under the same storage folder,
    ``<storage>/mlflow.db``, so that sweeps sit side by side in one UI. A run folder that has a
    store of its own (``<run folder>/mlflow.db``, from before) keeps using it."""
    run_dir = Path(run_dir).resolve()
    own = run_dir / MLFLOW_DB
    return f"sqlite:///{own if own.is_file() else run_dir.parent / MLFLOW_DB}"


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI (None for other stores)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root(uri: str) -> Path | None:
    """Where a SQLite store's new experiments keep artifacts: ``mlartifacts/`` beside the
    database (a server chooses for itself: None)."""
    db = sqlite_path(uri)
    return db.parent / MLFLOW_ARTIFACTS if db is not None else None


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on ``path`` (created) between processes of this machine."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def probe(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds) when ``uri`` cannot serve MLflow; raises :class:`TrackingError`."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}); "
                "start it (e.g. mlflow server --host 127.0.0.1 --port 5000 --workers 1) or leave "
                "out --tracking-uri to use the SQLite store beside the run folders"
            ) from None
        if not ok:
            raise TrackingError(f"MLflow tracking server {uri}: {url} did not answer 200 OK")
    elif scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow 3.17 refuses file stores; use sqlite:////abs/path/mlflow.db "
            "or an http(s):// server"
        )
    elif scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_absolute():
            raise TrackingError(
                f"tracking URI {uri!r}: give an absolute path (sqlite:////abs/mlflow.db)"
            )
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking URI {uri!r}: cannot create {db.parent}: {exc}") from None
        # NOTE: the first use creates the tables; two drivers doing it at once would race (one
        # sees half-made tables): the lock makes the second wait for the first.
        import_mlflow()
        try:
            with _file_lock(db.with_name(db.name + ".lock")):
                with_timeout(lambda: client(uri).search_experiments(max_results=1), 60.0, uri)
        except OSError as exc:
            raise TrackingError(f"tracking URI {uri!r}: cannot lock {db}: {exc}") from None
        return
    import_mlflow()
    with_timeout(lambda: client(uri).search_experiments(max_results=1), 30.0, uri)


def import_mlflow() -> None:
    """Import mlflow before a time limit starts: importing it (seconds, minutes on a starved
    machine) is not the store answering."""
    import mlflow  # noqa: F401


def client(uri: str) -> Any:
    """An ``MlflowClient`` for ``uri`` (mlflow is imported here, on first use)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def with_timeout(fn: Callable[[], Any], seconds: float, uri: str) -> Any:
    """``fn()`` given ``seconds`` (:func:`analysis.probe.run_within`); a failure becomes a
    :class:`TrackingError` (one raised by ``fn``, such as :class:`NameTaken`, passes unchanged).
    """
    try:
        return run_within(fn, seconds, name="mlflow-setup")
    except Overdue:
        raise TrackingError(f"MLflow at {uri} did not answer within {seconds:.0f} s") from None
    except TrackingError:
        raise
    except Exception as exc:
        raise TrackingError(f"MLflow at {uri} cannot be used: {exc}") from None


def param_text(v: Any, limit: int = PARAM_LIMIT) -> str:
    """A param value as MLflow stores it: text (lists and dicts as JSON), cut at ``limit``."""
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text[:limit]


class Store:
    """One MLflow client and its back-off: a failed operation takes MLflow offline a while.

    While offline, operations are skipped (they return False); what they would have logged is in
    results.parquet and Tune's storage, and is synced later (:mod:`sweeps.tracking.sync`).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri
        self.client = client(uri)
        self._offline_until = 0.0
        #: Operations that failed so far (one that raised may still have landed).
        self.failures = 0
        if sqlite_path(uri) is not None:
            self.fast_commits()

    def fast_commits(self) -> None:
        """A SQLite store commits in WAL mode (:mod:`sweeps.runtime.sqlite`): the driver writes
        tens of times per trial. A store that cannot be opened now is left as it is."""
        from sweeps.runtime.sqlite import use_wal

        try:
            use_wal(self.client._tracking_client.store.engine)
        except Exception as exc:  # NOTE: the first operation says what is wrong, and backs off
            log.debug("MLflow store %s: WAL mode not set (%s)", self.uri, exc)

    @property
    def online(self) -> bool:
        """False while MLflow is left alone after a failure."""
        return time.monotonic() >= self._offline_until

    def reconnect(self) -> None:
        """Try MLflow again at the next operation (end of sweep, resume)."""
        self._offline_until = 0.0

    def call(self, what: str, fn: Callable[[], Any]) -> bool:
        """Run one MLflow operation; on failure warn, go offline for a while, return False."""

        def done() -> bool:
            fn()
            return True

        return bool(self.fetch(what, done, False))

    def fetch(self, what: str, fn: Callable[[], T], default: T | None = None) -> T | None:
        """``fn()``'s value (one MLflow operation), or ``default`` when MLflow is offline or the
        operation fails (warned once; MLflow is then left alone for a while)."""
        if not self.online:
            return default
        try:
            return fn()
        except Exception as exc:
            self._offline_until = time.monotonic() + OFFLINE_S
            self.failures += 1
            log.warning(
                "MLflow (%s) failed while %s: %s; results stay in results.parquet and Tune "
                "storage and are synced at the end of the sweep (or on --resume)",
                self.uri,
                what,
                exc,
            )
            return default

    def log_params(self, run_id: str, params: Mapping[str, Any], have: set[str]) -> None:
        """Log the params of ``params`` that the run does not ``have``, 100 per request."""
        from mlflow.entities import Param

        items = [Param(k, param_text(v)) for k, v in params.items() if k not in have]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
