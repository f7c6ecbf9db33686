"""Typed, frozen configuration for every SSR entry point.

Every knob of the method (docs/method.md §4-§6, §10) lives in one of the frozen dataclasses
below, so a config is data: it loads from YAML or a plain dict, takes dotted overrides
(``--set ssr.op=30``), rejects unknown keys and wrong types with a message that names the key,
and is written next to every output (``config.resolved.yaml``) and logged to MLflow.

A config that exists is valid: each dataclass checks its own values in ``__post_init__`` (the
checks are :mod:`ssr.config.validate`'s), so nothing downstream validates again, and a message names
the key (``search.data.batch_size must be >= 1``). A pipeline's retraining inherits the search's
data, device, precision and memory format where its own field is None
(:meth:`RetrainConfig.inherit`, :attr:`PipelineConfig.resolved_retrain`).

This module holds the dataclasses; :func:`load_config` (defaults <- YAML file <- overrides)
and :func:`dump_yaml` are :mod:`ssr.config.configload`'s. The parts live apart,
one idea each, and are re-exported here so that ``from ssr.config import X`` works for all:

- :mod:`ssr.config.errors`: :class:`ConfigError`;
- :mod:`ssr.config.yamlload`: the strict YAML loader (duplicate keys refused, ``1e30`` a number):
  :func:`load_yaml`, :func:`load_yaml_text`;
- :mod:`ssr.config.configload`: dict -> dataclass with key and type checks (:func:`from_dict`),
  overrides and the nested/dotted views (:func:`parse_overrides`, :func:`deep_merge`,
  :func:`set_dotted`, :func:`flatten`, :func:`to_dict`), :func:`load_config`;
- :mod:`ssr.config.validate`: the range checks each class runs on itself, and the memory
  format a config takes by default (:func:`channels_last_default`).

Layers, from the bottom up, ``ssr.config`` comes second, after :mod:`ssr.files`
(``tests/test_layers.py``). Besides these dataclasses the package holds the errors and exit codes
(:mod:`ssr.config.errors`), the YAML reader, the loader, the range checks and the command-line
config options (:mod:`ssr.config.cliargs`). It may import only :mod:`ssr.files`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Literal

from ssr.config.configload import (
    deep_merge,
    dump_yaml,
    flatten,
    from_dict,
    load_config,
    parse_overrides,
    set_dotted,
    to_dict,
)
from ssr.config.errors import ConfigError
from ssr.config.validate import (
    channels_last_allowed,
    channels_last_default,
    validate_bench,
    validate_data,
    validate_flops,
    validate_latency,
    validate_optim,
    validate_retrain,
    validate_search,
    validate_shrink,
    validate_space,
    validate_ssr,
)
from ssr.config.yamlload import load_yaml, load_yaml_text

__all__ = [
    "BenchConfig",
    "ConfigError",
    "DataConfig",
    "FlopsConfig",
    "LatencyConfig",
    "OptimConfig",
    "PipelineConfig",
    "RetrainConfig",
    "SSRConfig",
    "SearchConfig",
    "ShrinkConfig",
    "SpaceConfig",
    "StageSpace",
    "deep_merge",
    "dump_yaml",
    "flatten",
    "from_dict",
    "load_config",
    "load_yaml",
    "load_yaml_text",
    "parse_overrides",
    "set_dotted",
    "to_dict",
    "validate_data",
    "validate_space",
]

# --------------------------------------------------------------------------------------------
# Dataclasses


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to read and how to feed it (docs/method.md §6, §8.2).

    ``height``/``width`` are the network input size after resizing. ``train_size`` and
    ``val_size`` are the number of generated images for ``synthetic`` and an optional cap for
    real datasets. ``class_weights`` picks ENet-style weights from label frequencies (``enet``),
    ERFNet's constants (``erfnet``, Cityscapes only, docs/method.md §4.1) or none. ``eval_label_size``
    ``[H, W]`` reads the val labels at that size (Cityscapes' native ``[1024, 2048]``: evaluation
    at full resolution, logits upsampled, docs/method.md §8.3); None: at the input size.
    ``train_split`` and ``eval_split`` name the files the training and the evaluation read
    (CamVid: ``train``, ``val``, ``test`` or ``trainval``; the published CamVid protocol trains
    on ``trainval`` and reports on ``test``); the other datasets have ``train`` and ``val``.
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
    train_split: str = "train"
    eval_split: str = "val"

    def __post_init__(self) -> None:
        validate_data(self)


@dataclass(frozen=True)
class StageSpace:
    """One searchable stage: up to ``max_depth`` shared layers of width ``width``.

    ``min_depth`` is the shallowest depth the depth search may choose (docs/method.md §2.5); with
    ``min_depth == max_depth`` depth is fixed (the official 5+8 code).
    """

    width: int
    max_depth: int
    min_depth: int
    dropout: float


@dataclass(frozen=True)
class SpaceConfig:
    """The search space as data (docs/method.md §2): stages, reductions, dilations, pools, channel options.

    ``channel_remove`` lists how many channels each width option removes from the stage width
    (docs/method.md §2.3: ``CHANNELS = [32, 28, ..., 0]``). The default space is the paper's 5+8 layout
    with depth search over 3..5 and 6..9 layers (docs/method.md §2.5), so that both the searched 5+8
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

    def __post_init__(self) -> None:
        validate_space(self)


