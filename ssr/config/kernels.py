"""Known-bad CPU kernels, probed on the machine that runs rather than assumed from its name.

**bf16 convolutions in channels-last without AMX.** oneDNN's bf16 convolution kernels for CPUs
without AMX (its ``AVX512_CORE_BF16`` path and below: AMD Zen 4/5, Intel Cooper Lake, or an AMX
machine whose ``ONEDNN_MAX_CPU_ISA`` caps the ISA) compute wrong weight gradients for a dilated
3x1 convolution in channels-last when its channel count is not a multiple of 16 (torch 2.13.0,
found 2026-12-07). The gradient is off by more than its own norm, or NaN, and changes from call to
call (the kernel reads memory it did not write), so a bf16 channels-last search or retraining diverges
within tens of iterations; the paper's space is full of such layers (60, 100, 120, 124
channels, dilations 2-16). Forward passes, input gradients, undilated and 1x3 convolutions, and
the same convolutions in NCHW are right. With AMX (Sapphire Rapids and later) oneDNN takes its
AMX kernels, which are right, and 2-4x faster than fp32 in channels-last (BENCHMARKS.md,
"bf16 channels-last on an AMX CPU").

:func:`bf16_channels_last_sound` runs that convolution once per process against its fp32
reference; :func:`ssr.config.validate.channels_last_allowed` refuses bf16 with channels-last on a
CPU where it is not sound and takes channels-last by default where it is. It lives in the config
layer because a config's validity depends on it; the config imports it (and torch) only for a
bf16 config on a CPU.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F

__all__ = ["bf16_channels_last_sound", "probe_error"]

#: The probe: a dilated 3x1 convolution at a width that is not a multiple of 16 (the paper's
#: genotype has 60, 100, 120 and 124), at a stage-3 resolution, batch 2.
_CHANNELS, _HEIGHT, _WIDTH, _DILATION = 60, 16, 32, 2
_TOLERANCE = 0.05  # relative norm error; bf16 rounding gives ~0.003, the bad kernel NaN or > 1
_TRIES = 3


@functools.cache
def bf16_channels_last_sound() -> bool:
    """Whether this process's CPU bf16 channels-last convolutions give right weight gradients
    (the probe's worst error within ``_TOLERANCE`` of fp32; cached)."""
    return probe_error() <= _TOLERANCE


def probe_error() -> float:
    """The worst relative error (norm) of the probe convolution's bf16 channels-last weight
    gradient against fp32 over ``_TRIES`` runs: ~0.003 (bf16 rounding) where the kernel is
    right, above 1 or ``nan`` where it is wrong (``nan`` whenever it is not finite).

        python -c "from ssr.config.kernels import probe_error; print(probe_error())"
        ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16 python -c "..."   # an AMX CPU on its AVX-512 path
    """
    g = torch.Generator().manual_seed(0)
    c = _CHANNELS
    x = torch.randn(2, c, _HEIGHT, _WIDTH, generator=g)
    w = torch.randn(c, c, 3, 1, generator=g) * 0.1
    pad, dil = (_DILATION, 0), (_DILATION, 1)
    worst = 0.0
    with torch.enable_grad(), torch.autocast("cpu", enabled=False):
        ref = torch.nn.grad.conv2d_weight(
            x, w.shape, torch.ones(2, c, _HEIGHT, _WIDTH), padding=pad, dilation=dil
        )
        xb = x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
        for _ in range(_TRIES):
            stale = torch.full((1 << 20,), float("nan"), dtype=torch.bfloat16)
            del stale  # what the bad kernel reads is what the allocator held before
            wb = w.to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
            wb.requires_grad_()
            y = F.conv2d(xb, wb, padding=pad, dilation=dil)
            y.backward(torch.ones_like(y))
            err = ((wb.grad.float() - ref).norm() / ref.norm()).item()
            if not math.isfinite(err):
                return float("nan")
            worst = max(worst, err)
    return worst
