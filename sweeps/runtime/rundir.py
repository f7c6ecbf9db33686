"""Run folders: where a sweep's files live, what it is called, and what a resume reads back.

A run is ``<storage>/<name>/``: Tune's experiment (one ``trial_<id>/`` folder per trial),
``sweep.yaml`` (the definition a resume reloads), ``run.json`` (the tracking URI and storage a
resume reuses), ``results.parquet``, ``exclusive.json`` (the re-measurement cache),
``report/`` and ``.lock``. A run name is also the MLflow parent run's name; one pattern checks
both it and a sweep file's ``name``.

A driver claims its run folder before it writes anything there (:func:`claim_run`): the folder is
created readable by its owner only (0700: it holds pickles that ``--resume`` loads, trusted
code), and an exclusive ``flock`` on ``<run folder>/.lock`` is held for the driver's lifetime
(the kernel releases it when the driver dies, however it dies). A second driver of the same run
is refused without touching a file, and the checks of :func:`resolve_run` are repeated under the
lock, so two drivers started together cannot both create the run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import fcntl
import json
import logging
import os
import re
import stat
from pathlib import Path
from typing import Any, NamedTuple

from ssr.config import ConfigError
from ssr.files.atomic import write_json
from sweeps.runtime.cluster import Unreachable

#: Names of runs and sweeps: safe as a folder name, an MLflow tag value and a Tune experiment.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
#: Names the records would read as missing values (analysis.schema's null words).
MISSING_WORDS = frozenset({"nan", "none", "null"})
SWEEP_FILE = "sweep.yaml"
RUN_FILE = "run.json"
RESULTS_FILE = "results.parquet"
EXCLUSIVE_FILE = "exclusive.json"
REPORT_DIR = "report"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
LOCK_FILE = ".lock"
#: Environment variable naming the local folder of run folders (:func:`default_storage`).
RUNS_ENV = "SSR_RUNS"
#: The run's Optuna study by default (the name ``sweeps.schedule.searchers.STUDY_FILE`` uses; not imported:
#: that module imports Optuna and Ray).
STUDY_FILE = "optuna.db"
#: The results table's journal (:func:`journal_path`, :mod:`sweeps.record.results`).
JOURNAL_FILE = "results.journal.jsonl"
#: The driver's files of a run that a remote storage keeps (:mod:`sweeps.runtime.mirror`), in the order
#: a resume needs them.
MIRRORED = (SWEEP_FILE, RUN_FILE, RESULTS_FILE, JOURNAL_FILE, EXCLUSIVE_FILE, STUDY_FILE)

log = logging.getLogger("sweeps")


def journal_path(path: Path) -> Path:
    """The journal of the results table at ``path`` (:data:`JOURNAL_FILE` beside
    ``results.parquet``, :mod:`sweeps.record.results`)."""
    return Path(path).with_suffix(".journal.jsonl")


def run_mirror(run_dir: Path) -> Any:
    """The :class:`sweeps.runtime.mirror.Mirror` of a run folder whose ``run.json`` names a remote
    storage (the journal at once; the table, the study and the re-measurement when due), else
    None."""
    from sweeps.runtime.mirror import Mirror

    try:
        storage = str(read_run_file(run_dir).get("storage") or "")
    except ConfigError:
        return None
    if not is_remote(storage):
        return None
    due = (RESULTS_FILE, STUDY_FILE, EXCLUSIVE_FILE)
    return Mirror(storage, Path(run_dir).name, run_dir, (JOURNAL_FILE,), due, (JOURNAL_FILE,))


class RunLocation(NamedTuple):
    """Where a run lives: ``storage`` as Tune takes it, the run ``name``, the local folder."""

    storage: str
    name: str
    run_dir: Path


def check_name(name: str, where: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a valid run or sweep name."""
    if not NAME_RE.match(name):
        raise ConfigError(f"{where} {name!r}: use letters, digits, '.', '_' and '-' only")
    if name.lower() in MISSING_WORDS:
        raise ConfigError(f"{where} {name!r}: reads as a missing value in the records; rename it")


def default_storage() -> Path:
    """Where run folders live on this machine: ``$SSR_RUNS`` when set, else ``<repo>/runs`` in a
    checkout of the repository, else ``./runs``. With a remote ``--storage`` (``s3://...``) this
    is where the driver keeps its local copy of the run (:mod:`sweeps.runtime.mirror`)."""
    if os.environ.get(RUNS_ENV):
        return Path(os.environ[RUNS_ENV]).expanduser().resolve()
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file() and (repo / "sweeps").is_dir():
        return repo / "runs"
    return Path.cwd() / "runs"


def is_remote(storage: str) -> bool:
    """A URI Tune reads through pyarrow (``s3://``, ``gs://``, ...), not a local path."""
    return "://" in storage and not storage.startswith("file://")


