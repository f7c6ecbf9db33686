"""Result records from Parquet or MLflow -> one canonical DataFrame (:mod:`analysis.schema`).

Both loaders return the schema's columns and dtypes plus ``usable`` (boolean, ``status ==
"complete"``). Failed and early-stopped trials are kept, flagged ``usable = False``: the report
lists them with their reason, and the front only uses usable rows (an ASHA-stopped trial carries
low-fidelity values that must not enter the front; anchors.md §4).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.schema import COLUMNS, coerce_records, is_cfg_column, validate_records

logger = logging.getLogger(__name__)

#: Objective aliases: name -> (candidate columns in order of preference, default maximize).
OBJECTIVE_ALIASES: Mapping[str, tuple[tuple[str, ...], bool]] = MappingProxyType(
    {
        "miou": (("retrained_miou", "derived_miou"), True),
        "fps": (("fps_exclusive", "fps_shared"), True),
        "latency": (("latency_exclusive_ms_median", "latency_ms_median"), False),
        "gmacs": (("gmacs",), False),
        "params": (("params_m",), False),
    }
)
_SHARED = ("fps_shared", "latency_ms_median", "latency_ms_p90")
_MLFLOW_STATUS = MappingProxyType({"FINISHED": "complete", "FAILED": "failed", "KILLED": "failed"})


def canonical_records(df: pd.DataFrame) -> pd.DataFrame:
    """Coerce and validate records, and add ``usable`` (boolean: ``status == "complete"``)."""
    if len(df) == 0:
        raise AnalysisInputError("the result table is empty: no trial has been recorded yet")
    frame = coerce_records(df)
    validate_records(frame)
    frame["usable"] = (frame["status"] == "complete").fillna(False).astype("boolean")
    return frame


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
    ``mlflow_run_id``; a trial logged twice (a resumed sweep) keeps its latest run.

    NOTE: runs are listed with ``MlflowClient(tracking_uri).search_runs`` (same filter syntax as
    ``mlflow.search_runs``), which leaves the process-wide tracking URI untouched.
    """
    try:
        import mlflow
        from mlflow.exceptions import MlflowException
    except ImportError:
        raise AnalysisInputError(
            "reading MLflow needs the mlflow package: pip install mlflow==3.17.2"
        ) from None
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri.removeprefix("sqlite:///"))
        if not db.is_file():  # MLflow would silently create an empty store here
            raise AnalysisInputError(
                f"no MLflow database at {str(db)!r}: pass the sqlite URI of the sweep's "
                "mlflow.db (sqlite:////abs/path/mlflow.db) or a tracking server URL"
            )
    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    try:
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            names = [e.name for e in client.search_experiments(max_results=20)]
            raise AnalysisInputError(
                f"no MLflow experiment named {experiment!r} at {tracking_uri}; "
                f"experiments there: {names or 'none'}; pass one of them with --experiment"
            )
        parents = _search(client, exp.experiment_id, "tags.`ssr.role` = 'sweep'")
        children = _search(client, exp.experiment_id, "tags.`ssr.role` = 'trial'")
    except MlflowException as exc:
        raise AnalysisInputError(f"cannot read MLflow at {tracking_uri}: {exc.message}") from None
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
    return canonical_records(frame.drop(columns="_end_time"))


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


def _parse_spec(spec: str | list[tuple[str, bool]]) -> list[tuple[str, bool | None]]:
    if not isinstance(spec, str):
        return [(str(name), bool(mx)) for name, mx in spec]
    parsed: list[tuple[str, bool | None]] = []
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        name, _, direction = item.partition(":")
        direction = direction.strip().lower()
        if direction not in ("", "max", "min"):
            raise AnalysisInputError(
                f"objective {item!r}: direction must be 'max' or 'min' (e.g. miou:max,fps:max)"
            )
        parsed.append((name.strip(), None if not direction else direction == "max"))
    return parsed


