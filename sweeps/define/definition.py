"""What a sweep file holds, as values: its typed top level (:class:`SweepSpec` and its parts,
each checking itself when built) and the validated :class:`Sweep` built from it.

Reading a file (YAML, ``--set``) and the checks that need the PipelineConfig (``base``,
``space``) are :mod:`sweeps.define.spec`'s.

A sweep file declares what varies (``space``: the SSR method's knobs, seeds and the baselines of
docs/method.md §10), how it is searched (``searcher``: Optuna multi-objective over
``objectives``, random or grid), how trials are cut short (``scheduler``: ASHA on one per-epoch
metric, or none), the per-trial budget, the resources of a trial, the dataset and a ``base:``
block of fixed :class:`ssr.config.PipelineConfig` overrides. The dataclasses below are its top
level as :func:`ssr.config.from_dict` loads it; a :class:`Sweep` is what validation
(:mod:`sweeps.define.spec`) returns and what builds the Tune param space, searcher and scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssr.config import ConfigError, PipelineConfig
from sweeps.contract.params import SweepParam
from sweeps.contract.protocol import EPOCH_COST_METRICS, EPOCH_METRICS, SAMPLED_KEY
from sweeps.runtime.rundir import check_name

#: Record columns a searcher may optimise (all measured once, at the end of a trial).
OBJECTIVE_METRICS = (
    "derived_miou",
    "retrained_miou",
    "supernet_miou",
    "discretization_gap",
    "params_m",
    "gmacs",
    "fps_shared",
    "latency_ms_median",
    "latency_ms_p90",
)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


# --------------------------------------------------------------------------------------------
# The sweep file's typed top level (loaded with ssr.config.from_dict, which puts the section in
# front of a message: ``budget.search_epochs must be >= 1``)


@dataclass(frozen=True)
class Objective:
    """One objective of the searcher: a record column and its direction."""

    metric: str
    mode: Literal["max", "min"] = "max"

    def __post_init__(self) -> None:
        _check(
            self.metric in OBJECTIVE_METRICS,
            f"metric: {self.metric!r} is not one of {', '.join(OBJECTIVE_METRICS)}",
        )


@dataclass(frozen=True)
class SearcherSpec:
    """``optuna`` (TPE or NSGA-II, multi-objective when several objectives), ``random``, ``grid``.

    ``storage``: the Optuna RDB URL of the study (default: ``sqlite:///<run folder>/optuna.db``).
    """

    kind: Literal["optuna", "random", "grid"] = "optuna"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0
    storage: str = ""

    def __post_init__(self) -> None:
        if self.storage:
            _check(
                self.kind == "optuna",
                f"storage is the Optuna study's; searcher.kind is {self.kind}",
            )
            from sweeps.schedule.study_mirror import check_storage_url

            check_storage_url(self.storage)


@dataclass(frozen=True)
class SchedulerSpec:
    """How trials are cut short; time is the pipeline's global epoch ``step``.

    ``asha`` (Li et al. 2020) ranks the trials at each rung by one per-epoch ``metric``;
    ``moasha`` (Schmucker et al. 2021, :mod:`sweeps.schedule.moasha`) by non-dominated sorting of
    ``metric`` and the search's ``cost_metric`` (expected GMACs), so that a cheap search that is
    slightly less accurate can still reach the front; ``none`` runs every trial to the end.
    """

    kind: Literal["asha", "moasha", "none"] = "asha"
    metric: str = "val_miou"
    mode: Literal["max", "min"] = "max"
    cost_metric: str = "expected_gmacs"
    cost_mode: Literal["max", "min"] = "min"
    grace_period: int = 1
    reduction_factor: int = 2

    def __post_init__(self) -> None:
        _check(  # NOTE: checked for every kind: each trial's reports carry it
            self.metric in EPOCH_METRICS,
            f"metric: {self.metric!r} is not reported by every epoch of a trial; "
            f"use one of {', '.join(EPOCH_METRICS)}",
        )
        if self.kind == "none":
            return
        _check(self.grace_period >= 1, f"grace_period must be >= 1, got {self.grace_period}")
        _check(
            self.reduction_factor >= 2,
            f"reduction_factor must be >= 2, got {self.reduction_factor}",
        )
        _check(
            self.kind != "moasha"
            or (
                self.cost_metric in EPOCH_COST_METRICS + EPOCH_METRICS
                and self.cost_metric != self.metric
            ),
            f"cost_metric: {self.cost_metric!r} is not a per-epoch metric other than "
            f"scheduler.metric; use one of {', '.join(EPOCH_COST_METRICS)}",
        )

    def check_budget(self, budget: BudgetSpec) -> None:
        """Rungs that fall before the last epoch report (else trials stop whole, unmeasured)."""
        if self.kind == "none":
            return
        max_t = budget.search_epochs + budget.retrain_epochs + 1
        _check(
            self.grace_period < max_t,
            f"scheduler.grace_period ({self.grace_period}) must be below the reports per trial "
            f"({max_t})",
        )
        rungs = [self.grace_period * self.reduction_factor**k for k in range(64)]
        last = max_t - 1  # the last epoch report; the final record follows it
        _check(
            last not in rungs,
            f"scheduler: a rung at step {last} (grace_period {self.grace_period} x "
            f"reduction_factor {self.reduction_factor}^k) would stop trials after their whole "
            "budget, before they derive and measure; choose grace_period/reduction_factor so "
            "that rungs fall earlier",
        )


@dataclass(frozen=True)
class BudgetSpec:
    """Per-trial budget: search epochs, retrain epochs (0: no retraining), checkpoint cadence."""

    search_epochs: int = 3
    retrain_epochs: int = 0
    checkpoint_every: int = 1

    def __post_init__(self) -> None:
        for key, low in (("search_epochs", 1), ("retrain_epochs", 0), ("checkpoint_every", 1)):
            value = getattr(self, key)
            _check(value >= low, f"{key} must be >= {low}, got {value}")


@dataclass(frozen=True)
class ResourcesSpec:
    """Ray resources of one trial; fractions of a GPU are allowed (scheduling only)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0

    def __post_init__(self) -> None:
        _check(self.cpus_per_trial > 0, f"cpus_per_trial must be > 0, got {self.cpus_per_trial}")
        _check(self.gpus_per_trial >= 0, f"gpus_per_trial must be >= 0, got {self.gpus_per_trial}")


@dataclass(frozen=True)
class SweepSpec:
    """The whole sweep file. ``space``, ``base`` and ``dataset`` are checked by
    :func:`sweeps.define.spec.build_sweep` (they need the PipelineConfig)."""

    name: str = "sweep"
    experiment: str = "ssr-sweeps"
    description: str = ""
    num_samples: int = 4
    max_concurrent: int = 2
    max_failures: int = 0
    #: A worker node lost mid-trial (spot reclaim) resumes the trial from its last checkpoint
    #: on another node, at most ``max_resumes`` times, and is not a failure
    #: (:mod:`sweeps.runtime.preemption`); the trial's own errors still count against
    #: ``max_failures``.
    preemptible: bool = False
    max_resumes: int = 3
    objectives: tuple[Objective, ...] = (Objective("derived_miou", "max"), Objective("fps_shared"))
    searcher: SearcherSpec = field(default_factory=SearcherSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    remeasure: bool = True
    dataset: Any = None
    space: Any = None
    base: Any = None

    def __post_init__(self) -> None:
        check_name(self.name, "name")
        _check(bool(self.experiment.strip()), "experiment must not be empty")
        for key, low in (
            ("num_samples", 1),
            ("max_concurrent", 1),
            ("max_failures", 0),
            ("max_resumes", 0),
        ):
            value = getattr(self, key)
            _check(value >= low, f"{key} must be >= {low}, got {value}")
        _check(len(self.objectives) >= 1, "objectives must name at least one record column")
        metrics = [o.metric for o in self.objectives]
        for i, m in enumerate(metrics):
            _check(m not in metrics[:i], f"objectives[{i}].metric: {m!r} is given twice")
            _check(
                m != "retrained_miou" or self.budget.retrain_epochs >= 1,
                f"objectives[{i}]: retrained_miou needs budget.retrain_epochs >= 1",
            )
        _check(
            not (self.searcher.sampler == "nsga2" and self.searcher.kind == "optuna")
            or len(self.objectives) >= 2,
            "searcher.sampler nsga2 is for two or more objectives; use tpe",
        )
        self.scheduler.check_budget(self.budget)


# --------------------------------------------------------------------------------------------
# The validated sweep


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the typed spec, the base PipelineConfig every trial starts from (as
    a config and as the nested dict Tune carries), the parameters."""

    spec: SweepSpec
    base: dict[str, Any]
    params: tuple[SweepParam, ...]
    source: dict[str, Any]  # the mapping it was built from (saved as sweep.yaml in the run folder)
    base_config: PipelineConfig

    @property
    def max_t(self) -> int:
        """Reports per complete trial: one per search and retrain epoch, plus the final record."""
        return self.spec.budget.search_epochs + self.spec.budget.retrain_epochs + 1

    def param_space(self) -> dict[str, Any]:
        """Tune param space: fixed ``base`` and run settings, the sampled parameters."""
        return {
            "sweep": self.spec.name,
            "base": self.base,
            SAMPLED_KEY: {p.key: p.domain() for p in self.params},
            "run": {
                "cpus": self.spec.resources.cpus_per_trial,
                "gpus": self.spec.resources.gpus_per_trial,
                "objectives": [o.metric for o in self.spec.objectives],
                "scheduler_metric": self.spec.scheduler.metric,
                "checkpoint_every": self.spec.budget.checkpoint_every,
            },
        }

    def searcher(self, run_dir: Path | None = None) -> Any:
        """OptunaSearch (final-record objectives only) or Ray's random/grid variant generator.

        With ``run_dir`` the Optuna study is stored (``searcher.storage``, default
        ``<run_dir>/optuna.db``) under the run's name; without it, in memory.
        """
        s = self.spec.searcher
        if s.kind in ("random", "grid"):
            from ray.tune.search.basic_variant import BasicVariantGenerator

            # NOTE: Tune ignores max_concurrent_trials for a generator instance: set it here
            return BasicVariantGenerator(
                random_state=s.seed, max_concurrent=self.spec.max_concurrent
            )
        from sweeps.schedule.searchers import final_record_optuna, study_storage_url

        baseline = next((p.args[0] for p in self.params if p.key == "baseline"), "ssr")
        return final_record_optuna(
            [(o.metric, o.mode) for o in self.spec.objectives],
            s.sampler,
            s.seed,
            storage=study_storage_url(s.storage, run_dir) if run_dir is not None else None,
            study_name=run_dir.name if run_dir is not None else None,
            study_attrs={"sweep": self.spec.name, "experiment": self.spec.experiment},
            baseline=str(baseline),
        )

    def scheduler(self) -> Any:
        """ASHA or MO-ASHA with the pipeline's global epoch step as time (stable across resumes).

        ``None`` (FIFO: every trial runs its whole budget) for ``kind: none``.
        """
        s = self.spec.scheduler
        if s.kind == "none":
            return None
        if s.kind == "moasha":
            from sweeps.schedule.moasha import MOASHAScheduler

            return MOASHAScheduler(
                time_attr="step",
                metrics=(s.metric, s.cost_metric),
                modes=(s.mode, s.cost_mode),
                max_t=self.max_t,
                grace_period=s.grace_period,
                reduction_factor=s.reduction_factor,
            )
        from ray.tune.schedulers import ASHAScheduler

        return ASHAScheduler(
            time_attr="step",
            metric=s.metric,
            mode=s.mode,
            max_t=self.max_t,
            grace_period=s.grace_period,
            reduction_factor=s.reduction_factor,
        )

    def report_objectives(self) -> list[tuple[str, bool]]:
        """The record columns the sweep's front ranks, as (column, maximise) pairs.

        The searcher's objectives, except that timings measured inside trials (on a shared
        device) are replaced by their exclusive re-measurement when ``remeasure`` is on. These
        are the objectives recorded with the results (``ssr.objectives``), so that the report,
        the notebook and the MLflow parent run all show the same front.
        """
        exclusive = {
            "fps_shared": "fps_exclusive",
            "latency_ms_median": "latency_exclusive_ms_median",
            "latency_ms_p90": "latency_exclusive_ms_p90",
        }
        out = []
        for o in self.spec.objectives:
            name = exclusive.get(o.metric, o.metric) if self.spec.remeasure else o.metric
            out.append((name, o.mode == "max"))
        return out
