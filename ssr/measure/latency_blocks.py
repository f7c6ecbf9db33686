"""The blocks a latency table times, each alone, in the form the benchmark runs them.

- **Layers, padded layout** (ONNX Runtime's deploy form, :class:`ssr.deploy.PaddedOp`): the ONNX
  graph is written directly with ``onnx.helper``, node for node what the exporter writes for a
  ``PaddedOp`` (``MaxPool(ceil) -> Conv 3x1 -> Relu -> Conv 1x3 -> Resize(linear,
  align_corners) -> Add -> Relu``), so a table of a thousand entries needs no exporter run per
  entry (the exporter takes seconds each). ``tests/ssr/test_latency.py`` checks the graph
  computes what ``PaddedOp`` computes.
- **Layers, natural layout** (torch): a :class:`ssr.method.ops.FactorizedOp` at its own widths,
  BN folded, channels-last, in the table's precision.
- **Stem, reductions, head**: the real modules (the deploy form's head of
  :class:`ssr.deploy.DeployNet` for the padded layout, the folded
  :class:`ssr.method.network.AggregationHead` for the natural one) at the widths of the entry,
  exported with the TorchScript exporter for ONNX Runtime (fast, and after ONNX Runtime's graph
  optimisation the same graph as the default exporter's).

Each block is returned as a :class:`Block`: its inputs and how to run it once.
"""

from __future__ import annotations

import contextlib
import io
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr.config import BenchConfig
from ssr.deploy import deploy, fold_bn
from ssr.deploy.onnx_export import MIN_OPSET, ort_session, require
from ssr.method.genotype import Genotype, LayerGene, ReductionGene
from ssr.method.network import DerivedNet
from ssr.method.ops import Downsampler, FactorizedOp

__all__ = [
    "Block",
    "head_block",
    "layer_block",
    "padded_layer_graph",
    "reduction_block",
    "stem_block",
]

_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class Block:
    """One block ready to time: ``run()`` computes it once on fixed inputs; ``sync()`` waits
    for the device."""

    run: Callable[[], object]
    sync: Callable[[], None]


def padded_layer_graph(
    width: int, c_mid: int, dilation: int, pool: int, size: tuple[int, int], seed: int = 0,
    weights: dict[str, Any] | None = None,
) -> bytes:  # fmt: skip
    """The ONNX graph of a ``PaddedOp`` of stream ``width`` at feature ``size`` (serialised).

    ``weights`` (``w1``, ``b1``, ``w2``, ``b2`` as numpy arrays) default to random ones; the
    values do not change the time.
    """
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    h, w = size
    d, rng = dilation, np.random.default_rng(seed)
    if weights is None:
        weights = {
            "w1": rng.standard_normal((c_mid, width, 3, 1), np.float32) * 0.05,
            "b1": np.zeros(c_mid, np.float32),
            "w2": rng.standard_normal((width, c_mid, 1, 3), np.float32) * 0.05,
            "b2": np.zeros(width, np.float32),
        }
    inits = [numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in weights.items()]
    nodes, y = [], "x"
    if pool > 1:
        nodes.append(helper.make_node("MaxPool", ["x"], ["pooled"], kernel_shape=[pool, pool],
                                      strides=[pool, pool], ceil_mode=1, pads=[0, 0, 0, 0]))  # fmt: skip
        y = "pooled"
    nodes += [
        helper.make_node("Conv", [y, "w1", "b1"], ["c1"], kernel_shape=[3, 1], dilations=[d, 1],
                         pads=[d, 0, d, 0], strides=[1, 1], group=1),
        helper.make_node("Relu", ["c1"], ["r1"]),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["v"], kernel_shape=[1, 3], dilations=[1, d],
                         pads=[0, d, 0, d], strides=[1, 1], group=1),
    ]  # fmt: skip
    v = "v"
    if pool > 1:
        inits.append(numpy_helper.from_array(np.array([1, width, h, w], np.int64), "sizes"))
        nodes.append(helper.make_node("Resize", ["v", "", "", "sizes"], ["up"], mode="linear",
                                      coordinate_transformation_mode="align_corners"))  # fmt: skip
        v = "up"
    nodes += [helper.make_node("Add", [v, "x"], ["sum"]), helper.make_node("Relu", ["sum"], ["y"])]
    shape = [1, width, h, w]
    graph = helper.make_graph(
        nodes, "padded_op", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)], inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", MIN_OPSET)])
    model.ir_version = 9
    return model.SerializeToString()


