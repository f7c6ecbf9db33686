"""Measurement: params/MACs anchors (docs/method.md §8.1), the record, ONNX export, BN folding."""

import json
import sys

import pytest
import torch
from torch import nn

from ssr.config import BenchConfig, ConfigError
from ssr.deploy import deploy, fold_bn
from ssr.deploy.onnx_export import export_onnx, ort_session
from ssr.measure import bench
from ssr.method.complexity import count_macs, count_params
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet

SMALL = (3, 64, 128)
TINY = (3, 32, 64)  # timing tests: torch eager is slow on a busy 2-core machine
QUICK = BenchConfig(warmup=1, iters=3, repeats=2, threads=1)  # no OpenMP barrier stalls


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread: a 2-thread OpenMP forward stalls at every barrier on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def paper_net() -> nn.Module:
    torch.manual_seed(0)
    return DerivedNet(Genotype.load("ssr_cityscapes"), 19).eval()


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so folding is really tested."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.rand(m.num_features, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(m.num_features, generator=g) - 0.5)


def test_paper_network_params_and_macs(paper_net: nn.Module) -> None:
    """The anchors docs/method.md §8.1 cites: 1.0226 M parameters, 10.898 conv GMACs at
    512x1024, to the digits given there (a change of one bias or one 1x1 conv shows)."""
    assert round(count_params(paper_net) / 1e6, 4) == 1.0226
    assert round(count_macs(paper_net, (3, 512, 1024)) / 1e9, 3) == 10.898


@pytest.mark.slow
@pytest.mark.parametrize(("h", "w", "gmacs"), [(768, 1536, 24.520), (1024, 2048, 43.590)])
def test_paper_network_macs_large_inputs(
    paper_net: nn.Module, h: int, w: int, gmacs: float
) -> None:
    assert round(count_macs(paper_net, (1, 3, h, w)) / 1e9, 3) == gmacs


def test_count_macs_by_hand() -> None:
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=4))
    net.append(nn.Flatten()).append(nn.Linear(8 * 4 * 4, 10))
    expected = 16 * 8 * 3 * 9 + 16 * 8 * 2 * 9 + 10 * 128
    assert count_macs(net, (3, 4, 4)) == expected
    assert count_macs(net, (2, 3, 4, 4)) == 2 * expected
    assert net.training  # mode restored


def test_measure_record(paper_net: nn.Module) -> None:
    res = bench.measure(paper_net, TINY, QUICK)
    d = res.to_dict()
    assert d["backend"] == "torch" and d["device_type"] == "cpu" and d["precision"] == "fp32"
    assert d["batch"] == 1 and d["input"] == "32x64" and d["threads"] >= 1
    assert 0 < d["latency_ms_min"] <= d["latency_ms_median"] <= d["latency_ms_p90"]
    assert d["fps_median"] == pytest.approx(1000 / d["latency_ms_median"], rel=1e-3)
    assert len(d["pass_medians_ms"]) == 2 and d["cv_between_passes"] >= 0
    assert d["device"] and d["torch_version"] == torch.__version__
    json.dumps(d)


def test_measure_threads_restored_and_batch(paper_net: nn.Module) -> None:
    before = torch.get_num_threads()  # 1, from the fixture
    res = bench.measure(
        paper_net, (2, 3, 32, 64), BenchConfig(warmup=0, iters=2, repeats=1, threads=2)
    )
    assert res.threads == 2 and res.batch == 2
    assert res.fps_median == pytest.approx(2000 / res.latency_ms_median, rel=1e-3)
    assert torch.get_num_threads() == before


def test_fp16_on_cpu_is_a_clear_error(paper_net: nn.Module) -> None:
    with pytest.raises(ConfigError, match="only measured on CUDA"):
        bench.measure(paper_net, SMALL, BenchConfig(precision="fp16"))


