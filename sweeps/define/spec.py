"""Reading and checking a sweep file: YAML + ``--set`` overrides -> a validated :class:`Sweep`.

(What a sweep file holds, its typed top level and :class:`Sweep` itself, is
:mod:`sweeps.define.definition`; this module reads files and runs the checks that need the
PipelineConfig.)

Validation is strict and happens before anything starts: the top level goes through
:func:`ssr.config.from_dict` (unknown key or wrong type -> a message naming the key), and every
parameter of ``space`` is checked by building the PipelineConfig for its extreme values with
ssr's own loader and range checks, so a bad value fails here, not in a trial ten minutes later.
What a sweep file holds is described in :mod:`sweeps.define.definition`; the parameters themselves
(keys, distributions, the ``seed`` and ``baseline`` keys, a point of the space ->
PipelineConfig) live in :mod:`sweeps.contract.params`.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

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
from ssr.config.cliargs import parse_set
from ssr.files.atomic import atomic_write
from sweeps.contract.params import SweepParam, build_pipeline, parse_param
from sweeps.contract.protocol import (
    trial_dirname,  # noqa: F401
)
from sweeps.define.definition import Sweep, SweepSpec

# NOTE: trial_dirname is imported here because experiments saved before sweeps.contract.protocol existed
# pickle it as sweeps.define.spec.trial_dirname (tuner.pkl); --resume of such a run unpickles it here.

CONFIG_DIR = Path(__file__).parents[1] / "configs"
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
    """Validate a sweep mapping (file content + overrides) into a :class:`Sweep`.

    The top level checks itself as it is built (:mod:`sweeps.define.definition`); then the base
    PipelineConfig, every parameter's extreme values and the searcher's needs are checked here.
    """
    if not isinstance(raw, dict):
        raise ConfigError("a sweep definition must be a mapping at the top level")
    data = dict(raw)
    if "objectives" in data:
        data["objectives"] = _normalize_objectives(data["objectives"])
    spec = from_dict(SweepSpec, data)
    base_cfg = from_dict(PipelineConfig, _base(spec), "base")  # keys, types, ranges: base.<key>
    _check_base(spec, base_cfg)
    base = to_dict(base_cfg)  # the whole config, so a parameter sets one value of a full block
    params = _params(spec, base)
    _check_searcher(spec, params)
    return Sweep(
        spec=spec, base=base, params=params, source=copy.deepcopy(raw), base_config=base_cfg
    )


def _base(spec: SweepSpec) -> dict[str, Any]:
    """The ``base:`` block, nested, with the budget's epochs, the ``dataset:`` block and, when
    trials get GPUs, the ``cuda`` device where the block names none."""
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
        # retraining inherits the search's data unless the base gives it data of its own
        sides = ("search", "retrain") if _get(base, "retrain.data") is not None else ("search",)
        for side in sides:
            for k, v in spec.dataset.items():
                set_dotted(base, f"{side}.data.{k}", v)
    set_dotted(base, "search.epochs", spec.budget.search_epochs)
    set_dotted(base, "retrain.epochs", spec.budget.retrain_epochs)
    table = _get(base, "search.latency.table")
    if isinstance(table, str) and table:  # trials run in their own folders
        set_dotted(base, "search.latency.table", str(Path(table).resolve()))
    if spec.resources.gpus_per_trial > 0:  # retraining inherits the search's device
        for path in ("search.device", "bench.device"):
            if _get(base, path) is None:
                set_dotted(base, path, "cuda")
    return base


def _check_base(spec: SweepSpec, cfg: PipelineConfig) -> None:
    """What the base config must agree on with the rest of the file: devices with the
    resources, a benchmark a sweep can run, a fixed search length under ASHA."""
    for path, dev in (
        ("search.device", cfg.search.device),
        ("retrain.device", cfg.resolved_retrain.device),
        ("bench.device", cfg.bench.device),
    ):
        _check(
            not str(dev).startswith("cuda") or spec.resources.gpus_per_trial > 0,
            f"base.{path} is {dev!r} but resources.gpus_per_trial is 0: Ray would give the "
            "trial no GPU (set --gpus-per-trial, or device cpu)",
        )
    _check(
        cfg.bench.precision != "int8",
        "base.bench.precision: int8 needs calibration images and is measured alone with "
        "`python -m ssr bench --genotype G --backend ort-int8`; a sweep measures fp32, fp16 or "
        "bf16",
    )
    check_latency_table(cfg, "base.search.latency.table")
    _check(
        spec.scheduler.cost_metric != "expected_latency_ms" or cfg.search.latency.table is not None,
        "scheduler.cost_metric expected_latency_ms needs base.search.latency.table (a latency "
        "table: python -m ssr latency build ...)",
    )
    kind = spec.scheduler.kind
    _check(
        kind not in ("asha", "moasha") or not cfg.search.stop_when_discrete,
        f"scheduler {kind} needs a fixed number of search epochs: "
        "base.search.stop_when_discrete must be false",
    )


def check_latency_table(cfg: PipelineConfig, where: str) -> None:
    """A latency table must describe what the sweep's benchmark measures: the same device
    kind, runtime, threads, precision and input size, and the searched space
    (docs/method.md §4.4); else one line."""
    path = cfg.search.latency.table
    if path is None:
        return
    from ssr.data import dataset_info
    from ssr.method.latency_table import check_table_for

    classes = dataset_info(cfg.search.data.name).num_classes
    try:
        check_table_for(path, cfg.bench, cfg.search.space, classes)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _params(spec: SweepSpec, base: dict[str, Any]) -> tuple[SweepParam, ...]:
    """The ``space:`` parameters, each probed at its extreme values (and all at their first)."""
    if spec.space is not None and not isinstance(spec.space, dict):
        raise ConfigError(f"space: expected a mapping of parameters, got {spec.space!r}")
    params = tuple(parse_param(k, v) for k, v in (spec.space or {}).items())
    for p in params:
        for value in p.probe_values():
            where = f"space.{p.key} = {value!r}"
            check_latency_table(build_pipeline(base, {p.key: value}, where=where), where)
    build_pipeline(base, {p.key: p.probe_values()[0] for p in params}, where="space (first values)")
    return params


def _check_searcher(spec: SweepSpec, params: tuple[SweepParam, ...]) -> None:
    """Parameters the searcher can sample: no grid with Optuna, scalar Optuna choices, grid
    parameters for the grid searcher."""
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


# --------------------------------------------------------------------------------------------
# Loading with overrides


def apply_overrides(raw: dict[str, Any], items: list[str] | None) -> dict[str, Any]:
    """``--set key=value`` on a sweep mapping; ``space.<dotted key>`` addresses one parameter.

    Items are parsed by :func:`ssr.config.cliargs.parse_set` (YAML values, the one ``--set`` parser).
    """
    return apply_values(raw, parse_set(items))


def apply_values(raw: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Dotted keys with their (parsed) values on a sweep mapping, as :func:`apply_overrides`."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
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


def load_sweep(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> Sweep:
    """Read a sweep file (default: the embedded ``default.yaml``), apply ``--set`` items, then
    parsed ``values`` (dotted keys: what a command's options set), validate."""
    from ssr.config import load_yaml

    raw = load_yaml(path if path is not None else DEFAULT_CONFIG)
    return build_sweep(apply_values(apply_overrides(raw, overrides), values or {}))


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
    datas = [cfg.search.data] + ([cfg.resolved_retrain.data] if cfg.retrain.epochs > 0 else [])
    if all(d.name == "synthetic" for d in datas):
        return
    from ssr.data import DATASETS, build_dataset

    for d in datas:
        if d.name not in DATASETS:
            raise ConfigError(f"dataset.name {d.name!r}: registered datasets: {sorted(DATASETS)}")
        if d.name != "synthetic":
            for split in ("train", "val"):
                build_dataset(d, split)
