"""Result records from Parquet or MLflow -> one canonical DataFrame (:mod:`analysis.schema`).

Both loaders return the schema's columns and dtypes plus ``usable`` (boolean, ``status ==
"complete"``). Failed and early-stopped trials are kept, flagged ``usable = False``: the report
lists them with their reason, and the front only uses usable rows (an ASHA-stopped trial carries
low-fidelity values, from a lower rung, that must not enter the front). The objectives the sweep
ranked come along in ``df.attrs["objectives"]`` (:mod:`analysis.objectives`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from analysis.errors import AnalysisInputError, TrackingUnreachableError
from analysis.objectives import (
    OBJECTIVE_ALIASES,
    OBJECTIVES_KEY,
    parse_objectives_json,
    resolve_objectives,
    resolve_objectives_with_notes,
    set_recorded_objectives,
)
from analysis.probe import one_line, probe, within
from analysis.schema import COLUMNS, coerce_records, is_cfg_column, validate_records

__all__ = [
    "OBJECTIVE_ALIASES",
    "canonical_records",
    "find_results",
    "from_mlflow",
    "from_parquet",
    "resolve_objectives",
    "resolve_objectives_with_notes",
]

_MLFLOW_STATUS = MappingProxyType({"FINISHED": "complete", "FAILED": "failed", "KILLED": "failed"})


def canonical_records(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce and validate records, and add ``usable`` (boolean: ``status == "complete"``)."""
    if len(df) == 0:
        raise AnalysisInputError("the result table is empty: no trial has been recorded yet")
    frame = coerce_records(df)
    validate_records(frame)
    frame["usable"] = (frame["status"] == "complete").fillna(False).astype("boolean")
    frame.attrs = dict(df.attrs)  # the recorded objectives
    return frame


