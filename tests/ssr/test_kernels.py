"""The probe of known-bad CPU kernels (ssr/config/kernels.py) finds the bad one where it runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


def _probe(isa: str | None) -> bool:
    env = {k: v for k, v in os.environ.items() if k != "ONEDNN_MAX_CPU_ISA"}
    if isa:
        env["ONEDNN_MAX_CPU_ISA"] = isa
    code = "from ssr.config.kernels import bf16_channels_last_sound as f; print(f())"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] == "True"


@pytest.mark.skipif("avx512_bf16" not in _flags(), reason="needs a CPU with AVX-512 BF16")
def test_the_probe_finds_onednns_wrong_avx512_bf16_kernel() -> None:
    """Capped at AVX512_CORE_BF16 (the path of CPUs without AMX), oneDNN's bf16 channels-last
    weight gradient of a dilated 3x1 convolution is wrong, and the probe says so."""
    assert _probe("AVX512_CORE_BF16") is False


@pytest.mark.skipif("amx_bf16" not in _flags(), reason="needs a CPU with AMX-BF16")
def test_the_probe_passes_the_amx_kernels() -> None:
    """With AMX the same convolution is right: bf16 with channels-last is allowed there."""
    assert _probe(None) is True


def test_the_probe_agrees_with_a_direct_check() -> None:
    """Whatever this CPU is, the probe's answer is what comparing the kernel with fp32 gives
    on the paper genotype's widths (60, 100, 120, 124 channels, dilation 2)."""
    import torch
    import torch.nn.functional as F

    from ssr.config.kernels import bf16_channels_last_sound

    worst = 0.0
    for c in (60, 100, 120, 124):
        x = torch.randn(2, c, 16, 32)
        w = torch.randn(c, c, 3, 1) * 0.1
        ref = torch.nn.grad.conv2d_weight(
            x, w.shape, torch.ones(2, c, 16, 32), padding=(2, 0), dilation=(2, 1)
        )
        xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        wb = w.to(torch.bfloat16).contiguous(memory_format=torch.channels_last).requires_grad_()
        y = F.conv2d(xb, wb, padding=(2, 0), dilation=(2, 1))
        y.backward(torch.ones_like(y))
        worst = max(worst, ((wb.grad.float() - ref).norm() / ref.norm()).item())
    assert bf16_channels_last_sound() is (worst < 0.05), worst
