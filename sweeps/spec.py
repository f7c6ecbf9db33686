"""Reading a sweep file: YAML + ``--set`` overrides -> a validated :class:`Sweep`.

Validation is strict and happens before anything starts: the top level goes through
:func:`ssr.config.from_dict` (unknown key or wrong type -> a message naming the key), and every
parameter of ``space`` is checked by building the PipelineConfig for its extreme values with
ssr's own loader and range checks, so a bad value fails here, not in a trial ten minutes later.
What a sweep file holds is described in :mod:`sweeps.definition`; the parameters themselves
(keys, distributions, the ``seed`` and ``baseline`` keys, a point of the space ->
PipelineConfig) live in :mod:`sweeps.params`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from ssr.atomic import atomic_write
from ssr.cliargs import parse_set
from ssr.config import (
    ConfigError,
    DataConfig,
    PipelineConfig,
    deep_merge,
    from_dict,
    set_dotted,
    to_dict,
)
from sweeps.definition import OBJECTIVE_METRICS, Sweep, SweepSpec
from sweeps.params import SweepParam, build_pipeline, parse_param
from sweeps.protocol import (
    EPOCH_COST_METRICS,
    EPOCH_METRICS,
    trial_dirname,  # noqa: F401
)
from sweeps.rundir import check_name

# NOTE: trial_dirname is imported here because experiments saved before sweeps.protocol existed
# pickle it as sweeps.spec.trial_dirname (tuner.pkl); --resume of such a run unpickles it here.

CONFIG_DIR = Path(__file__).parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


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
    check_name(spec.name, "name")
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
        raise ConfigError(f"space: expected a mapping of parameters, got {spec.space!r}")
    params = tuple(parse_param(k, v) for k, v in (spec.space or {}).items())
    for p in params:
        for value in p.probe_values():
            build_pipeline(base, {p.key: value}, where=f"space.{p.key} = {value!r}")
    build_pipeline(base, {p.key: p.probe_values()[0] for p in params}, where="space (first values)")
    _check_searcher(spec, params)
    s = spec.scheduler
    _check(  # NOTE: checked for every kind: each trial's reports carry it
        s.metric in EPOCH_METRICS,
        f"scheduler.metric: {s.metric!r} is not reported by every epoch of a trial; "
        f"use one of {', '.join(EPOCH_METRICS)}",
    )
    _check(
        base_cfg.bench.precision != "int8",
        "base.bench.precision: int8 needs calibration images and is measured alone with "
        "`python -m ssr bench --genotype G --backend ort-int8`; a sweep measures fp32, fp16 or "
        "bf16",
    )
    if s.kind in ("asha", "moasha"):
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
        rungs = [s.grace_period * s.reduction_factor**k for k in range(64)]
        last = max_t - 1  # the last epoch report; the final record follows it
        _check(
            last not in rungs,
            f"scheduler: a rung at step {last} (grace_period {s.grace_period} x reduction_factor"
            f" {s.reduction_factor}^k) would stop trials after their whole budget, before they "
            "derive and measure; choose grace_period/reduction_factor so that rungs fall earlier",
        )
        _check(
            not base_cfg.search.stop_when_discrete,
            f"scheduler {s.kind} needs a fixed number of search epochs: "
            "base.search.stop_when_discrete must be false",
        )
        if s.kind == "moasha":
            _check(
                s.cost_metric in EPOCH_COST_METRICS + EPOCH_METRICS and s.cost_metric != s.metric,
                f"scheduler.cost_metric: {s.cost_metric!r} is not a per-epoch metric other than "
                f"scheduler.metric; use one of {', '.join(EPOCH_COST_METRICS)}",
            )
    return Sweep(spec=spec, base=base, params=params, source=copy.deepcopy(raw))


def _check_searcher(spec: SweepSpec, params: tuple[SweepParam, ...]) -> None:
    kind = spec.searcher.kind
    for p in params:
        if kind == "optuna":
            _check(
                p.kind != "grid",
                f"space.{p.key}: grid parameters need searcher.kind grid or random; "
                "with optuna use choice",
            )
            if p.kind == "choice":
                bad = [v for v in p.args if not isinstance(v, (str, int, float, bool, type(None)))]
                _check(
                    not bad,
                    f"space.{p.key}: optuna choices must be scalars, got {bad[0]!r}" if bad else "",
                )
        if kind == "grid":
            _check(
                p.kind in ("grid", "const"),
                f"space.{p.key}: searcher.kind grid needs grid (or constant) parameters, got {p.kind}",
            )
    if kind == "grid":
        _check(
            any(p.kind == "grid" for p in params),
            "searcher.kind grid needs at least one grid parameter",
        )
    _check(
        not (kind == "optuna" and spec.searcher.sampler == "nsga2" and len(spec.objectives) < 2),
        "searcher.sampler nsga2 is for two or more objectives; use tpe",
    )
    if spec.searcher.storage:
        _check(kind == "optuna", f"searcher.storage is the Optuna study's; searcher.kind is {kind}")
        from sweeps.searchers import check_storage_url

        check_storage_url(spec.searcher.storage)


# --------------------------------------------------------------------------------------------
# Loading with overrides


def apply_overrides(raw: dict[str, Any], items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` on a sweep mapping; ``space.<dotted key>`` addresses one parameter.

    Items are parsed by :func:`ssr.cliargs.parse_set` (YAML values, the one ``--set`` parser).
    """
    out = copy.deepcopy(raw)
    for key, value in parse_set(items).items():
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
    """Write the sweep's source mapping (what ``--resume`` reloads), atomically."""
    atomic_write(path, yaml.safe_dump(sweep.source, sort_keys=False))


def flat_source(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted view of the sweep file for the parent run's params (parameters stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "space":
            out.update(flat_source(v, key + "."))
        elif isinstance(v, dict):
            out.update({f"space.{dk}": dv for dk, dv in v.items()})
        else:
            out[key] = v
    return out


def check_dataset(sweep: Sweep) -> None:
    """A dataset other than the synthetic one must exist before trials start (ConfigError)."""
    cfg = sweep.base_config
    datas = [cfg.search.data] + ([cfg.retrain.data] if cfg.retrain.epochs > 0 else [])
    if all(d.name == "synthetic" for d in datas):
        return
    from ssr.data import DATASETS, build_dataset

    for d in datas:
        if d.name not in DATASETS:
            raise ConfigError(f"dataset.name {d.name!r}: registered datasets: {sorted(DATASETS)}")
        if d.name != "synthetic":
            for split in ("train", "val"):
                build_dataset(d, split)