@pytest.mark.slow  # exports the network to ONNX first (~10 s)
def test_measure_auto_picks_the_fastest(paper_net: nn.Module) -> None:
    res = bench.measure(paper_net, TINY, BenchConfig(warmup=1, iters=3, repeats=1, backend="auto"))
    assert set(res.candidates) == {"torch", "onnxruntime"}
    ok = {k: v for k, v in res.candidates.items() if "error" not in v}
    assert res.backend == min(ok, key=lambda k: ok[k]["latency_ms_median"])
    assert res.latency_ms_median == ok[res.backend]["latency_ms_median"]


@pytest.mark.slow
def test_export_matches_torch(paper_net: nn.Module, tmp_path) -> None:
    path = tmp_path / "net.onnx"
    res = export_onnx(paper_net, SMALL, path)
    assert res.max_abs_diff is not None and res.max_abs_diff < 1e-4
    assert res.opset >= 18 and res.input_shape == [1, 3, 64, 128]
    assert 0 < res.nodes <= 400  # a compact graph; the official export has 2,906
    assert [p.name for p in tmp_path.iterdir()] == ["net.onnx"]  # one file, no .data side file
    # the exported file is measurable as a path
    r = bench.measure(path, SMALL, BenchConfig(warmup=1, iters=2, repeats=1, backend="onnxruntime"))
    assert r.backend == "onnxruntime" and r.onnxruntime_version


def test_fold_bn_is_exact() -> None:
    net = DerivedNet(Genotype.load("ssr_cityscapes"), 19)
    _randomise_bn(net)
    net.eval()
    folded = fold_bn(net)
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert n_bn == 3  # only the downsamplers' BN (conv ++ max-pool) is kept
    x = torch.randn(2, *SMALL)
    with torch.inference_mode():
        assert torch.allclose(folded(x), net(x), atol=1e-4)
    assert count_params(folded) < count_params(net)
    assert count_macs(folded, SMALL) == count_macs(net, SMALL)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) > n_bn  # original kept


def test_missing_optional_package_is_named(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match="'onnxruntime' package"):
        ort_session("x.onnx")


def _odd_genotype(head: str = "aggregation") -> Genotype:
    """Widening, narrowing and pooled ops, and a stage wider than its reduction (needs a pad)."""
    layers = [
        dict(stage=0, dilation=1, pool=2, c_in=16, c_mid=12, c_out=24),
        dict(stage=0, dilation=2, pool=1, c_in=24, c_mid=8, c_out=20),
        dict(stage=1, dilation=4, pool=1, c_in=32, c_mid=16, c_out=40),
        dict(stage=1, dilation=1, pool=2, c_in=40, c_mid=16, c_out=24),
    ]
    return Genotype.from_dict(
        {
            "stem": 8,
            "reductions": [{"c_in": 8, "c_conv": 8}, {"c_in": 20, "c_conv": 12}],
            "layers": layers,
            "head": head,
        }
    )


@pytest.mark.parametrize(
    "genotype",
    [Genotype.load("ssr_cityscapes"), _odd_genotype(), _odd_genotype("search")],
    ids=["paper", "odd", "odd-search-head"],
)
def test_deploy_form_is_exact(genotype: Genotype) -> None:
    net = DerivedNet(genotype, 19)
    _randomise_bn(net)
    net.eval()
    dep = deploy(net)
    x = torch.randn(2, *SMALL)
    with torch.inference_mode():
        ref, out = net(x), dep(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


def test_deploy_needs_a_derived_net() -> None:
    with pytest.raises(TypeError, match="DerivedNet"):
        deploy(nn.Conv2d(3, 3, 1))


@pytest.mark.slow
def test_optimized_onnx_matches_the_original(paper_net: nn.Module, tmp_path) -> None:
    res = export_onnx(deploy(paper_net), SMALL, tmp_path / "d.onnx", verify=False)
    sess = ort_session(res.path)
    x = torch.randn(1, *SMALL)
    out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    with torch.inference_mode():
        assert abs(out - paper_net(x).numpy()).max() < 1e-4
    assert res.nodes <= 400
