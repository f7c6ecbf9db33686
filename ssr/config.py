"""Typed, frozen configuration for every SSR entry point.

Every knob of the method (spec §4-§6, §10) lives in one of the frozen dataclasses below, so a
config is data: it loads from YAML or a plain dict, takes dotted overrides
(``--set ssr.op=30``), rejects unknown keys and wrong types with a message that names the key,
and is written next to every output (``config.resolved.yaml``) and logged to MLflow.

The loader is deliberately small: dataclass fields typed with ``int``, ``float``, ``bool``,
``str``, ``X | None``, ``tuple[X, ...]``, ``Literal[...]`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range."""


# --------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to read and how to feed it (spec §6, §8.2).

    ``height``/``width`` are the network input size after resizing. ``train_size`` and
    ``val_size`` are the number of generated images for ``synthetic`` and an optional cap for
    real datasets. ``class_weights`` picks ENet-style weights from label frequencies (``enet``),
    ERFNet's constants (``erfnet``, Cityscapes only, spec §4.1) or none. ``eval_label_size``
    ``[H, W]`` reads the val labels at that size (Cityscapes' native ``[1024, 2048]``: evaluation
    at full resolution, logits upsampled, docs/method.md §8.3); None: at the input size.
    """

    name: str = "synthetic"
    root: str | None = None
    height: int = 128
    width: int = 256
    train_size: int | None = 64
    val_size: int | None = 16
    batch_size: int = 4
    num_workers: int = 0
    augment: bool = True
    scale_range: tuple[float, ...] | None = None
    crop: tuple[int, ...] | None = None
    class_weights: Literal["enet", "erfnet", "none"] = "enet"
    seed: int = 0
    eval_label_size: tuple[int, ...] | None = None


@dataclass(frozen=True)
class StageSpace:
    """One searchable stage: up to ``max_depth`` shared layers of width ``width``.

    ``min_depth`` is the shallowest depth the depth search may choose (spec §2.5); with
    ``min_depth == max_depth`` depth is fixed (the official 5+8 code).
    """

    width: int
    max_depth: int
    min_depth: int
    dropout: float


@dataclass(frozen=True)
class SpaceConfig:
    """The search space as data (spec §2): stages, reductions, dilations, pools, channel options.

    ``channel_remove`` lists how many channels each width option removes from the stage width
    (spec §2.3: ``CHANNELS = [32, 28, ..., 0]``). The default space is the paper's 5+8 layout
    with depth search over 3..5 and 6..9 layers (spec §2.5), so that both the searched 5+8
    and the released 4+9 genotype are reachable with the fewest extra layers to compute.
    """

    stem_width: int = 16
    stages: tuple[StageSpace, ...] = (
        StageSpace(width=64, max_depth=5, min_depth=3, dropout=0.03),
        StageSpace(width=128, max_depth=9, min_depth=6, dropout=0.3),
    )
    dilations: tuple[int, ...] = (1, 2, 4, 8, 16)
    pools: tuple[int, ...] = (1, 2)
    channel_remove: tuple[int, ...] = (32, 28, 24, 20, 16, 12, 8, 4, 0)
    search_depth: bool = True


@dataclass(frozen=True)
class SSRConfig:
    """Weights of the Solution Space Regularization terms per dimension (spec §4.2).

    ``averaging='active'`` averages each dimension's term over groups with more than one alive
    candidate (spec §12.5); ``'all'`` reproduces the official code (collapsed groups count as 0).
    ``warmup_epochs`` delays the terms (0 = from the first step, as the official code).
    """

    op: float = 30.0
    out: float = 15.0
    mid: float = 15.0
    depth: float = 15.0
    averaging: Literal["active", "all"] = "active"
    warmup_epochs: int = 0


@dataclass(frozen=True)
class FlopsConfig:
    """Expected-FLOPs regularizer (spec §4.3), normalised by the space's largest sub-network.

    ``target`` is a fraction of that maximum; ``form`` is the penalty shape.
    """

    weight: float = 1.0
    target: float = 0.6
    form: Literal["l2", "l1", "band"] = "l2"
    height: int = 512
    width: int = 1024


@dataclass(frozen=True)
class ShrinkConfig:
    """Hierarchical progressive shrinking (spec §5).

    Every ``every`` epochs after ``warmup`` epochs, each group drops the candidates whose
    probability is at most ``threshold`` times the group's maximum, one dimension after another
    in ``order``. ``max_per_decision`` caps how many candidates one decision may drop (None: no
    cap). ``enabled=False`` gives the plain-argmax baseline.
    """

    enabled: bool = True
    threshold: float = 0.1
    every: int = 1
    warmup: int = 0
    order: tuple[str, ...] = ("depth", "op", "out", "mid")
    max_per_decision: int | None = None


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings; ``poly`` applies ``lr * (1 - e/E)^power`` per epoch when power > 0."""

    lr: float = 3e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    grad_clip: float | None = None


