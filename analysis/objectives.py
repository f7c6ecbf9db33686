"""Which columns a front ranks: the sweep's recorded objectives, the aliases, and the notes.

A sweep records the objectives it ranked (:data:`OBJECTIVES_KEY`, JSON
``[{"metric": column, "mode": "max" | "min"}, ...]``) in ``results.parquet``'s schema metadata
and on its MLflow parent run; the loaders put them in ``df.attrs["objectives"]`` (same list of
dicts). Every view (``python -m analysis.report``, the sweep's own report, the notebook) ranks
those unless told otherwise, so that all of them draw the same front (docs/architecture.md §3).

Rules, so that an alias never silently switches to a column the sweep did not rank:

- no spec: the recorded objectives; an older file without them gets ``miou:max,fps:max``.
- an alias (``miou``, ``fps``, ``latency``, ``gmacs``, ``params``) resolves to the recorded
  column of its kind when there is one; otherwise to the first candidate column that every usable
  trial has, where ``miou`` takes ``retrained_miou`` only after at least
  :data:`MIN_RETRAIN_EPOCHS` retraining epochs (a shorter retrain has not converged).
- an explicit choice that differs from the recorded one is ranked, with a note saying so.
- ranking ``retrained_miou`` after fewer than :data:`MIN_RETRAIN_EPOCHS` epochs (or an unknown
  number) is flagged: "retrained mIoU after N epochs: not converged; ranked anyway ...".
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from types import MappingProxyType

import pandas as pd

from analysis.errors import AnalysisInputError

OBJECTIVES_KEY = "ssr.objectives"
DEFAULT_SPEC = "miou:max,fps:max"
MIN_RETRAIN_EPOCHS = 30

#: Alias -> (candidate columns in order of preference, default maximize).
OBJECTIVE_ALIASES: Mapping[str, tuple[tuple[str, ...], bool]] = MappingProxyType(
    {
        "miou": (("retrained_miou", "derived_miou"), True),
        "fps": (("fps_exclusive", "fps_shared"), True),
        "latency": (("latency_exclusive_ms_median", "latency_ms_median"), False),
        "gmacs": (("gmacs",), False),
        "params": (("params_m",), False),
    }
)
#: Alias -> every column of its kind (what a recorded objective of that kind may be).
KINDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "miou": ("retrained_miou", "derived_miou", "supernet_miou"),
        "fps": ("fps_exclusive", "fps_shared"),
        "latency": (
            "latency_exclusive_ms_median",
            "latency_ms_median",
            "latency_exclusive_ms_p90",
            "latency_ms_p90",
        ),
        "gmacs": ("gmacs",),
        "params": ("params_m",),
    }
)
_SHARED = ("fps_shared", "latency_ms_median", "latency_ms_p90")
#: A column re-measured exclusively after the sweep -> the column measured inside the trial
#: (device possibly shared) that a searcher is told when the trial ends in its place.
IN_TRIAL: Mapping[str, str] = MappingProxyType(
    {
        "fps_exclusive": "fps_shared",
        "latency_exclusive_ms_median": "latency_ms_median",
        "latency_exclusive_ms_p90": "latency_ms_p90",
    }
)

Objectives = list[tuple[str, bool]]


def kind_of(column: str) -> str | None:
    """The alias whose kind ``column`` is (``derived_miou`` -> ``miou``), or None."""
    return next((k for k, cols in KINDS.items() if column in cols), None)


def spec_text(objectives: Sequence[tuple[str, bool]]) -> str:
    """``[("derived_miou", True), ...]`` -> ``"derived_miou:max,..."``."""
    return ",".join(f"{c}:{'max' if m else 'min'}" for c, m in objectives)


def objectives_json(objectives: Sequence[tuple[str, bool]]) -> str:
    """The recorded form: JSON ``[{"metric": column, "mode": "max" | "min"}, ...]``."""
    return json.dumps([{"metric": c, "mode": "max" if m else "min"} for c, m in objectives])


def parse_objectives_json(text: str | bytes, where: str = OBJECTIVES_KEY) -> Objectives:
    """Recorded objectives (the JSON of :func:`objectives_json`) -> ``[(column, maximize)]``."""
    try:
        items = json.loads(text)
        pairs = [(str(i["metric"]), {"max": True, "min": False}[i["mode"]]) for i in items]
    except (TypeError, ValueError, KeyError) as exc:
        raise AnalysisInputError(
            f"{where}: expected a JSON list of {{'metric': column, 'mode': 'max'|'min'}}, got "
            f"{str(text)[:120]!r} ({type(exc).__name__})"
        ) from None
    if not pairs:
        raise AnalysisInputError(f"{where}: the recorded objective list is empty")
    return pairs


def recorded_objectives(df: pd.DataFrame) -> Objectives | None:
    """The objectives the sweep ranked, from ``df.attrs["objectives"]`` (None when not recorded)."""
    items = df.attrs.get("objectives")
    if not items:
        return None
    return parse_objectives_json(json.dumps(items), 'df.attrs["objectives"]')


def set_recorded_objectives(df: pd.DataFrame, objectives: Sequence[tuple[str, bool]]) -> None:
    """Store objectives in ``df.attrs["objectives"]`` in the recorded (JSON-like) form."""
    df.attrs["objectives"] = json.loads(objectives_json(objectives))


def _parse_spec(spec: str | Sequence[tuple[str, bool]]) -> list[tuple[str, bool | None]]:
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


def retrain_epochs_text(rows: pd.DataFrame) -> str | None:
    """``"3"`` or ``"3-5"`` when the retraining budget is below :data:`MIN_RETRAIN_EPOCHS` or
    unknown for some usable trial (``"an unknown number of"``); None when it is long enough."""
    if "retrain_epochs" not in rows.columns or rows["retrain_epochs"].isna().any():
        return "an unknown number of"
    epochs = rows["retrain_epochs"].astype("Int64")
    if len(epochs) == 0 or int(epochs.min()) >= MIN_RETRAIN_EPOCHS:
        return None
    lo, hi = int(epochs.min()), int(epochs.max())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def _pick(name: str, rows: pd.DataFrame, notes: list[str]) -> str:
    """The default column of an alias: the first candidate every usable trial has."""
    candidates = OBJECTIVE_ALIASES[name][0]
    short = retrain_epochs_text(rows) if "retrained_miou" in candidates else None
    if short is not None and rows["derived_miou"].notna().any():
        candidates = tuple(c for c in candidates if c != "retrained_miou")
        if rows["retrained_miou"].notna().any():
            notes.append(
                f"{name} -> derived_miou: retrained_miou was left aside, after {short} retrain "
                f"epochs it has not converged (ask for retrained_miou:max to rank it anyway)"
            )
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
    notes.append("; ".join(parts))
    return column


def _numeric(df: pd.DataFrame, column: str, what: str) -> None:
    if column not in df.columns:
        raise AnalysisInputError(f"{what} {column!r} is not a column of the records")
    if not pd.api.types.is_numeric_dtype(df[column].dtype) or df[column].dtype == "boolean":
        raise AnalysisInputError(f"{what} {column!r} is not numeric")


def _usable(df: pd.DataFrame) -> pd.DataFrame:
    rows = df[df["usable"].fillna(False).to_numpy(dtype=bool)] if "usable" in df.columns else df
    if len(rows) == 0:
        counts = ", ".join(f"{n} {s}" for s, n in df["status"].value_counts().items())
        raise AnalysisInputError(
            f"no usable trial among {len(df)} ({counts}): only complete trials enter the front; "
            "see the error column of the records"
        )
    return rows


def _resolve_one(
    name: str, direction: bool | None, df: pd.DataFrame, rows: pd.DataFrame,
    recorded: Objectives | None, notes: list[str],
) -> tuple[str, bool]:  # fmt: skip
    by_kind = {kind_of(c): (c, m) for c, m in recorded or []}
    if name in OBJECTIVE_ALIASES:
        if name in by_kind:
            column, maximize = by_kind[name]
            notes.append(f"{name} -> {column}, the column the sweep ranked")
        else:
            if recorded is not None:
                notes.append(f"the sweep ranked no {name} column; {name} resolves by the defaults")
            column, maximize = _pick(name, rows, notes), OBJECTIVE_ALIASES[name][1]
        return column, maximize if direction is None else direction
    if name not in df.columns:
        raise AnalysisInputError(
            f"unknown objective {name!r}: use one of {sorted(OBJECTIVE_ALIASES)} or an "
            "existing numeric column with a direction (e.g. latency_ms_p90:min)"
        )
    _numeric(df, name, "objective column")
    same = dict(recorded or []).get(name)
    if direction is None and same is None:
        raise AnalysisInputError(f"objective {name!r} needs a direction: {name}:max/min")
    kind = kind_of(name)
    if kind in by_kind and by_kind[kind][0] != name:
        notes.append(f"you chose {name}; the sweep ranked {by_kind[kind][0]} for {kind}")
    return name, same if direction is None else direction


def resolve_objectives_with_notes(
    spec: str | Sequence[tuple[str, bool]] | None, df: pd.DataFrame
) -> tuple[Objectives, list[str]]:
    """Objective spec -> ``[(column, maximize), ...]`` plus notes saying how it resolved.

    ``spec`` is ``"name[:max|min],..."``, a list of pairs, or None for the objectives recorded
    in ``df.attrs["objectives"]`` (rules in the module docstring). Any name that is not an alias
    must be a numeric column; it needs a direction unless the sweep ranked it.
    """
    rows = _usable(df)
    recorded = recorded_objectives(df)
    notes: list[str] = []
    asked = spec is not None and not (isinstance(spec, str) and not spec.strip())
    if not asked:
        if recorded is None:
            notes.append(
                f"no objectives recorded with these results (an older file): ranking {DEFAULT_SPEC}"
            )
            spec = DEFAULT_SPEC
        else:
            for column, _ in recorded:
                _numeric(df, column, "recorded objective")
            notes.append(f"objectives {spec_text(recorded)}, as the sweep recorded them")
            spec = recorded
    resolved: Objectives = []
    for name, direction in _parse_spec(spec):
        column, maximize = _resolve_one(name, direction, df, rows, recorded, notes)
        if column in (c for c, _ in resolved):
            raise AnalysisInputError(f"objective column {column!r} is given twice")
        resolved.append((column, maximize))
    if len(resolved) < 2:
        raise AnalysisInputError("give at least two objectives, e.g. --objectives miou:max,fps:max")
    if recorded is not None and resolved != recorded:
        notes.append(
            f"these objectives ({spec_text(resolved)}) differ from the ones the sweep ranked "
            f"({spec_text(recorded)}): this front is not the sweep's front"
        )
    short = retrain_epochs_text(rows) if "retrained_miou" in dict(resolved) else None
    if short is not None:
        why = "you asked" if asked else "the sweep ranked it"
        notes.append(
            f"retrained mIoU after {short} epochs: not converged; ranked anyway because {why}"
        )
    return resolved, notes


def resolve_objectives(
    spec: str | Sequence[tuple[str, bool]] | None, df: pd.DataFrame
) -> Objectives:
    """``resolve_objectives("miou:max,fps:max", df)`` -> ``[(column, maximize), ...]`` (the notes
    of :func:`resolve_objectives_with_notes` are dropped)."""
    return resolve_objectives_with_notes(spec, df)[0]