@dataclass(frozen=True)
class SSRConfig:
    """Weights of the Solution Space Regularization terms per dimension (docs/method.md §4.2).

    ``averaging='active'`` averages each dimension's term over groups with more than one alive
    candidate (docs/method.md §12.5); ``'all'`` reproduces the official code (collapsed groups count as 0).
    ``warmup_epochs`` delays the terms (0 = from the first step, as the official code).
    """

    op: float = 30.0
    out: float = 15.0
    mid: float = 15.0
    depth: float = 15.0
    averaging: Literal["active", "all"] = "active"
    warmup_epochs: int = 0

    def __post_init__(self) -> None:
        validate_ssr(self)


@dataclass(frozen=True)
class FlopsConfig:
    """Expected-FLOPs regularizer (docs/method.md §4.3), normalised by the space's largest sub-network.

    ``target`` is a fraction of that maximum; ``form`` is the penalty shape.
    """

    weight: float = 1.0
    target: float = 0.6
    form: Literal["l2", "l1", "band"] = "l2"
    height: int = 512
    width: int = 1024

    def __post_init__(self) -> None:
        validate_flops(self)


@dataclass(frozen=True)
class LatencyConfig:
    """Expected-latency term from a per-device lookup table (docs/method.md §4.4).

    The hardware-aware counterpart of :class:`FlopsConfig` (FBNet, ProxylessNAS, FasterSeg):
    ``table`` is a latency table of ``python -m ssr latency build`` (JSON), ``target_ms`` the
    latency the search steers to, ``form`` the penalty shape on ``E[latency] / target_ms``
    (the forms of the FLOPs term, with target 1). ``weight = 0`` switches the term off; with a
    table the search still logs the expected latency.

    ``derive``: how groups still undecided when the budget ends are decided
    (:mod:`ssr.method.derive_target`). ``argmax`` is the paper's rule; ``target`` moves the
    derived network's predicted latency to within ``derive_tolerance`` (a fraction of
    ``target_ms``) of the target at the least loss of log-probability, as hardware-aware NAS
    derives under its latency constraint; ``auto`` (default) is ``target`` when the term is on
    (a weight > 0, a table and a target: the search steers by latency, so its network should
    land there too; the term is our extension, not the paper's) and ``argmax`` otherwise (the
    paper's setting and the FLOPs term keep the paper's rule): :attr:`derive_rule`.
    """

    weight: float = 0.0
    target_ms: float | None = None
    table: str | None = None
    form: Literal["l2", "l1", "band"] = "l2"
    derive: Literal["auto", "argmax", "target"] = "auto"
    derive_tolerance: float = 0.02

    def __post_init__(self) -> None:
        validate_latency(self)

    @property
    def derive_rule(self) -> str:
        """``derive`` with ``auto`` decided: ``target`` or ``argmax`` (see the class doc)."""
        if self.derive != "auto":
            return self.derive
        on = self.weight > 0 and self.table is not None and self.target_ms is not None
        return "target" if on else "argmax"