@dataclass(frozen=True)
class SearchConfig:
    """One SSR search (docs/method.md §6): space, data, losses, shrinking, bi-level optimizers.

    ``label_stride``: labels are sampled at the centres of the supernet's output cells (row
    ``8i + 4`` at stride 8, as the official nearest resize).

    ``gap_epochs``: at the end of each listed epoch (1-based), the supernet and its argmax
    sub-network (inherited weights, BN recalibrated) are both evaluated and ``gap_at_<epoch>`` is
    recorded (docs/method.md §7); the gap at the epoch the net becomes discrete is always
    recorded. Each entry costs one BN recalibration and one validation pass.

    ``reduction_width`` decodes the reduction after a narrowed stage (docs/method.md §12.8):
    ``"exact"`` (default) keeps the supernet's conv width, so the genotype is the exact
    sub-network whose inherited weights the discretization gap measures; ``"official"`` widens
    the conv so the block outputs the full stage width, as the official ``decode.py`` and the
    released Cityscapes genotype. The gap is always measured on the exact sub-network; this
    choice changes the genotype that is written, retrained and measured for cost.

    ``precision``: ``fp32`` (default), ``bf16`` or ``fp16`` autocast of the forward passes on
    the device (fp16 with a gradient scaler per optimiser); the SSR and FLOPs terms stay fp32
    (ssr/precision.py). ``channels_last``: NHWC memory format for the network and its inputs.
    """

    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ssr: SSRConfig = field(default_factory=SSRConfig)
    flops: FlopsConfig = field(default_factory=FlopsConfig)
    shrink: ShrinkConfig = field(default_factory=ShrinkConfig)
    weight_optim: OptimConfig = field(default_factory=OptimConfig)
    arch_optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(
            lr=2e-3, weight_decay=1e-3, poly_power=0.0, grad_clip=5.0
        )
    )
    epochs: int = 200
    ce_scale: float = 100.0
    arch_split: bool = False
    label_stride: int = 8
    bn_recalibration_batches: int = 8
    skip_arch_when_discrete: bool = True
    stop_when_discrete: bool = False
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 1
    gap_epochs: tuple[int, ...] = ()
    reduction_width: Literal["exact", "official"] = "exact"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining a derived network from scratch (spec §8.2).

    ``precision`` and ``channels_last``: as in :class:`SearchConfig` (ssr/precision.py).
    """

    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4))
    epochs: int = 300
    eval_every: int = 1
    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 1
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    channels_last: bool = False


@dataclass(frozen=True)
class BenchConfig:
    """The one FPS procedure (design §5): fixed input, warm-up, synchronised timed iterations.

    ``repeats`` independent timing passes of ``iters`` iterations each; the median over all
    iterations and the spread between passes are reported. ``threads=0`` keeps torch's default.
    """

    height: int = 512
    width: int = 1024
    batch: int = 1
    warmup: int = 10
    iters: int = 50
    repeats: int = 3
    backend: Literal["torch", "onnxruntime", "auto"] = "torch"
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"  # int8: CPU, ssr.quantize
    threads: int = 0
    device: str = "cpu"


@dataclass(frozen=True)
class PipelineConfig:
    """One trial of a sweep: search, derive, retrain for a budget, evaluate, measure.

    ``retrain.data`` defaults to the search's data unless given; ``retrain.epochs = 0`` skips
    retraining (the record then has no retrained mIoU).
    """

    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=lambda: RetrainConfig(epochs=0))
    bench: BenchConfig = field(default_factory=BenchConfig)
    export_onnx: bool = True


# --------------------------------------------------------------------------------------------
# Loading


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, checking keys and types.

    Missing keys take their defaults; unknown keys raise :class:`ConfigError` naming the key
    and the keys that exist.
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {where + '.' if where else ''}{unknown[0]!s}; "
            f"valid keys here: {', '.join(sorted(names))}"
        )
    kwargs = {}
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            # a partly given block starts from this field's default, not the class defaults
            # (``arch_optim: {lr: 0.01}`` keeps the architecture optimiser's weight decay)
            default = _field_default(fields[name])
            if dataclasses.is_dataclass(default):
                value = deep_merge(to_dict(default), value)
        kwargs[name] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields of nested dataclasses
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a nested dict: ``{'ssr': {'op': 30}} -> {'ssr.op': 30}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``d['a']['b'] = value`` for ``key='a.b'``, creating levels as needed."""
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``['ssr.op=30', 'shrink.order=[op,out]']`` into a nested dict (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: cannot parse value ({exc})") from None
        set_dotted(out, key, value)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of ``over`` win."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with clear errors for a missing or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: expected a mapping at the top level")
    return data


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults <- YAML file <- ``key=value`` overrides, validated into ``cls``."""
    data = load_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    cfg = from_dict(cls, data)
    validate(cfg)
    return cfg


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (the ``config.resolved.yaml`` next to every output)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


# --------------------------------------------------------------------------------------------
# Range checks


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def validate(cfg: Any) -> None:
    """Range checks that types alone cannot express; raises :class:`ConfigError`."""
    if isinstance(cfg, SearchConfig):
        validate_space(cfg.space)
        validate_data(cfg.data)
        for k in ("op", "out", "mid", "depth"):
            _check(getattr(cfg.ssr, k) >= 0, f"ssr.{k} must be >= 0")
        _check(cfg.flops.weight >= 0, "flops.weight must be >= 0")
        _check(0 < cfg.flops.target <= 1.5, "flops.target must be in (0, 1.5]")
        _check(0 < cfg.shrink.threshold < 1, "shrink.threshold must be in (0, 1)")
        _check(cfg.shrink.every >= 1, "shrink.every must be >= 1")
        _check(cfg.shrink.warmup >= 0, "shrink.warmup must be >= 0")
        dims = {"depth", "op", "out", "mid"}
        bad = [d for d in cfg.shrink.order if d not in dims]
        _check(not bad, f"shrink.order: unknown dimension {bad[:1]}; use {sorted(dims)}")
        _check(cfg.epochs >= 1, "epochs must be >= 1")
        _check(cfg.label_stride in (1, 2, 4, 8), "label_stride must be 1, 2, 4 or 8")
        _check(cfg.weight_optim.lr > 0 and cfg.arch_optim.lr > 0, "learning rates must be > 0")
        bad_gap = [e for e in cfg.gap_epochs if not 1 <= e <= cfg.epochs]
        _check(not bad_gap, f"gap_epochs: {bad_gap[:1]} not in 1..epochs ({cfg.epochs})")
        numbers = {
            **{f"ssr.{k}": getattr(cfg.ssr, k) for k in ("op", "out", "mid", "depth")},
            "flops.weight": cfg.flops.weight,
            "ce_scale": cfg.ce_scale,
            "weight_optim.lr": cfg.weight_optim.lr,
            "arch_optim.lr": cfg.arch_optim.lr,
            "weight_optim.weight_decay": cfg.weight_optim.weight_decay,
            "arch_optim.weight_decay": cfg.arch_optim.weight_decay,
        }
        for key, value in numbers.items():
            _check(math.isfinite(value), f"{key} must be a finite number, got {value}")
    elif isinstance(cfg, RetrainConfig):
        validate_data(cfg.data)
        _check(cfg.epochs >= 1, "epochs must be >= 1")
        _check(cfg.optim.lr > 0, "optim.lr must be > 0")


def validate_space(space: SpaceConfig) -> None:
    _check(len(space.stages) >= 1, "space.stages must not be empty")
    prev = space.stem_width
    for i, st in enumerate(space.stages):
        _check(
            st.width > prev,
            f"space.stages[{i}].width={st.width} must exceed the previous width {prev} "
            "(a reduction concatenates a conv with the pooled input)",
        )
        prev = st.width
    for i, st in enumerate(space.stages):
        _check(st.width > 0, f"space.stages[{i}].width must be > 0")
        _check(
            1 <= st.min_depth <= st.max_depth,
            f"space.stages[{i}]: need 1 <= min_depth <= max_depth",
        )
        _check(0 <= st.dropout < 1, f"space.stages[{i}].dropout must be in [0, 1)")
        _check(
            max(space.channel_remove) < st.width,
            f"space.channel_remove: removing {max(space.channel_remove)} channels from width "
            f"{st.width} leaves nothing",
        )
    _check(len(space.dilations) >= 1 and min(space.dilations) >= 1, "space.dilations must be >= 1")
    _check(len(space.pools) >= 1 and min(space.pools) >= 1, "space.pools must be >= 1")
    _check(min(space.channel_remove) >= 0, "space.channel_remove must be >= 0")
    _check(
        len(set(space.channel_remove)) == len(space.channel_remove),
        "space.channel_remove has duplicates",
    )


def validate_data(data: DataConfig) -> None:
    _check(data.height >= 16 and data.width >= 16, "data.height and data.width must be >= 16")
    _check(
        data.height % 16 == 0 and data.width % 16 == 0,
        f"data.height/width ({data.height}x{data.width}) must be multiples of 16",
    )
    _check(data.batch_size >= 1, "data.batch_size must be >= 1")
    size = data.eval_label_size
    _check(
        size is None or (len(size) == 2 and min(size) >= 16),
        f"data.eval_label_size must be [height, width] (each >= 16), got {size}",
    )
