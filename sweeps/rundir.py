"""Run folders: where a sweep's files live, what it is called, and what a resume reads back.

A run is ``<storage>/<name>/``: Tune's experiment (one ``trial_<id>/`` folder per trial),
``sweep.yaml`` (the definition a resume reloads), ``run.json`` (the tracking URI and storage a
resume reuses), ``results.parquet``, ``exclusive.json`` (the re-measurement cache),
``mlflow.db`` and ``mlartifacts/`` (the default SQLite store) and ``report/``. A run name is
also the MLflow parent run's name; one pattern checks both it and a sweep file's ``name``.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from ssr.atomic import write_json
from ssr.config import ConfigError

#: Names of runs and sweeps: safe as a folder name, an MLflow tag value and a Tune experiment.
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SWEEP_FILE = "sweep.yaml"
RUN_FILE = "run.json"
RESULTS_FILE = "results.parquet"
EXCLUSIVE_FILE = "exclusive.json"
REPORT_DIR = "report"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"


class RunLocation(NamedTuple):
    """Where a run lives: ``storage`` as Tune takes it, the run ``name``, the local folder."""

    storage: str
    name: str
    run_dir: Path


def check_name(name: str, where: str) -> None:
    """Raise :class:`ConfigError` unless ``name`` is a valid run or sweep name."""
    if not NAME_RE.match(name):
        raise ConfigError(f"{where} {name!r}: use letters, digits, '.', '_' and '-' only")


def default_storage() -> Path:
    """``<repo>/runs`` in a checkout of the repository, else ``./runs``."""
    repo = Path(__file__).resolve().parents[1]
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
    if resume and not exists:
        raise ConfigError(f"--resume: {run_dir} holds no sweep (no {SWEEP_FILE})")
    if not resume and exists:
        raise ConfigError(
            f"run folder {run_dir} already holds a sweep: pass --resume to continue it "
            "or choose another --name"
        )
    return RunLocation(tune_storage, name, run_dir)


def read_run_file(run_dir: Path) -> dict[str, Any]:
    """What ``run.json`` saved (tracking URI, storage), or ``{}`` for a run without one."""
    path = Path(run_dir) / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_run_file(run_dir: Path, tracking_uri: str, storage: str) -> Path:
    """Save the tracking URI and storage of the run for ``--resume`` (atomically)."""
    record = {"tracking_uri": tracking_uri, "storage": storage}
    return write_json(Path(run_dir) / RUN_FILE, record, indent=None)
