"""The one measurement procedure: params, conv MACs, latency/FPS, ONNX export (design §5).

Every FPS number of the project goes through :func:`measure`, so numbers are comparable and come
with the record of what they ran on. The procedure extends the official one (spec §8.3, §12.11):

- eval mode, ``torch.inference_mode()``, one fixed input created before the clock starts;
- ``warmup`` untimed iterations, then ``repeats`` passes of ``iters`` timed iterations, each
  iteration timed alone with ``time.perf_counter()`` after a device synchronisation on CUDA
  (missing synchronisation is the classic reason FPS claims do not reproduce, anchors §3.12);
- median and p90 latency over all iterations, the median of every pass and the coefficient of
  variation between passes, so a number says how stable it is;
- the device name, threads, backend, precision, batch, input size and library versions, and the
  share of the machine's CPU that *other* processes used while the clock ran (a number measured
  on a shared machine is marked so, design §5).

Backends: ``torch`` (eager), ``onnxruntime`` (CPU provider, or CUDA when asked and available) and
``auto`` (measures each available backend in its own loop and keeps the fastest).

:func:`count_macs` counts multiply-accumulates of convolutions and linear layers only, like the
[M] figures of spec §8.1 (BN, activations, pooling and interpolation are excluded).
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssr.config import BenchConfig, ConfigError
from ssr.deploy import deploy, fold_bn
from ssr.network import DerivedNet

__all__ = [
    "BenchResult", "ExportResult", "count_macs", "count_params", "export_onnx", "fold_bn",
    "measure", "ort_session",
]  # fmt: skip

BACKENDS = ("torch", "onnxruntime")
MIN_OPSET = 18


# --------------------------------------------------------------------------------------------
# Size and compute


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


def _nchw(input_shape: Sequence[int], batch: int = 1) -> tuple[int, int, int, int]:
    """``(C, H, W)`` or ``(N, C, H, W)`` -> ``(N, C, H, W)``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (batch, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    return shape  # type: ignore[return-value]


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass, counted by forward hooks (spec §8.1 [M]).

    Convolutions count ``output elements x (c_in / groups) x kernel area`` and linear layers
    ``output elements x in_features``. BatchNorm, activations, pooling, the PSP matmuls and
    interpolation are excluded, as in the spec's conv-only figures (10.90 GMACs for the paper
    network at 512x1024). ``input_shape`` is ``(C, H, W)`` (batch 1) or ``(N, C, H, W)``.
    """
    shape = _nchw(input_shape)
    total = 0

    def conv_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        nonlocal total
        k = math.prod(mod.kernel_size)
        total += out.numel() * (mod.in_channels // mod.groups) * k

    def linear_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with _eval_mode(model), torch.inference_mode():
        try:
            model(torch.zeros(shape, device=device))
        finally:
            for h in handles:
                h.remove()
    return total


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


# --------------------------------------------------------------------------------------------
# Environment record


def cpu_name() -> str:
    """CPU model from ``/proc/cpuinfo`` (``lscpu``'s model name), or the platform's guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str) -> str:
    """Human name of ``device``: the GPU model for CUDA, the CPU model otherwise."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def _cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores), from ``/proc/stat``."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    vals = [int(v) for v in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class _OtherLoad:
    """Share of the machine's CPU used by other processes while the clock ran (0..1).

    Machine-wide busy time from ``/proc/stat`` minus this process's CPU time, over wall time x
    cores. ``None`` where ``/proc/stat`` is unavailable. 0.0 means the machine was ours.
    """

    def __enter__(self) -> _OtherLoad:
        self.value: float | None = None
        self._busy0 = _cpu_busy_seconds()
        self._own0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy1 = _cpu_busy_seconds()
        if self._busy0 is None or busy1 is None:
            return
        wall = time.perf_counter() - self._wall0
        other = (busy1 - self._busy0) - (time.process_time() - self._own0)
        cores = os.cpu_count() or 1
        self.value = round(min(max(other / max(wall * cores, 1e-9), 0.0), 1.0), 3)


# --------------------------------------------------------------------------------------------
# Result


@dataclass
class BenchResult:
    """One latency measurement and the record of what it ran on (design §5).

    ``latency_ms_*`` are over all timed iterations of all passes; ``pass_medians_ms`` holds the
    median of each pass and ``cv_between_passes`` their coefficient of variation (stdev / mean).
    ``latency_ms_p10`` and ``latency_ms_best_pass`` (the lowest pass median) estimate what the
    machine does undisturbed: noise from outside (other processes, other tenants of a virtual
    machine's host) only adds time, so they repeat better than the median on shared machines
    (BENCHMARKS.md); the median and p90 stay the headline figures (design §3).
    ``other_load`` is the share of the machine's CPU other processes used meanwhile. ``form``
    says what ran: the model ``as given``, or an exact inference form (``measure(optimize=True)``).
    ``candidates`` (``auto`` only) holds every backend's figures, or its error.
    """

    backend: str
    device: str
    device_type: str
    precision: str
    batch: int
    input: str
    threads: int
    latency_ms_median: float
    latency_ms_p90: float
    latency_ms_min: float
    latency_ms_p10: float
    latency_ms_best_pass: float
    fps_median: float
    pass_medians_ms: list[float]
    cv_between_passes: float
    warmup: int
    iters: int
    repeats: int
    form: str = "as given"
    torch_version: str = torch.__version__
    onnxruntime_version: str | None = None
    cudnn_benchmark: bool | None = None
    other_load: float | None = None
    candidates: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _percentile(sorted_vals: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (as ``numpy.percentile``) of sorted values."""
    pos = (len(sorted_vals) - 1) * q
    lo, hi = math.floor(pos), math.ceil(pos)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def _summarise(passes: list[list[float]], **record: Any) -> BenchResult:
    """Latencies in seconds, one list per pass -> :class:`BenchResult` in milliseconds."""
    all_ms = sorted(t * 1e3 for p in passes for t in p)
    medians = [statistics.median(p) * 1e3 for p in passes]
    cv = statistics.stdev(medians) / statistics.mean(medians) if len(medians) > 1 else 0.0
    med = statistics.median(all_ms)
    return BenchResult(
        latency_ms_median=round(med, 3),
        latency_ms_p90=round(_percentile(all_ms, 0.9), 3),
        latency_ms_min=round(all_ms[0], 3),
        latency_ms_p10=round(_percentile(all_ms, 0.1), 3),
        latency_ms_best_pass=round(min(medians), 3),
        fps_median=round(record["batch"] * 1e3 / med, 3),
        pass_medians_ms=[round(m, 3) for m in medians],
        cv_between_passes=round(cv, 4),
        **record,
    )


def _time_loop(
    step: Callable[[], object], sync: Callable[[], None], cfg: BenchConfig
) -> tuple[list[list[float]], float | None]:
    """Warm up, then ``repeats`` passes of ``iters`` iterations, each timed alone."""
    for _ in range(cfg.warmup):
        step()
    sync()
    passes: list[list[float]] = []
    with _OtherLoad() as load:
        for _ in range(cfg.repeats):
            times = []
            for _ in range(cfg.iters):
                sync()
                t0 = time.perf_counter()
                step()
                sync()
                times.append(time.perf_counter() - t0)
            passes.append(times)
    return passes, load.value


# --------------------------------------------------------------------------------------------
# Backends


_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def _check_cfg(cfg: BenchConfig) -> None:
    dev = torch.device(cfg.device)
    if cfg.precision != "fp32" and dev.type != "cuda":
        raise ConfigError(
            f"precision {cfg.precision} is only measured on CUDA; use precision fp32 on {dev.type}"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device}: CUDA is not available on this machine")
    if cfg.warmup < 0 or cfg.iters < 1 or cfg.repeats < 1 or cfg.batch < 1 or cfg.threads < 0:
        raise ConfigError(
            "bench: need warmup >= 0, iters >= 1, repeats >= 1, batch >= 1, threads >= 0"
        )


@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[int]:
    """Set torch's intra-op threads to ``n`` (> 0) for the block; yields the count in use."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)


def _record(cfg: BenchConfig, shape: tuple[int, ...], backend: str, threads: int) -> dict[str, Any]:
    return {
        "backend": backend,
        "device": device_name(cfg.device),
        "device_type": torch.device(cfg.device).type,
        "precision": cfg.precision,
        "batch": shape[0],
        "input": f"{shape[2]}x{shape[3]}",
        "threads": threads,
        "warmup": cfg.warmup,
        "iters": cfg.iters,
        "repeats": cfg.repeats,
    }


def _measure_torch(
    model: nn.Module, shape: tuple[int, ...], cfg: BenchConfig, optimize: bool = False
) -> BenchResult:
    dev = torch.device(cfg.device)
    dtype = _DTYPES[cfg.precision]
    fmt = torch.channels_last if optimize else torch.contiguous_format
    first = next(model.parameters(), None)
    if optimize:  # fold_bn returns a copy: the caller's model is left alone
        model = fold_bn(model).to(device=dev, dtype=dtype, memory_format=fmt)
    elif first is not None and (first.device != dev or first.dtype != dtype):
        model = copy.deepcopy(model).to(device=dev, dtype=dtype)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev, dtype)
    x = x.contiguous(memory_format=fmt)
    cuda = dev.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(dev)) if cuda else (lambda: None)
    old_bench = torch.backends.cudnn.benchmark
    with _torch_threads(cfg.threads) as threads, _eval_mode(model), torch.inference_mode():
        if cuda:
            torch.backends.cudnn.benchmark = True
        try:
            passes, load = _time_loop(lambda: model(x), sync, cfg)
        finally:
            torch.backends.cudnn.benchmark = old_bench
    return _summarise(
        passes,
        **_record(cfg, shape, "torch", threads),
        form="fold_bn+channels_last" if optimize else "as given",
        cudnn_benchmark=True if cuda else None,
        other_load=load,
    )


def _import(name: str) -> Any:
    """Import an optional dependency or fail with a message that names the package."""
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        raise ImportError(
            f"this needs the '{name}' package: pip install {name.replace('_', '-')}"
        ) from None


def ort_session(
    path: str | Path,
    threads: int = 0,
    device: str = "cpu",
    *,
    spinning: bool = False,
    profile: bool = False,
) -> Any:
    """An onnxruntime session for benchmarking: all graph optimisations, no thread spinning.

    ``threads`` intra-op threads (0: torch's thread count, i.e. the physical cores).
    ``session.intra_op.allow_spinning=0`` keeps idle worker threads from burning the cores
    other work needs (stack-notes §5; ``spinning=True`` allows it, for exclusive machines).
    ``device='cuda'`` uses the CUDA provider when present. ``profile=True`` writes ORT's
    per-node profile next to ``path`` (``session.end_profiling()`` returns its file).
    """
    ort = _import("onnxruntime")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads if threads > 0 else torch.get_num_threads()
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(path).with_suffix("")) + "-profile"
    providers = ["CPUExecutionProvider"]
    if torch.device(device).type == "cuda":
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ConfigError(
                "onnxruntime has no CUDAExecutionProvider here (install onnxruntime-gpu)"
            )
        providers.insert(0, "CUDAExecutionProvider")
    return ort.InferenceSession(str(path), so, providers=providers)


def _session_threads(session: Any) -> int:
    opts = session.get_session_options()
    return int(opts.intra_op_num_threads) or (os.cpu_count() or 1)


def _measure_ort(
    session: Any, shape: tuple[int, ...], cfg: BenchConfig, form: str = "as given"
) -> BenchResult:
    import numpy as np

    ort = _import("onnxruntime")
    if cfg.precision != "fp32":
        raise ConfigError("the onnxruntime backend measures fp32 models only")
    inp = session.get_inputs()[0]
    want = [d if isinstance(d, int) else None for d in inp.shape]
    if any(w is not None and w != s for w, s in zip(want, shape)):
        raise ConfigError(f"the ONNX model expects input {inp.shape}, not {list(shape)}")
    x = np.random.default_rng(0).standard_normal(shape, dtype=np.float32)
    cuda = "CUDAExecutionProvider" in session.get_providers()
    if cuda:  # NOTE: io binding keeps host<->device copies out of the timed region
        binding = session.io_binding()
        binding.bind_ortvalue_input(inp.name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
        for out in session.get_outputs():
            binding.bind_output(out.name, "cuda")
        step: Callable[[], object] = lambda: session.run_with_iobinding(binding)  # noqa: E731
        sync = binding.synchronize_outputs
    else:
        feed = {inp.name: x}
        step = lambda: session.run(None, feed)  # noqa: E731
        sync = lambda: None  # noqa: E731
    passes, load = _time_loop(step, sync, cfg)
    device_cfg = cfg if cuda else _replace(cfg, device="cpu")
    return _summarise(
        passes,
        **_record(device_cfg, shape, "onnxruntime", _session_threads(session)),
        form=form,
        onnxruntime_version=ort.__version__,
        other_load=load,
    )


def _replace(cfg: BenchConfig, **changes: Any) -> BenchConfig:
    import dataclasses

    return dataclasses.replace(cfg, **changes)


def _is_session(obj: Any) -> bool:
    return hasattr(obj, "run") and hasattr(obj, "get_inputs") and not isinstance(obj, nn.Module)


def measure(
    model_or_session: nn.Module | Any,
    input_shape: Sequence[int],
    cfg: BenchConfig,
    *,
    optimize: bool = False,
) -> BenchResult:
    """Latency and FPS of a model under the one procedure (design §5, spec §8.3/§12.11).

    ``model_or_session``: an ``nn.Module``, an onnxruntime ``InferenceSession`` or the path of
    an ``.onnx`` file. ``input_shape``: ``(C, H, W)`` (batch from ``cfg.batch``) or
    ``(N, C, H, W)``; ``cfg`` gives the procedure (warm-up, iterations, passes, backend,
    precision, threads, device). ``cfg.threads > 0`` sets torch's threads for the measurement
    and restores them after; onnxruntime gets the same number of intra-op threads.

    With ``backend='onnxruntime'`` a module is exported first (:func:`export_onnx`, not timed).
    With ``backend='auto'`` every available backend is measured in its own loop and the fastest
    result is returned; ``candidates`` holds every backend's figures (or why it failed).

    ``optimize=True`` measures each backend's best exact inference form of a module instead of
    the module as given (recorded in ``form``): BN folded and channels-last memory for torch,
    :func:`ssr.deploy.deploy` (padded residual streams, concat-free head) for onnxruntime.
    """
    _check_cfg(cfg)
    shape = _nchw(input_shape, cfg.batch)
    if isinstance(model_or_session, (str, Path)):
        model_or_session = ort_session(model_or_session, cfg.threads, cfg.device)
    if cfg.backend == "auto":
        return _measure_auto(model_or_session, shape, cfg, optimize)
    if _is_session(model_or_session):
        if cfg.backend != "onnxruntime":
            raise ConfigError(
                "an onnxruntime session can only be measured with backend onnxruntime"
            )
        return _measure_ort(model_or_session, shape, cfg)
    if cfg.backend == "torch":
        return _measure_torch(model_or_session, shape, cfg, optimize)
    if cfg.backend == "onnxruntime":
        model, form = model_or_session, "as given"
        if optimize and isinstance(model, DerivedNet):
            model, form = deploy(model), "deploy"
        with tempfile.TemporaryDirectory(prefix="ssr-bench-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model, shape, path, verify=False)
            return _measure_ort(ort_session(path, cfg.threads, cfg.device), shape, cfg, form)
    raise ConfigError(f"unknown backend {cfg.backend!r}; use torch, onnxruntime or auto")


def available_backends(obj: nn.Module | Any) -> list[str]:
    """Backends that can measure ``obj`` here (onnxruntime needs onnx + onnxruntime)."""
    if _is_session(obj):
        return ["onnxruntime"]
    out = ["torch"]
    try:
        _import("onnx")
        _import("onnxruntime")
        out.append("onnxruntime")
    except ImportError:
        pass
    return out


def _measure_auto(
    obj: nn.Module | Any, shape: tuple[int, ...], cfg: BenchConfig, optimize: bool
) -> BenchResult:
    results: dict[str, BenchResult] = {}
    candidates: dict[str, dict[str, Any]] = {}
    for name in available_backends(obj):
        try:
            res = measure(obj, shape, _replace(cfg, backend=name), optimize=optimize)
        except (ImportError, RuntimeError, ConfigError) as exc:
            candidates[name] = {"error": f"{type(exc).__name__}: {exc}"}
            continue
        results[name] = res
        candidates[name] = {
            k: getattr(res, k)
            for k in (
                "latency_ms_median",
                "latency_ms_p90",
                "fps_median",
                "cv_between_passes",
                "threads",
                "other_load",
                "form",
            )
        }
    if not results:
        raise RuntimeError(f"no backend could measure the model: {candidates}")
    best = min(results.values(), key=lambda r: r.latency_ms_median)
    best.candidates = candidates
    return best


# --------------------------------------------------------------------------------------------
# ONNX export


@dataclass
class ExportResult:
    """One ONNX export: where, how big, how long, which exporter and how exact (issue 6)."""

    path: str
    nodes: int
    seconds: float
    max_abs_diff: float | None
    exporter: str
    opset: int
    size_bytes: int
    input_shape: list[int]
    fallback_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def _quiet() -> Iterator[io.StringIO]:
    """Swallow the exporter's progress prints, warnings and log lines; yields what was printed."""
    buf = io.StringIO()
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export")]
    levels = [lg.level for lg in loggers]
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(buf),
        contextlib.redirect_stderr(buf),
    ):
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield buf
        finally:
            for lg, lvl in zip(loggers, levels):
                lg.setLevel(lvl)


def _opset(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), default=0)


