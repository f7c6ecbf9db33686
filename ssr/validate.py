"""Range checks of a config: what types alone cannot say (docs/architecture.md §6).

Loading (:mod:`ssr.configload`) checks keys and types; this module checks values, so that a
config that validates is a config that runs: every float is finite (``.inf`` and ``.nan`` are
refused wherever they appear), counts that make no sense at 0 are >= 1 (epochs, iterations,
batches, sizes), rates lie in their interval, the space can be built, and a trial's benchmark
input fits the network's stride. Each message names the key, with the section it sits in
(``search.epochs``, ``bench.iters``) when a whole :class:`~ssr.config.PipelineConfig` is checked.

The functions take the dataclasses of :mod:`ssr.config` by attribute only, so this module does
not import it; :func:`ssr.config.validate` picks the function for a config's class.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any

from ssr.errors import ConfigError

if TYPE_CHECKING:
    from ssr.config import (
        BenchConfig,
        DataConfig,
        OptimConfig,
        PipelineConfig,
        RetrainConfig,
        SearchConfig,
        SpaceConfig,
    )

__all__ = [
    "check_device",
    "check_finite_fields",
    "validate_bench",
    "validate_data",
    "validate_optim",
    "validate_pipeline",
    "validate_retrain",
    "validate_search",
    "validate_space",
]

#: The widest layer a space or a genotype may ask for. The paper's widest is 128 channels; one
#: 3x1 conv at this width already holds 200 M weights (0.8 GB), so more is a typo, not a network.
MAX_CHANNELS = 8192
#: Device names a config may give (what :func:`ssr.device.resolve_device` accepts).
DEVICE = re.compile(r"^(cpu|cuda(:[0-9]+)?)$")
#: The search's architecture dimensions, in the names ``shrink.order`` uses.
DIMENSIONS = ("depth", "op", "out", "mid")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _at_least(value: int | None, low: int, key: str, none: str = "") -> None:
    """``value >= low`` (None allowed when ``none`` says what it means)."""
    if value is None and none:
        return
    _check(value is not None and value >= low, f"{key} must be >= {low}{none}, got {value}")


def check_device(name: str, key: str) -> None:
    """``cpu``, ``cuda`` or ``cuda:<index>`` (whether CUDA is there is checked when used)."""
    _check(bool(DEVICE.match(name)), f"{key} {name!r} is not valid; use cpu, cuda or cuda:<index>")


def check_finite_fields(cfg: Any, prefix: str = "") -> None:
    """Every float of ``cfg`` (nested dataclasses and tuples included) is finite."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        items = list(enumerate(value)) if isinstance(value, tuple) else [(None, value)]
        for i, v in items:
            where = key if i is None else f"{key}[{i}]"
            if dataclasses.is_dataclass(v):
                check_finite_fields(v, f"{where}.")
            elif isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f"{where} must be a finite number, got {v}")


def _fits_stride(height: int, width: int, stages: int, prefix: str) -> None:
    """The input of an ``stages``-stage network: the stem and one stride-2 reduction per stage
    (docs/method.md §2.1) must each halve an even size, or the conv and the max-pool halves of
    a reduction differ by one pixel."""
    stride = 2 ** (stages + 1)
    _check(
        height % stride == 0 and width % stride == 0,
        f"{prefix}height/width ({height}x{width}) must be multiples of {stride} (the stride of "
        f"a {stages}-stage network)",
    )


def validate_data(data: DataConfig, prefix: str = "data.") -> None:
    """Sizes, batch and the synthetic dataset's image counts."""
    p = prefix
    _check(data.height >= 16 and data.width >= 16, f"{p}height and {p}width must be >= 16")
    _check(
        data.height % 16 == 0 and data.width % 16 == 0,
        f"{p}height/width ({data.height}x{data.width}) must be multiples of 16",
    )
    _at_least(data.batch_size, 1, f"{p}batch_size")
    _at_least(data.num_workers, 0, f"{p}num_workers")
    _at_least(data.train_size, 1, f"{p}train_size", " (or null: all images)")
    _at_least(data.val_size, 1, f"{p}val_size", " (or null: all images)")
    if data.name == "synthetic":
        for split in ("train", "val"):
            _check(
                getattr(data, f"{split}_size") is not None,
                f"{p}{split}_size must be set for the synthetic dataset (an integer >= 1)",
            )
    if data.scale_range is not None:
        lo_hi = data.scale_range
        _check(
            len(lo_hi) == 2 and 0 < lo_hi[0] <= lo_hi[1],
            f"{p}scale_range must be [low, high] with 0 < low <= high, got {list(lo_hi)}",
        )
    if data.crop is not None:
        _check(
            len(data.crop) == 2 and min(data.crop) >= 16,
            f"{p}crop must be [height, width], each >= 16, got {list(data.crop)}",
        )
    size = data.eval_label_size
    _check(
        size is None or (len(size) == 2 and min(size) >= 16),
        f"{p}eval_label_size must be [height, width] (each >= 16), got {size}",
    )


