"""The machine's achievable rate (ssr.measure.roofline) and the CPU record (ssr.measure.host.cpu_info)."""

import math

import pytest
import torch

from ssr.measure import roofline
from ssr.measure.host import SIMD_FLAGS, cpu_info


@pytest.fixture(scope="module")
def one_thread_probe() -> roofline.Probe:
    old = torch.get_num_threads()
    try:
        return roofline.probe(1, iters=2, refresh=True)
    finally:
        torch.set_num_threads(old)


def test_probe_rates_are_positive_and_cached(one_thread_probe: roofline.Probe) -> None:
    p = one_thread_probe
    assert p.threads == 1 and p.seconds > 0
    rates = [p.conv_gmacs_per_s, p.gemm_gmacs_per_s, p.ort_conv_gmacs_per_s]
    assert all(r is not None and math.isfinite(r) and r > 0 for r in rates)
    assert p.fp32_gmacs_per_s == max(rates)
    assert p.reference("fp32") == p.fp32_gmacs_per_s
    assert p.reference("int8") == p.ort_int8_conv_gmacs_per_s > 0
    assert roofline.probe(1) is p  # cached per thread count
    d = p.to_dict()
    assert d["fp32_gmacs_per_s"] == p.fp32_gmacs_per_s and d["threads"] == 1


def test_probe_restores_threads(one_thread_probe: roofline.Probe) -> None:
    before = torch.get_num_threads()
    roofline.probe(1)
    assert torch.get_num_threads() == before


def test_achieved_is_rate_over_reference(one_thread_probe: roofline.Probe) -> None:
    ref = one_thread_probe.fp32_gmacs_per_s
    out = roofline.achieved(3e9, 0.05, threads=1)  # 60 GMAC/s
    assert out["gmacs_per_s"] == pytest.approx(60.0)
    assert out["probe_gmacs_per_s"] == ref
    assert out["pct_of_probe"] == pytest.approx(100 * 60.0 / ref, abs=0.05)
    int8 = roofline.achieved(3e9, 0.05, threads=1, precision="int8")
    assert int8["probe_gmacs_per_s"] == one_thread_probe.ort_int8_conv_gmacs_per_s


def test_achieved_refuses_a_zero_time() -> None:
    with pytest.raises(ValueError, match="seconds > 0"):
        roofline.achieved(1e9, 0.0, threads=1)


def test_cpu_info_names_model_and_known_flags() -> None:
    info = cpu_info()
    assert isinstance(info["model"], str) and info["model"]
    assert info["cores"] >= 1
    assert set(info["simd"]) <= set(SIMD_FLAGS)