# --------------------------------------------------------------------------------------------
# Running a block on a backend


def _inputs(shapes: list[tuple[int, ...]], seed: int = 0) -> list[Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) for s in shapes]


def ort_block(model: bytes, shapes: list[tuple[int, ...]], cfg: BenchConfig) -> Block:
    """A serialised ONNX model as an ONNX Runtime session with the benchmark's session options
    (:func:`ssr.deploy.onnx_export.ort_session`, ``cfg.threads``), fed fixed random inputs."""
    with tempfile.TemporaryDirectory(prefix="ssr-latency-") as tmp:
        path = Path(tmp) / "block.onnx"
        path.write_bytes(model)
        session = ort_session(path, cfg.threads, cfg.device)
    names = [i.name for i in session.get_inputs()]
    feed = {n: x.numpy() for n, x in zip(names, _inputs(shapes))}
    return Block(lambda: session.run(None, feed), lambda: None)


def torch_block(module: nn.Module, shapes: list[tuple[int, ...]], cfg: BenchConfig) -> Block:
    """A block in eager torch: BN folded, channels-last, the table's device and precision."""
    dev, dtype = torch.device(cfg.device), _DTYPES[cfg.precision]
    module = fold_bn(module).to(dev, dtype, memory_format=torch.channels_last)
    xs = [x.to(dev, dtype).contiguous(memory_format=torch.channels_last) for x in _inputs(shapes)]
    sync = (lambda: torch.cuda.synchronize(dev)) if dev.type == "cuda" else (lambda: None)

    def run() -> object:
        with torch.inference_mode():
            return module(*xs)

    return Block(run, sync)


