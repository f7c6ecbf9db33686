"""INT8 inference form: ONNX Runtime static quantization, QDQ, per-channel weights (docs/architecture.md §5).

On CPU the fp32 network already runs its convolutions near the machine's fp32 limit
(:mod:`ssr.measure.roofline`), so going faster needs fewer bytes and cheaper multiply-accumulates per
MAC: int8. The recipe is ONNX Runtime's static quantization:

1. the network (BatchNorm folded, :func:`ssr.deploy.fold_bn`) is exported to ONNX in fp32
   (:func:`ssr.deploy.onnx_export.export_onnx`) and pre-processed (shape inference, graph
   optimisation: ``quant_pre_process``);
2. :func:`calibration_images` draws ``n`` images of the run's **training** split (evenly spaced,
   no augmentation, at the measured input size) and :class:`ImageReader` feeds them to
   ``quantize_static``, which records every activation's range (``minmax`` by default);
3. the model is written in QDQ format (``QuantizeLinear``/``DequantizeLinear`` pairs that ONNX
   Runtime fuses into ``QLinearConv`` and friends) with uint8 activations and per-channel
   symmetric int8 weights (the u8s8 kernels of x86 VNNI);
4. the node that produces the output (the bilinear upsampling of the logits) stays fp32: the
   logits leave the graph in fp32 anyway, and quantizing them only adds a Q/DQ pair on
   ``classes x H x W`` values. ``exclude`` keeps more nodes in fp32 (by ONNX node name,
   :func:`node_names` lists them), for layers whose quantization costs accuracy.

The padded form of :func:`ssr.deploy.deploy` is *not* used here: its ``-1e30`` mask bias would
set the range of a whole activation tensor (per-tensor activation scales) and wipe out the
other channels. The network is exported as built, where residual width changes are slices.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ssr.config import ConfigError, DataConfig
from ssr.deploy.onnx_export import export_onnx, ort_session, require
from ssr.method.complexity import nchw

__all__ = [
    "DEFAULT_IMAGES",
    "METHODS",
    "ImageReader",
    "QuantizeResult",
    "calibration_images",
    "int8_session",
    "node_names",
    "quantize_model",
    "quantize_onnx",
]

DEFAULT_IMAGES = 16
METHODS = ("minmax", "entropy", "percentile")
Calibration = DataConfig | str | Sequence[np.ndarray]


@dataclass
class QuantizeResult:
    """One int8 model: where it is, how it was calibrated and what stayed fp32."""

    path: str
    fp32_path: str
    nodes: int
    seconds: float
    calibration: str
    images: int
    method: str
    excluded: list[str]
    quant_format: str = "QDQ"
    activations: str = "uint8, per-tensor"
    weights: str = "int8, per-channel, symmetric"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration_images(
    data: DataConfig | str, input_shape: Sequence[int], n: int = DEFAULT_IMAGES
) -> list[np.ndarray]:
    """``n`` training images of ``data``'s dataset as fp32 arrays of ``input_shape``.

    ``data`` is a :class:`~ssr.config.DataConfig` (the run's) or a dataset name. Images are
    rendered or resized at the input's ``H x W``, without augmentation, evenly spaced over the
    training split, and stacked into batches of ``input_shape``'s batch size (the last partial
    batch is dropped). Fewer images are used when the split is smaller.
    """
    from ssr.data import build_dataset
    from ssr.data.cityscapes import evenly_spaced

    if n < 1:
        raise ConfigError(f"calibration needs at least one image, got {n}")
    batch, _, h, w = nchw(input_shape)
    cfg = DataConfig(name=data) if isinstance(data, str) else data
    cfg = dataclasses.replace(cfg, height=h, width=w, augment=False, scale_range=None, crop=None)
    dataset = build_dataset(cfg, "train")
    idx = evenly_spaced(len(dataset), n)
    if len(idx) < batch:
        raise ConfigError(
            f"{cfg.name}: {len(idx)} training images, fewer than one batch of {batch}"
        )
    images = [dataset[i][0] for i in idx]
    return [
        torch.stack(images[k : k + batch]).numpy().astype(np.float32)
        for k in range(0, len(images) - batch + 1, batch)
    ]


class ImageReader:
    """ONNX Runtime's ``CalibrationDataReader`` over fixed input batches (rewindable).

    ``CalibrationDataReader`` accepts any class with ``get_next`` as a subclass (its
    ``__subclasshook__``), so this one does not import onnxruntime.
    """

    def __init__(self, input_name: str, batches: Sequence[np.ndarray]) -> None:
        self.input_name, self.batches = input_name, list(batches)
        self._it: Iterator[np.ndarray] = iter(self.batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._it, None)
        return None if x is None else {self.input_name: x}

    def rewind(self) -> None:
        self._it = iter(self.batches)


def node_names(path: str | Path, op_type: str | None = None) -> list[str]:
    """Names of the nodes of an ONNX file (of ``op_type`` only, if given): what ``exclude``
    takes."""
    onnx = require("onnx")
    graph = onnx.load(str(path)).graph
    return [n.name for n in graph.node if op_type is None or n.op_type == op_type]


@contextlib.contextmanager
def _quiet_root() -> Iterator[None]:
    """The quantizer logs on the root logger (e.g. about 1-D BatchNorm weights): silence it."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    batches: Sequence[np.ndarray],
    *,
    exclude: Sequence[str] = (),
    method: str = "minmax",
    keep_output_fp32: bool = True,
    calibration: str = "given batches",
) -> QuantizeResult:
    """Static QDQ quantization of an fp32 ONNX file, calibrated on ``batches`` (module doc).

    ``exclude``: node names of the pre-processed graph that stay fp32 (:func:`node_names`
    of ``fp32_path``; pre-processing keeps the exporter's names). ``keep_output_fp32`` also keeps
    the node producing the graph's output in fp32. ``calibration`` describes the batches in the
    result.
    """
    if method not in METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; use one of {METHODS}")
    if not batches:
        raise ConfigError("calibration needs at least one batch of images")
    onnx = require("onnx")
    q = require("onnxruntime.quantization")
    from onnxruntime.quantization.shape_inference import quant_pre_process

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ssr-quant-") as tmp:
        pre = Path(tmp) / "pre.onnx"
        with _quiet_root():
            quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        graph = onnx.load(str(pre)).graph
        names = {n.name for n in graph.node}
        unknown = sorted(set(exclude) - names)
        if unknown:
            raise ConfigError(f"exclude: no node named {unknown[0]!r} in {fp32_path}")
        skip = list(exclude)
        if keep_output_fp32:
            outputs = {o.name for o in graph.output}
            skip += [n.name for n in graph.node if set(n.output) & outputs and n.name not in skip]
        methods = {
            "minmax": q.CalibrationMethod.MinMax,
            "entropy": q.CalibrationMethod.Entropy,
            "percentile": q.CalibrationMethod.Percentile,
        }
        with _quiet_root():
            q.quantize_static(
                str(pre),
                str(out_path),
                ImageReader(graph.input[0].name, batches),
                quant_format=q.QuantFormat.QDQ,
                per_channel=True,
                activation_type=q.QuantType.QUInt8,
                weight_type=q.QuantType.QInt8,
                nodes_to_exclude=skip,
                calibrate_method=methods[method],
                calibration_providers=["CPUExecutionProvider"],
            )
    return QuantizeResult(
        path=str(out_path),
        fp32_path=str(fp32_path),
        nodes=len(onnx.load(str(out_path)).graph.node),
        seconds=round(time.perf_counter() - t0, 3),
        calibration=calibration,
        images=sum(int(b.shape[0]) for b in batches),
        method=method,
        excluded=skip,
    )


