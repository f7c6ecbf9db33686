"""The result record: one row per trial, i.e. per derived architecture (docs/architecture.md §3).

This module is THE single definition of the record. The sweep driver builds its rows, passes them
through :func:`coerce_records` / :func:`validate_records` (or simply :func:`write_records`) and
writes ``results.parquet``; the loaders (:mod:`analysis.load`) map MLflow runs onto the same
columns.

Dtypes are pandas' nullable extension dtypes throughout, so that a missing value is always
``pd.NA`` whatever the column: text ``"string"`` (``pd.StringDtype()``, NA-valued, not pandas 3's
NaN-valued default ``str``), flags ``"boolean"``, counts ``"Int64"``, measurements ``"Float64"``.
Config columns (``cfg.<dotted.key>``) may hold numbers, text or flags; they are coerced to the
same four dtypes. mIoU values are fractions in [0, 1] (plots may show percent).

Fields that say what a number means (docs/architecture.md §3, §5):

- ``baseline``: which arm of the sweep produced the point: ``ssr`` (SSR weights and shrinking as
  sampled), ``darts_pruning`` (SSR weights 0, shrinking on) or ``no_shrink`` (shrinking off,
  argmax at the end). Older files have only ``cfg.baseline``; it is copied from there.
- ``derived_miou_lo`` / ``derived_miou_hi``: a 90 % interval of ``derived_mIoU`` (bootstrap over
  the validation images).
- ``fps_exclusive_lo`` / ``fps_exclusive_hi``: the spread of the exclusive FPS over several
  measurement passes (median of the slowest and of the fastest pass); ``exclusive_device`` and
  ``exclusive_threads`` say where and with how many threads it was measured.
- ``gap_at_discrete``: the discretization gap at the moment the net became discrete;
  ``discretization_gap`` stays the gap at the end of the search budget. ``fallback_prunes``:
  how many prunes the argmax fallback had to make.
- ``retrain_epochs``: the retraining budget behind ``retrained_miou`` (older files: copied from
  ``cfg.retrain.epochs``). ``search_input_size`` ("HxW") is the search input (older files:
  ``cfg.data.height`` x ``cfg.data.width``); ``input_size`` stays the bench (deployment) input.

A column ``<objective>_lo`` / ``<objective>_hi`` next to any objective is read as its interval
(error bars, ties; :mod:`analysis.noise`).

The objectives a sweep ranked travel with its records: in ``results.parquet``'s schema metadata
under :data:`OBJECTIVES_KEY` (``ssr.objectives``) and as the tag of the same name on the MLflow
parent run, both as JSON ``[{"metric": column, "mode": "max" | "min"}, ...]``
(:mod:`analysis.objectives`). :func:`write_records` writes them when given ``objectives``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.objectives import OBJECTIVES_KEY, objectives_json, recorded_objectives

CFG_PREFIX = "cfg."
STATUSES = ("complete", "early_stopped", "failed")
BASELINES = ("ssr", "darts_pruning", "no_shrink")
GENOTYPE_ID_PATTERN = re.compile(r"^[0-9a-f]{10,12}$")

IDENTITY_COLUMNS = MappingProxyType(
    {
        "sweep": "string",
        "trial_id": "string",
        "genotype_id": "string",
        "genotype": "string",  # the genotype as JSON text
        "status": "string",  # one of STATUSES
        "error": "string",
        "completion_order": "Int64",  # order in which the trials finished, from 0 or 1
        "node": "string",  # where the trial ran (last)
        "nodes": "string",  # JSON: host, ip and Ray node id of each of its runs, in order
        "resumes": "Int64",  # runs that continued from a checkpoint (a lost node, a resume)
        "dataset": "string",
        "baseline": "string",  # one of BASELINES
    }
)
RESULT_COLUMNS = MappingProxyType(
    {
        "supernet_miou": "Float64",
        "derived_miou": "Float64",  # discrete net with inherited weights
        "derived_miou_lo": "Float64",  # 90 % bootstrap interval over validation images
        "derived_miou_hi": "Float64",
        "retrained_miou": "Float64",
        "retrained_miou_lo": "Float64",  # 90 % bootstrap interval over validation images
        "retrained_miou_hi": "Float64",
        "discretization_gap": "Float64",  # supernet_miou - derived_miou, end of budget
        "gap_at_discrete": "Float64",  # the gap when the net became discrete
        "discrete_at_epoch": "Float64",
        "fallback_prunes": "Int64",  # prunes made by the argmax fallback
        "params_m": "Float64",
        "gmacs": "Float64",
        # measured inside the trial, possibly while other trials shared the device
        "fps_shared": "Float64",
        "latency_ms_median": "Float64",
        "latency_ms_p90": "Float64",
        # re-measured after the sweep, one architecture at a time
        "fps_exclusive": "Float64",
        "fps_exclusive_lo": "Float64",  # median of the slowest pass
        "fps_exclusive_hi": "Float64",  # median of the fastest pass
        "latency_exclusive_ms_median": "Float64",
        "latency_exclusive_ms_p90": "Float64",
        # searches with a latency table (docs/method.md §4.4): the target, the expected latency
        # at the last epoch and the table's prediction for the derived network
        "latency_target_ms": "Float64",
        "expected_latency_ms": "Float64",
        "predicted_latency_ms": "Float64",
    }
)
MEASUREMENT_COLUMNS = MappingProxyType(
    {
        "device": "string",
        "threads": "Int64",
        "precision": "string",
        "batch": "Int64",
        "input_size": "string",  # bench (deployment) input "HxW", e.g. "512x1024"
        "fps_shared_device": "boolean",
        "exclusive_device": "string",
        "exclusive_threads": "Int64",
        "exclusive_backend": "string",  # e.g. "onnxruntime (deploy)": what was timed
        "exported_weights": "string",  # "initial" or "retrained (best epoch N)": model.onnx
        "search_input_size": "string",  # "HxW"
        "retrain_epochs": "Int64",
    }
)
#: Every fixed column of the record and its dtype, in canonical order (``cfg.*`` columns go
#: between the identity and the result columns).
COLUMNS = MappingProxyType({**IDENTITY_COLUMNS, **RESULT_COLUMNS, **MEASUREMENT_COLUMNS})
REQUIRED_COLUMNS = ("sweep", "trial_id", "status")
MIOU_COLUMNS = (
    "supernet_miou",
    "derived_miou",
    "derived_miou_lo",
    "derived_miou_hi",
    "retrained_miou",
    "retrained_miou_lo",
    "retrained_miou_hi",
)
INTERVALS = (
    ("derived_miou_lo", "derived_miou_hi"),
    ("retrained_miou_lo", "retrained_miou_hi"),
    ("fps_exclusive_lo", "fps_exclusive_hi"),
)
CFG_DTYPES = ("string", "boolean", "Int64", "Float64")

_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})
_NULL_TEXT = frozenset({"", "none", "null", "nan", "<na>"})


def is_cfg_column(name: str) -> bool:
    """True for a config column, ``cfg.<dotted.key>``."""
    return name.startswith(CFG_PREFIX) and len(name) > len(CFG_PREFIX)


def _to_bool(series: pd.Series, column: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    if pd.api.types.is_numeric_dtype(series.dtype):
        bad = series.notna() & ~series.isin([0, 1])
        if bad.any():
            raise AnalysisInputError(
                f"column {column!r}: expected flags, got {series[bad].iloc[0]!r}"
            )
        return series.astype("Float64").astype("boolean")

    def parse(value: Any) -> Any:
        if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)):
            return pd.NA
        if isinstance(value, bool | np.bool_):
            return bool(value)
        text = str(value).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        if text in _NULL_TEXT:
            return pd.NA
        raise AnalysisInputError(f"column {column!r}: expected true/false, got {value!r}")

    return pd.Series([parse(v) for v in series], index=series.index, dtype="boolean")


def _to_number(series: pd.Series, column: str, dtype: str) -> pd.Series:
    if pd.api.types.is_bool_dtype(series.dtype):
        series = series.astype("Int64")
    elif not pd.api.types.is_numeric_dtype(series.dtype):
        text = series.astype("string").str.strip()
        text = text.mask(text.str.lower().isin(_NULL_TEXT))
        try:
            series = pd.to_numeric(text, errors="raise")
        except (TypeError, ValueError) as exc:
            raise AnalysisInputError(f"column {column!r}: expected numbers ({exc})") from None
    series = series.astype("Float64")
    if dtype == "Int64":
        values = series.dropna()
        if not np.all(np.mod(values.to_numpy(dtype=float), 1.0) == 0.0):
            raise AnalysisInputError(f"column {column!r}: expected whole numbers")
        return series.astype("Int64")
    return series


def _infer_cfg(series: pd.Series, column: str) -> pd.Series:
    """Nullable dtype for a config column; text (e.g. MLflow params) is parsed when it is all
    flags or all numbers."""
    if pd.api.types.is_bool_dtype(series.dtype):
        return series.astype("boolean")
    if pd.api.types.is_integer_dtype(series.dtype):
        return series.astype("Int64")
    if pd.api.types.is_float_dtype(series.dtype):
        # NOTE: a float column stays Float64 even when its values are whole (a weight of 30.0).
        return series.astype("Float64")
    if all(isinstance(v, bool | np.bool_) or pd.isna(v) for v in series):
        return series.astype("boolean")
    text = series.astype("string").str.strip()
    present = text[~text.str.lower().isin(_NULL_TEXT) & text.notna()]
    if len(present) == 0:
        return pd.Series(pd.NA, index=series.index, dtype="string")
    lowered = set(present.str.lower())
    if lowered <= (_TRUE | _FALSE) - {"1", "0"}:
        return _to_bool(series, column)
    numbers = pd.to_numeric(present, errors="coerce")
    if numbers.notna().all():
        integral = present.str.fullmatch(r"[+-]?\d+").all()
        return _to_number(series, column, "Int64" if integral else "Float64")
    return text.mask(text.str.lower().isin(_NULL_TEXT)).astype("string")


def _coerce_column(series: pd.Series, column: str, dtype: str) -> pd.Series:
    if dtype == "string":
        if series.map(lambda v: isinstance(v, dict | list)).any():  # e.g. a genotype as a dict
            series = series.map(lambda v: json.dumps(v) if isinstance(v, dict | list) else v)
        out = series.astype("string")
        return out.mask(out.str.strip().str.lower().isin(_NULL_TEXT))
    if dtype == "boolean":
        return _to_bool(series, column)
    return _to_number(series, column, dtype)


def _fill_from_config(out: pd.DataFrame, cfg: Mapping[str, pd.Series]) -> None:
    """Fields older files only hold as config: ``baseline`` from ``cfg.baseline`` (when it names
    one of :data:`BASELINES`), ``retrain_epochs`` from ``cfg.retrain.epochs`` and
    ``search_input_size`` from ``cfg.data.height`` x ``cfg.data.width``."""
    if "cfg.baseline" in cfg:
        text = cfg["cfg.baseline"].astype("string")
        known = text.isin(BASELINES).fillna(False).astype(bool)
        out["baseline"] = out["baseline"].fillna(text.where(known))
    if "cfg.retrain.epochs" in cfg and pd.api.types.is_numeric_dtype(cfg["cfg.retrain.epochs"]):
        epochs = cfg["cfg.retrain.epochs"].astype("Float64")
        whole = epochs.where(epochs.round() == epochs)
        out["retrain_epochs"] = out["retrain_epochs"].fillna(whole.astype("Int64"))
    if {"cfg.data.height", "cfg.data.width"} <= set(cfg):
        h = pd.to_numeric(cfg["cfg.data.height"], errors="coerce").astype("Int64")
        w = pd.to_numeric(cfg["cfg.data.width"], errors="coerce").astype("Int64")
        size = h.astype("string") + "x" + w.astype("string")
        out["search_input_size"] = out["search_input_size"].fillna(size)


def coerce_records(df: pd.DataFrame) -> pd.DataFrame:
    """Return a copy of ``df`` in canonical form: schema dtypes, missing optional columns added as
    all-NA, ``discretization_gap`` filled from ``supernet_miou - derived_miou`` where it is NA,
    columns ordered identity, ``cfg.*`` (sorted), results, measurement, then any extra columns.

    Raises :class:`AnalysisInputError` naming the column when a value cannot be converted.
    Idempotent: coercing a canonical frame changes nothing.
    """
    out = pd.DataFrame(index=df.index)
    for column, dtype in COLUMNS.items():
        if column in df.columns:
            out[column] = _coerce_column(df[column], column, dtype)
        elif column not in REQUIRED_COLUMNS:
            out[column] = pd.Series(pd.NA, index=df.index, dtype=dtype)
    cfg_columns = sorted(c for c in df.columns if is_cfg_column(c))
    cfg = {c: _infer_cfg(df[c], c) for c in cfg_columns}
    extra = [c for c in df.columns if c not in COLUMNS and not is_cfg_column(c)]
    if {"supernet_miou", "derived_miou"} <= set(out.columns):
        gap = out["supernet_miou"] - out["derived_miou"]
        out["discretization_gap"] = out["discretization_gap"].fillna(gap)
    _fill_from_config(out, cfg)
    identity = [c for c in IDENTITY_COLUMNS if c in out.columns]
    rest = [c for c in out.columns if c not in IDENTITY_COLUMNS]
    frame = pd.concat(
        [out[identity], pd.DataFrame(cfg, index=df.index), out[rest], df[extra]], axis=1
    )
    return frame.reset_index(drop=True)


def schema_problems(df: pd.DataFrame, *, allow_extra: bool = True) -> list[str]:
    """Every way ``df`` breaks the record schema, as readable sentences (empty when valid)."""
    problems: list[str] = []
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        problems.append(f"missing required column(s) {missing}")
    for column in REQUIRED_COLUMNS:
        if column in df.columns and df[column].isna().any():
            problems.append(f"column {column!r} has {int(df[column].isna().sum())} missing values")
    for column, dtype in COLUMNS.items():
        if column in df.columns and str(df[column].dtype) != dtype:
            problems.append(f"column {column!r} has dtype {df[column].dtype}, expected {dtype}")
    for column in (c for c in df.columns if is_cfg_column(c)):
        if str(df[column].dtype) not in CFG_DTYPES:
            problems.append(f"config column {column!r} has dtype {df[column].dtype}")
    if not allow_extra:
        extra = [c for c in df.columns if c not in COLUMNS and not is_cfg_column(c)]
        if extra:
            problems.append(f"unknown column(s) {extra}")
    if "status" in df.columns:
        bad = sorted(set(df["status"].dropna().astype(str)) - set(STATUSES))
        if bad:
            problems.append(f"status values {bad} are not among {list(STATUSES)}")
    if "genotype_id" in df.columns:
        ids = df["genotype_id"].dropna().astype(str)
        bad_ids = [i for i in ids if not GENOTYPE_ID_PATTERN.match(i)]
        if bad_ids:
            problems.append(f"genotype_id must be 10-12 lowercase hex chars, got {bad_ids[:3]}")
        if "status" in df.columns:
            no_id = (df["status"] == "complete").fillna(False) & df["genotype_id"].isna()
            if no_id.any():
                problems.append(f"{int(no_id.sum())} complete trial(s) have no genotype_id")
    if "baseline" in df.columns:
        bad = sorted(set(df["baseline"].dropna().astype(str)) - set(BASELINES))
        if bad:
            problems.append(f"baseline values {bad} are not among {list(BASELINES)}")
    for lo, hi in (p for p in INTERVALS if set(p) <= set(df.columns)):
        low = pd.to_numeric(df[lo], errors="coerce").astype("Float64")
        high = pd.to_numeric(df[hi], errors="coerce").astype("Float64")
        if (low > high).fillna(False).any():
            problems.append(f"{int((low > high).fillna(False).sum())} rows have {lo} > {hi}")
    for column in (c for c in MIOU_COLUMNS if c in df.columns):
        values = pd.to_numeric(df[column], errors="coerce").astype("Float64").dropna()
        finite = values[np.isfinite(values.to_numpy(dtype=float))]  # inf is left to analysis
        if ((finite < 0) | (finite > 1)).any():
            problems.append(f"column {column!r} must hold fractions in [0, 1], not percent")
    if {"sweep", "trial_id"} <= set(df.columns):
        dup = df.duplicated(subset=["sweep", "trial_id"], keep=False)
        if dup.any():
            problems.append(f"{int(dup.sum())} rows share a (sweep, trial_id) pair")
    return problems


def validate_records(df: pd.DataFrame, *, allow_extra: bool = True) -> None:
    """Raise :class:`AnalysisInputError` listing every schema problem of ``df`` (run it on the
    output of :func:`coerce_records`)."""
    problems = schema_problems(df, allow_extra=allow_extra)
    if problems:
        raise AnalysisInputError(
            "result records do not match analysis.schema: " + "; ".join(problems)
        )


def records_frame(rows: Iterable[Mapping[str, Any]]) -> pd.DataFrame:
    """Canonical, validated DataFrame from record dicts (one per trial)."""
    frame = coerce_records(pd.DataFrame.from_records(list(rows)))
    validate_records(frame)
    return frame


def write_records(
    records: pd.DataFrame | Iterable[Mapping[str, Any]],
    path: str | Path,
    objectives: Sequence[tuple[str, bool]] | None = None,
) -> Path:
    """Coerce, validate and write records to Parquet (``results.parquet``); returns the path.

    ``objectives`` (``[(column, maximize), ...]``, the columns the sweep ranked) go into the
    file's schema metadata under :data:`OBJECTIVES_KEY`; without it, a frame's
    ``attrs["objectives"]`` (as :func:`analysis.load.from_parquet` sets it) is written back.
    """
    frame = records if isinstance(records, pd.DataFrame) else pd.DataFrame.from_records(records)
    if objectives is None and isinstance(records, pd.DataFrame):
        objectives = recorded_objectives(records)
    frame = coerce_records(frame)
    validate_records(frame)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(frame, preserve_index=False)
    if objectives is not None:
        metadata = dict(table.schema.metadata or {})
        metadata[OBJECTIVES_KEY.encode()] = objectives_json(objectives).encode()
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, path)
    return path
