"""The sweep's TPE: Optuna's multivariate TPE with the per-trial work on finished trials done once.

Per suggestion, Optuna's TPE (``optuna/samplers/_tpe/sampler.py``, Optuna 5.0) walks every
finished trial of the study in Python, twice over: it sorts each into complete, pruned or
infeasible (reading the trial's constraints from its system attributes, and a pruned trial's
last intermediate value) and converts each parameter to its internal representation for the
Parzen estimators. At 3,000 trials these walks were about three fifths of the sampler's CPU
(cProfile of ``benchmarks/optuna_samplers.py``), and they make each suggestion O(trials). A
finished trial never changes, so :class:`FinishedOnceTPESampler` keeps, per finished trial, its
kind, its pruned score and its internal row, and builds the split and the arrays from them. The
estimators, the sampling and the acquisition are Optuna's own.

This subclass overrides two private methods of Optuna's sampler (``_sample``, whose body it
follows line for line, and ``_get_internal_repr``) and calls its private split helpers, so it is
tied to the pinned Optuna: ``tests/sweeps/test_optuna_storage.py`` checks that its suggestions
equal Optuna's seed for seed (one and two objectives, pruned and running trials, every
distribution kind) and fails when Optuna changes them. Optuna 5's TPE is a constant liar by
default (running trials count in the above group); their kinds and rows are never kept.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import optuna
from optuna.samplers._tpe import sampler as tpe_impl
from optuna.trial import FrozenTrial, TrialState


class FinishedOnceTPESampler(optuna.samplers.TPESampler):
    """Optuna's TPE with each finished trial's kind, pruned score and internal row kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rows: dict[tuple, dict[int, tuple]] = {}
        self._kinds: dict[int, tuple[str, Any]] = {}

    def _kind(self, trial: FrozenTrial, study: optuna.Study) -> tuple[str, Any]:
        """``("infeasible"|"complete"|"pruned", sort key)`` of a finished trial, kept."""
        kept = self._kinds.get(trial._trial_id)
        if kept is None:
            score = tpe_impl._get_infeasible_trial_score(trial)
            if score > 0:
                kept = ("infeasible", score)
            elif trial.state == TrialState.COMPLETE:
                kept = ("complete", None)
            else:
                kept = ("pruned", tpe_impl._get_pruned_trial_score(trial, study))
            self._kinds[trial._trial_id] = kept
        return kept

    def _split(
        self, study: optuna.Study, trials: list[FrozenTrial], n_below: int
    ) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
        """``tpe_impl._split_trials``, with the finished trials' kinds and scores kept."""
        groups: dict[str, list[FrozenTrial]] = {"complete": [], "pruned": [], "infeasible": []}
        running, keys = [], {}
        for trial in trials:
            if trial.state == TrialState.RUNNING:  # NOTE: before the kind: no constraints yet
                running.append(trial)
                continue
            kind, key = self._kind(trial, study)
            groups[kind].append(trial)
            keys[trial._trial_id] = key
        below_c, above_c = tpe_impl._split_complete_trials(groups["complete"], study, n_below)
        n_below = max(0, n_below - len(below_c))
        pruned = sorted(groups["pruned"], key=lambda t: keys[t._trial_id])
        n_pruned = min(n_below, len(pruned))
        n_below = max(0, n_below - n_pruned)
        infeasible = sorted(groups["infeasible"], key=lambda t: keys[t._trial_id])
        n_inf = min(n_below, len(infeasible))
        below = below_c + pruned[:n_pruned] + infeasible[:n_inf]
        above = above_c + pruned[n_pruned:] + infeasible[n_inf:] + running
        below.sort(key=lambda trial: trial.number)
        above.sort(key=lambda trial: trial.number)
        return below, above

    def _sample(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
    ) -> dict[str, Any]:
        liar = self._constant_liar  # NOTE: on by default in Optuna 5: running trials count above
        states = (TrialState.COMPLETE, TrialState.PRUNED, *((TrialState.RUNNING,) if liar else ()))
        trials = study._get_trials(deepcopy=False, states=states, use_cache=not liar)
        if liar:
            trials = [t for t in trials if trial.number != t.number]
        if self._gamma is None:
            multi = len(study.directions) > 1
            self._gamma = tpe_impl.default_gamma_multiobjective if multi else tpe_impl.default_gamma
        n = sum(t.state != TrialState.RUNNING for t in trials)
        below, above = self._split(study, trials, self._gamma(n))
        mpe_below = self._build_parzen_estimator(study, search_space, below, handle_below=True)
        mpe_above = self._build_parzen_estimator(study, search_space, above, handle_below=False)
        samples_below = mpe_below.sample(self._rng.rng, self._n_ei_candidates)
        acq_func_vals = self._compute_acquisition_func(samples_below, mpe_below, mpe_above)
        ret = optuna.samplers.TPESampler._compare(samples_below, acq_func_vals)
        for param_name, dist in search_space.items():
            ret[param_name] = dist.to_external_repr(ret[param_name])
        return ret

    def _get_internal_repr(
        self, trials: list[FrozenTrial], search_space: dict[str, Any], study: optuna.Study
    ) -> dict[str, np.ndarray]:
        space = tuple(search_space.items())
        rows = self._rows.setdefault(space, {})
        kept = []
        for trial in trials:
            row = rows.get(trial._trial_id)
            if row is None:
                params = self._get_params(trial, study)
                row = ()
                if search_space.keys() <= params.keys():
                    row = tuple(d.to_internal_repr(params[name]) for name, d in space)
                if trial.state.is_finished():
                    rows[trial._trial_id] = row
            if row:
                kept.append(row)
        columns = list(zip(*kept)) if kept else [()] * len(space)
        return {name: np.asarray(col) for (name, _), col in zip(space, columns)}

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with the searcher at every experiment snapshot: the kept rows are not
        return {**super().__getstate__(), "_rows": {}, "_kinds": {}}


def tpe_sampler(seed: int) -> optuna.samplers.TPESampler:
    """Optuna's TPE, multivariate: one joint Parzen estimator over the sampled parameters
    (:class:`FinishedOnceTPESampler`).

    Independent TPE (Optuna's default) reads the study and splits its trials once per
    parameter, so a suggestion costs O(parameters x trials); multivariate TPE does both once per
    suggestion, and models the parameters' interactions, which the SSR weights have (a larger
    op weight wants a lower learning rate). The Optuna team benchmarks multi-objective TPE in
    this form up to 10,000 trials ("Significant speed-up of multi-objective TPESampler in Optuna
    v4.0.0"); measured here per trial: ``benchmarks/optuna_samplers.py`` (BENCHMARKS.md).
    """
    with warnings.catch_warnings():  # NOTE: "experimental" since Optuna 2.2, still flagged
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return FinishedOnceTPESampler(seed=seed, multivariate=True)