def validate_space(space: SpaceConfig, prefix: str = "space.") -> None:
    """A space the supernet can build: widths that grow, depths, dilations, pools, widths left."""
    p = prefix
    _check(len(space.stages) >= 1, f"{p}stages must not be empty")
    _at_least(space.stem_width, 4, f"{p}stem_width")
    _check(
        max(st.width for st in space.stages) <= MAX_CHANNELS,
        f"{p}stages: a width above {MAX_CHANNELS} channels is not a network this library builds",
    )
    prev = space.stem_width
    for i, st in enumerate(space.stages):
        _check(
            st.width > prev,
            f"{p}stages[{i}].width={st.width} must exceed the previous width {prev} "
            "(a reduction concatenates a conv with the pooled input)",
        )
        prev = st.width
    for i, st in enumerate(space.stages):
        _check(
            1 <= st.min_depth <= st.max_depth,
            f"{p}stages[{i}]: need 1 <= min_depth <= max_depth",
        )
        _check(0 <= st.dropout < 1, f"{p}stages[{i}].dropout must be in [0, 1)")
        _check(
            max(space.channel_remove, default=0) < st.width,
            f"{p}channel_remove: removing {max(space.channel_remove)} channels from width "
            f"{st.width} leaves nothing",
        )
    _check(len(space.dilations) >= 1 and min(space.dilations) >= 1, f"{p}dilations must be >= 1")
    _check(len(space.pools) >= 1 and min(space.pools) >= 1, f"{p}pools must be >= 1")
    _check(
        len(space.channel_remove) >= 1 and min(space.channel_remove) >= 0,
        f"{p}channel_remove must be a non-empty list of numbers >= 0",
    )
    _check(
        len(set(space.channel_remove)) == len(space.channel_remove),
        f"{p}channel_remove has duplicates",
    )


def validate_optim(opt: OptimConfig, prefix: str) -> None:
    """Adam's settings: a positive rate, betas in [0, 1), eps > 0, decay and power >= 0."""
    p = prefix
    _check(opt.lr > 0, f"{p}lr must be > 0, got {opt.lr}")
    _check(
        len(opt.betas) == 2 and all(0 <= b < 1 for b in opt.betas),
        f"{p}betas must be two numbers in [0, 1), got {list(opt.betas)}",
    )
    _check(opt.eps > 0, f"{p}eps must be > 0, got {opt.eps}")
    _check(opt.weight_decay >= 0, f"{p}weight_decay must be >= 0, got {opt.weight_decay}")
    _check(opt.poly_power >= 0, f"{p}poly_power must be >= 0, got {opt.poly_power}")
    _check(
        opt.grad_clip is None or opt.grad_clip > 0,
        f"{p}grad_clip must be > 0 (or null: no clipping), got {opt.grad_clip}",
    )


def _precision_layout(precision: str, channels_last: bool, device: str, prefix: str) -> None:
    # NOTE: measured (BENCHMARKS.md, machine B): bf16 autocast with channels-last training on
    # CPU gives a non-finite loss or weight gradient within 20 iterations; each alone is fine
    _check(
        not (precision == "bf16" and channels_last and not device.startswith("cuda")),
        f"{prefix}precision bf16 with {prefix}channels_last on CPU diverges in this torch build; "
        "use one of them",
    )


