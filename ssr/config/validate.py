"""Range checks of a config: what types alone cannot say (docs/architecture.md §6).

Loading (:mod:`ssr.config.configload`) checks keys and types; this module checks values, so that a
config that exists is a config that runs: every float is finite (``.inf`` and ``.nan`` are
refused wherever they appear), counts that make no sense at 0 are >= 1 (epochs, iterations,
batches, sizes), rates lie in their interval and the space can be built. Each config class of
:mod:`ssr.config` calls its function here from ``__post_init__``, so it checks only its own
fields (its parts checked themselves when they were built) and names keys relative to itself;
:func:`ssr.config.configload.from_dict` puts the section in front (``search.epochs``, ``bench.iters``).

The functions take the dataclasses of :mod:`ssr.config` by attribute only, so this module does
not import it."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import TYPE_CHECKING, Any

from ssr.config.errors import ConfigError

if TYPE_CHECKING:
    from ssr.config import (
        BenchConfig,
        DataConfig,
        FlopsConfig,
        LatencyConfig,
        OptimConfig,
        RetrainConfig,
        SearchConfig,
        ShrinkConfig,
        SpaceConfig,
        SSRConfig,
    )

__all__ = [
    "check_device",
    "check_finite_fields",
    "validate_bench",
    "validate_data",
    "validate_flops",
    "validate_latency",
    "validate_optim",
    "validate_retrain",
    "validate_search",
    "validate_shrink",
    "validate_space",
    "validate_ssr",
]

#: The widest layer a space or a genotype may ask for. The paper's widest is 128 channels; one
#: 3x1 conv at this width already holds 200 M weights (0.8 GB), so more is a typo, not a network.
MAX_CHANNELS = 8192
#: Device names a config may give (what :func:`ssr.train.device.resolve_device` accepts).
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


def validate_data(data: DataConfig, prefix: str = "") -> None:
    """Sizes, batch and the synthetic dataset's image counts."""
    p = prefix
    _check(data.height >= 16 and data.width >= 16, f"{p}height and {p}width must be >= 16")
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
    splits = ("train", "val", "test", "trainval") if data.name == "camvid" else ("train", "val")
    for key in ("train_split", "eval_split"):
        _check(
            getattr(data, key) in splits,
            f"{p}{key} must be one of {', '.join(splits)} for {data.name}, "
            f"got {getattr(data, key)!r}",
        )


def validate_space(space: SpaceConfig, prefix: str = "") -> None:
    """A space the supernet can build: widths that grow, depths, dilations, pools, widths left."""
    p = prefix
    check_finite_fields(space, p)
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


def validate_optim(opt: OptimConfig, prefix: str = "") -> None:
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


def channels_last_allowed(device: str, precision: str) -> bool:
    """Whether a training (search or retraining) may run channels-last at ``precision`` on
    ``device``: everywhere but bf16 on a CPU whose bf16 channels-last kernels give wrong weight
    gradients (no AMX: probed once per process, :mod:`ssr.config.kernels`; the search diverges
    there, BENCHMARKS.md)."""
    if precision != "bf16" or str(device).startswith("cuda"):
        return True
    from ssr.config.kernels import bf16_channels_last_sound  # torch: only for bf16 on a CPU

    return bf16_channels_last_sound()


def _precision_layout(precision: str, channels_last: bool, device: str, prefix: str) -> None:
    _check(
        not channels_last or channels_last_allowed(device, precision),
        f"{prefix}precision bf16 with {prefix}channels_last: this CPU's bf16 channels-last "
        "convolutions give wrong weight gradients (no AMX; ssr/config/kernels.py), so training "
        f"diverges; set {prefix}channels_last: false (bf16 in NCHW) or precision fp32",
    )


def validate_ssr(cfg: SSRConfig, prefix: str = "") -> None:
    """SSR weights and their warm-up: >= 0."""
    check_finite_fields(cfg, prefix)
    for k in ("op", "out", "mid", "depth"):
        _check(getattr(cfg, k) >= 0, f"{prefix}{k} must be >= 0")
    _at_least(cfg.warmup_epochs, 0, f"{prefix}warmup_epochs")


def validate_flops(cfg: FlopsConfig, prefix: str = "") -> None:
    """The FLOPs term: a weight >= 0, a target in (0, 1.5], an input of at least 16 pixels."""
    p = prefix
    check_finite_fields(cfg, p)
    _check(cfg.weight >= 0, f"{p}weight must be >= 0")
    _check(0 < cfg.target <= 1.5, f"{p}target must be in (0, 1.5]")
    _at_least(cfg.height, 16, f"{p}height")
    _at_least(cfg.width, 16, f"{p}width")


