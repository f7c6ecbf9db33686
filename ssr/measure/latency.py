"""Building a per-device latency table by timing every block of a space (docs/method.md §4.4).

:func:`build_table` times, alone and in the form the benchmark runs it
(:mod:`ssr.measure.latency_blocks`), the stem, every reduction and head the space can produce and
every candidate layer: each op (dilation x resolution) at every width combination of its stage
(``padded``: stream width x mid width; ``natural``: in x mid x out width). Widths are timed on
the whole grid by default: ONNX Runtime's blocked (NCHWc) convolutions make time a staircase in
the width (a 100-channel conv costs what a 112-channel one does, BENCHMARKS.md), which
interpolation would smooth away. ``max_widths`` times at most that many widths per axis instead
and fills the rest by (multi)linear interpolation, for large spaces or slow devices.

Each entry is timed with the procedure of :mod:`ssr.measure.bench` (``warmup`` untimed runs, then
``repeats`` passes of ``iters`` runs, each timed alone after a device synchronisation) and
stored as the ``statistic`` (median or min) over all runs. ``clock='thread'`` (CPU, one thread)
times the calling thread's CPU time instead of wall time: what other processes on a shared
machine take does not count (as :mod:`ssr.measure.roofline`'s one-thread probe).

Then :func:`fit_correction` fits ``scale * sum + offset`` (a Theil-Sen line, robust to one
disturbed measurement) on ``fit`` random networks of the space measured whole
(:func:`measure_network`, the deploy form), which covers what isolated blocks miss.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ssr.config import BenchConfig, ConfigError, SpaceConfig
from ssr.measure.host import OtherLoad, cpu_info, device_name, torch_threads
from ssr.measure.latency_blocks import (
    Block,
    head_block,
    layer_block,
    ort_block,
    reduction_block,
    stem_block,
    torch_block,
)
from ssr.method.derive import sample_genotype
from ssr.method.genotype import Genotype
from ssr.method.latency_table import (
    Correction,
    LatencyTable,
    Piece,
    layout_of,
    op_names,
    piece_axes,
    reachable,
    stage_grids,
    table_sum_ms,
)

__all__ = ["build_table", "fit_correction", "measure_network", "measure_networks", "time_block"]

Progress = Callable[[str], None]


def _check(cfg: BenchConfig, clock: str, statistic: str) -> None:
    if cfg.backend not in ("onnxruntime", "torch"):
        raise ConfigError(
            f"a latency table is built for backend onnxruntime or torch, not {cfg.backend}"
        )
    dev = torch.device(cfg.device)
    if cfg.backend == "onnxruntime" and cfg.precision != "fp32":
        raise ConfigError("the onnxruntime deploy form is fp32 only; use --backend torch on CUDA")
    if cfg.precision != "fp32" and dev.type != "cuda":
        raise ConfigError(f"precision {cfg.precision} is timed on CUDA only")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device}: CUDA is not available on this machine")
    if clock not in ("wall", "thread"):
        raise ConfigError(f"clock must be wall or thread, got {clock!r}")
    if clock == "thread" and (dev.type != "cpu" or cfg.threads != 1):
        raise ConfigError("clock thread times one CPU thread: use --device cpu --threads 1")
    if statistic not in ("median", "min"):
        raise ConfigError(f"statistic must be median or min, got {statistic!r}")
    if cfg.batch != 1:
        raise ConfigError("latency tables are built at batch 1")


def time_block(
    block: Block, cfg: BenchConfig, clock: str = "wall", statistic: str = "median"
) -> float:
    """Milliseconds of one run of ``block`` by the bench procedure (see the module doc)."""
    now = time.thread_time if clock == "thread" else time.perf_counter
    with torch_threads(cfg.threads):
        for _ in range(cfg.warmup):
            block.run()
        block.sync()
        times = []
        for _ in range(cfg.repeats * cfg.iters):
            block.sync()
            t0 = now()
            block.run()
            block.sync()
            times.append(now() - t0)
    value = min(times) if statistic == "min" else statistics.median(times)
    return value * 1e3


# --------------------------------------------------------------------------------------------
# The grid of one piece


def _subset(axis: tuple[int, ...], n: int | None) -> tuple[int, ...]:
    """At most ``n`` widths of ``axis``, evenly spaced, both ends kept (all when ``n`` is None)."""
    if n is None or len(axis) <= n:
        return axis
    picks = sorted({round(i * (len(axis) - 1) / (n - 1)) for i in range(n)})
    return tuple(axis[i] for i in picks)


def _interpolate(axes: list[tuple[int, ...]], timed: dict[tuple[int, ...], float]) -> Any:
    """Nested lists over ``axes``: the timed entries, the others multilinear between the
    nearest timed widths of each axis."""
    grid = [sorted({k[a] for k in timed}) for a in range(len(axes))]

    def value(key: tuple[int, ...]) -> float:
        corners: list[list[tuple[int, float]]] = []
        for a, v in enumerate(key):
            g = grid[a]
            hi = next((i for i, x in enumerate(g) if x >= v), len(g) - 1)
            lo = max(hi - 1, 0) if g[hi] != v else hi
            t = 0.0 if g[hi] == g[lo] else (v - g[lo]) / (g[hi] - g[lo])
            corners.append([(g[lo], 1 - t), (g[hi], t)] if lo != hi else [(g[hi], 1.0)])
        return sum(
            timed[tuple(x for x, _ in c)] * float(torch.tensor([w for _, w in c]).prod())
            for c in itertools.product(*corners)
        )

    def nest(prefix: tuple[int, ...]) -> Any:
        if len(prefix) == len(axes):
            return round(value(prefix), 5)
        return [nest((*prefix, v)) for v in axes[len(prefix)]]

    return nest(())


def _nest(axes: list[tuple[int, ...]], entries: dict[tuple[int, ...], float | None]) -> Any:
    def nest(prefix: tuple[int, ...]) -> Any:
        if len(prefix) == len(axes):
            v = entries.get(prefix)
            return None if v is None else round(v, 5)
        return [nest((*prefix, v)) for v in axes[len(prefix)]]

    return nest(())


# --------------------------------------------------------------------------------------------
# Building


class _Builder:
    """Times the pieces of one table: every entry of every piece, on one configuration."""

    def __init__(self, space: SpaceConfig, cfg: BenchConfig, clock: str, statistic: str,
                 reduction: str, head: str) -> None:  # fmt: skip
        self.space, self.cfg, self.clock, self.statistic = space, cfg, clock, statistic
        self.head, self.layout = head, layout_of(cfg.backend)
        self.grids = stage_grids(space, cfg.height, cfg.width, reduction)
        self.timed = self.interpolated = 0

    def time(self, make: Callable[..., Block], *args: Any) -> float:
        self.timed += 1
        return time_block(make(self.cfg, *args), self.cfg, self.clock, self.statistic)

    def ops(self, s: int, axes: dict[str, tuple[int, ...]], max_widths: int | None) -> dict:
        """Every op of stage ``s`` on its width grid (subsampled, then interpolated)."""
        full = list(axes.values())
        out = {}
        ops = [(d, p) for p in self.space.pools for d in self.space.dilations]
        for name, (d, p) in zip(op_names(self.space), ops):
            picks = itertools.product(*[_subset(a, max_widths) for a in full])
            size = self.grids[s].size
            entries = {key: self.time(layer_block, size, d, p, key) for key in picks}
            self.interpolated += _count(full) - len(entries)
            out[name] = Piece(dict(axes), _interpolate(full, entries))
        return out

    def reduction(self, s: int, size_in: tuple[int, int], axes: dict) -> Piece:
        """The reduction in front of stage ``s`` (padded: with the pad to the stream)."""
        g, full = self.grids[s], list(axes.values())
        entries: dict[tuple[int, ...], float | None] = {}
        for key in itertools.product(*full):
            if reachable(self.grids, self.layout, "reduction", s, key):
                c_conv = g.c_conv[g.prev.index(key[0])]
                stream = key[1] if self.layout == "padded" else None
                entries[key] = self.time(reduction_block, size_in, key[0], c_conv, stream)
        return Piece(dict(axes), _nest(full, entries))

    def head_piece(self, axes: dict, num_classes: int) -> Piece:
        """The head: last stage at ``key[0]``, first stage ending at ``key[1]`` (aggregation);
        the stages between end at their narrowest width."""
        full, grids = list(axes.values()), self.grids
        entries: dict[tuple[int, ...], float | None] = {}
        for key in itertools.product(*full):
            if not reachable(grids, self.layout, "head", 0, key):
                continue
            outs = [min(g.options) for g in grids]
            outs[0] = key[1] if len(key) == 2 else outs[0]
            outs[-1] = key[0]
            prev, c_convs = self.space.stem_width, []
            for g, out in zip(grids, outs):
                c_convs.append(g.c_conv[g.prev.index(prev)])
                prev = out
            sizes = [g.size for g in grids]
            entries[key] = self.time(
                head_block, self.space.stem_width, outs, c_convs, sizes, num_classes, self.head
            )
        return Piece(dict(axes), _nest(full, entries))


def _count(axes: list[tuple[int, ...]]) -> int:
    n = 1
    for a in axes:
        n *= len(a)
    return n


def build_table(
    space: SpaceConfig,
    cfg: BenchConfig,
    *,
    num_classes: int = 19,
    head: str = "aggregation",
    reduction: str = "exact",
    clock: str = "wall",
    statistic: str = "median",
    max_widths: int | None = None,
    fit: int = 10,
    seed: int = 0,
    progress: Progress | None = None,
) -> LatencyTable:
    """Time every block of ``space`` on ``cfg``'s device, backend, precision and threads at
    ``cfg.height x cfg.width`` and return the table, with the correction fitted on ``fit``
    random networks measured whole (``fit=0``: no correction). See the module doc."""
    _check(cfg, clock, statistic)
    say = progress or (lambda msg: None)
    t_start = time.perf_counter()
    b = _Builder(space, cfg, clock, statistic, reduction, head)
    red_axes, op_axes, head_axes = piece_axes(b.grids, b.layout, head)
    with OtherLoad() as load:
        stem_ms = b.time(stem_block, space.stem_width)
        reds, ops = [], []
        size_in = ((cfg.height + 1) // 2, (cfg.width + 1) // 2)
        for s, g in enumerate(b.grids):
            reds.append(b.reduction(s, size_in, red_axes[s]))
            ops.append(b.ops(s, op_axes[s], max_widths))
            size_in = g.size
            say(f"stage {s + 1}/{len(b.grids)}: {b.timed} blocks timed")
        head_piece = b.head_piece(head_axes, num_classes)
    table = LatencyTable(
        space=space, bench=cfg, layout=b.layout, num_classes=num_classes, head=head,
        reduction=reduction, stem_ms=round(stem_ms, 5), reductions=tuple(reds), ops=tuple(ops),
        head_piece=head_piece, device_name=device_name(cfg.device), clock=clock,
        statistic=statistic,
    )  # fmt: skip
    meta: dict[str, Any] = {
        "blocks_timed": b.timed, "entries_interpolated": b.interpolated,
        "max_widths": max_widths, "table_seconds": round(time.perf_counter() - t_start, 1),
        "fit_seed": seed,
        "other_load": load.value, "torch_version": torch.__version__,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **_device_meta(cfg),
    }  # fmt: skip
    if fit > 0:
        say(f"fitting the correction on {fit} random networks measured whole")
        rng = random.Random(seed)
        nets = [sample_genotype(space, rng, reduction, head) for _ in range(fit)]
        measured = measure_networks(nets, cfg, num_classes, clock, statistic)
        table = fit_correction(table, nets, measured)
    meta["build_seconds"] = round(time.perf_counter() - t_start, 1)
    return dataclasses.replace(table, meta={**table.meta, **meta})


def _device_meta(cfg: BenchConfig) -> dict[str, Any]:
    """What the figures ran on: CPU model, SIMD flags and the achievable rate (the roofline
    probe at the table's threads), or the runtime's version."""
    out: dict[str, Any] = {}
    if torch.device(cfg.device).type == "cpu":
        from ssr.measure.roofline import probe

        out["cpu"] = cpu_info()
        out["probe"] = probe(cfg.threads).to_dict()
    if cfg.backend == "onnxruntime":
        import onnxruntime

        out["onnxruntime_version"] = onnxruntime.__version__
    return out


# --------------------------------------------------------------------------------------------
# Whole networks and the correction


def _network_maker(genotype: Genotype, cfg: BenchConfig, num_classes: int) -> Callable[[], Block]:
    """A maker of the whole derived network in the form the benchmark runs
    (``measure(optimize=True)``): the deploy form exported to ONNX Runtime once, a new session
    per call; or folded BN and channels-last in torch."""
    from ssr.deploy import deploy
    from ssr.deploy.onnx_export import export_onnx
    from ssr.method.network import DerivedNet

    net = DerivedNet(genotype, num_classes).eval()
    shape = (1, 3, cfg.height, cfg.width)
    if cfg.backend != "onnxruntime":
        return lambda: torch_block(net, [shape], cfg)
    with tempfile.TemporaryDirectory(prefix="ssr-latency-net-") as tmp:
        path = Path(tmp) / "net.onnx"
        export_onnx(deploy(net), shape, path, verify=False)
        model = path.read_bytes()
    return lambda: ort_block(model, [shape], cfg)


def measure_network(
    genotype: Genotype, cfg: BenchConfig, num_classes: int = 19, clock: str = "wall",
    statistic: str = "median",
) -> float:  # fmt: skip
    """Milliseconds of the whole derived network, alone, in the form the benchmark runs,
    timed as the table's blocks are."""
    _check(cfg, clock, statistic)
    return time_block(_network_maker(genotype, cfg, num_classes)(), cfg, clock, statistic)


def measure_networks(
    genotypes: Sequence[Genotype], cfg: BenchConfig, num_classes: int = 19, clock: str = "wall",
    statistic: str = "median", passes: int | None = None,
) -> list[float]:  # fmt: skip
    """Milliseconds of each network, measured in interleaved passes (:mod:`ssr.measure.interleave`):
    every network is timed once per pass (``cfg.iters`` runs after ``cfg.warmup``), in a
    rotated order, so that a change of the machine's load between passes hits every network
    alike instead of the ones measured then; each network's figure is the median (or the
    minimum) of its pass medians.

    Each pass runs a new ONNX Runtime session of the network: one session's speed differs from
    the next one's of the same model by a few per cent (where its buffers land; on a quiet
    machine D, three sessions of one network spanned 6.5-18 %), so one session would freeze that
    into the network's figure. ``passes`` defaults to ``cfg.repeats``."""
    _check(cfg, clock, statistic)
    makers = [_network_maker(g, cfg, num_classes) for g in genotypes]
    one = dataclasses.replace(cfg, repeats=1)
    medians: list[list[float]] = [[] for _ in makers]
    n = len(makers)
    for k in range(max(passes or cfg.repeats, 1)):
        for i in [(k + j) % n for j in range(n)]:
            medians[i].append(time_block(makers[i](), one, clock, "median"))
    pick = min if statistic == "min" else statistics.median
    return [pick(m) for m in medians]


def fit_correction(
    table: LatencyTable, genotypes: Sequence[Genotype], measured_ms: Sequence[float]
) -> LatencyTable:
    """The table with ``measured = scale * table sum + offset`` fitted on ``genotypes``
    measured whole (at least two). The networks (genotype, id, table sum, milliseconds) stay in
    the table: measured again later, they give the machine's drift (:mod:`ssr.measure.drift`).

    The line is Theil-Sen's (Sen 1968): the median of the slopes between every pair of
    networks, then the median intercept. One measurement disturbed by another process moves a
    least-squares line by a tenth of its error at ten networks; it does not move the medians.
    A slope that would not be positive falls back to the median ratio through the origin.
    """
    if len(genotypes) != len(measured_ms) or len(genotypes) < 2:
        raise ConfigError("the correction needs at least two measured networks")
    xs = [table_sum_ms(table, g)["total"] for g in genotypes]
    ys = [float(m) for m in measured_ms]
    slopes = [
        (ys[j] - ys[i]) / (xs[j] - xs[i])
        for i, j in itertools.combinations(range(len(xs)), 2)
        if xs[j] != xs[i]
    ]
    scale = statistics.median(slopes) if slopes else 0.0
    offset = statistics.median(y - scale * x for x, y in zip(xs, ys))
    if not scale > 0:
        scale, offset = statistics.median(y / x for x, y in zip(xs, ys)), 0.0
    nets = tuple(  # the genotypes too: the drift reference (ssr.measure.drift)
        {"genotype_id": g.id, "table_ms": round(x, 4), "measured_ms": round(y, 4),
         "genotype": g.to_dict()}
        for g, x, y in zip(genotypes, xs, ys)
    )  # fmt: skip
    corr = Correction(round(scale, 6), round(offset, 5), nets)
    return dataclasses.replace(table, correction=corr)
