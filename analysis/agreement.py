"""One truth, every view: does Optuna's Pareto set equal the report's front, and if not, why.

Optuna is told a trial's objectives when the trial ends (:mod:`sweeps.schedule.searchers`); a speed
measured inside a trial shares the device with the other running trials (``fps_shared``). The
report's front ranks the exclusive re-measurement taken after the sweep, one network at a time
(``fps_exclusive``), and Optuna cannot be re-told a finished trial's values. So the two sets are
computed side by side from the same records: the **searcher's front** on the objectives Optuna
was told (:data:`TOLD`), the **report's front** on the recorded ones. When the run folder holds
the study (``optuna.db``), its ``best_trials`` are read too and checked against the searcher's
front, and the study's user attributes receive both sets and the statement of their difference
(:data:`STUDY_ATTRS`), so optuna-dashboard says what the report says. How well the told speed
ranks like the final one is given as Spearman's rank correlation over the complete trials.

The MLflow registry's aliases (knee, most-accurate, fastest) are chosen from the report's front
(``sweeps/tracking/registry.py``), so they agree with it by construction.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.front import FrontAnalysis, finite
from analysis.objectives import IN_TRIAL
from analysis.pareto import pareto_mask

#: Final (after-sweep) column -> the column Optuna was told when the trial ended.
TOLD = IN_TRIAL
#: Study user attributes written by :func:`record_in_study`.
STUDY_ATTRS = (
    "ssr.front_objectives",
    "ssr.front_trials",
    "ssr.optuna_front_trials",
    "ssr.front_vs_optuna",
)
STUDY_FILE = "optuna.db"


@dataclass(frozen=True)
class Agreement:
    """The report's front against the searcher's, and what the study said."""

    told: list[tuple[str, bool]]  # the objectives Optuna was told
    report_front: list[str]  # trial ids
    searcher_front: list[str]  # trial ids, computed from the records on ``told``
    study_front: list[str] | None  # trial ids of the study's best_trials (None: no study read)
    rank_agreement: dict[str, float]  # final column -> Spearman r against its told column
    statement: str  # the sentence the report and the study carry
    notes: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return set(self.report_front) == set(self.searcher_front)


def told_objectives(objectives: Sequence[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The objectives Optuna is told at trial end for a front ranked on ``objectives``."""
    return [(TOLD.get(c, c), m) for c, m in objectives]


def _ids(frame: pd.DataFrame) -> list[str]:
    return [str(t) for t in frame["trial_id"]]


def searcher_front(analysis: FrontAnalysis, told: Sequence[tuple[str, bool]]) -> list[str]:
    """Trial ids on the Pareto front of the complete trials ranked on ``told``."""
    trials = analysis.trials
    complete = (trials["status"].astype(object) == "complete").to_numpy()
    if any(c not in trials.columns for c, _ in told):
        return []
    ok = complete & np.all([finite(trials[c]).to_numpy() for c, _ in told], axis=0)
    pool = trials[ok]
    values = pool[[c for c, _ in told]].to_numpy(dtype=float, na_value=np.nan)
    return _ids(pool[pareto_mask(values, [m for _, m in told])]) if len(pool) else []


def rank_agreement(analysis: FrontAnalysis) -> dict[str, float]:
    """Spearman r between each final objective and the column Optuna was told instead."""
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()]
    out = {}
    for column, _ in analysis.objectives:
        other = TOLD.get(column)
        if other is None or other not in pool.columns or len(pool) < 3:
            continue
        pair = pool[[column, other]].astype(float).dropna()
        if len(pair) >= 3:
            out[column] = float(pair[column].rank().corr(pair[other].rank()))
    return out


def _why(analysis: FrontAnalysis, only_report: list[str], only_searcher: list[str]) -> str:
    changed = [(c, TOLD[c]) for c, _ in analysis.objectives if c in TOLD]
    trials = analysis.trials.set_index(analysis.trials["trial_id"].astype(str))
    parts = []
    for tid in [*only_report, *only_searcher]:
        row = trials.loc[tid]
        values = ", ".join(f"{t} {row[t]:.4g} vs {c} {row[c]:.4g}" for c, t in changed
                           if pd.notna(row[c]) and pd.notna(row[t]))  # fmt: skip
        where = "only on the report's front" if tid in only_report else "only on Optuna's"
        parts.append(f"{tid} ({where}: {values})" if values else f"{tid} ({where})")
    return "; ".join(parts)