def validate_latency(cfg: LatencyConfig, prefix: str = "") -> None:
    """The latency term: a weight >= 0; with a weight, a table and a target > 0; a table that
    is a file (relative paths are taken from the working directory); a derivation tolerance in
    [0, 1); target-aware derivation only with a table and a target."""
    from pathlib import Path

    p = prefix
    check_finite_fields(cfg, p)
    _check(cfg.weight >= 0, f"{p}weight must be >= 0, got {cfg.weight}")
    if cfg.target_ms is not None:
        _check(cfg.target_ms > 0, f"{p}target_ms must be > 0, got {cfg.target_ms}")
    if cfg.weight > 0:
        _check(
            cfg.table is not None,
            f"{p}table: a latency weight > 0 needs a table (python -m ssr latency build ...)",
        )
        _check(cfg.target_ms is not None, f"{p}target_ms: a latency weight > 0 needs a target")
    if cfg.table is not None:
        _check(bool(cfg.table), f"{p}table must be a file name or null")
        _check(Path(cfg.table).is_file(), f"{p}table: latency table {cfg.table} does not exist")
    _check(
        0 <= cfg.derive_tolerance < 1,
        f"{p}derive_tolerance must be in [0, 1) (a fraction of target_ms), got {cfg.derive_tolerance}",
    )
    if cfg.derive == "target":
        _check(
            cfg.table is not None and cfg.target_ms is not None,
            f"{p}derive: 'target' needs a table and a target_ms (or derive: argmax)",
        )


def validate_shrink(cfg: ShrinkConfig, prefix: str = "") -> None:
    """Shrinking: a threshold in (0, 1), a cadence, known dimensions."""
    p = prefix
    check_finite_fields(cfg, p)
    _check(0 < cfg.threshold < 1, f"{p}threshold must be in (0, 1)")
    _at_least(cfg.every, 1, f"{p}every")
    _at_least(cfg.warmup, 0, f"{p}warmup")
    _at_least(cfg.max_per_decision, 1, f"{p}max_per_decision", " (or null)")
    bad = [d for d in cfg.order if d not in DIMENSIONS]
    _check(not bad, f"{p}order: unknown dimension {bad[:1]}; use {sorted(DIMENSIONS)}")


def validate_search(cfg: SearchConfig, prefix: str = "") -> None:
    """One search, given parts that checked themselves: two stages at least, epochs, the
    per-search counts, the device and its precision, the gap epochs."""
    p = prefix
    check_finite_fields(cfg, p)
    n = len(cfg.space.stages)
    _check(
        n >= 2,
        f"{p}space.stages: a search needs at least two stages, got {n} (the network it derives "
        "has the aggregation head, which fuses the first stage's output with the last's)",
    )
    _at_least(cfg.epochs, 1, f"{p}epochs")
    _check(cfg.ce_scale > 0, f"{p}ce_scale must be > 0, got {cfg.ce_scale}")
    _check(cfg.label_stride in (1, 2, 4, 8), f"{p}label_stride must be 1, 2, 4 or 8")
    _at_least(cfg.bn_recalibration_batches, 1, f"{p}bn_recalibration_batches")
    _at_least(cfg.checkpoint_every, 1, f"{p}checkpoint_every")
    _at_least(cfg.seed, 0, f"{p}seed")
    check_device(cfg.device, f"{p}device")
    _precision_layout(cfg.precision, cfg.channels_last, cfg.device, p)
    _check(isinstance(cfg.compile, bool), f"{p}compile must be true or false, got {cfg.compile!r}")
    bad_gap = [e for e in cfg.gap_epochs if not 1 <= e <= cfg.epochs]
    _check(not bad_gap, f"{p}gap_epochs: {bad_gap[:1]} not in 1..epochs ({cfg.epochs})")


def validate_retrain(cfg: RetrainConfig, prefix: str = "") -> None:
    """A retraining: epochs >= 0 (0: a pipeline skips it; :func:`ssr.run.retrain.run_retrain` needs
    one at least), its cadences and seed; the device and precision when given (None: inherited
    from the search, checked where they are resolved)."""
    p = prefix
    check_finite_fields(cfg, p)
    _at_least(cfg.epochs, 0, f"{p}epochs")
    _at_least(cfg.eval_every, 1, f"{p}eval_every")
    _at_least(cfg.checkpoint_every, 1, f"{p}checkpoint_every")
    _at_least(cfg.seed, 0, f"{p}seed")
    if cfg.device is not None:
        check_device(cfg.device, f"{p}device")
    _check(
        cfg.compile is None or isinstance(cfg.compile, bool),
        f"{p}compile must be true, false or null (the search's), got {cfg.compile!r}",
    )
    if None not in (cfg.precision, cfg.channels_last, cfg.device):
        _precision_layout(cfg.precision, bool(cfg.channels_last), str(cfg.device), p)


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


def channels_last_default(device: str, precision: str) -> bool:
    """The memory format a search (or a retraining) takes when it leaves ``channels_last``
    None: channels-last on a CPU in fp32, measured faster there for the search's steps (1.2x
    at the paper's and the default sweep's sizes, BENCHMARKS.md), and in bf16 where its kernels
    are sound (AMX, BENCHMARKS.md; :func:`channels_last_allowed`); NCHW elsewhere
    (unmeasured on GPUs)."""
    if str(device).startswith("cuda") or precision == "fp16":
        return False
    return precision == "fp32" or channels_last_allowed(device, precision)