def find_results(root: str | Path = ".") -> Path:
    """The newest ``runs/**/results.parquet`` under ``root`` (what a notebook opens by default)."""
    found = sorted(Path(root).glob("runs/**/results.parquet"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise AnalysisInputError(
            f"no runs/**/results.parquet under {str(root)!r}: run a sweep first, or pass the "
            "results file (SSR_RESULTS=path for the notebook)"
        )
    return found[-1]


#: ``df.attrs`` key: the results file the records were read from (its folder is the run folder).
SOURCE_KEY = "source"


def _parquet_objectives(path: Path) -> list[tuple[str, bool]] | None:
    import pyarrow.parquet as pq

    metadata = pq.read_schema(path).metadata or {}
    text = metadata.get(OBJECTIVES_KEY.encode())
    return None if text is None else parse_objectives_json(text, f"{path} {OBJECTIVES_KEY}")


def from_parquet(path: str | Path) -> pd.DataFrame:
    """Load a sweep's ``results.parquet`` (a file, or a run folder holding one)."""
    path = Path(path)
    if path.is_dir() and (path / "results.parquet").is_file():
        path = path / "results.parquet"
    if not path.is_file():
        raise AnalysisInputError(
            f"no results file at {str(path)!r}: pass the results.parquet a sweep wrote in its "
            "run folder (or read MLflow with --tracking-uri URI --experiment NAME)"
        )
    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise AnalysisInputError(f"cannot read {str(path)!r} as Parquet: {exc}") from None
    if len(frame) == 0:
        raise AnalysisInputError(f"{str(path)!r} holds no trials (0 rows)")
    frame.attrs = {SOURCE_KEY: str(path.resolve())}  # where the run folder (and its study) is
    objectives = _parquet_objectives(path)
    if objectives is not None:
        set_recorded_objectives(frame, objectives)
    return canonical_records(frame)


def _row_from_run(run: Any, sweeps: Mapping[str, str]) -> dict[str, Any]:
    """One record from a child run: metrics by column name, ``cfg.*`` params, ``ssr.*`` tags."""
    data, info = run.data, run.info
    row: dict[str, Any] = {k: v for k, v in data.metrics.items() if k in COLUMNS}
    row.update({k: v for k, v in data.params.items() if is_cfg_column(k)})
    for key, value in data.tags.items():
        column = key.removeprefix("ssr.")
        if key.startswith("ssr.") and (column in COLUMNS or is_cfg_column(column)):
            row[column] = value
    row.setdefault("trial_id", info.run_name or info.run_id)
    row.setdefault("sweep", sweeps.get(data.tags.get("mlflow.parentRunId", ""), pd.NA))
    if "status" not in row:
        row["status"] = _MLFLOW_STATUS.get(info.status, "failed")
        if row["status"] == "failed":
            row.setdefault("error", f"MLflow run status {info.status} and no ssr.status tag")
    row["mlflow_run_id"] = info.run_id
    row["_end_time"] = info.end_time or info.start_time or 0
    return row


def from_mlflow(tracking_uri: str, experiment: str, sweep: str | None = None) -> pd.DataFrame:
    """Load the trial runs of an MLflow experiment (optionally only one ``sweep``).

    The sweep logs one parent run per sweep (tag ``ssr.role=sweep``) and one nested child run per
    trial (tag ``ssr.role=trial``): the final record as metrics named like the record's numeric
    columns, config as params ``cfg.<dotted key>``, text fields as tags ``ssr.<column>``. Adds
    ``mlflow_run_id``; a trial logged twice (a resumed sweep) keeps its latest run. The parent's
    tag ``ssr.objectives`` becomes ``attrs["objectives"]`` (when the sweeps read agree on it).

    NOTE: runs are listed with ``MlflowClient(tracking_uri).search_runs`` (same filter syntax as
    ``mlflow.search_runs``), which leaves the process-wide tracking URI untouched.
    """
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():  # MLflow would silently create an empty store here
            raise AnalysisInputError(
                f"no MLflow database at {str(db)!r}: pass the sqlite URI of the sweep's "
                "mlflow.db (sqlite:////abs/path/mlflow.db) or a tracking server URL"
            )
    probe(tracking_uri)  # a dead server: one line in seconds, not MLflow's minutes of retries
    try:  # after the checks above: importing mlflow alone takes seconds
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise AnalysisInputError(
            "reading MLflow needs the mlflow package: pip install mlflow==3.17.2"
        ) from None

    def first_request() -> tuple[Any, Any]:
        client = mlflow.MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments(max_results=20)]
            raise AnalysisInputError(
                f"no MLflow experiment named {experiment!r} at {tracking_uri}; "
                f"experiments there: {names or 'none'}; pass one of them with --experiment"
            )
        return client, exp

    # a server proved alive answers in seconds; a local database may first check its schema
    remote = tracking_uri.startswith(("http://", "https://"))
    client, exp = within(first_request, tracking_uri, 10.0 if remote else 60.0)
    try:
        parents = _search(client, exp.experiment_id, "tags.`ssr.role` = 'sweep'")
        children = _search(client, exp.experiment_id, "tags.`ssr.role` = 'trial'")
    except MlflowException as exc:
        raise AnalysisInputError(f"cannot read MLflow at {tracking_uri}: {one_line(exc)}") from None
    except OSError as exc:  # the connection broke after the first request
        raise TrackingUnreachableError(
            f"lost MLflow at {tracking_uri} while reading: {one_line(exc)}"
        ) from None
    sweeps = {r.info.run_id: r.data.tags.get("ssr.sweep", r.info.run_name) for r in parents}
    frame = pd.DataFrame([_row_from_run(r, sweeps) for r in children])
    if sweep is not None and len(frame):
        frame = frame[frame["sweep"] == sweep]
    if len(frame) == 0:
        scope = f"sweep {sweep!r} of experiment" if sweep else "experiment"
        raise AnalysisInputError(
            f"{scope} {experiment!r} at {tracking_uri} has no trial runs (tag ssr.role=trial): "
            "has the sweep finished a trial, and did it log to this tracking URI?"
        )
    frame = frame.sort_values("_end_time", kind="stable")
    frame = frame.drop_duplicates(subset=["sweep", "trial_id"], keep="last")
    frame = frame.drop(columns="_end_time")
    frame.attrs = {}
    recorded = {
        r.data.tags[OBJECTIVES_KEY]
        for r in parents
        if OBJECTIVES_KEY in r.data.tags and (sweep is None or sweeps[r.info.run_id] == sweep)
    }
    if len(recorded) == 1:  # sweeps that ranked different objectives have no common default
        set_recorded_objectives(frame, parse_objectives_json(recorded.pop(), OBJECTIVES_KEY))
    return canonical_records(frame)


def _search(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    runs: list[Any] = []
    token = None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string=filter_string, max_results=1000, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs
