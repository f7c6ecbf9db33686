"""The sweep's parameters: points of its space -> validated PipelineConfigs (one per trial),
and a trial's Tune config resolved once (:class:`ResolvedTrial`).

A sweep parameter is one entry of a sweep file's ``space``: a key, the
:class:`ssr.config.PipelineConfig` field it sets and its distribution (``uniform``,
``loguniform``, ``int``, ``logint`` (inclusive bounds), ``choice``, ``grid``, or a constant).
("Parameter", not "dimension": a dimension is an architecture dimension of the search space.)
Keys are dotted PipelineConfig paths, taken relative to ``search.`` unless they start with
``search.``, ``retrain.``, ``bench.`` or ``export_onnx`` (``ssr.op`` means ``search.ssr.op``,
the knobs of docs/method.md §10). Two keys are special: ``seed`` sets ``search.seed`` and
``retrain.seed``; ``baseline`` is ``ssr`` (as sampled), ``darts_pruning`` (all SSR weights 0,
shrinking on) or ``no_shrink`` (shrinking off, argmax at the end). The trial
(:mod:`sweeps.trial`) and the validator (:mod:`sweeps.define.spec`) build configs with the same
:func:`build_pipeline`, so a point that validates is a point that runs.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from ssr.config import (
    ConfigError,
    PipelineConfig,
    flatten,
    from_dict,
    set_dotted,
    to_dict,
)
from ssr.config.configload import dataclass_type
from sweeps.contract.protocol import SAMPLED_KEY, is_finite_number

DIST_KINDS = ("uniform", "loguniform", "int", "logint", "choice", "grid")
SPECIAL_KEYS = ("baseline", "seed")
BASELINES = ("ssr", "darts_pruning", "no_shrink")
SSR_WEIGHTS = ("op", "out", "mid", "depth")
_TOP_FIELDS = tuple(f.name for f in dataclasses.fields(PipelineConfig))


@dataclass(frozen=True)
class SweepParam:
    """One entry of ``space``: a key, the PipelineConfig path it sets and its distribution."""

    key: str
    kind: str  # one of DIST_KINDS, or "const"
    args: tuple[Any, ...]

    @property
    def path(self) -> str:
        return resolve_path(self.key)

    def domain(self) -> Any:
        """The Ray Tune domain (``const`` parameters stay plain values)."""
        from ray import tune

        lo, hi = (*self.args, None, None)[:2]
        return {
            "uniform": lambda: tune.uniform(lo, hi),
            "loguniform": lambda: tune.loguniform(lo, hi),
            "int": lambda: tune.randint(lo, hi + 1),
            "logint": lambda: tune.lograndint(lo, hi + 1),
            "choice": lambda: tune.choice(list(self.args)),
            "grid": lambda: tune.grid_search(list(self.args)),
            "const": lambda: self.args[0],
        }[self.kind]()

    def probe_values(self) -> list[Any]:
        """Values that must all be valid: every option, or both ends of a range."""
        if self.kind in ("choice", "grid", "const"):
            return list(self.args)
        lo, hi = self.args
        if self.kind in ("int", "logint"):
            return [lo, hi]
        # NOTE: the upper end of a continuous range is (almost) never drawn; probe just below it.
        return [lo, hi - (hi - lo) * 1e-9]


def resolve_path(key: str) -> str:
    """``ssr.op`` -> ``search.ssr.op``; full paths and the special keys stay as they are."""
    if key in SPECIAL_KEYS or key.split(".")[0] in _TOP_FIELDS:
        return key
    return f"search.{key}"


def _leaf_exists(path: str) -> bool:
    """``path`` names a value of a PipelineConfig (not a block): ``search.ssr.op``,
    ``retrain.data.height`` (a block that may be None counts as its dataclass)."""
    cls: Any = PipelineConfig
    for part in path.split("."):
        if cls is None or part not in {f.name for f in dataclasses.fields(cls)}:
            return False
        tp = typing.get_type_hints(cls)[part]
        cls = dataclass_type(tp)
        leaf = tp
    return dataclass_type(leaf) is None


def parse_param(key: Any, value: Any) -> SweepParam:
    """Parse one ``space`` entry: ``{loguniform: [lo, hi]}``, ``{choice: [...]}``, a constant."""
    where = f"space.{key}"
    if not isinstance(key, str) or not key:
        raise ConfigError(f"space: keys must be dotted names like ssr.op, got {key!r}")
    path = resolve_path(key)
    if key not in SPECIAL_KEYS and not _leaf_exists(path):
        raise ConfigError(
            f"unknown key {where}: {path} is not a PipelineConfig field "
            f"(keys are relative to search., e.g. ssr.op, shrink.threshold, arch_optim.lr, "
            f"or one of {', '.join(SPECIAL_KEYS)})"
        )
    if path in ("search.epochs", "retrain.epochs"):
        raise ConfigError(
            f"{where}: the per-trial budget is set by budget.search_epochs/retrain_epochs"
        )
    if not isinstance(value, dict):
        return SweepParam(key, "const", (value,))
    if len(value) != 1 or next(iter(value)) not in DIST_KINDS:
        raise ConfigError(
            f"{where}: expected one of {{{', '.join(k + ': ...' for k in DIST_KINDS)}}} "
            f"or a constant, got {value!r}"
        )
    kind, args = next(iter(value.items()))
    if not isinstance(args, list) or not args:
        raise ConfigError(f"{where}.{kind}: expected a non-empty list, got {args!r}")
    if kind in ("choice", "grid"):
        return SweepParam(key, kind, tuple(args))
    if len(args) != 2 or not all(is_finite_number(a) for a in args):
        raise ConfigError(f"{where}.{kind}: expected [low, high] finite numbers, got {args!r}")
    lo, hi = args
    if not lo < hi:
        raise ConfigError(f"{where}.{kind}: low must be < high, got {args!r}")
    if kind in ("int", "logint") and not all(isinstance(a, int) for a in args):
        raise ConfigError(f"{where}.{kind}: bounds must be integers, got {args!r}")
    if kind in ("loguniform", "logint") and lo <= 0:
        raise ConfigError(f"{where}.{kind}: bounds must be > 0 for a log scale, got {args!r}")
    return SweepParam(key, kind, (lo, hi))


def _plain(v: Any) -> Any:
    """numpy scalars (Tune's samplers) -> Python scalars, so ssr's strict loader accepts them."""
    if type(v).__module__ == "numpy" and hasattr(v, "item"):
        return v.item()
    return v


def apply_params(base: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Nested PipelineConfig dict of ``base`` with the sampled ``values`` (keys as in ``space``)."""
    out = copy.deepcopy(base)
    for key, value in values.items():
        value = _plain(value)
        if key == "baseline":
            continue
        if key == "seed":
            set_dotted(out, "search.seed", value)
            set_dotted(out, "retrain.seed", value)
        else:
            set_dotted(out, resolve_path(key), value)
    baseline = values.get("baseline", "ssr")
    if baseline == "darts_pruning":
        for w in SSR_WEIGHTS:
            set_dotted(out, f"search.ssr.{w}", 0.0)
    elif baseline == "no_shrink":
        set_dotted(out, "search.shrink.enabled", False)
    return out


def build_pipeline(base: dict[str, Any], values: dict[str, Any], where: str = "") -> PipelineConfig:
    """Validated PipelineConfig for one point of the space (the trial and the validator share it)."""
    baseline = values.get("baseline", "ssr")
    if baseline not in BASELINES:
        raise ConfigError(f"{where or 'baseline'}: {baseline!r} is not one of {list(BASELINES)}")
    if "seed" in values and (
        not isinstance(_plain(values["seed"]), int) or isinstance(values["seed"], bool)
    ):
        raise ConfigError(f"{where or 'seed'}: expected an integer, got {values['seed']!r}")
    data = apply_params(base, values)
    try:
        cfg = from_dict(PipelineConfig, data)  # a PipelineConfig checks itself whole
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}" if where else str(exc)) from None
    return cfg


