"""A sweep definition as values: the typed sweep file and the validated :class:`Sweep`.

A sweep file declares what varies (``space``: the SSR method's knobs, seeds and the baselines of
docs/method.md §10), how it is searched (``searcher``: Optuna multi-objective over
``objectives``, random or grid), how trials are cut short (``scheduler``: ASHA on one per-epoch
metric, or none), the per-trial budget, the resources of a trial, the dataset and a ``base:``
block of fixed :class:`ssr.config.PipelineConfig` overrides. The dataclasses below are its top
level as :func:`ssr.config.from_dict` loads it; a :class:`Sweep` is what validation
(:mod:`sweeps.spec`) returns and what builds the Tune param space, searcher and scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ssr.config import PipelineConfig
from sweeps.params import SweepParam, build_pipeline
from sweeps.protocol import SAMPLED_KEY

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


# --------------------------------------------------------------------------------------------
# The sweep file's typed top level (loaded with ssr.config.from_dict)


@dataclass(frozen=True)
class Objective:
    """One objective of the searcher: a record column and its direction."""

    metric: str
    mode: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class SearcherSpec:
    """``optuna`` (TPE or NSGA-II, multi-objective when several objectives), ``random``, ``grid``.

    ``storage``: the Optuna RDB URL of the study (default: ``sqlite:///<run folder>/optuna.db``).
    """

    kind: Literal["optuna", "random", "grid"] = "optuna"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0
    storage: str = ""


@dataclass(frozen=True)
class SchedulerSpec:
    """How trials are cut short; time is the pipeline's global epoch ``step``.

    ``asha`` (Li et al. 2020) ranks the trials at each rung by one per-epoch ``metric``;
    ``moasha`` (Schmucker et al. 2021, :mod:`sweeps.moasha`) by non-dominated sorting of
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


@dataclass(frozen=True)
class BudgetSpec:
    """Per-trial budget: search epochs, retrain epochs (0: no retraining), checkpoint cadence."""

    search_epochs: int = 3
    retrain_epochs: int = 0
    checkpoint_every: int = 1


@dataclass(frozen=True)
class ResourcesSpec:
    """Ray resources of one trial; fractions of a GPU are allowed (scheduling only)."""

    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0


@dataclass(frozen=True)
class SweepSpec:
    """The whole sweep file. ``space``, ``base`` and ``dataset`` are checked separately."""

    name: str = "sweep"
    experiment: str = "ssr-sweeps"
    description: str = ""
    num_samples: int = 4
    max_concurrent: int = 2
    max_failures: int = 0
    objectives: tuple[Objective, ...] = (Objective("derived_miou", "max"), Objective("fps_shared"))
    searcher: SearcherSpec = field(default_factory=SearcherSpec)
    scheduler: SchedulerSpec = field(default_factory=SchedulerSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    resources: ResourcesSpec = field(default_factory=ResourcesSpec)
    remeasure: bool = True
    dataset: Any = None
    space: Any = None
    base: Any = None


# --------------------------------------------------------------------------------------------
# The validated sweep


@dataclass(frozen=True)
class Sweep:
    """A validated sweep: the typed spec, the resolved base PipelineConfig dict, the parameters."""

    spec: SweepSpec
    base: dict[str, Any]
    params: tuple[SweepParam, ...]
    source: dict[str, Any]  # the mapping it was built from (saved as sweep.yaml in the run folder)

    @property
    def base_config(self) -> PipelineConfig:
        """The validated PipelineConfig every trial starts from (no parameter applied)."""
        return build_pipeline(self.base, {})

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
        from sweeps.searchers import final_record_optuna, study_storage_url

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
            from sweeps.moasha import MOASHAScheduler

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
