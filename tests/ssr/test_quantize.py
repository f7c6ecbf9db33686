"""The int8 form (ssr.deploy.quantize) and its measurement (precision int8, --backend ort-int8)."""

import dataclasses
import json

import numpy as np
import onnx
import pytest
import torch

from ssr.cli import main
from ssr.config import BenchConfig, ConfigError, DataConfig
from ssr.data import build_dataset
from ssr.deploy.onnx_export import ort_session
from ssr.deploy.quantize import calibration_images, quantize_model, quantize_onnx
from ssr.measure import bench
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet

SHAPE = (1, 3, 32, 64)
QUICK = BenchConfig(warmup=1, iters=2, repeats=1, threads=1, precision="int8")


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def net() -> DerivedNet:
    torch.manual_seed(0)
    return DerivedNet(Genotype.load("ssr_cityscapes"), 19).eval()


def _tiny() -> Genotype:
    """Two layers, a pooled op and a width change: exports in seconds."""
    layers = [
        dict(stage=0, dilation=1, pool=2, c_in=16, c_mid=12, c_out=16),
        dict(stage=1, dilation=2, pool=1, c_in=24, c_mid=16, c_out=20),
    ]
    reductions = [{"c_in": 8, "c_conv": 8}, {"c_in": 16, "c_conv": 8}]
    return Genotype.from_dict(
        {"stem": 8, "reductions": reductions, "layers": layers, "head": "search"}
    )


@pytest.fixture(scope="module")
def quantized(net: DerivedNet, tmp_path_factory):
    out = tmp_path_factory.mktemp("q") / "net.int8.onnx"
    return quantize_model(net, SHAPE, out, "synthetic", n_images=4)


def test_calibration_images_are_unaugmented_training_images() -> None:
    batches = calibration_images(DataConfig(train_size=8), (2, 3, 32, 64), n=5)
    assert len(batches) == 2  # 5 images -> two full batches of 2, the partial one dropped
    assert all(b.shape == (2, 3, 32, 64) and b.dtype == np.float32 for b in batches)
    ds = build_dataset(DataConfig(height=32, width=64, train_size=8, augment=False), "train")
    assert np.array_equal(batches[0][0], ds[0][0].numpy())  # first of evenly spaced indices
    assert not np.array_equal(batches[0][0], batches[0][1])


def test_calibration_needs_an_image() -> None:
    with pytest.raises(ConfigError, match="at least one image"):
        calibration_images("synthetic", SHAPE, n=0)


def test_int8_model_is_qdq_with_fp32_output(quantized, net: DerivedNet) -> None:
    model = onnx.load(quantized.path)
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert quantized.images == 4 and quantized.calibration == "synthetic train, 4 images"
    last = model.graph.node[-1]
    assert last.name in quantized.excluded  # the output upsampling stays fp32
    producers = {o: n.op_type for n in model.graph.node for o in n.output}
    assert producers[last.input[0]] == "DequantizeLinear"
    # per-channel weights: a conv's weight scale has one entry per output channel
    inits = {i.name: i for i in model.graph.initializer}
    scales = [inits[n.input[1]] for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert any(len(s.dims) == 1 and s.dims[0] > 1 for s in scales if s.name in inits)


def test_int8_output_follows_fp32(quantized, net: DerivedNet) -> None:
    x = calibration_images("synthetic", SHAPE, n=1)[0]
    sess = ort_session(quantized.path, threads=1)
    out = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    assert out.shape == ref.shape and np.isfinite(out).all()
    rel = np.abs(out - ref).mean() / np.abs(ref).mean()
    assert rel < 0.25, rel  # quantization noise, not a different function
    assert (out.argmax(1) == ref.argmax(1)).mean() > 0.7


def test_exclude_keeps_named_nodes_fp32(quantized, tmp_path) -> None:
    x = calibration_images("synthetic", SHAPE, n=1)
    fp32 = onnx.load(quantized.fp32_path)
    conv = next(n.name for n in fp32.graph.node if n.op_type == "Conv")
    res = quantize_onnx(quantized.fp32_path, tmp_path / "ex.onnx", x, exclude=[conv])
    assert conv in res.excluded
    node = next(n for n in onnx.load(res.path).graph.node if n.name == conv)
    inits = {i.name: i for i in onnx.load(res.path).graph.initializer}
    assert inits[node.input[1]].data_type == onnx.TensorProto.FLOAT  # fp32 weights kept
    with pytest.raises(ConfigError, match="no node named"):
        quantize_onnx(quantized.fp32_path, tmp_path / "bad.onnx", x, exclude=["nope"])


def test_measure_int8_needs_calibration_and_onnxruntime(net: DerivedNet) -> None:
    with pytest.raises(ConfigError, match="calibration images"):
        bench.measure(net, SHAPE, QUICK)
    with pytest.raises(ConfigError, match="on cpu only"):
        bench.measure(net, SHAPE, BenchConfig(precision="int8", device="cuda"))


def test_measure_int8_records_form_and_calibration(quantized) -> None:
    cfg = dataclasses.replace(QUICK, backend="torch")  # int8 always runs on ONNX Runtime
    tiny = DerivedNet(_tiny(), 19).eval()
    res = bench.measure(tiny, SHAPE, cfg, calibration="synthetic", calibration_images=2)
    assert res.backend == "onnxruntime" and res.precision == "int8"
    assert res.form == "int8 QDQ" and res.calibration == "synthetic train, 2 images, minmax"
    assert res.latency_ms_median > 0
    # an already quantized file is measured as it is
    again = bench.measure(quantized.path, SHAPE, QUICK)
    assert again.precision == "int8" and again.calibration is None


def test_cli_ort_int8(capsys, tmp_path) -> None:
    _tiny().save(tmp_path / "tiny.json")
    argv = ["bench", "--genotype", str(tmp_path / "tiny.json"), "--input", "32x64", "--backend",
            "ort-int8", "--threads", "1", "--warmup", "0", "--iters", "2", "--repeats", "1",
            "--calibration-images", "2", "--json"]  # fmt: skip
    assert main(argv) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["precision"] == "int8" and row["backend"] == "onnxruntime"
    assert row["gmacs_per_s"] > 0 and row["probe_gmacs_per_s"] > 0  # vs the int8 probe
    pct = 100 * row["gmacs_per_s"] / row["probe_gmacs_per_s"]
    assert row["pct_of_probe"] == pytest.approx(pct, abs=0.06)
    assert "synthetic" in row["calibration"]


def test_cli_ort_int8_refuses_another_precision(capsys) -> None:
    argv = ["bench", "--genotype", "ssr_cityscapes", "--backend", "ort-int8", "--precision",
            "fp32"]  # fmt: skip
    assert main(argv) == 2
    assert "ort-int8" in capsys.readouterr().err