def trial_values(config: dict[str, Any]) -> dict[str, Any]:
    """The sampled parameter values of a Tune trial config."""
    return {k: _plain(v) for k, v in (config.get(SAMPLED_KEY) or {}).items()}


@dataclass(frozen=True)
class ResolvedTrial:
    """One trial's Tune config, resolved once: what the trial runs and the driver records.

    ``pipeline`` is the validated PipelineConfig; ``baseline`` the trial's baseline (``ssr``
    when the space has none); ``values`` the sampled parameter values (plain Python);
    ``params`` the ``cfg.<key>`` view that rows and MLflow runs take (:func:`flat_params`).
    The trial (:mod:`sweeps.trial`), the results table and the tracking all use this value,
    so a trial's config is built and checked once per process, not per row or per log call.
    """

    pipeline: PipelineConfig
    baseline: str
    values: Mapping[str, Any]
    params: Mapping[str, Any]


def resolve_trial(config: dict[str, Any]) -> ResolvedTrial:
    """The :class:`ResolvedTrial` of a Tune trial config (see :meth:`Sweep.param_space`).

    Memoised on the config's content (its ``base`` and sampled values), so the driver's
    callbacks, called for every result of a trial, resolve it once.
    """
    base, values = config["base"], trial_values(config)
    try:
        key = json.dumps([base, values], sort_keys=True)
    except TypeError:  # a value JSON cannot carry: resolve it without the memo
        return _resolve_values(base, values)
    return _resolve(key)


@functools.lru_cache(maxsize=1024)
def _resolve(key: str) -> ResolvedTrial:
    return _resolve_values(*json.loads(key))


def _resolve_values(base: dict[str, Any], values: dict[str, Any]) -> ResolvedTrial:
    pipeline = build_pipeline(base, values)
    baseline = str(values.get("baseline", "ssr"))
    out: dict[str, Any] = {}
    for k, v in flatten(to_dict(pipeline.resolved())).items():
        out[f"cfg.{k.removeprefix('search.')}"] = (
            json.dumps(v) if isinstance(v, (list, dict)) else v
        )
    out["cfg.baseline"] = baseline
    return ResolvedTrial(pipeline, baseline, MappingProxyType(dict(values)), MappingProxyType(out))


def trial_pipeline(config: dict[str, Any]) -> PipelineConfig:
    """Tune trial config -> its validated PipelineConfig (:func:`resolve_trial`)."""
    return resolve_trial(config).pipeline


def flat_params(config: dict[str, Any]) -> dict[str, Any]:
    """``cfg.<key>`` of a trial (:attr:`ResolvedTrial.params`): its PipelineConfig as it runs
    (retraining with what it inherits), flattened, plus ``cfg.baseline``.

    Keys use the sweep file's shorthand: search fields are relative to ``search.``
    (``cfg.ssr.op``, ``cfg.shrink.threshold``, ``cfg.data.name``), the rest keep their section
    (``cfg.retrain.epochs``, ``cfg.bench.height``, ``cfg.export_onnx``). Lists (stages,
    dilations, ...) are JSON text so that every value is a scalar.
    """
    return dict(resolve_trial(config).params)
