"""Interleaved exclusive measurement: every network in every pass, spreads and ties."""

import pytest
import torch
from torch import nn

from ssr.config import BenchConfig, ConfigError
from ssr.measure.interleave import Spread, measure_interleaved


def _net(width: int, depth: int) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1)]
    layers += [nn.Conv2d(width, width, 3, padding=1) for _ in range(depth)]
    return nn.Sequential(*layers).eval()


def test_every_model_every_pass_and_cost_order() -> None:
    torch.manual_seed(0)
    models = {"small": _net(4, 1), "big": _net(64, 6)}
    cfg = BenchConfig(height=32, width=64, warmup=1, iters=5, repeats=9, threads=1)
    spreads, record = measure_interleaved(models, (3, 32, 64), cfg, passes=3)
    assert set(spreads) == {"small", "big"}
    for s in spreads.values():
        assert len(s.pass_medians_ms) == 3  # repeats ignored: one pass per round
        assert s.latency_ms_lo <= s.latency_ms_median <= s.latency_ms_hi
        assert s.fps_lo <= s.fps <= s.fps_hi
    # ~1000x the MACs: the big network is slower in every pass, never tied with the small one
    assert spreads["big"].latency_ms_lo > spreads["small"].latency_ms_hi
    assert not spreads["big"].overlaps(spreads["small"])
    assert record["passes"] == 3 and record["threads"] == 1 and record["input"].endswith("32x64")


def test_overlap_is_symmetric_and_inclusive() -> None:
    a = Spread((10.0, 12.0), batch=1)
    b = Spread((12.0, 15.0), batch=1)
    c = Spread((12.5, 13.0), batch=1)
    assert a.overlaps(b) and b.overlaps(a)
    assert not a.overlaps(c) and b.overlaps(c)
    assert a.to_dict()["fps_hi"] == pytest.approx(100.0)


def test_needs_two_passes_and_models() -> None:
    cfg = BenchConfig(height=8, width=8, warmup=0, iters=1)
    with pytest.raises(ConfigError, match="passes"):
        measure_interleaved({"a": _net(2, 0)}, (3, 8, 8), cfg, passes=1)
    with pytest.raises(ConfigError, match="no models"):
        measure_interleaved({}, (3, 8, 8), cfg, passes=2)


def test_onnxruntime_exports_each_model_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import ssr.deploy.onnx_export as onnx_export

    exported: list[str] = []
    real = onnx_export.export_onnx

    def counting(model, shape, path, **kw):  # type: ignore[no-untyped-def]
        exported.append(str(path))
        return real(model, shape, path, **kw)

    monkeypatch.setattr(onnx_export, "export_onnx", counting)
    models = {"small": _net(4, 1), "big": _net(48, 5)}
    cfg = BenchConfig(height=32, width=64, warmup=1, iters=5, threads=1, backend="onnxruntime")
    spreads, record = measure_interleaved(models, (3, 32, 64), cfg, passes=3)
    assert len(exported) == 2  # once per model, not once per pass
    assert record["backend"] == "onnxruntime" and record["form"] == "as given"
    assert spreads["big"].latency_ms_median > spreads["small"].latency_ms_median
