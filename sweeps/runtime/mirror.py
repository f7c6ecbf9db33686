"""The driver's files of a run kept in object storage, so that any machine can resume it.

With ``--storage s3://bucket/prefix`` (or any URI Tune takes, docs/stack.md §3) Tune keeps the
experiment in the store: its state, every trial's folder, checkpoints and the final files a
trial hands to the driver. The driver's own files live in a local run folder
(``$SSR_RUNS/<name>``, :func:`sweeps.runtime.rundir.default_storage`) that no other machine sees, so they
are mirrored beside Tune's, under ``<storage>/<name>/``:

- ``sweep.yaml`` and ``run.json`` when the run starts (:func:`sweeps.runtime.rundir.write_run_file`);
- as trials end (:class:`Mirror`, driven by :class:`sweeps.record.results.ResultsTable`): the results
  journal at once (a few rows), the results table and the Optuna study (a consistent SQLite
  copy) when they changed, at most every :data:`EVERY_S` seconds;
- whenever the table is rewritten (and so at the end of the sweep): the table, the study and
  ``exclusive.json``. The report is written again by a resumed driver; the sweep's parent run
  in MLflow holds it (on the team's server, in its artifact store).

``--resume --name N --storage s3://...`` on a machine whose run folder is missing or empty
pulls them back first (:func:`pull`), and the sweep continues as on the first machine: the
restored Tune experiment comes from the store, the results table from the mirrored table and
journal (rows still missing are filled from Tune's result grid), the report is written again.
A default Optuna study (``<run folder>/optuna.db``) is restored at the same absolute path, so
keep the run folder's path the same on every machine (one image), or name a shared
``searcher.storage`` (PostgreSQL). Files go through :mod:`pyarrow.fs`, as Tune's do, so the
endpoint and credentials are the standard AWS variables (``AWS_ENDPOINT_URL``,
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``) or the machine's role.
A leaf module: it imports nothing of the project and not Ray (a resume pulls before Ray's
authentication is set up); the run folder's file names come from :mod:`sweeps.runtime.rundir`
(``MIRRORED``).
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("sweeps")

#: Seconds between two uploads of the results table or the study while trials end.
EVERY_S = 30.0
#: The first bytes of a SQLite database file (copied through SQLite's backup, never torn).
SQLITE_MAGIC = b"SQLite format 3\x00"


def _remote(storage: str, name: str) -> tuple[Any, str]:
    """The pyarrow filesystem of ``storage`` and the run's path in it."""
    import pyarrow.fs as pafs

    fs, path = pafs.FileSystem.from_uri(storage.rstrip("/"))
    return fs, f"{path.rstrip('/')}/{name}"


def _upload(fs: Any, local: Path, remote: str) -> None:
    """One file, through a consistent copy when it is a SQLite database in use."""
    with contextlib.ExitStack() as stack:
        src = local
        with open(local, "rb") as fh:
            is_sqlite = fh.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
        if is_sqlite:
            tmp = Path(stack.enter_context(tempfile.TemporaryDirectory())) / local.name
            with (
                contextlib.closing(sqlite3.connect(local)) as db,
                contextlib.closing(sqlite3.connect(tmp)) as out,
            ):
                db.backup(out)  # NOTE: Optuna may be writing; a plain copy could be torn
            src = tmp
        with open(src, "rb") as fh, fs.open_output_stream(remote) as dst:
            while chunk := fh.read(1 << 20):
                dst.write(chunk)


def push(
    storage: str, name: str, run_dir: Path, files: Iterable[str], transient: Sequence[str] = ()
) -> list[str]:
    """Upload ``files`` of the run folder (those that exist; a folder with what it holds) to
    ``<storage>/<name>/``; a ``transient`` file (the results journal) that the folder no longer
    has is removed from the store (its rows are in the table). Returns the names uploaded."""
    import pyarrow.fs as pafs

    fs, root = _remote(storage, name)
    done = []
    for f in files:
        local = Path(run_dir) / f
        if local.is_dir():
            for p in sorted(x for x in local.rglob("*") if x.is_file()):
                fs.create_dir(f"{root}/{p.parent.relative_to(run_dir).as_posix()}")
                _upload(fs, p, f"{root}/{p.relative_to(run_dir).as_posix()}")
            done.append(f)
        elif local.is_file():
            _upload(fs, local, f"{root}/{f}")
            done.append(f)
        elif f in transient and fs.get_file_info(f"{root}/{f}").type == pafs.FileType.File:
            fs.delete_file(f"{root}/{f}")
    return done


def pull(storage: str, name: str, run_dir: Path, files: Iterable[str]) -> list[str]:
    """Download those of ``files`` that the store has and the run folder lacks (the folder is
    created readable by its owner only); returns the names downloaded."""
    import pyarrow.fs as pafs

    fs, root = _remote(storage, name)
    got = []
    for f in files:
        local = Path(run_dir) / f
        if local.exists() or fs.get_file_info(f"{root}/{f}").type != pafs.FileType.File:
            continue
        Path(run_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = local.with_name(f".{f}.part")
        with fs.open_input_stream(f"{root}/{f}") as src, open(tmp, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
        tmp.replace(local)
        got.append(f)
    return got


def has_file(storage: str, name: str, file: str) -> bool:
    """Whether the store holds ``file`` of the run ``name`` (``sweep.yaml``: the run itself)."""
    import pyarrow.fs as pafs

    fs, root = _remote(storage, name)
    return fs.get_file_info(f"{root}/{file}").type == pafs.FileType.File


class Mirror:
    """The store's copy of one run, kept current by the results table (see the module
    docstring): ``at_once`` files whenever they change, ``when_due`` files when they changed
    and ``every_s`` seconds have passed (or on ``sync(force=True)``); ``transient`` ones leave
    the store with the folder. A failed upload is a warning; the run folder still has
    everything and the next upload retries."""

    def __init__(
        self,
        storage: str,
        name: str,
        run_dir: Path,
        at_once: Sequence[str],
        when_due: Sequence[str],
        transient: Sequence[str] = (),
        every_s: float = EVERY_S,
    ) -> None:
        self.storage, self.name, self.run_dir = storage, name, Path(run_dir)
        self.at_once, self.when_due, self.transient = list(at_once), list(when_due), transient
        self.every_s = every_s
        self._last = time.monotonic()
        self._stamps: dict[str, int] = {}

    def _changed(self, names: Iterable[str]) -> list[str]:
        out = []
        for f in names:
            p = self.run_dir / f
            stamp = p.stat().st_mtime_ns if p.exists() else -1
            if self._stamps.get(f) != stamp:
                self._stamps[f] = stamp
                out.append(f)
        return out

    def sync(self, force: bool = False) -> None:
        """Upload what changed of the ``at_once`` files, and of the ``when_due`` ones when due."""
        names = list(self.at_once)
        if force or time.monotonic() - self._last >= self.every_s:
            names += self.when_due
            self._last = time.monotonic()
        try:
            push(self.storage, self.name, self.run_dir, self._changed(names), self.transient)
        except Exception as exc:  # pyarrow's OSError: the store is away; retried next time
            self._stamps.clear()
            log.warning("could not copy the run's files to %s: %s", self.storage, exc)