def validate_search(cfg: SearchConfig, prefix: str = "") -> None:
    """One search: its space, data, SSR and FLOPs weights, shrinking, optimisers, epochs."""
    p = prefix
    check_finite_fields(cfg, p)
    validate_space(cfg.space, f"{p}space.")
    n = len(cfg.space.stages)
    _check(
        n >= 2,
        f"{p}space.stages: a search needs at least two stages, got {n} (the network it derives "
        "has the aggregation head, which fuses the first stage's output with the last's)",
    )
    validate_data(cfg.data, f"{p}data.")
    _fits_stride(cfg.data.height, cfg.data.width, n, f"{p}data.")
    for k in ("op", "out", "mid", "depth"):
        _check(getattr(cfg.ssr, k) >= 0, f"{p}ssr.{k} must be >= 0")
    _at_least(cfg.ssr.warmup_epochs, 0, f"{p}ssr.warmup_epochs")
    _check(cfg.flops.weight >= 0, f"{p}flops.weight must be >= 0")
    _check(0 < cfg.flops.target <= 1.5, f"{p}flops.target must be in (0, 1.5]")
    _at_least(cfg.flops.height, 16, f"{p}flops.height")
    _at_least(cfg.flops.width, 16, f"{p}flops.width")
    _check(0 < cfg.shrink.threshold < 1, f"{p}shrink.threshold must be in (0, 1)")
    _at_least(cfg.shrink.every, 1, f"{p}shrink.every")
    _at_least(cfg.shrink.warmup, 0, f"{p}shrink.warmup")
    _at_least(cfg.shrink.max_per_decision, 1, f"{p}shrink.max_per_decision", " (or null)")
    bad = [d for d in cfg.shrink.order if d not in DIMENSIONS]
    _check(not bad, f"{p}shrink.order: unknown dimension {bad[:1]}; use {sorted(DIMENSIONS)}")
    _at_least(cfg.epochs, 1, f"{p}epochs")
    _check(cfg.ce_scale > 0, f"{p}ce_scale must be > 0, got {cfg.ce_scale}")
    _check(cfg.label_stride in (1, 2, 4, 8), f"{p}label_stride must be 1, 2, 4 or 8")
    _check(cfg.weight_optim.lr > 0 and cfg.arch_optim.lr > 0, f"{p}learning rates must be > 0")
    validate_optim(cfg.weight_optim, f"{p}weight_optim.")
    validate_optim(cfg.arch_optim, f"{p}arch_optim.")
    _at_least(cfg.bn_recalibration_batches, 1, f"{p}bn_recalibration_batches")
    _at_least(cfg.checkpoint_every, 1, f"{p}checkpoint_every")
    _at_least(cfg.seed, 0, f"{p}seed")
    check_device(cfg.device, f"{p}device")
    _precision_layout(cfg.precision, cfg.channels_last, cfg.device, p)
    bad_gap = [e for e in cfg.gap_epochs if not 1 <= e <= cfg.epochs]
    _check(not bad_gap, f"{p}gap_epochs: {bad_gap[:1]} not in 1..epochs ({cfg.epochs})")


def validate_retrain(cfg: RetrainConfig, prefix: str = "") -> None:
    """A retraining of at least one epoch (a pipeline skips retraining at 0 epochs instead)."""
    p = prefix
    check_finite_fields(cfg, p)
    validate_data(cfg.data, f"{p}data.")
    _at_least(cfg.epochs, 1, f"{p}epochs")
    _check(cfg.optim.lr > 0, f"{p}optim.lr must be > 0")
    validate_optim(cfg.optim, f"{p}optim.")
    _at_least(cfg.eval_every, 1, f"{p}eval_every")
    _precision_layout(cfg.precision, cfg.channels_last, cfg.device, p)
    _at_least(cfg.checkpoint_every, 1, f"{p}checkpoint_every")
    _at_least(cfg.seed, 0, f"{p}seed")
    check_device(cfg.device, f"{p}device")


def validate_bench(cfg: BenchConfig, prefix: str = "") -> None:
    """The FPS procedure: an input, a batch, iterations and passes that measure something."""
    p = prefix
    check_finite_fields(cfg, p)
    _at_least(cfg.height, 1, f"{p}height")
    _at_least(cfg.width, 1, f"{p}width")
    _at_least(cfg.batch, 1, f"{p}batch")
    _at_least(cfg.warmup, 0, f"{p}warmup")
    _at_least(cfg.iters, 1, f"{p}iters")
    _at_least(cfg.repeats, 1, f"{p}repeats")
    _at_least(cfg.threads, 0, f"{p}threads", " (0: torch's default)")
    check_device(cfg.device, f"{p}device")


def validate_pipeline(cfg: PipelineConfig) -> None:
    """A whole trial: the search, the retraining (when ``retrain.epochs > 0``; 0 skips it), and a
    benchmark input the searched network's stride divides (checked now, not after the search)."""
    validate_search(cfg.search, "search.")
    _at_least(cfg.retrain.epochs, 0, "retrain.epochs", "")
    if cfg.retrain.epochs > 0:
        validate_retrain(cfg.retrain, "retrain.")
    validate_bench(cfg.bench, "bench.")
    _fits_stride(cfg.bench.height, cfg.bench.width, len(cfg.search.space.stages), "bench.")