def export_onnx(
    model: nn.Module, input_shape: Sequence[int], path: str | Path, verify: bool = True
) -> ExportResult:
    """Export ``model`` in eval mode to ONE ``.onnx`` file with a fixed input shape (issue 6).

    The dynamo exporter (``torch.onnx.export(..., dynamo=True, external_data=False)``, needs
    ``onnxscript``) is tried first, silenced; the legacy TorchScript exporter (opset 18) is used
    only if it fails, and ``exporter``/``fallback_reason`` say so. The file is checked with
    ``onnx.checker``; with ``verify`` the output of onnxruntime on a random input is compared
    with torch's (``max_abs_diff``). ``input_shape`` is ``(C, H, W)`` or ``(N, C, H, W)``.
    """
    onnx = _import("onnx")
    shape = _nchw(input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(model.parameters(), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        model = copy.deepcopy(model).to("cpu", torch.float32)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    fallback_reason = None
    t0 = time.perf_counter()
    with _eval_mode(model):
        try:
            _import("onnxscript")
            with _quiet():
                torch.onnx.export(model, (x,), str(path), dynamo=True, external_data=False)
            exporter = "dynamo"
        except Exception as exc:  # any exporter failure: fall back, and say why
            fallback_reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}"
            with _quiet():
                torch.onnx.export(
                    model, (x,), str(path), dynamo=False, opset_version=MIN_OPSET,
                    input_names=["input"], output_names=["output"],
                )  # fmt: skip
            exporter = "torchscript"
        seconds = time.perf_counter() - t0
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
        diff = None
        if verify:
            import numpy as np

            with torch.inference_mode():
                ref = model(x).numpy()
            sess = ort_session(path)
            out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
            diff = float(np.abs(out - ref).max())
    return ExportResult(
        path=str(path),
        nodes=len(proto.graph.node),
        seconds=round(seconds, 3),
        max_abs_diff=diff,
        exporter=exporter,
        opset=_opset(proto),
        size_bytes=path.stat().st_size,
        input_shape=list(shape),
        fallback_reason=fallback_reason,
    )
