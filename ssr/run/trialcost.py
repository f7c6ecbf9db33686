"""What one trial of the pipeline costs on a device, measured phase by phase (docs/architecture.md §6).

:func:`probe_trial` builds each phase of one :func:`ssr.run.pipeline.run_pipeline` trial at its
real size and runs a few steps of it on a device: the search iteration (a weight and an
architecture step of the whole supernet, :class:`ssr.method.search_step.SearchStep`), the supernet's
evaluation, a retraining step (:class:`ssr.run.retrain.TrainStep`) and an evaluation of the
largest network the space can derive (an upper bound for any genotype), the benchmark and the
ONNX export, a checkpoint, reading the data and the bootstrap interval; ``sweeps/schedule/plan.py``
turns those into seconds per epoch and per trial from the dataset's size and the budget.

Each training step is timed at batch 1 and at the largest batch up to the real one that fits
in 80 % of the device's free memory, and both time and memory are extrapolated linearly in the
batch from those two points (``extrapolated`` says when the real batch did not run). Memory is
measured on CUDA (``torch.cuda.max_memory_allocated``, and the caching allocator's reserve); on
CPU it is estimated (:data:`MEM_CPU`).

What it assumes: every search epoch costs what the first does (shrinking only makes later
ones cheaper, so this is an upper bound), retraining trains the largest derivable network,
evaluation runs every ``eval_every`` epochs with a new best checkpoint each time, and with
``num_workers > 0`` loading overlaps computation (a step takes the longer of the two).
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssr.config import PipelineConfig
from ssr.train.precision import memory_format

__all__ = ["MEM_CPU", "MEM_CUDA", "PhaseTiming", "TrialCost", "probe_trial", "scaled", "time_step"]

MEM_CUDA = "measured: torch.cuda.max_memory_allocated (reserved: max_memory_reserved)"
MEM_CPU = (
    "estimated: parameters, gradients and Adam states plus the tensors autograd saves for the "
    "backward pass, counted during a real step (allocator overhead and transient buffers are "
    "not counted: a lower bound)"
)
# Full splits of the real datasets, used when data.root is not there to count them.
KNOWN_SIZES = {"cityscapes": (2975, 500), "camvid": (367, 101)}


@dataclass
class PhaseTiming:
    """One phase's step: seconds and peak bytes at the real batch, and how they were got."""

    seconds: float
    batch: int
    measured_batches: tuple[int, ...]
    extrapolated: bool
    peak_bytes: int | None = None
    reserved_bytes: int | None = None


@dataclass
class TrialCost:
    """What :func:`probe_trial` measured, and the trial's sizes (steps per epoch)."""

    device: str
    threads: int
    memory_method: str
    phases: dict[str, PhaseTiming]
    once: dict[str, float]  # seconds of one-off work: setup, export, checkpoint, bootstrap
    sizes: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------------------------
# Timing one step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _static_bytes(params: list[nn.Parameter], optimizer: torch.optim.Optimizer | None) -> int:
    n = sum(p.numel() * p.element_size() for p in params)
    states = 0
    if optimizer is not None:  # Adam: exp_avg and exp_avg_sq (allocated after the first step)
        states = 2 * sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    grads = sum(p.numel() * p.element_size() for p in params if p.requires_grad)
    return n + grads + states


def time_step(
    fn: Callable[[], object],
    device: torch.device,
    *,
    warmup: int = 1,
    steps: int = 2,
    params: list[nn.Parameter] | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> tuple[float, int | None, int | None]:
    """Median seconds of ``fn`` (synchronised on CUDA) and peak/reserved bytes.

    CUDA: ``max_memory_allocated`` over the timed steps (and ``max_memory_reserved``). CPU: the
    estimate of :data:`MEM_CPU` from ``params`` and ``optimizer`` (None without ``params``).
    """
    for _ in range(warmup):
        fn()
    _sync(device)
    saved: dict[int, int] = {}
    skip = {p.untyped_storage().data_ptr() for p in params or []}

    def pack(t: Tensor) -> Tensor:
        ptr = t.untyped_storage().data_ptr()
        if ptr not in skip:
            saved[ptr] = t.untyped_storage().nbytes()
        return t

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(steps):
        t0 = time.perf_counter()
        if i == 0 and device.type != "cuda" and params is not None:
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                fn()
        else:
            fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device)
        reserved: int | None = torch.cuda.max_memory_reserved(device)
    elif params is not None:
        peak, reserved = _static_bytes(params, optimizer) + sum(saved.values()), None
    else:
        peak = reserved = None
    return statistics.median(times), peak, reserved