@dataclass(frozen=True)
class ShrinkConfig:
    """Hierarchical progressive shrinking (docs/method.md §5).

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

    def __post_init__(self) -> None:
        validate_shrink(self)


@dataclass(frozen=True)
class OptimConfig:
    """Adam settings; ``poly`` applies ``lr * (1 - e/E)^power`` per epoch when power > 0."""

    lr: float = 3e-4
    betas: tuple[float, ...] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 1e-4
    poly_power: float = 0.9
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        validate_optim(self)


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
    (ssr/train/precision.py). ``channels_last``: NHWC memory format for the network and its inputs;
    left None it is decided when the config is built (:func:`channels_last_default`; a config
    made from it by ``dataclasses.replace`` keeps the decision): on for a CPU search in fp32,
    where it measured 1.2x faster (BENCHMARKS.md, compiled steps), and in bf16 on a CPU whose
    bf16 channels-last kernels are sound (AMX; refused where they are not, ssr/config/kernels.py),
    off otherwise.

    ``compile``: run the weight and architecture steps' forward and backward passes through
    ``torch.compile`` (ssr/train/compiled.py, docs/architecture.md §2.1); false (default) runs them
    eagerly. The network is recompiled only when shrinking has cut its compute enough to pay
    for it (a few times per search, counted as ``compiles`` in the summary).
    """

    space: SpaceConfig = field(default_factory=SpaceConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ssr: SSRConfig = field(default_factory=SSRConfig)
    flops: FlopsConfig = field(default_factory=FlopsConfig)
    latency: LatencyConfig = field(default_factory=LatencyConfig)
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
    channels_last: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if self.channels_last is None:  # decided here: a config that exists holds a bool
            object.__setattr__(
                self, "channels_last", channels_last_default(self.device, self.precision)
            )
        validate_search(self)


#: The fields a retraining takes from its search when it leaves them None.
INHERITED = ("data", "device", "precision", "channels_last", "compile")


@dataclass(frozen=True)
class RetrainConfig:
    """Retraining a derived network from scratch (docs/method.md §8.2).

    ``data``, ``device``, ``precision``, ``channels_last`` and ``compile`` (as in
    :class:`SearchConfig`, ssr/train/precision.py, ssr/train/compiled.py) are None unless set for
    retraining: None means the search's (:meth:`inherit`). ``epochs = 0`` is a pipeline's "no retraining".
    """

    data: DataConfig | None = None
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=5e-4))
    epochs: int = 300
    eval_every: int = 1
    seed: int = 0
    device: str | None = None
    checkpoint_every: int = 1
    precision: Literal["fp32", "bf16", "fp16"] | None = None
    channels_last: bool | None = None
    compile: bool | None = None

    def __post_init__(self) -> None:
        validate_retrain(self)

    def inherit(self, search: SearchConfig | None = None) -> RetrainConfig:
        """This retraining with every None of :data:`INHERITED` taken from ``search`` (a
        retraining on its own, ``search=None``: from the default :class:`SearchConfig`)."""
        source = search if search is not None else SearchConfig()
        given = {k: getattr(source, k) for k in INHERITED if getattr(self, k) is None}
        if given.get("channels_last"):  # not into bf16 on a CPU where it diverges
            device, precision = (
                given.get("device", self.device),
                given.get("precision", self.precision),
            )
            given["channels_last"] = channels_last_allowed(str(device), str(precision))
        return dataclasses.replace(self, **given) if given else self


@dataclass(frozen=True)
class BenchConfig:
    """The one FPS procedure (docs/architecture.md §5): fixed input, warm-up, synchronised timed iterations.

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
    precision: Literal["fp32", "fp16", "bf16", "int8"] = "fp32"  # int8: CPU, ssr.deploy.quantize
    threads: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        validate_bench(self)


@dataclass(frozen=True)
class PipelineConfig:
    """One trial of a sweep: search, derive, retrain for a budget, evaluate, measure.

    ``retrain`` is the retraining as given (its None fields: the search's); the retraining that
    runs is :attr:`resolved_retrain`. ``retrain.epochs = 0`` skips retraining (the record then
    has no retrained mIoU).
    """

    search: SearchConfig = field(default_factory=SearchConfig)
    retrain: RetrainConfig = field(default_factory=lambda: RetrainConfig(epochs=0))
    bench: BenchConfig = field(default_factory=BenchConfig)
    export_onnx: bool = True

    def __post_init__(self) -> None:
        try:  # the retraining that runs, with what it inherits, is checked now: not after a search
            _ = self.resolved_retrain
        except ConfigError as exc:
            raise ConfigError(f"retrain.{exc}") from None

    @functools.cached_property
    def resolved_retrain(self) -> RetrainConfig:
        """The retraining as it runs: ``retrain`` with the search's data, device, precision and
        memory format where it leaves them None."""
        return self.retrain.inherit(self.search)

    def resolved(self) -> PipelineConfig:
        """This config with :attr:`resolved_retrain` in place of ``retrain`` (what a trial writes
        as ``config.resolved.yaml`` and logs as its params)."""
        return dataclasses.replace(self, retrain=self.resolved_retrain)
