"""This machine's achievable compute rate, and how close a measured figure comes to it (docs/architecture.md §5).

A latency says little on its own: 176 ms for 10.9 GMACs is slow on one CPU and near the limit on
another. Every benchmark figure therefore comes with the rate it achieved (conv MACs per second,
counted by :mod:`ssr.method.complexity`) and its share of what this machine reaches on the best case of
the same work, measured by :func:`probe` at the same thread count:

- ``conv``: a 3x3 convolution of 64 -> 64 channels on a 1x64x128x256 input (1.21 GMAC; the
  paper network's first stage at 512x1024), fp32, channels-last, in torch (oneDNN);
- ``gemm``: a 1024^3 fp32 matrix product in torch (MKL);
- ``ort_conv``: the same 3x3 conv in ONNX Runtime's CPU provider, fp32;
- ``ort_int8_conv``: the same conv as one ``QLinearConv`` (uint8 activations, per-channel int8
  weights), the kernel ONNX Runtime runs for the QDQ int8 form of :mod:`ssr.deploy.quantize`.

The fp32 reference (:attr:`Probe.fp32_gmacs_per_s`) is the fastest of the three fp32 rates; the
int8 reference is ``ort_int8_conv``. Each rate is the best of ``iters`` timed runs after warm-up:
noise from other processes only adds time, so the best run estimates the undisturbed machine. At
one thread the runs are timed in CPU time of the calling thread (``time.thread_time``: both
libraries then compute on that thread), which the time other processes hold the core does not
inflate, so the one-thread probe holds on a busy machine; with more threads they are timed in
wall time, and ``other_load`` says how far to trust it. Results are cached per process and thread
count. BatchNorm, activations, pooling and resizing
are not counted as work, so a network's share of the probe also shows what its other ops cost.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ssr.measure.host import OtherLoad, torch_threads

__all__ = ["PROBE_SHAPE", "Probe", "achieved", "probe"]

PROBE_SHAPE = (1, 64, 128, 256)  # N, C, H, W of the probe conv (64 -> 64 channels, 3x3)
_GEMM_N = 1024
_CACHE: dict[tuple[int, bool], Probe] = {}


@dataclass(frozen=True)
class Probe:
    """Achievable GMAC/s of this machine at ``threads`` threads (see the module doc)."""

    threads: int
    conv_gmacs_per_s: float
    gemm_gmacs_per_s: float
    ort_conv_gmacs_per_s: float | None
    ort_int8_conv_gmacs_per_s: float | None
    seconds: float
    other_load: float | None

    @property
    def fp32_gmacs_per_s(self) -> float:
        """The fp32 reference: the fastest fp32 rate probed."""
        return max(
            v
            for v in (self.conv_gmacs_per_s, self.gemm_gmacs_per_s, self.ort_conv_gmacs_per_s)
            if v is not None
        )

    def reference(self, precision: str = "fp32") -> float:
        """The rate a figure of ``precision`` is compared with (int8: the int8 conv probe)."""
        if precision == "int8":
            if self.ort_int8_conv_gmacs_per_s is None:
                raise ValueError("the int8 probe needs onnxruntime")
            return self.ort_int8_conv_gmacs_per_s
        return self.fp32_gmacs_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "fp32_gmacs_per_s": self.fp32_gmacs_per_s}


def _best_seconds(fn: Callable[[], object], iters: int, warmup: int = 2) -> float:
    """Best of ``iters`` runs: thread CPU time at one torch thread, wall time otherwise."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(iters):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def _conv_macs() -> int:
    n, c, h, w = PROBE_SHAPE
    return n * c * c * 9 * h * w


