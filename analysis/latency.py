"""report.md's latency section: where searches with a latency term landed (docs/method.md §4.4).

For a sweep whose searches had a latency table, each complete trial's target latency, the
expected latency its search ended at (the last epoch), the table's prediction for its derived
network and the latency measured (alone after the sweep when re-measured, else inside the
trial), with the prediction's error against the measurement and the measurement's distance from
the target. Nothing when no trial has a table.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

#: The record's latency-term columns (sweeps.contract.protocol.NUMERIC_FIELDS).
LATENCY_COLUMNS = ("latency_target_ms", "expected_latency_ms", "predicted_latency_ms")


def _num(v: Any) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def _ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:.2f}"


def _pct(v: float) -> str:
    return "-" if math.isnan(v) else f"{v:+.1f} %"


def latency_rows(trials: pd.DataFrame) -> list[dict[str, Any]]:
    """One dict per complete trial with a prediction: target, expected, predicted, measured."""
    if "predicted_latency_ms" not in trials.columns:
        return []
    usable = trials["usable"] if "usable" in trials.columns else pd.Series(True, trials.index)
    rows = []
    for _, r in trials[usable.fillna(False).astype(bool)].iterrows():
        predicted = _num(r.get("predicted_latency_ms"))
        if math.isnan(predicted):
            continue
        exclusive = _num(r.get("latency_exclusive_ms_median"))
        measured = exclusive if not math.isnan(exclusive) else _num(r.get("latency_ms_median"))
        target = _num(r.get("latency_target_ms"))
        rows.append({
            "trial_id": str(r.get("trial_id")), "genotype_id": str(r.get("genotype_id")),
            "target": target, "expected": _num(r.get("expected_latency_ms")),
            "predicted": predicted, "measured": measured,
            "alone": not math.isnan(exclusive),
            "error_pct": 100 * (predicted / measured - 1) if measured > 0 else math.nan,
            "off_target_pct": 100 * (measured / target - 1) if target > 0 else math.nan,
        })  # fmt: skip
    return rows


def latency_lines(trials: pd.DataFrame) -> list[str]:
    """The markdown section (empty list when no trial has a latency table)."""
    rows = latency_rows(trials)
    if not rows:
        return []
    head = "| trial | genotype | target ms | expected ms | predicted ms | measured ms | "
    head += "prediction error | measured vs target |"
    lines = [
        "## Latency: target, expected, predicted, measured",
        "",
        "Searches with a latency table (docs/method.md §4.4): the target, the expected latency "
        "the search ended at, the table's prediction for the derived network and its measured "
        "latency (alone after the sweep where re-measured, marked *, else inside the trial).",
        "",
        head,
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: (r["target"], r["trial_id"])):
        star = "*" if r["alone"] else ""
        lines.append(
            f"| {r['trial_id']} | {r['genotype_id']} | {_ms(r['target'])} | {_ms(r['expected'])} "
            f"| {_ms(r['predicted'])} | {_ms(r['measured'])}{star} | {_pct(r['error_pct'])} | "
            f"{_pct(r['off_target_pct'])} |"
        )
    errs = [abs(r["error_pct"]) for r in rows if not math.isnan(r["error_pct"])]
    off = [abs(r["off_target_pct"]) for r in rows if not math.isnan(r["off_target_pct"])]
    lines.append("")
    if errs:
        within = sum(e <= 10 for e in errs)
        lines.append(f"Predictions within +-10 % of the measurement: {within} of {len(errs)}.")
    if off:
        landed = sum(e <= 10 for e in off)
        lines.append(f"Measured latency within +-10 % of the target: {landed} of {len(off)}.")
    return lines
