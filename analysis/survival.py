"""Survivorship: how many trials of each baseline started, were stopped at each rung, failed,
completed and reached the front.

A front only holds complete trials, so a baseline can be missing from it because the scheduler
(ASHA or MO-ASHA, docs/architecture.md §4) stopped its trials at a rung, not because their end
results were worse. MO-ASHA ranks validation mIoU against the supernet's *expected* GMACs at each
rung; a baseline that shrinks late (or never, ``no_shrink``) looks costly there and is stopped
more often. The report says so whenever early stopping, rather than the end result, kept a
baseline off the front (or thinned it).

The rung of an early-stopped trial is read from its record's ``error`` text ("stopped early by
the scheduler after N reports": one report per epoch, so N is the epoch of the rung).
"""

from __future__ import annotations

import re

import pandas as pd

from analysis.labels import baseline_text
from analysis.schema import BASELINES

_AFTER = re.compile(r"after (\d+) report")


def stop_epoch(error: object) -> str:
    """The epoch at which the scheduler stopped a trial, from its error text (``"?"`` if unsaid)."""
    match = _AFTER.search(error) if isinstance(error, str) else None
    return match.group(1) if match else "?"


def survivorship(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per baseline: started, stopped at epoch N (one column per rung seen), failed,
    complete, on front; a last row ``all``."""
    status = trials["status"].astype(object)
    stopped = trials[status == "early_stopped"]
    rungs = sorted({stop_epoch(e) for e in stopped["error"]}, key=lambda r: (r == "?", r.zfill(6)))
    names = trials["baseline"].astype(object).map(baseline_text)
    order = sorted(
        set(names),
        key=lambda b: (b not in BASELINES, BASELINES.index(b) if b in BASELINES else 0, b),
    )
    rows = []
    for base in [*order, "all"]:
        pick = (names == base) if base != "all" else pd.Series(True, index=trials.index)
        part = trials[pick.to_numpy()]
        part_status = part["status"].astype(object)
        row = {"baseline": base, "started": len(part)}
        epochs = part.loc[part_status == "early_stopped", "error"].map(stop_epoch)
        for rung in rungs:
            row[f"stopped at epoch {rung}"] = int((epochs == rung).sum())
        row["failed"] = int((part_status == "failed").sum())
        row["complete"] = int((part_status == "complete").sum())
        row["on front"] = int(part["on_front"].fillna(False).astype(bool).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def survivorship_findings(table: pd.DataFrame) -> list[str]:
    """Where early stopping, not the end result, kept a baseline off the front or thinned it."""
    stop_cols = [c for c in table.columns if c.startswith("stopped at")]
    per = table[table["baseline"] != "all"].assign(stopped=lambda t: t[stop_cols].sum(axis=1))
    if len(per) == 0 or not per["stopped"].any():
        return ["No trial was stopped early: every baseline's trials ran their whole budget."]
    overall = per["stopped"].sum() / max(per["started"].sum(), 1)
    out = []
    for _, row in per[per["stopped"] > 0].iterrows():
        base, stopped = row["baseline"], f"{row['stopped']} of {row['started']}"
        if row["complete"] == 0:
            out.append(
                f"`{base}` has no complete trial: the scheduler stopped {stopped}"
                + (f" ({row['failed']} failed)" if row["failed"] else "")
                + ". It is off the front because of early stopping, not because of an end "
                "result: nothing is known about where its trials would have ended."
            )
        elif row["on front"] == 0:
            out.append(
                f"`{base}` is off the front on its end results (its {row['complete']} complete "
                f"trial(s) are dominated), and the scheduler stopped {stopped} of its trials "
                f"before the end (all baselines: {overall:.0%}): the front compares only the "
                "survivors."
            )
        elif row["stopped"] / row["started"] > overall + 0.15:
            out.append(
                f"`{base}`: the scheduler stopped {stopped} trials (all baselines: {overall:.0%}); "
                "its front count reflects fewer survivors, not only worse results."
            )
    return out or [
        "Early stopping hit every baseline about equally; no baseline is off the front because "
        "of it."
    ]
