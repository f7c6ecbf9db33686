"""Optuna under Ray Tune, told only final records (docs/stack.md §2).

Ray's ``OptunaSearch`` tells Optuna a trial stopped early by a Tune scheduler as COMPLETE with
its last (low-fidelity) values, so ASHA-stopped trials would enter Optuna's Pareto front and
steer the sampler. Here a trial counts as COMPLETE only when its last report carries the final
record (``final_record == 1``); an early-stopped trial is told as PRUNED, an errored one (or one
whose objectives are missing or NaN) as FAIL. Intermediate reports never reach Optuna (its
pruners do not run under Tune, and multi-objective studies cannot take intermediate values).

Imported lazily by :mod:`sweeps.definition`; this module imports Ray and Optuna at the top.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import optuna  # NOTE: imported first so that a broken optuna shows its own error (ray #65376)
from ray.tune.search.optuna import OptunaSearch

from sweeps.protocol import FINAL_KEY


class FinalRecordOptunaSearch(OptunaSearch):
    """OptunaSearch that only learns from trials that returned their final record."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Intermediate (per-epoch) results are not told to Optuna."""
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        final = bool(result) and result.get(FINAL_KEY) == 1.0
        if final:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result.get(m) for m in metrics]
            if any(v is None or not math.isfinite(float(v)) for v in values):
                final, error = False, True
        super().on_trial_complete(trial_id, result=result if final else None, error=error)


def final_record_optuna(
    objectives: Sequence[tuple[str, str]], sampler: str = "tpe", seed: int = 0
) -> FinalRecordOptunaSearch:
    """Multi-objective (or single) Optuna search over ``[(metric, 'max'|'min'), ...]``."""
    samplers = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    metrics = [m for m, _ in objectives]
    modes = [d for _, d in objectives]
    if len(metrics) == 1:
        return FinalRecordOptunaSearch(
            metric=metrics[0], mode=modes[0], sampler=samplers[sampler]()
        )
    return FinalRecordOptunaSearch(metric=metrics, mode=modes, sampler=samplers[sampler]())