@contextlib.contextmanager
def _constant_pool_matrices() -> Iterator[None]:
    """Adaptive pooling's matrices (:func:`ssr.method.ops.pool_matrix`) as constants while a
    module is traced.

    NOTE: the TorchScript exporter cannot trace the matrix's in-place writes (it kills the
    process with a floating point exception); the matrices depend on the feature size only,
    so they are built by a forward pass before tracing and returned as constants during it,
    which is the graph the default exporter writes after constant folding.
    """
    from ssr.method import ops

    original, cache = ops.pool_matrix, {}

    def cached(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (int(n_in), int(n_out), device, dtype)
        if key not in cache:
            cache[key] = original(n_in, n_out, device, dtype)
        return cache[key]

    ops.pool_matrix = cached
    try:
        yield
    finally:
        ops.pool_matrix = original


def _exported(module: nn.Module, shapes: list[tuple[int, ...]], cfg: BenchConfig) -> Block:
    """``module`` exported with the TorchScript exporter and run by ONNX Runtime."""
    require("onnx")
    xs = tuple(_inputs(shapes))
    with tempfile.TemporaryDirectory(prefix="ssr-latency-") as tmp, _constant_pool_matrices():
        with torch.inference_mode():
            module.eval()(*xs)  # builds the pooling matrices outside the trace
        path = Path(tmp) / "block.onnx"
        buf = io.StringIO()
        with (warnings.catch_warnings(), contextlib.redirect_stdout(buf),
              contextlib.redirect_stderr(buf)):  # fmt: skip
            warnings.simplefilter("ignore")
            torch.onnx.export(module.eval(), xs, str(path), dynamo=False,
                              opset_version=MIN_OPSET)  # fmt: skip
        return ort_block(path.read_bytes(), shapes, cfg)


def _block(module: nn.Module, shapes: list[tuple[int, ...]], cfg: BenchConfig) -> Block:
    module.eval()
    return (
        _exported(module, shapes, cfg)
        if cfg.backend == "onnxruntime"
        else torch_block(module, shapes, cfg)
    )


# --------------------------------------------------------------------------------------------
# The blocks of a network


def layer_block(
    cfg: BenchConfig, size: tuple[int, int], dilation: int, pool: int, widths: tuple[int, ...]
) -> Block:
    """A searched layer: ``widths`` is ``(P, c_mid)`` (padded) or ``(c_in, c_mid, c_out)``."""
    h, w = size
    if cfg.backend == "onnxruntime":
        p, c_mid = widths
        return ort_block(padded_layer_graph(p, c_mid, dilation, pool, size), [(1, p, h, w)], cfg)
    c_in, c_mid, c_out = widths
    op = FactorizedOp(c_in, c_mid, c_out, dilation, pool, 0.0)
    return torch_block(op, [(cfg.batch, c_in, h, w)], cfg)


class _Pad(nn.Module):
    """A reduction followed by the deploy form's pad of its output to the stream width."""

    def __init__(self, red: Downsampler, width: int) -> None:
        super().__init__()
        self.red, self.extra = red, width - (red.c_in + red.c_conv)

    def forward(self, x: Tensor) -> Tensor:
        y = self.red(x)
        return F.pad(y, (0, 0, 0, 0, 0, self.extra)) if self.extra else y


def stem_block(cfg: BenchConfig, stem: int) -> Block:
    return _block(Downsampler(3, stem - 3), [(cfg.batch, 3, cfg.height, cfg.width)], cfg)


def reduction_block(
    cfg: BenchConfig, size_in: tuple[int, int], c_in: int, c_conv: int, stream: int | None
) -> Block:
    """A reduction of ``c_in`` channels at ``size_in``; padded to ``stream`` when given."""
    red = Downsampler(c_in, c_conv)
    module = red if stream is None else _Pad(red, stream)
    return _block(module, [(cfg.batch, c_in, *size_in)], cfg)


class _Head(nn.Module):
    """The head alone, fed the stem, first and last stage outputs."""

    def __init__(self, net: nn.Module, size: tuple[int, int]) -> None:
        super().__init__()
        self.net, self.size = net, size

    def forward(self, x0: Tensor, x1: Tensor, x2: Tensor) -> Tensor:
        if hasattr(self.net, "_aggregate"):  # the deploy form
            return self.net._aggregate([x0, x1, x2], self.size)
        return self.net.head([x0, x1, x2], self.size)


def head_block(
    cfg: BenchConfig,
    stem: int,
    outs: list[int],
    c_convs: list[int],
    sizes: list[tuple[int, int]],
    num_classes: int,
    head: str,
) -> Block:
    """The head fed a network whose stage ``s`` ends at ``outs[s]`` channels (the last: its
    stream, padded layout) after a reduction with ``c_convs[s]`` conv channels; ``sizes`` are
    the stages' feature sizes. Only the head is timed."""
    reductions, layers, prev = [], [], stem
    for s, (out, c_conv) in enumerate(zip(outs, c_convs)):
        reductions.append(ReductionGene(prev, c_conv))
        layers.append(LayerGene(s, 1, 1, prev + c_conv, out, out))
        prev = out
    net = DerivedNet(Genotype(stem, tuple(reductions), tuple(layers), head), num_classes).eval()
    padded, last = cfg.backend == "onnxruntime", outs[-1]
    if head == "search":
        conv = deploy(net).classifier if padded else net.head
        return _block(conv, [(cfg.batch, last, *sizes[-1])], cfg)
    module = _Head(deploy(net) if padded else net, (cfg.height, cfg.width))
    half = ((cfg.height + 1) // 2, (cfg.width + 1) // 2)
    shapes = [(cfg.batch, stem, *half), (cfg.batch, outs[0], *sizes[0])]
    return _block(module, [*shapes, (cfg.batch, last, *sizes[-1])], cfg)
