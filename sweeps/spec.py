"""Sweep definitions: YAML -> a validated :class:`Sweep` -> Tune param space, searcher, scheduler.

A sweep file declares what varies (``space``: the SSR method's knobs, seeds and the baselines of
spec §10), how it is searched (``searcher``: Optuna multi-objective over ``objectives``, random
or grid), how trials are cut short (``scheduler``: ASHA on one per-epoch metric, or none), the
per-trial budget, the dataset and a ``base:`` block of fixed :class:`ssr.config.PipelineConfig`
overrides. Validation is strict and happens before anything starts: the top level goes through
:func:`ssr.config.from_dict` (unknown key or wrong type -> a message naming the key), and every
dimension is checked by building the PipelineConfig for its extreme values with ssr's own
loader and range checks, so a bad value fails here, not in a trial ten minutes later.

The dimensions themselves (keys, distributions, the ``seed`` and ``baseline`` keys, a point of
the space -> PipelineConfig) live in :mod:`sweeps.dims`.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ssr.config import (
    ConfigError,
    DataConfig,
    PipelineConfig,
    deep_merge,
    from_dict,
    set_dotted,
    to_dict,
)
from sweeps.dims import Dimension, build_pipeline, parse_dimension

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"
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
#: Key of the trial's last report that carries the final record (1.0) instead of an epoch (0.0).
FINAL_KEY = "final_record"


# --------------------------------------------------------------------------------------------
# The sweep file's typed top level (loaded with ssr.config.from_dict)


@dataclass(frozen=True)
class Objective:
    """One objective of the searcher: a record column and its direction."""

    metric: str
    mode: Literal["max", "min"] = "max"


@dataclass(frozen=True)
class SearcherSpec:
    """``optuna`` (TPE or NSGA-II, multi-objective when several objectives), ``random``, ``grid``."""

    kind: Literal["optuna", "random", "grid"] = "optuna"
    sampler: Literal["tpe", "nsga2", "random"] = "tpe"
    seed: int = 0


@dataclass(frozen=True)
class SchedulerSpec:
    """ASHA (Li et al. 2020) on one per-epoch metric; time is the pipeline's epoch ``step``."""

    kind: Literal["asha", "none"] = "asha"
    metric: str = "val_miou"
    mode: Literal["max", "min"] = "max"
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
    """A validated sweep: the typed spec, the resolved base PipelineConfig dict, the dimensions."""

    spec: SweepSpec
    base: dict[str, Any]
    dims: tuple[Dimension, ...]
    source: dict[str, Any]  # the mapping it was built from (saved as sweep.yaml in the run folder)

    @property
    def base_config(self) -> PipelineConfig:
        return build_pipeline(self.base, {})

    @property
    def max_t(self) -> int:
        """Reports per complete trial: one per search and retrain epoch, plus the final record."""
        return self.spec.budget.search_epochs + self.spec.budget.retrain_epochs + 1

    def param_space(self) -> dict[str, Any]:
        """Tune param space: fixed ``base`` and run settings, sampled ``dims``."""
        return {
            "sweep": self.spec.name,
            "base": self.base,
            "dims": {d.key: d.domain() for d in self.dims},
            "run": {
                "cpus": self.spec.resources.cpus_per_trial,
                "gpus": self.spec.resources.gpus_per_trial,
                "objectives": [o.metric for o in self.spec.objectives],
                "scheduler_metric": self.spec.scheduler.metric,
                "checkpoint_every": self.spec.budget.checkpoint_every,
            },
        }

    def searcher(self) -> Any:
        """OptunaSearch (final-record objectives only) or Ray's random/grid variant generator."""
        s = self.spec.searcher
        if s.kind in ("random", "grid"):
            from ray.tune.search.basic_variant import BasicVariantGenerator

            # NOTE: Tune ignores max_concurrent_trials for a generator instance: set it here
            return BasicVariantGenerator(
                random_state=s.seed, max_concurrent=self.spec.max_concurrent
            )
        from sweeps.searchers import final_record_optuna

        return final_record_optuna(
            [(o.metric, o.mode) for o in self.spec.objectives], s.sampler, s.seed
        )

    def scheduler(self) -> Any:
        """ASHA with the pipeline's global epoch step as time (stable across resumes), or FIFO."""
        s = self.spec.scheduler
        if s.kind == "none":
            return None
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
        """Objectives for the final report, as :func:`analysis.report.write_report` takes them.

        Timings measured inside trials become analysis' aliases (``fps``, ``latency``), which
        prefer the exclusive re-measurement and fall back (with a note) to the shared one.
        """
        alias = {"fps_shared": "fps", "latency_ms_median": "latency"}
        out = []
        for o in self.spec.objectives:
            name = alias.get(o.metric, o.metric)
            if o.metric == "latency_ms_p90" and self.spec.remeasure:
                name = "latency_exclusive_ms_p90"
            out.append((name, o.mode == "max"))
        return out


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default embeds the whole config)."""
    return f"trial_{trial.trial_id}"


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _nest(d: Any, where: str) -> dict[str, Any]:
    """A mapping whose keys may be dotted (``search.ssr.op: 30``) -> nested dicts."""
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(d).__name__}")
    out: dict[str, Any] = {}
    for k, v in d.items():
        v = _nest(v, f"{where}.{k}") if isinstance(v, dict) else v
        if isinstance(v, dict) and isinstance(_get(out, str(k)), dict):
            v = deep_merge(_get(out, str(k)), v)
        set_dotted(out, str(k), v)
    return out


def _get(d: dict[str, Any], dotted: str) -> Any:
    cur: Any = d
    for p in dotted.split("."):
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def _normalize_objectives(raw: Any) -> Any:
    """Accept ``derived_miou:max`` strings as well as ``{metric, mode}`` mappings."""
    if not isinstance(raw, list):
        return raw
    out = []
    for item in raw:
        if isinstance(item, str):
            metric, _, mode = item.partition(":")
            item = {"metric": metric.strip(), **({"mode": mode.strip()} if mode else {})}
        out.append(item)
    return out


def build_sweep(raw: dict[str, Any]) -> Sweep:
    """Validate a sweep mapping (file content + overrides) into a :class:`Sweep`."""
    if not isinstance(raw, dict):
        raise ConfigError("a sweep definition must be a mapping at the top level")
    data = dict(raw)
    if "objectives" in data:
        data["objectives"] = _normalize_objectives(data["objectives"])
    spec = from_dict(SweepSpec, data)
    _check(
        re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", spec.name) is not None,
        f"name {spec.name!r}: use letters, digits, '.', '_' and '-' only",
    )
    _check(bool(spec.experiment.strip()), "experiment must not be empty")
    _check(spec.num_samples >= 1, f"num_samples must be >= 1, got {spec.num_samples}")
    _check(spec.max_concurrent >= 1, f"max_concurrent must be >= 1, got {spec.max_concurrent}")
    _check(spec.max_failures >= 0, f"max_failures must be >= 0, got {spec.max_failures}")
    r = spec.resources
    _check(r.cpus_per_trial > 0, f"resources.cpus_per_trial must be > 0, got {r.cpus_per_trial}")
    _check(r.gpus_per_trial >= 0, f"resources.gpus_per_trial must be >= 0, got {r.gpus_per_trial}")
    b = spec.budget
    _check(b.search_epochs >= 1, f"budget.search_epochs must be >= 1, got {b.search_epochs}")
    _check(b.retrain_epochs >= 0, f"budget.retrain_epochs must be >= 0, got {b.retrain_epochs}")
    _check(
        b.checkpoint_every >= 1, f"budget.checkpoint_every must be >= 1, got {b.checkpoint_every}"
    )
    _check(len(spec.objectives) >= 1, "objectives must name at least one record column")
    seen = set()
    for i, o in enumerate(spec.objectives):
        _check(
            o.metric in OBJECTIVE_METRICS,
            f"objectives[{i}].metric: {o.metric!r} is not one of {', '.join(OBJECTIVE_METRICS)}",
        )
        _check(o.metric not in seen, f"objectives[{i}].metric: {o.metric!r} is given twice")
        seen.add(o.metric)
        _check(
            o.metric != "retrained_miou" or b.retrain_epochs >= 1,
            f"objectives[{i}]: retrained_miou needs budget.retrain_epochs >= 1",
        )

    base = _nest(spec.base, "base")
    for path, budget_key in (
        ("search.epochs", "search_epochs"),
        ("retrain.epochs", "retrain_epochs"),
    ):
        _check(_get(base, path) is None, f"base.{path}: set budget.{budget_key} instead")
    if spec.dataset is not None:
        if not isinstance(spec.dataset, dict):
            raise ConfigError(f"dataset: expected a mapping of data fields, got {spec.dataset!r}")
        from_dict(DataConfig, spec.dataset, "dataset")  # unknown keys / types, named
        for side in ("search", "retrain"):
            for k, v in spec.dataset.items():
                set_dotted(base, f"{side}.data.{k}", v)
    set_dotted(base, "search.epochs", b.search_epochs)
    set_dotted(base, "retrain.epochs", b.retrain_epochs)
    if r.gpus_per_trial > 0:
        for path in ("search.device", "retrain.device", "bench.device"):
            if _get(base, path) is None:
                set_dotted(base, path, "cuda")
    from_dict(PipelineConfig, base, "base")  # unknown keys and types, named base.<key>
    # NOTE: ssr's from_dict builds a partly given nested block from its class defaults
    # (``arch_optim: {lr: 0.05}`` would lose arch_optim's own weight decay and clipping), so the
    # base is the full default config with the file's values merged in.
    base = deep_merge(to_dict(PipelineConfig()), base)
    base_cfg = build_pipeline(base, {}, where="base")
    for path, dev in (
        ("search.device", base_cfg.search.device),
        ("retrain.device", base_cfg.retrain.device),
        ("bench.device", base_cfg.bench.device),
    ):
        _check(
            not dev.startswith("cuda") or r.gpus_per_trial > 0,
            f"base.{path} is {dev!r} but resources.gpus_per_trial is 0: Ray would give the "
            "trial no GPU (set --gpus-per-trial, or device cpu)",
        )

    if spec.space is not None and not isinstance(spec.space, dict):
        raise ConfigError(f"space: expected a mapping of dimensions, got {spec.space!r}")
    dims = tuple(parse_dimension(k, v) for k, v in (spec.space or {}).items())
    for d in dims:
        for value in d.probe_values():
            build_pipeline(base, {d.key: value}, where=f"space.{d.key} = {value!r}")
    build_pipeline(base, {d.key: d.probe_values()[0] for d in dims}, where="space (first values)")
    _check_searcher(spec, dims)
    s = spec.scheduler
    if s.kind == "asha":
        max_t = b.search_epochs + b.retrain_epochs + 1
        _check(s.grace_period >= 1, f"scheduler.grace_period must be >= 1, got {s.grace_period}")
        _check(
            s.grace_period < max_t,
            f"scheduler.grace_period ({s.grace_period}) must be below the reports per trial ({max_t})",
        )
        _check(
            s.reduction_factor >= 2,
            f"scheduler.reduction_factor must be >= 2, got {s.reduction_factor}",
        )
        _check(
            not base_cfg.search.stop_when_discrete,
            "scheduler asha needs a fixed number of search epochs: "
            "base.search.stop_when_discrete must be false",
        )
        _check(
            s.metric not in seen and s.metric not in OBJECTIVE_METRICS[3:],
            f"scheduler.metric: {s.metric!r} is only known at the end of a trial (or is an "
            "objective); use a per-epoch metric such as val_miou",
        )
    return Sweep(spec=spec, base=base, dims=dims, source=copy.deepcopy(raw))


def _check_searcher(spec: SweepSpec, dims: tuple[Dimension, ...]) -> None:
    kind = spec.searcher.kind
    for d in dims:
        if kind == "optuna":
            _check(
                d.kind != "grid",
                f"space.{d.key}: grid dimensions need searcher.kind grid or random; "
                "with optuna use choice",
            )
            if d.kind == "choice":
                bad = [v for v in d.args if not isinstance(v, (str, int, float, bool, type(None)))]
                _check(
                    not bad,
                    f"space.{d.key}: optuna choices must be scalars, got {bad[0]!r}" if bad else "",
                )
        if kind == "grid":
            _check(
                d.kind in ("grid", "const"),
                f"space.{d.key}: searcher.kind grid needs grid (or constant) dimensions, got {d.kind}",
            )
    if kind == "grid":
        _check(
            any(d.kind == "grid" for d in dims),
            "searcher.kind grid needs at least one grid dimension",
        )
    _check(
        not (kind == "optuna" and spec.searcher.sampler == "nsga2" and len(spec.objectives) < 2),
        "searcher.sampler nsga2 is for two or more objectives; use tpe",
    )


# --------------------------------------------------------------------------------------------
# Loading with overrides


def apply_overrides(raw: dict[str, Any], items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` on a sweep mapping; ``space.<dotted key>`` addresses one dimension."""
    out = copy.deepcopy(raw)
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = (s.strip() for s in item.split("=", 1))
        if not key:
            raise ConfigError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(text) if text else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {key}: cannot parse {text!r} ({exc})") from None
        for block in ("space", "base", "dataset"):
            if key.startswith(block + ".") and isinstance(out.get(block, {}) or {}, dict):
                out[block] = dict(out.get(block) or {})
                if block == "space":
                    out[block][key[len(block) + 1 :]] = value
                else:
                    set_dotted(out[block], key[len(block) + 1 :], value)
                break
        else:
            set_dotted(out, key, value)
    return out


def load_sweep(path: str | Path | None = None, overrides: list[str] | None = None) -> Sweep:
    """Read a sweep file (default: the embedded ``default.yaml``), apply ``--set``, validate."""
    from ssr.config import load_yaml

    raw = load_yaml(path if path is not None else DEFAULT_CONFIG)
    return build_sweep(apply_overrides(raw, overrides))


def dump_sweep(sweep: Sweep, path: Path) -> None:
    """Write the sweep's source mapping (what ``--resume`` reloads)."""
    path.write_text(yaml.safe_dump(sweep.source, sort_keys=False))