def resolve_objectives_with_notes(
    spec: str | list[tuple[str, bool]], df: pd.DataFrame
) -> tuple[list[tuple[str, bool]], list[str]]:
    """Objective spec -> ``[(column, maximize), ...]`` plus notes saying how aliases resolved.

    ``spec`` is ``"name[:max|min],..."`` (or already a list of pairs). Aliases pick the first
    candidate column that is non-null for every usable row: ``miou`` = ``retrained_miou`` else
    ``derived_miou``; ``fps`` = ``fps_exclusive`` else ``fps_shared``; ``latency`` =
    ``latency_exclusive_ms_median`` else ``latency_ms_median``; ``gmacs``; ``params`` =
    ``params_m``. Any other name must be a numeric column, with an explicit direction.
    """
    rows = df[df["usable"].fillna(False).to_numpy(dtype=bool)] if "usable" in df.columns else df
    if len(rows) == 0:
        counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
        raise AnalysisInputError(
            f"no usable trial among {len(df)} ({counts}): only complete trials enter the front; "
            "see the error column of the records"
        )
    resolved: list[tuple[str, bool]] = []
    notes: list[str] = []
    for name, direction in _parse_spec(spec):
        if name in OBJECTIVE_ALIASES:
            candidates, default = OBJECTIVE_ALIASES[name]
            column, note = _pick(name, candidates, rows)
            if note:
                notes.append(note)
            maximize = default if direction is None else direction
        elif name in df.columns:
            if not pd.api.types.is_numeric_dtype(df[name].dtype) or df[name].dtype == "boolean":
                raise AnalysisInputError(f"objective column {name!r} is not numeric")
            if direction is None:
                raise AnalysisInputError(f"objective {name!r} needs a direction: {name}:max/min")
            column, maximize = name, direction
        else:
            raise AnalysisInputError(
                f"unknown objective {name!r}: use one of {sorted(OBJECTIVE_ALIASES)} or an "
                "existing numeric column with a direction (e.g. latency_ms_p90:min)"
            )
        if column in (c for c, _ in resolved):
            raise AnalysisInputError(f"objective column {column!r} is given twice")
        resolved.append((column, maximize))
    if len(resolved) < 2:
        raise AnalysisInputError("give at least two objectives, e.g. --objectives miou:max,fps:max")
    return resolved, notes


def _pick(name: str, candidates: tuple[str, ...], rows: pd.DataFrame) -> tuple[str, str]:
    counts = {c: int(rows[c].notna().sum()) if c in rows.columns else 0 for c in candidates}
    complete = [c for c in candidates if counts[c] == len(rows) and len(rows) > 0]
    column = complete[0] if complete else max(candidates, key=lambda c: counts[c])
    if counts[column] == 0:
        raise AnalysisInputError(
            f"objective {name!r}: none of {list(candidates)} has a value in any usable trial"
        )
    parts = [f"{name} -> {column}"]
    for c in candidates[: candidates.index(column)]:
        have = f"only {counts[c]} of {len(rows)}" if counts[c] else "none of the"
        parts.append(f"{c} is set for {have} usable trials")
    if counts[column] < len(rows):
        parts.append(f"{len(rows) - counts[column]} usable trials lack {column} and are left out")
    if column in _SHARED:
        parts.append("measured inside trials that may have shared the device, not exclusively")
    return column, "; ".join(parts)


def resolve_objectives(
    spec: str | list[tuple[str, bool]], df: pd.DataFrame
) -> list[tuple[str, bool]]:
    """``resolve_objectives("miou:max,fps:max", df)`` -> ``[(column, maximize), ...]``; logs how
    the aliases resolved (see :func:`resolve_objectives_with_notes`)."""
    resolved, notes = resolve_objectives_with_notes(spec, df)
    for note in notes:
        # NOTE: a plain "miou -> retrained_miou" is information; a fallback or a gap is a warning.
        logger.log(logging.WARNING if ";" in note else logging.INFO, "objective %s", note)
    return resolved