def _free_bytes(device: torch.device) -> int | None:
    """Free memory for the planner: :func:`ssr.measure.footprint.available_bytes`, plus on CUDA what
    this process holds now (its own tensors are freed before the planned trial runs)."""
    from ssr.measure.footprint import available_bytes

    free = available_bytes(str(device))
    if free is not None and device.type == "cuda":
        free += torch.cuda.memory_allocated(device)
    return free


def _line(b: int, b1: int, v1: float, b2: int, v2: float, fixed: float = 0.0) -> float:
    """Linear in the batch through (b1, v1) and (b2, v2) at b; with one point (b1 == b2), the
    part above ``fixed`` proportional to the batch. Never below 0."""
    if b2 == b1:
        return fixed + (v1 - fixed) * b / b1
    return max(0.0, v1 + (v2 - v1) * (b - b1) / (b2 - b1))


def scaled(
    make: Callable[[int], tuple[Callable[[], object], list[nn.Parameter] | None, Any]],
    batch: int,
    device: torch.device,
    warmup: int,
    steps: int,
    first: int = 1,
) -> PhaseTiming:
    """Time ``make(b)``'s step at b = ``first`` and at the largest b <= ``batch`` that fits in
    80 % of the free memory; extrapolate both time and memory linearly to ``batch``.

    ``make(b)`` returns ``(step, params, optimizer)`` for batch ``b`` (``first = 2`` for a
    network whose BatchNorm sees 1x1 maps in training).
    """
    b1 = min(first, batch)
    fn, params, opt = make(b1)
    t1, m1, r1 = time_step(fn, device, warmup=warmup, steps=steps, params=params, optimizer=opt)
    del fn
    static = _static_bytes(params, opt) if params is not None else 0
    b2, free = batch, _free_bytes(device)
    if m1 is not None and free is not None and batch > b1:
        per_image = max((m1 - static) / b1, 1.0)
        b2 = max(b1, min(batch, int((0.8 * free - static) // per_image)))
    t2, m2, r2 = t1, m1, r1
    if b2 != b1:
        fn, params, opt = make(b2)
        t2, m2, r2 = time_step(fn, device, warmup=warmup, steps=steps, params=params, optimizer=opt)
        del fn
    t = _line(batch, b1, t1, b2, t2)
    m = None if m1 is None or m2 is None else int(_line(batch, b1, m1, b2, m2, static))
    r = None if r1 is None or r2 is None else int(_line(batch, b1, r1, b2, r2, static))
    measured = (b1, b2) if b2 != b1 else (b1,)
    return PhaseTiming(t, batch, measured, b2 != batch, m, r)


# --------------------------------------------------------------------------------------------
# The phases of one trial


def _batch(b: int, h: int, w: int, classes: int, device: torch.device, lh: int = 0, lw: int = 0):
    g = torch.Generator().manual_seed(b)
    x = torch.rand(b, 3, h, w, generator=g)
    y = torch.randint(0, classes, (b, lh or h, lw or w), generator=g)
    if device.type == "cuda":  # as the loaders: pinned, copied without blocking
        x, y = x.pin_memory(), y.pin_memory()
    return x, y


def largest_genotype(cfg: PipelineConfig, classes: int):
    """The largest network the search space can derive (deepest, widest, full resolution)."""
    from ssr.method.derive import genotype_from_supernet
    from ssr.method.supernet import Supernet

    net = Supernet(cfg.search.space, classes)
    for d, p in net.max_probs().items():
        net.alive(d).copy_(p > 0)
    net.refresh_alive()
    return genotype_from_supernet(net, reduction=cfg.search.reduction_width)


def split_sizes(cfg: PipelineConfig, notes: list[str]) -> tuple[int, int, float | None]:
    """Training and val images (capped as the trial caps them), and seconds per image read."""
    from ssr.data import build_dataset

    d = cfg.search.data
    try:
        train, val = build_dataset(d, "train"), build_dataset(d, "val")
    except (OSError, ValueError, ImportError) as exc:  # no data here: full splits, no read time
        if d.name not in KNOWN_SIZES:
            raise
        full_train, full_val = KNOWN_SIZES[d.name]
        n_train = min(full_train, d.train_size or full_train)
        n_val = min(full_val, d.val_size or full_val)
        notes.append(f"{d.name} not readable here ({exc}); sizes assumed {n_train}/{n_val}, "
                     "data loading not timed")  # fmt: skip
        return n_train, n_val, None
    k = min(len(train), 4)
    t0 = time.perf_counter()
    for i in range(k):
        train[i]
    return len(train), len(val), (time.perf_counter() - t0) / max(k, 1)


def probe_trial(
    cfg: PipelineConfig, device: torch.device, *, warmup: int = 1, steps: int = 3
) -> TrialCost:
    """Measure every phase of one trial of ``cfg`` on ``device`` (see the module text)."""
    from ssr.data import build_dataset, class_weights, dataset_info
    from ssr.measure.bench import measure
    from ssr.method.network import DerivedNet
    from ssr.train.metrics import bootstrap_miou_interval
    from ssr.train.precision import cuda_habits

    s, b = cfg.search, cfg.bench
    classes = dataset_info(s.data.name).num_classes
    notes: list[str] = []
    once: dict[str, float] = {}
    t0 = time.perf_counter()
    n_train, n_val, read_s = split_sizes(cfg, notes)
    # what search and retraining each do first: datasets and class weights
    with contextlib.suppress(OSError, ValueError, ImportError):
        class_weights(s.data, build_dataset(s.data, "train"))
    once["setup"] = time.perf_counter() - t0
    geno = largest_genotype(cfg, classes)
    phases: dict[str, PhaseTiming] = {}
    with cuda_habits(device):
        _probe_search(cfg, classes, device, warmup, steps, phases, once)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        _probe_retrain(cfg, geno, classes, device, warmup, steps, phases, once)
        bench_model = DerivedNet(geno, classes).eval()
        shape = (b.batch, 3, b.height, b.width)
        res = measure(bench_model, shape, _bench_cfg(b, device, notes))
        once["bench_forward"] = res.latency_ms_median / 1e3
        if cfg.export_onnx:
            once["export"] = _time_export(bench_model, shape, notes)
    per_image = torch.zeros(max(n_val, 1), classes, classes, dtype=torch.int64)
    per_image[:, 0, 0] = 1
    t0 = time.perf_counter()
    bootstrap_miou_interval(per_image)
    once["bootstrap"] = time.perf_counter() - t0
    sizes = {
        "train_images": n_train,
        "val_images": n_val,
        "read_seconds_per_image": read_s,
        "genotype": f"{geno.id}: the largest network the space can derive (an upper bound)",
    }
    mem = MEM_CUDA if device.type == "cuda" else MEM_CPU
    return TrialCost(str(device), torch.get_num_threads(), mem, phases, once, sizes, notes)


def _eval_make(model: nn.Module, d: Any, classes: int, device: torch.device, cl: bool):
    """Evaluation (always fp32) of one val batch, labels at ``d.eval_label_size``."""
    from ssr.train.loop import evaluate

    lh, lw = d.eval_label_size or (0, 0)
    # NOTE: inference keeps no activations for backward: on CPU there is no memory estimate
    params = list(model.parameters()) if device.type == "cuda" else None

    def make(n: int):
        batch = _batch(n, d.height, d.width, classes, device, lh, lw)
        run = lambda: evaluate(model, [batch], classes, device, progress=False,  # noqa: E731
                               channels_last=cl)  # fmt: skip
        return run, params, None

    return make


def _probe_search(cfg, classes, device, warmup, steps, phases, once) -> None:
    """The supernet's bi-level iteration and evaluation, and one search checkpoint."""
    from ssr.method.complexity import count_macs
    from ssr.method.derive import derive_network, genotype_from_supernet
    from ssr.method.gap import discretize_by_argmax
    from ssr.method.network import DerivedNet
    from ssr.method.search_step import SearchStep
    from ssr.method.supernet import DIMENSIONS, Supernet
    from ssr.train.checkpoint import save_checkpoint

    s = cfg.search
    torch.manual_seed(0)
    net = Supernet(s.space, classes).to(device, memory_format=memory_format(s.channels_last))
    step = SearchStep(net, s, torch.ones(classes, device=device), device)
    step.start_epoch(0)
    params = list(net.parameters())

    def make(n: int):
        xy = _batch(n, s.data.height, s.data.width, classes, device)
        return (lambda: step((xy, xy), True)), params, step.w.optimizer

    phases["search_step"] = scaled(make, s.data.batch_size, device, warmup, steps)
    phases["search_eval"] = scaled(
        _eval_make(net, s.data, classes, device, s.channels_last), s.data.batch_size, device,
        1, steps,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ssr-plan-") as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "c.pt", model=net.state_dict(), **step.state_dict())
        once["search_checkpoint"] = time.perf_counter() - t0
    saved = {d: net.alive(d).clone() for d in DIMENSIONS}
    t0 = time.perf_counter()  # what each gap measurement does before evaluating (ssr.method.gap)
    discretize_by_argmax(net)
    derive_network(net)
    once["derive"] = time.perf_counter() - t0
    geno = genotype_from_supernet(net, reduction=s.reduction_width)
    for d, a in saved.items():
        net.alive(d).copy_(a)
    net.refresh_alive()
    t0 = time.perf_counter()  # the summary's size of the derived network
    count_macs(DerivedNet(geno, classes), (1, 3, s.flops.height, s.flops.width))
    once["search_macs"] = time.perf_counter() - t0


def _probe_retrain(cfg, geno, classes, device, warmup, steps, phases, once) -> None:
    """A retraining step and evaluation of ``geno``, and one retraining checkpoint."""
    from ssr.method.complexity import count_macs
    from ssr.method.network import DerivedNet
    from ssr.run.pipeline import retrain_config
    from ssr.run.retrain import TrainStep
    from ssr.train.checkpoint import save_checkpoint

    r = retrain_config(cfg)
    if r.epochs <= 0:
        return
    model = DerivedNet(geno, classes).to(device, memory_format=memory_format(r.channels_last))
    train = TrainStep(model, r, device)
    train.weights = torch.ones(classes, device=device)
    params = list(model.parameters())

    def make(n: int):
        batch = _batch(n, r.data.height, r.data.width, classes, device)
        return (lambda: train(batch)), params, train.optimizer

    phases["retrain_step"] = scaled(make, r.data.batch_size, device, warmup, steps, first=2)
    phases["retrain_eval"] = scaled(
        _eval_make(model, r.data, classes, device, r.channels_last), r.data.batch_size, device,
        1, steps,
    )  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="ssr-plan-") as tmp:
        t0 = time.perf_counter()
        save_checkpoint(Path(tmp) / "c.pt", model=model.state_dict(),
                        optimizer=train.optimizer.state_dict())  # fmt: skip
        once["retrain_checkpoint"] = time.perf_counter() - t0
    t0 = time.perf_counter()  # the result's size of the network
    count_macs(model, (1, 3, r.data.height, r.data.width))
    once["retrain_macs"] = time.perf_counter() - t0


def _bench_cfg(b, device: torch.device, notes: list[str]):
    """The trial's bench settings on ``device``, a few iterations, torch; fp32 where the
    precision cannot run there (int8 needs calibration images, fp16/bf16 a GPU)."""
    import dataclasses

    precision = b.precision
    if precision == "int8" or (precision != "fp32" and device.type != "cuda"):
        notes.append(f"bench precision {precision} timed as fp32 on {device}")
        precision = "fp32"
    if b.backend != "torch":
        notes.append(f"bench backend {b.backend} timed with torch")
    return dataclasses.replace(b, device=str(device), warmup=2, iters=3, repeats=1,
                               precision=precision, backend="torch")  # fmt: skip


def _time_export(model: nn.Module, shape: tuple[int, ...], notes: list[str]) -> float:
    from ssr.deploy.onnx_export import export_onnx

    with tempfile.TemporaryDirectory(prefix="ssr-plan-") as tmp:
        t0 = time.perf_counter()
        try:
            export_onnx(model, shape, Path(tmp) / "m.onnx")
        except Exception as exc:  # the trial keeps going without the export too
            notes.append(f"ONNX export not timed: {exc}")
            return 0.0
        return time.perf_counter() - t0