def _batches(
    calibration: Calibration, shape: tuple[int, int, int, int], n_images: int
) -> tuple[list[np.ndarray], str]:
    if isinstance(calibration, (DataConfig, str)):
        name = calibration if isinstance(calibration, str) else calibration.name
        batches = calibration_images(calibration, shape, n_images)
        return batches, f"{name} train, {sum(b.shape[0] for b in batches)} images"
    batches = [np.asarray(b, dtype=np.float32) for b in calibration]
    if any(tuple(b.shape) != shape for b in batches):
        raise ConfigError(f"calibration batches must all have shape {list(shape)}")
    return batches, f"{len(batches)} given batches"


def quantize_model(
    model: nn.Module,
    input_shape: Sequence[int],
    out_path: str | Path,
    calibration: Calibration,
    *,
    n_images: int = DEFAULT_IMAGES,
    exclude: Sequence[str] = (),
    method: str = "minmax",
) -> QuantizeResult:
    """Export ``model`` (BN folded) and quantize it to ``out_path`` (the fp32 file lies next to
    it, ``*.fp32.onnx``).

    ``calibration``: a :class:`~ssr.config.DataConfig` or dataset name (``n_images`` training
    images, :func:`calibration_images`) or a list of input batches of ``input_shape``.
    """
    from ssr.deploy import fold_bn

    shape = nchw(input_shape)
    batches, described = _batches(calibration, shape, n_images)
    out_path = Path(out_path)
    fp32 = out_path.with_name(out_path.stem + ".fp32.onnx")
    export_onnx(fold_bn(model), shape, fp32, verify=False)
    return quantize_onnx(
        fp32, out_path, batches, exclude=exclude, method=method, calibration=described
    )


def int8_session(
    model: nn.Module,
    input_shape: Sequence[int],
    calibration: Calibration,
    workdir: str | Path,
    *,
    threads: int = 0,
    n_images: int = DEFAULT_IMAGES,
    exclude: Sequence[str] = (),
    method: str = "minmax",
) -> tuple[Any, QuantizeResult]:
    """Quantize ``model`` into ``workdir`` and open an ONNX Runtime CPU session on it."""
    res = quantize_model(
        model,
        input_shape,
        Path(workdir) / "model.int8.onnx",
        calibration,
        n_images=n_images,
        exclude=exclude,
        method=method,
    )
    return ort_session(res.path, threads), res