def resolve_run(
    storage: str | None, name: str | None, resume: bool, sweep_name: str
) -> RunLocation:
    """The run's location from ``--storage``, ``--name`` and ``--resume`` (ConfigError if bad).

    Without ``--name`` a new run is called ``<sweep name>-<date>-<time>`` and a resume takes the
    latest run of that sweep. A new run must not reuse a folder that holds a sweep; a resumed
    one must.
    """
    raw = storage or str(default_storage())
    remote = is_remote(raw)
    tune_storage = raw if remote else str(Path(raw.removeprefix("file://")).expanduser().resolve())
    local_root = default_storage() if remote else Path(tune_storage)
    if name is not None:
        check_name(name, "--name")
    if name is None and resume:
        candidates = sorted(
            (p for p in local_root.glob(f"{sweep_name}-*") if (p / SWEEP_FILE).is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if not candidates:
            raise ConfigError(
                f"--resume: no run of sweep {sweep_name!r} under {local_root}; pass --name"
            )
        name = candidates[-1].name
    if name is None:
        name = f"{sweep_name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = local_root / name
    exists = (run_dir / SWEEP_FILE).is_file()
    if resume and not exists and remote:  # another machine's run: its files come from the store
        exists = _pull_remote(tune_storage, name, run_dir)
    if resume and not exists:
        raise ConfigError(f"--resume: {run_dir} holds no sweep (no {SWEEP_FILE})")
    if not resume and exists:
        raise ConfigError(
            f"run folder {run_dir} already holds a sweep: pass --resume to continue it "
            "or choose another --name"
        )
    return RunLocation(tune_storage, name, run_dir)


def _pull_remote(storage: str, name: str, run_dir: Path) -> bool:
    """Fetch a run's driver files from the store into ``run_dir`` (:func:`sweeps.runtime.mirror.pull`);
    whether it holds a sweep now. :class:`~sweeps.runtime.cluster.Unreachable` when the store cannot
    be read."""
    from sweeps.runtime.mirror import pull

    try:
        got = pull(storage, name, run_dir, MIRRORED)
    except Exception as exc:  # OSError from pyarrow: no such bucket, no credentials, no route
        why = " ".join(str(exc).split())[:300]
        raise Unreachable(
            f"--resume: cannot read {storage}/{name} ({why}): check the bucket and the AWS_* "
            "variables (AWS_ENDPOINT_URL, keys, region)"
        ) from None
    if got:
        log.info("resuming %s from %s: fetched %s", name, storage, ", ".join(got))
    return (run_dir / SWEEP_FILE).is_file()


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """What ``run.json`` saved (tracking URI, storage), or ``{}`` for a run without one."""
    path = Path(run_dir) / RUN_FILE
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{path} cannot be read ({exc}): delete it and give --tracking-uri to resume"
        ) from None
    if not isinstance(record, dict):
        raise ConfigError(f"{path}: expected a JSON object; delete it and give --tracking-uri")
    return record


def write_run_file(run_dir: Path, tracking_uri: str, storage: str) -> Path:
    """Save the tracking URI and storage of the run for ``--resume`` (atomically); with a
    remote storage, copy it and the sweep definition there (:mod:`sweeps.runtime.mirror`)."""
    record = {"tracking_uri": tracking_uri, "storage": storage}
    path = write_json(Path(run_dir) / RUN_FILE, record, indent=None)
    if is_remote(storage):
        from sweeps.runtime.mirror import push

        try:
            push(storage, Path(run_dir).name, Path(run_dir), (SWEEP_FILE, RUN_FILE))
        except Exception as exc:  # before any trial: say so now, not at the first resume
            why = " ".join(str(exc).split())[:300]
            raise Unreachable(
                f"--storage {storage}: cannot write there ({why}): check the bucket and the "
                "AWS_* variables (AWS_ENDPOINT_URL, keys, region)"
            ) from None
    return path


def claim_run(location: RunLocation, resume: bool) -> int:
    """Create the run folder (0700) and lock it for this driver's lifetime; the lock's fd.

    Raises :class:`ConfigError` when another driver holds the lock, when the folder cannot be
    written, or when the checks of :func:`resolve_run` no longer hold under the lock (another
    driver created the run meanwhile). Nothing in the folder is changed before the lock is held.
    """
    run_dir = location.run_dir
    try:
        run_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        run_dir.mkdir(mode=0o700, exist_ok=True)
        fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"run folder {run_dir} cannot be created or written ({exc.strerror or exc}): "
            "choose a writable --storage"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise ConfigError(
            f"run folder {run_dir} is in use by another driver (pid {holder}): wait for it to "
            "end, or choose another --name"
        ) from None
    exists = (run_dir / SWEEP_FILE).is_file()
    if exists != resume:
        os.close(fd)
        resolve_run(str(run_dir.parent), location.name, resume, location.name)  # raises
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _warn_if_shared(run_dir)
    return fd


def abandon_run(location: RunLocation, written: list[Path]) -> None:
    """A claimed run that never started: remove the files this driver ``written`` there, and
    the folder itself when nothing else is left in it but the lock."""
    for path in written:
        path.unlink(missing_ok=True)
    left = {p.name for p in location.run_dir.iterdir()} if location.run_dir.is_dir() else set()
    if left == {LOCK_FILE}:
        with contextlib.suppress(OSError):
            (location.run_dir / LOCK_FILE).unlink()
            location.run_dir.rmdir()


def _warn_if_shared(run_dir: Path) -> None:
    """Warn when others may write the run folder or its storage (pickles there are code)."""
    for folder in (run_dir, run_dir.parent):
        mode = folder.stat().st_mode
        if mode & (stat.S_IWGRP | stat.S_IWOTH) and not mode & stat.S_ISVTX:
            log.warning(
                "%s is writable by others: --resume loads pickles from the run folder (trusted "
                "code); make it private (chmod go-w %s)",
                folder,
                folder,
            )