def _torch_rates(iters: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(PROBE_SHAPE, generator=g).contiguous(memory_format=torch.channels_last)
    c = PROBE_SHAPE[1]
    w = torch.randn(c, c, 3, 3, generator=g).contiguous(memory_format=torch.channels_last)
    a = torch.randn(_GEMM_N, _GEMM_N, generator=g)
    b = torch.randn(_GEMM_N, _GEMM_N, generator=g)
    with torch.inference_mode():
        conv = _conv_macs() / _best_seconds(lambda: F.conv2d(x, w, padding=1), iters) / 1e9
        gemm = _GEMM_N**3 / _best_seconds(lambda: a @ b, iters) / 1e9
    return conv, gemm


def _conv_graph(int8: bool) -> bytes:
    """One 3x3 conv of :data:`PROBE_SHAPE` as an ONNX model: fp32 ``Conv`` or ``QLinearConv``."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    n, c, h, w = PROBE_SHAPE
    rng = np.random.default_rng(0)
    if not int8:
        inits = [numpy_helper.from_array(rng.standard_normal((c, c, 3, 3), np.float32), "w")]
        node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
        elem = TensorProto.FLOAT
    else:
        wq = rng.integers(-127, 128, (c, c, 3, 3), dtype=np.int8)
        scalar = {"x_s": np.float32(0.05), "x_z": np.uint8(128)}
        scalar |= {"y_s": np.float32(0.1), "y_z": np.uint8(128)}
        inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in scalar.items()]
        inits += [
            numpy_helper.from_array(wq, "w"),
            numpy_helper.from_array(np.full(c, 0.01, np.float32), "w_s"),
            numpy_helper.from_array(np.zeros(c, np.int8), "w_z"),
            numpy_helper.from_array(np.zeros(c, np.int32), "b"),
        ]
        node = helper.make_node(
            "QLinearConv",
            ["x", "x_s", "x_z", "w", "w_s", "w_z", "y_s", "y_z", "b"],
            ["y"],
            pads=[1, 1, 1, 1],
        )
        elem = TensorProto.UINT8
    graph = helper.make_graph(
        [node],
        "probe",
        [helper.make_tensor_value_info("x", elem, [n, c, h, w])],
        [helper.make_tensor_value_info("y", elem, [n, c, h, w])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model.SerializeToString()


def _ort_rate(threads: int, int8: bool, iters: int) -> float | None:
    try:
        import numpy as np
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.log_severity_level = 3
    sess = ort.InferenceSession(_conv_graph(int8), so, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    if int8:
        x = rng.integers(0, 256, PROBE_SHAPE, dtype=np.uint8)
    else:
        x = rng.standard_normal(PROBE_SHAPE, dtype=np.float32)
    feed = {"x": x}
    return _conv_macs() / _best_seconds(lambda: sess.run(None, feed), iters) / 1e9


def probe(threads: int = 0, *, iters: int = 10, refresh: bool = False) -> Probe:
    """Measure (once per process and thread count) this machine's achievable GMAC/s.

    ``threads``: torch and ONNX Runtime intra-op threads (0: torch's current count). Takes about
    a second; later calls with the same thread count return the cached :class:`Probe` unless
    ``refresh``. ``other_load`` says how much of the CPU other processes used meanwhile.
    """
    with torch_threads(threads) as n:
        key = (n, True)
        if key in _CACHE and not refresh:
            return _CACHE[key]
        t0 = time.perf_counter()
        with OtherLoad() as load:
            conv, gemm = _torch_rates(iters)
            ort_fp32 = _ort_rate(n, False, iters)
            ort_int8 = _ort_rate(n, True, iters)
    res = Probe(
        threads=n,
        conv_gmacs_per_s=round(conv, 2),
        gemm_gmacs_per_s=round(gemm, 2),
        ort_conv_gmacs_per_s=None if ort_fp32 is None else round(ort_fp32, 2),
        ort_int8_conv_gmacs_per_s=None if ort_int8 is None else round(ort_int8, 2),
        seconds=round(time.perf_counter() - t0, 2),
        other_load=load.value,
    )
    _CACHE[key] = res
    return res


def achieved(
    macs: float, seconds: float, threads: int = 0, precision: str = "fp32"
) -> dict[str, float]:
    """``gmacs_per_s`` achieved by ``macs`` in ``seconds`` and ``pct_of_probe`` at ``threads``.

    The reference is :meth:`Probe.reference` of ``precision`` (``probe_gmacs_per_s``); the
    probe runs on first use at that thread count.
    """
    if seconds <= 0 or macs < 0:
        raise ValueError(f"need macs >= 0 and seconds > 0, got {macs} and {seconds}")
    ref = probe(threads).reference(precision)
    rate = macs / seconds / 1e9
    return {
        "gmacs_per_s": round(rate, 3),
        "probe_gmacs_per_s": ref,
        "pct_of_probe": round(100 * rate / ref, 2),
    }
