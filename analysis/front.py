"""Compute everything a report shows, before anything is drawn or written.

:func:`analyze_front` turns canonical records (:mod:`analysis.load`) and resolved objectives into
a :class:`FrontAnalysis`: which trials are excluded and why, the Pareto front over the usable
ones, its hypervolume with the reference point, the hypervolume over the sweep, the knee, how
many trials found each genotype; on first use, what each setting bought and the survivorship
per baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd

from analysis.effects import SettingEffects, setting_effects
from analysis.errors import AnalysisInputError
from analysis.noise import tie_groups
from analysis.pareto import (
    default_reference,
    hypervolume,
    hypervolume_history,
    knee_index,
    pareto_mask,
)
from analysis.schema import RESULT_COLUMNS
from analysis.survival import survivorship

REFERENCE_MARGIN = 0.1


@dataclass(frozen=True)
class FrontAnalysis:
    """The computed content of a report (plots and tables only render it)."""

    objectives: list[tuple[str, bool]]  # (column, maximize), in the order given
    trials: pd.DataFrame  # every record + usable, excluded_reason, on_front, is_knee, tie_group
    front: pd.DataFrame  # the non-dominated usable trials, best first by the first objective
    reference: tuple[float, ...]  # hypervolume reference point, one value per objective
    reference_rule: str  # how the reference point was chosen
    hypervolume: float
    history: pd.DataFrame  # step, completion_order, trial_id, genotype_id, hypervolume
    knee: pd.Series | None  # the knee trial's row (2 objectives and >= 3 front points)
    genotypes: pd.DataFrame  # genotype_id, trials, usable, on_front, trial_ids
    excluded: pd.DataFrame  # trial_id, genotype_id, status, reason
    dataset: str | None = None
    notes: list[str] = field(default_factory=list)

    @cached_property
    def effects(self) -> SettingEffects:
        """What each swept setting bought (:mod:`analysis.effects`), computed on first use."""
        return setting_effects(self.trials, self.objectives)

    @cached_property
    def survival(self) -> pd.DataFrame:
        """Trials started, stopped at each rung, failed, complete and on the front, per baseline
        (:mod:`analysis.survival`)."""
        return survivorship(self.trials)


def result_columns(trials: pd.DataFrame) -> list[str]:
    """The measured result columns present (:data:`analysis.schema.RESULT_COLUMNS` and
    ``gap_at_<epoch>``): a non-finite value in any of them marks a broken record."""
    fixed = [c for c in RESULT_COLUMNS if c in trials.columns]
    return fixed + [c for c in trials.columns if str(c).startswith("gap_at_") and c not in fixed]


def excluded_reasons(
    trials: pd.DataFrame, columns: Sequence[str], results: Sequence[str] = ()
) -> pd.Series:
    """Why each trial stays off the front (NA when it competes): early-stopped (stopped at a lower
    rung by the scheduler: low-fidelity values), failed (first line of its error), a missing or
    non-finite objective value (never drawn, never ranked), or a non-finite value in another of
    the ``results`` columns (a record that is broken: nothing non-finite reaches a front; a
    missing value there is fine, e.g. no retraining)."""
    status = trials["status"]
    others = [c for c in results if c not in columns]
    missing = trials[list(columns)].isna().to_numpy()
    values = trials[[*columns, *others]].to_numpy(dtype=float, na_value=np.nan)
    present = ~trials[[*columns, *others]].isna().to_numpy()
    infinite = present & ~np.isfinite(values)  # inf, or a NaN that is not NA
    names = np.asarray([*columns, *others], dtype=object)
    missing = np.concatenate([missing, np.zeros((len(trials), len(others)), bool)], axis=1)
    reason = [
        "; ".join(
            [f"missing {', '.join(names[m])}"] * bool(m.any())
            + [f"non-finite {', '.join(names[f])}"] * bool(f.any())
        )
        or None
        for m, f in zip(missing, infinite)
    ]
    out = pd.Series(reason, index=trials.index, dtype="string")
    error = trials["error"].str.strip().str.split("\n").str[0].str.slice(0, 200)
    error = error.mask(error == "")
    failed = "failed: " + error.fillna("(no error recorded)")
    out = out.mask(status == "failed", failed.str.replace(": (", " (", regex=False))
    stopped = "early_stopped: stopped by the scheduler, its values are low-fidelity"
    return out.mask(status == "early_stopped", stopped).astype("string")


def finite(series: pd.Series) -> pd.Series:
    """True where a numeric value is present and finite (NA, NaN and inf are never drawn)."""
    values = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    return pd.Series(np.isfinite(values), index=series.index)


def _genotype_table(trials: pd.DataFrame) -> pd.DataFrame:
    rows = trials[trials["genotype_id"].notna()]
    grouped = rows.groupby("genotype_id", sort=False)
    table = pd.DataFrame(
        {
            "trials": grouped.size(),
            "usable": grouped["usable"].sum().astype("Int64"),
            "on_front": grouped["on_front"].any(),
            "trial_ids": grouped["trial_id"].agg(lambda s: ", ".join(map(str, s))),
        }
    ).reset_index()
    return table.sort_values(["trials", "genotype_id"], ascending=[False, True], kind="stable")


def _reference(
    values: np.ndarray, maximize: list[bool], reference: Sequence[float] | None, names: list[str]
) -> tuple[np.ndarray, str]:
    if reference is None:
        finite = values[np.all(np.isfinite(values), axis=1)]
        rule = (
            "default: the worst usable value of each objective, moved "
            f"{REFERENCE_MARGIN:.0%} of its range further"
        )
        return default_reference(finite, maximize, REFERENCE_MARGIN), rule
    ref = np.asarray(reference, dtype=float)
    if ref.shape != (len(names),) or not np.all(np.isfinite(ref)):
        raise AnalysisInputError(
            f"the reference point needs {len(names)} finite numbers, one per objective "
            f"({', '.join(names)}), got {list(reference)}"
        )
    return ref, "given"


def _history(
    trials: pd.DataFrame, values: np.ndarray, maximize: list[bool], ref: np.ndarray
) -> pd.DataFrame:
    """Hypervolume after each finished trial (failed ones included: they add nothing)."""
    order = trials["completion_order"].to_numpy(dtype=float, na_value=np.nan)
    rank = np.argsort(order, kind="stable")
    return pd.DataFrame(
        {
            "step": np.arange(1, len(rank) + 1),
            "completion_order": trials["completion_order"].to_numpy()[rank],
            "trial_id": trials["trial_id"].to_numpy()[rank],
            "genotype_id": trials["genotype_id"].to_numpy()[rank],
            "hypervolume": hypervolume_history(values, maximize, ref, order),
        }
    )


def analyze_front(
    df: pd.DataFrame,
    objectives: list[tuple[str, bool]],
    reference: Sequence[float] | None = None,
    notes: Sequence[str] = (),
) -> FrontAnalysis:
    """Front, hypervolume, history, knee and genotype counts of canonical records
    (the output of :mod:`analysis.load`, with its ``usable`` column).

    Only usable rows (``status == "complete"``) with every objective present compete. The
    reference point defaults to :func:`analysis.pareto.default_reference` over those rows.
    """
    columns = [c for c, _ in objectives]
    maximize = [m for _, m in objectives]
    trials = df.copy()
    trials["excluded_reason"] = excluded_reasons(trials, columns, result_columns(trials))
    candidate = trials["excluded_reason"].isna().to_numpy()
    if not candidate.any():
        reasons = trials["excluded_reason"].str.split(":").str[0].value_counts()
        raise AnalysisInputError(
            f"no usable trial among {len(trials)} ("
            + ", ".join(f"{n} {r}" for r, n in reasons.items())
            + "): only complete trials with every objective enter the front"
        )
    values = trials[columns].to_numpy(dtype=float, na_value=np.nan)
    values[~candidate] = np.nan
    ref, rule = _reference(values, maximize, reference, columns)
    notes = list(notes)
    on_front = pareto_mask(values, maximize)
    signs = np.where(maximize, -1.0, 1.0)
    outside = on_front & ~np.all(values * signs < ref * signs, axis=1)
    if outside.any():
        notes.append(
            f"{int(outside.sum())} front point(s) are not strictly better than the reference "
            "point in every objective and add nothing to the hypervolume"
        )
    if trials["completion_order"].isna().any():
        notes.append("some trials have no completion_order; the history puts them last")
    trials["on_front"] = pd.array(on_front, dtype="boolean")
    trials["is_knee"] = pd.array(np.zeros(len(trials), dtype=bool), dtype="boolean")
    knee = knee_index(values, maximize) if len(columns) == 2 else None
    if len(columns) != 2:
        notes.append("no knee: the max-distance knee is defined for two objectives")
    if knee is not None:
        trials.loc[trials.index[knee], "is_knee"] = True
    front = trials[on_front].sort_values(columns[0], ascending=not maximize[0], kind="stable")
    front = front.assign(tie_group=tie_groups(front, columns))
    trials["tie_group"] = front["tie_group"].reindex(trials.index).astype("Int64")
    if knee is not None and pd.notna(trials["tie_group"].iloc[knee]):
        notes.append(
            f"the knee ({trials['trial_id'].iloc[knee]}) is statistically tied with other front "
            f"points (tie group {trials['tie_group'].iloc[knee]}): any of them is as good a knee"
        )
    datasets = trials["dataset"].dropna().unique()
    return FrontAnalysis(
        objectives=list(objectives),
        trials=trials,
        front=front,
        reference=tuple(float(r) for r in ref),
        reference_rule=rule,
        hypervolume=hypervolume(values, maximize, ref),
        history=_history(trials, values, maximize, ref),
        knee=None if knee is None else trials.iloc[knee],
        genotypes=_genotype_table(trials),
        excluded=trials.loc[
            ~candidate, ["trial_id", "genotype_id", "status", "excluded_reason"]
        ].rename(columns={"excluded_reason": "reason"}),
        dataset=str(datasets[0]) if len(datasets) == 1 else None,
        notes=notes,
    )
