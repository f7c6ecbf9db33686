"""A stand-in for Tune's event loop that calls the driver's real hooks, for thousands of trials.

``benchmarks/driver_scale.py`` measures what the sweep driver costs per trial. Under real Tune
on a small machine every trial also costs Tune's own work (an actor call per report, the trial
folder, checkpoint copies, experiment snapshots): seconds per trial, so 5,000 trials would take
hours, and that cost is Ray's, not the driver's. :class:`LoopTuner` replaces only
``Tuner.fit``: it asks the real searcher (the Optuna study on SQLite) for each config, feeds each
trial's reports to the real scheduler (MO-ASHA) and to the driver's real callbacks (results
table, progress, MLflow) in the order Tune calls them, with ``max_concurrent`` trials
interleaved, writes each final checkpoint where Tune would, and returns a result grid that the
rest of the driver (reconcile, MLflow sync, report, registry) takes as Tune's.

What it leaves out, by design: Ray actors and object transfers, Tune's JSON/CSV loggers and
experiment snapshots. ``driver_scale.py --engine tune`` runs real Tune for the comparison.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

#: Node address the simulated trials report (a local instance's, docs/stack.md §3).
NODE = "127.0.0.2"


def sample(space: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A random point of the sweep's sampled values (what Ray's random search would draw)."""
    dims = space.get("dims", {})
    out = {}
    for key, domain in dims.items():
        out[key] = (
            domain.sample(random_state=rng.randrange(2**31))
            if hasattr(domain, "sample")
            else domain
        )
    return {"dims": out}


class SimTrial:
    """The attributes of ``ray.tune.experiment.Trial`` that the driver's hooks read."""

    def __init__(self, trial_id: str, config: dict[str, Any], tag: str, path: Path) -> None:
        self.trial_id = trial_id
        self.config = config
        self.experiment_tag = tag
        self.path = path
        self.status = "RUNNING"
        self.last_result: dict[str, Any] = {}
        self.history: list[dict[str, Any]] = []
        self.checkpoint: Any = None
        self.node_ip = NODE
        self.error_file = None
        self.t0 = time.time()

    def get_error(self) -> None:
        return None


class LoopTuner:
    """``fit()`` runs ``num_samples`` simulated trials through the driver's hooks."""

    def __init__(
        self,
        sweep: Any,
        storage: str,
        name: str,
        callbacks: list[Any],
        run_dir: Path,
        reports: Callable[[dict[str, Any], Path], Iterator[dict[str, Any]]],
    ) -> None:
        self.sweep = sweep
        self.exp_dir = Path(storage) / name
        self.callbacks = callbacks
        self.run_dir = run_dir
        self.reports = reports
        self.iteration = 0
        self.rng = random.Random(0)

    def _call(self, hook: str, *args: Any, **kwargs: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self.iteration, *args, **kwargs)

    def fit(self) -> list[Any]:
        from ray.tune.experiment import Trial
        from ray.tune.schedulers import TrialScheduler
        from ray.tune.utils.util import merge_dicts

        space = self.sweep.param_space()
        searcher, scheduler = self.sweep.searcher(self.run_dir), self.sweep.scheduler()
        optuna = hasattr(searcher, "suggest")  # else Ray's random generator (--skip optuna)
        if optuna:
            searcher.set_search_properties(None, None, space)
        total, width = self.sweep.spec.num_samples, self.sweep.spec.max_concurrent
        for cb in self.callbacks:
            cb.setup(total_num_samples=total)
        trials: list[SimTrial] = []
        running: dict[str, tuple[SimTrial, Iterator[dict[str, Any]]]] = {}
        while len(trials) < total or running:
            while len(running) < width and len(trials) < total:
                trial_id = Trial.generate_id()
                config = merge_dicts(
                    copy.deepcopy(space),
                    searcher.suggest(trial_id) if optuna else sample(space, self.rng),
                )
                trial = SimTrial(
                    trial_id, config, str(len(trials) + 1), self.exp_dir / f"trial_{trial_id}"
                )
                trials.append(trial)
                scheduler.on_trial_add(None, trial)
                self._call("on_trial_start", trials, trial)
                running[trial_id] = (trial, self.reports(config, trial.path / "final"))
            for trial_id, (trial, stream) in list(running.items()):
                res = self._result(trial, next(stream))
                self._call("on_trial_result", trials, trial, res)
                decision = scheduler.on_trial_result(None, trial, res)
                if decision == TrialScheduler.STOP or res.get("final_record") == 1.0:
                    self._end(trial, res, searcher, scheduler, trials)
                    del running[trial_id]
            self.iteration += 1
            self._call("on_step_end", trials)
        return [self._grid_entry(t) for t in trials]

    def _result(self, trial: SimTrial, res: dict[str, Any]) -> dict[str, Any]:
        """The report with the keys Tune adds (trial id, iteration, times, tag)."""
        now = time.time()
        res = {
            **res,
            "trial_id": trial.trial_id,
            "training_iteration": len(trial.history) + 1,
            "time_total_s": now - trial.t0,
            "time_this_iter_s": now
            - (trial.history[-1]["timestamp"] if trial.history else trial.t0),
            "timestamp": now,
            "experiment_tag": trial.experiment_tag,
            "node_ip": NODE,
            "done": False,
        }
        trial.history.append(res)
        trial.last_result = res
        if res.get("final_record") == 1.0:
            from ray.tune import Checkpoint

            trial.checkpoint = Checkpoint.from_directory(str(trial.path / "final"))
        return res

    def _end_search(self, searcher: Any, trial_id: str, res: dict[str, Any]) -> None:
        if hasattr(searcher, "on_trial_complete"):
            searcher.on_trial_complete(trial_id, result=res)

    def _end(
        self,
        trial: SimTrial,
        res: dict[str, Any],
        searcher: Any,
        scheduler: Any,
        trials: list[SimTrial],
    ) -> None:
        """A trial that reported its final record or that the scheduler stopped."""
        trial.status = "TERMINATED"
        scheduler.on_trial_complete(None, trial, res)
        self._end_search(searcher, trial.trial_id, res)
        self._call("on_trial_complete", trials, trial)

    def _grid_entry(self, trial: SimTrial) -> Any:
        """The trial as a ``ray.tune.Result`` (metrics, checkpoint, history, config)."""
        import pandas as pd
        from ray.tune import Result

        metrics = {**trial.last_result, "config": trial.config}
        frame = pd.DataFrame(trial.history)
        return Result(metrics=metrics, checkpoint=trial.checkpoint, error=None,
                      path=str(trial.path), metrics_dataframe=frame)  # fmt: skip
