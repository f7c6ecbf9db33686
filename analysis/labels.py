"""What every view writes next to a number: units, measurement conditions, baseline markers.

Axis titles are built from the records themselves, so a number never travels without what it
means: ``"FPS at 256x512 (cpu: <device>, 1 thread, batch 1, fp32)"`` for the exclusive
re-measurement, ``"derived mIoU (%) on synthetic"`` for accuracy. mIoU fractions are shown in
percent. Each baseline (``analysis.schema.BASELINES``) has one marker and one short tag in the
PNG, the HTML page and the tables.
"""

from __future__ import annotations

from typing import NamedTuple

import pandas as pd


class BaselineStyle(NamedTuple):
    """How a baseline is drawn: matplotlib marker, plotly symbol, tag in labels, legend text."""

    marker: str
    symbol: str
    tag: str
    legend: str


BASELINE_STYLES = {
    "ssr": BaselineStyle("o", "circle", "ssr", "SSR"),
    "darts_pruning": BaselineStyle("s", "square", "darts", "DARTS pruning (SSR weights 0)"),
    "no_shrink": BaselineStyle("^", "triangle-up", "no-shrink", "no shrinking (argmax at end)"),
}
UNKNOWN_BASELINE = BaselineStyle("P", "cross", "?", "baseline not recorded")


def baseline_style(baseline: object) -> BaselineStyle:
    """The style of a ``baseline`` value (NA or an unknown name: :data:`UNKNOWN_BASELINE`)."""
    if baseline is None or baseline is pd.NA or not isinstance(baseline, str):
        return UNKNOWN_BASELINE
    return BASELINE_STYLES.get(baseline, UNKNOWN_BASELINE)


def baseline_text(baseline: object) -> str:
    """The baseline as a table cell: its name, or ``unknown``."""
    return baseline if isinstance(baseline, str) and baseline else "unknown"


def point_label(genotype_id: object, baseline: object, tie_group: object = None) -> str:
    """A point's label in every plot: ``genotype_id [baseline tag]``, ``, tie N`` when tied."""
    gid = genotype_id if isinstance(genotype_id, str) else "?"
    tie = "" if tie_group is None or pd.isna(tie_group) else f", tie {tie_group}"
    return f"{gid} [{baseline_style(baseline).tag}]{tie}"


def is_miou(column: str) -> bool:
    """mIoU columns (and their interval bounds) hold fractions; they are displayed in percent."""
    base = column.removesuffix("_lo").removesuffix("_hi")
    return base.endswith("miou") or base in ("discretization_gap", "gap_at_discrete")


def display_scale(column: str) -> float:
    """Factor from stored units to displayed units (100 for mIoU fractions)."""
    return 100.0 if is_miou(column) else 1.0


def display_unit(column: str) -> str:
    """The unit a column is displayed in: ``%`` for mIoU, ``pts`` for the gap (percentage
    points), ``FPS``, ``ms``, ``GMACs``, ``M params``; empty when unitless or unknown."""
    if column in ("discretization_gap", "gap_at_discrete"):
        return "pts"
    if is_miou(column):
        return "%"
    units = {"fps": "FPS", "latency": "ms", "gmacs": "GMACs", "params_m": "M params"}
    return next((u for prefix, u in units.items() if column.startswith(prefix)), "")


def axis_label(column: str, maximize: bool | None = None) -> str:
    """Short column title with its display unit and direction, e.g. ``"retrained_miou (%) ↑"``."""
    gap = column in ("discretization_gap", "gap_at_discrete")
    unit = " (pts)" if gap else " (%)" if is_miou(column) else ""
    return f"{column}{unit}{_arrow(maximize)}"


def _arrow(maximize: bool | None) -> str:
    return "" if maximize is None else (" ↑" if maximize else " ↓")


def _values(pool: pd.DataFrame, column: str) -> str | None:
    """The distinct values of ``column`` among ``pool``, joined by ``/`` (None when none)."""
    if column not in pool.columns:
        return None
    values = []
    for v in pool[column].dropna():
        text = str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)
        if text not in values:
            values.append(text)
    return "/".join(sorted(values)) or None


def _threads(text: str | None) -> str | None:
    if text is None:
        return None
    if text == "0":
        return "default threads"
    return f"{text} thread" if text == "1" else f"{text} threads"


def measurement_text(pool: pd.DataFrame, exclusive: bool) -> str:
    """``"256x512 (cpu: <device>, 1 thread, batch 1, fp32)"``: the input size and conditions of
    the exclusive re-measurement (``exclusive=True``) or of the in-trial one."""
    device = _values(pool, "device")
    threads = _values(pool, "threads")
    if exclusive:
        named = _values(pool, "exclusive_device")
        if named is not None:
            device = named if device is None or named.startswith(device) else f"{device}: {named}"
        threads = _values(pool, "exclusive_threads") or threads
    batch = _values(pool, "batch")
    parts = [device, _threads(threads), batch and f"batch {batch}", _values(pool, "precision")]
    if exclusive:
        parts.append(_values(pool, "exclusive_backend"))
    if not exclusive:
        parts.append("inside trials, device possibly shared")
    size = _values(pool, "input_size")
    conditions = ", ".join(p for p in parts if p)
    return " ".join(p for p in (size, conditions and f"({conditions})") if p)


def axis_title(pool: pd.DataFrame, column: str, maximize: bool | None = None) -> str:
    """A full axis title for ``column`` built from the records in ``pool`` (the points drawn)."""
    arrow = _arrow(maximize)
    if column in ("derived_miou", "retrained_miou", "supernet_miou"):
        kind = column.removesuffix("_miou")
        dataset = _values(pool, "dataset")
        title = f"{kind} mIoU (%)" + (f" on {dataset}" if dataset else "")
        epochs = _values(pool, "retrain_epochs") if kind == "retrained" else None
        return title + (f" after {epochs} retrain epochs" if epochs else "") + arrow
    speed = {"fps": ("FPS", ""), "latency": ("latency", " (ms)")}
    for prefix, (name, unit) in speed.items():
        if column.startswith(prefix):
            stat = " p90" if column.endswith("p90") else " median" if prefix == "latency" else ""
            where = measurement_text(pool, "exclusive" in column)
            return f"{name}{stat}{unit} at {where}{arrow}" if where else f"{column}{arrow}"
    named = {"gmacs": "conv GMACs", "params_m": "params (M)"}
    if column in named:
        return named[column] + arrow
    return axis_label(column, maximize)