def compare_fronts(analysis: FrontAnalysis, study_front: list[str] | None = None) -> Agreement:
    """The report's front against the front Optuna sees (and the study's, when read)."""
    told = told_objectives(analysis.objectives)
    report, searcher = _ids(analysis.front), searcher_front(analysis, told)
    ranks = rank_agreement(analysis)
    trials = analysis.trials
    missing = [c for c, _ in told if c not in trials.columns or trials[c].isna().all()]
    if missing and study_front is None:
        statement = (
            f"Optuna's Pareto set cannot be recomputed: the records lack {', '.join(missing)} "
            "(what Optuna was told) and no study was found next to the results."
        )
        return Agreement(told, report, [], None, ranks, statement)
    if missing:
        searcher = list(study_front)
    if set(report) == set(searcher):
        statement = (
            f"Optuna's Pareto set equals the report's front ({len(report)} trials)"
            + (
                f", although Optuna ranks {_told_text(analysis)}"
                if told != analysis.objectives
                else ""
            )
            + "."
        )
    else:
        only_r = [t for t in report if t not in searcher]
        only_s = [t for t in searcher if t not in report]
        rho = ", ".join(f"Spearman r {TOLD[c]} vs {c} = {r:.2f}" for c, r in ranks.items())
        statement = (
            f"Optuna's Pareto set differs from the report's front: Optuna ranks "
            f"{_told_text(analysis)} (known when a trial ends, Optuna cannot be re-told a "
            f"finished trial); the report ranks the re-measurement. {_why(analysis, only_r, only_s)}."
            + (f" Over the complete trials: {rho}." if rho else "")
        )
    notes = []
    if study_front is not None and set(study_front) != set(searcher):
        notes.append(
            "the study's best_trials (" + ", ".join(sorted(study_front)) + ") differ from the "
            "front of the values recorded for them (" + ", ".join(sorted(searcher)) + "): "
            "the study and results.parquet disagree about some trial's status or values"
        )
    return Agreement(told, report, searcher, study_front, ranks, statement, notes)


def _told_text(analysis: FrontAnalysis) -> str:
    pairs = [(c, TOLD[c]) for c, _ in analysis.objectives if c in TOLD]
    return (
        ", ".join(f"{t} measured inside the trial instead of {c}" for c, t in pairs) or "the same"
    )


def find_study(source: str | Path | None) -> tuple[str, str] | None:
    """``(storage URL, study name)`` of the run folder holding ``source`` (a results file or the
    run folder), when it has an ``optuna.db``; the study is named like the folder."""
    if source is None:
        return None
    folder = Path(source)
    folder = folder if folder.is_dir() else folder.parent
    path = folder / STUDY_FILE
    return (f"sqlite:///{path.resolve()}", folder.name) if path.is_file() else None


def study_best(url: str, name: str) -> tuple[list[str] | None, str | None]:
    """Trial ids (user attribute ``trial_id``) of the study's best trials; (None, why) if the
    study cannot be read. Imports optuna only here."""
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        study = optuna.load_study(study_name=name, storage=url)
        best = study.best_trials
    except Exception as exc:  # no optuna, no such study, a damaged file: the report goes on
        return None, f"the Optuna study {name!r} in {url} could not be read ({type(exc).__name__})"
    return [str(t.user_attrs.get("trial_id", f"#{t.number}")) for t in best], None


def record_in_study(url: str, name: str, analysis: FrontAnalysis, agreement: Agreement) -> None:
    """Write the report's front, Optuna's and the statement into the study's user attributes."""
    import optuna

    study = optuna.load_study(study_name=name, storage=url)
    values = {
        "ssr.front_objectives": json.dumps(
            [{"metric": c, "mode": "max" if m else "min"} for c, m in analysis.objectives]
        ),
        "ssr.front_trials": sorted(agreement.report_front),
        "ssr.optuna_front_trials": sorted(agreement.study_front or agreement.searcher_front),
        "ssr.front_vs_optuna": agreement.statement,
    }
    for key, value in values.items():
        study.set_user_attr(key, value)


def agreement_for(
    analysis: FrontAnalysis, source: str | Path | None, record: bool = True
) -> Agreement:
    """:func:`compare_fronts` with the study of ``source``'s run folder when there is one (its
    user attributes are then updated unless ``record`` is False, see :func:`record_in_study`)."""
    found = find_study(source)
    if found is None:
        return compare_fronts(analysis)
    best, problem = study_best(*found)
    agreement = compare_fronts(analysis, best)
    if problem:
        return Agreement(**{**agreement.__dict__, "notes": [*agreement.notes, problem]})
    if not record:
        return agreement
    try:
        record_in_study(*found, analysis, agreement)
    except Exception as exc:  # a read-only copy of a run folder: the report still says it
        agreement.notes.append(f"the study's attributes were not updated ({type(exc).__name__})")
    return agreement


def agreement_lines(agreement: Agreement) -> list[str]:
    """The report's section on the views: fronts side by side, the statement, the notes."""
    told = ", ".join(f"{c} ({'max' if m else 'min'})" for c, m in agreement.told)
    study = (
        "read from the study (best_trials)"
        if agreement.study_front is not None
        else "computed from the records (no study next to the results)"
    )
    out = [
        "## One front in every view",
        "",
        f"- Report's front (pareto.csv, pareto.png, pareto.html, the MLflow registry's aliases "
        f"knee/most-accurate/fastest): {', '.join(sorted(agreement.report_front)) or 'none'}",
        f"- Optuna's Pareto set, objectives told at trial end {told}; {study}: "
        f"{', '.join(sorted(agreement.study_front or agreement.searcher_front)) or 'none'}",
        "",
        agreement.statement,
    ]
    return out + [f"- note: {n}" for n in agreement.notes]
