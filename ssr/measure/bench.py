"""The one latency measurement procedure and its record (docs/architecture.md §5).

Every FPS number of the project goes through :func:`measure`, so numbers are comparable and come
with the record of what they ran on. The procedure extends the official one (docs/method.md
§8.3, §12.11):

- eval mode, ``torch.inference_mode()``, one fixed input created before the clock starts;
- ``warmup`` untimed iterations, then ``repeats`` passes of ``iters`` timed iterations, each
  iteration timed alone with ``time.perf_counter()`` after a device synchronisation on CUDA
  (missing synchronisation is the classic reason FPS claims do not reproduce);
- median and p90 latency over all iterations, the median of every pass and the coefficient of
  variation between passes, so a number says how stable it is;
- the device name, threads, backend, precision, batch, input size and library versions, and the
  share of the machine's CPU that *other* processes used while the clock ran
  (:class:`ssr.measure.host.OtherLoad`; a number measured on a shared machine is marked so).

Backends: ``torch`` (eager), ``onnxruntime`` (CPU provider, or CUDA when asked and available;
the model is exported with :func:`ssr.deploy.onnx_export.export_onnx` first) and ``auto`` (measures
each available backend in its own loop and keeps the fastest). Precision ``int8`` is the static
QDQ quantization of :mod:`ssr.deploy.quantize`, run by ONNX Runtime on CPU and calibrated on training
images (``measure(..., calibration=...)``); quantizing is not timed. Sizes (parameters, MACs)
are counted by :mod:`ssr.method.complexity`; how close a latency comes to the machine's limit is
:func:`ssr.measure.roofline.achieved`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssr.config import BenchConfig, ConfigError
from ssr.deploy import deploy, fold_bn
from ssr.deploy.onnx_export import export_onnx, ort_session, require
from ssr.measure.host import OtherLoad, device_name, torch_threads
from ssr.method.complexity import eval_mode, nchw
from ssr.method.network import DerivedNet

__all__ = ["BACKENDS", "BenchResult", "available_backends", "measure"]

BACKENDS = ("torch", "onnxruntime")


# --------------------------------------------------------------------------------------------
# Result and statistics


@dataclass
class BenchResult:
    """One latency measurement and the record of what it ran on (docs/architecture.md §5).

    ``latency_ms_*`` are over all timed iterations of all passes; ``pass_medians_ms`` holds the
    median of each pass and ``cv_between_passes`` their coefficient of variation (stdev / mean).
    ``latency_ms_p10`` and ``latency_ms_best_pass`` (the lowest pass median) estimate what the
    machine does undisturbed: noise from outside (other processes, other tenants of a virtual
    machine's host) only adds time, so they repeat better than the median on shared machines
    (BENCHMARKS.md); the median and p90 stay the headline figures (docs/architecture.md §3).
    ``other_load`` is the share of the machine's CPU other processes used meanwhile. ``form``
    says what ran: the model ``as given``, an exact inference form (``measure(optimize=True)``)
    or ``int8 QDQ`` (``calibration`` then says on what). ``candidates`` (``auto`` only) holds
    every backend's figures, or its error.
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
    calibration: str | None = None
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
    with OtherLoad() as load:
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
    if cfg.precision == "int8":
        if dev.type != "cpu":
            raise ConfigError(
                "precision int8 is measured on cpu only (ONNX Runtime static quantization, "
                "ssr.deploy.quantize); use device cpu"
            )
    elif cfg.precision != "fp32" and dev.type != "cuda":
        raise ConfigError(
            f"precision {cfg.precision} is only measured on CUDA; use precision fp32 on {dev.type}"
        )
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {cfg.device}: CUDA is not available on this machine")
    if cfg.warmup < 0 or cfg.iters < 1 or cfg.repeats < 1 or cfg.batch < 1 or cfg.threads < 0:
        raise ConfigError(
            "bench: need warmup >= 0, iters >= 1, repeats >= 1, batch >= 1, threads >= 0"
        )


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
    with torch_threads(cfg.threads) as threads, eval_mode(model), torch.inference_mode():
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


def _session_threads(session: Any) -> int:
    opts = session.get_session_options()
    return int(opts.intra_op_num_threads) or (os.cpu_count() or 1)


def _measure_ort(
    session: Any, shape: tuple[int, ...], cfg: BenchConfig, form: str = "as given"
) -> BenchResult:
    import numpy as np

    ort = require("onnxruntime")
    if cfg.precision not in ("fp32", "int8"):
        raise ConfigError("the onnxruntime backend measures fp32 and int8 models only")
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
    device_cfg = cfg if cuda else dataclasses.replace(cfg, device="cpu")
    return _summarise(
        passes,
        **_record(device_cfg, shape, "onnxruntime", _session_threads(session)),
        form=form,
        onnxruntime_version=ort.__version__,
        other_load=load,
    )


def _is_session(obj: Any) -> bool:
    return hasattr(obj, "run") and hasattr(obj, "get_inputs") and not isinstance(obj, nn.Module)


# --------------------------------------------------------------------------------------------
# The procedure


def measure(
    model_or_session: nn.Module | Any,
    input_shape: Sequence[int],
    cfg: BenchConfig,
    *,
    optimize: bool = False,
    calibration: Any = None,
    calibration_images: int | None = None,
) -> BenchResult:
    """Latency and FPS of a model by the one procedure (docs/architecture.md §5, docs/method.md §8.3).

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

    ``cfg.precision == 'int8'`` (CPU; always ONNX Runtime whatever ``cfg.backend`` says, and
    the record's ``backend`` says so): a module is quantized first by :func:`ssr.deploy.quantize.quantize_model` (not timed), calibrated on
    ``calibration``: the run's :class:`~ssr.config.DataConfig` or a dataset name
    (``calibration_images`` training images, default :data:`ssr.deploy.quantize.DEFAULT_IMAGES`) or a
    list of input batches. A session or ``.onnx`` path is taken as already quantized.
    """
    _check_cfg(cfg)
    shape = nchw(input_shape, cfg.batch)
    if isinstance(model_or_session, (str, Path)):
        model_or_session = ort_session(model_or_session, cfg.threads, cfg.device)
    if cfg.precision == "int8":
        cfg = dataclasses.replace(cfg, backend="onnxruntime")
        if not _is_session(model_or_session):
            return _measure_int8(model_or_session, shape, cfg, calibration, calibration_images)
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


def _measure_int8(
    model: nn.Module, shape: tuple[int, ...], cfg: BenchConfig, calibration: Any, n: int | None
) -> BenchResult:
    from ssr.deploy.quantize import DEFAULT_IMAGES, int8_session

    if calibration is None:
        raise ConfigError(
            "precision int8 needs calibration images: measure(..., calibration=<the run's "
            "DataConfig, a dataset name or input batches>)"
        )
    with tempfile.TemporaryDirectory(prefix="ssr-bench-int8-") as tmp:
        session, q = int8_session(
            model, shape, calibration, tmp, threads=cfg.threads, n_images=n or DEFAULT_IMAGES
        )
        res = _measure_ort(session, shape, cfg, form="int8 QDQ")
    res.calibration = f"{q.calibration}, {q.method}"
    return res


def available_backends(obj: nn.Module | Any) -> list[str]:
    """Backends that can measure ``obj`` here (onnxruntime needs onnx + onnxruntime)."""
    if _is_session(obj):
        return ["onnxruntime"]
    out = ["torch"]
    try:
        require("onnx")
        require("onnxruntime")
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
            res = measure(obj, shape, dataclasses.replace(cfg, backend=name), optimize=optimize)
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
