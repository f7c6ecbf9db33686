"""One-file ONNX export of a network and the onnxruntime session that runs it (docs/stack.md §6).

:func:`export_onnx` writes a single ``.onnx`` file with a fixed input shape, checks it with
``onnx.checker`` and, optionally, compares onnxruntime's output with torch's. :func:`ort_session`
is the session used for verification and for the ``onnxruntime`` backend of :mod:`ssr.measure.bench`.
``onnx``, ``onnxscript`` and ``onnxruntime`` are optional: :func:`require` imports one or fails
with a message naming the package to install.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
import time
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ssr.config import ConfigError
from ssr.method.complexity import eval_mode, nchw

__all__ = ["MIN_OPSET", "ExportResult", "export_onnx", "ort_session", "require"]

MIN_OPSET = 18


def require(name: str) -> Any:
    """Import an optional dependency or fail with a message that names the package."""
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
    other work needs (docs/stack.md §5; ``spinning=True`` allows it, for exclusive machines).
    ``device='cuda'`` uses the CUDA provider when present. ``profile=True`` writes ORT's
    per-node profile next to ``path`` (``session.end_profiling()`` returns its file).
    """
    ort = require("onnxruntime")
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


@dataclass
class ExportResult:
    """One ONNX export: where, how big, how long, which exporter and how exact (docs/stack.md §6)."""

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
    """Export ``model`` in eval mode to ONE ``.onnx`` file with a fixed input shape (docs/stack.md §6).

    The dynamo exporter (``torch.onnx.export(..., dynamo=True, external_data=False)``, needs
    ``onnxscript``) is tried first, silenced; the legacy TorchScript exporter (opset 18) is used
    only if it fails, and ``exporter``/``fallback_reason`` say so. The file is checked with
    ``onnx.checker``; with ``verify`` the output of onnxruntime on a random input is compared
    with torch's (``max_abs_diff``). ``input_shape`` is ``(C, H, W)`` or ``(N, C, H, W)``.
    """
    onnx = require("onnx")
    shape = nchw(input_shape)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = next(model.parameters(), None)
    if first is not None and (first.device.type != "cpu" or first.dtype != torch.float32):
        model = copy.deepcopy(model).to("cpu", torch.float32)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    fallback_reason = None
    t0 = time.perf_counter()
    with eval_mode(model):
        try:
            require("onnxscript")
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
