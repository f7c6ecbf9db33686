"""BatchNorm as the supernet and derived networks run it (docs/method.md §2.1, §2.3).

:func:`batch_norm` is ``scale * BN(x)`` with the supernet's per-channel scale folded into the
affine parameters (so masking costs no extra tensor) and an optional channel prefix.

Its backward on a multi-threaded CPU, for a large channels-last input whose channel count is not a
multiple of 16, is :class:`_RowBatchNorm`'s. PyTorch's channels-last BatchNorm backward
(``batch_norm_cpu_backward_channels_last_internal``, ATen/native/cpu/batch_norm_kernel.cpp)
accumulates each thread's per-channel sums in one ``(threads, C)`` fp32 buffer, pixel after pixel;
when ``4 C`` bytes is not a multiple of the 64-byte cache line, neighbouring threads write the same
line at every pixel, and at two threads such a layer's forward and backward together run no faster
than at one thread, or slower (``benchmarks/cpu_kernels.py --only batch_norm``). The paper's space
has many such widths (44, 52, 60, 100, 108, 116, 120, 124). :class:`_RowBatchNorm` calls the same
kernel on a view where the lines are not shared: the ``(N, H, W, C)`` memory as ``(N H W / k, k C)``
rows, ``k`` the smallest power of two that makes ``k C`` a multiple of 16, whose per-column sums,
added over the ``k`` groups, are the per-channel sums; the input gradient is then one affine pass
and one ``addcmul``. Values are ``F.batch_norm``'s to rounding (a test checks values, gradients,
statistics and layout).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

CACHE_LINE_FLOATS = 16  # 64-byte cache line / 4-byte fp32 accumulator
#: Below this many pixels (N H W) the row path's extra small operations cost more than the
#: shared lines (benchmarks/cpu_kernels.py --only batch_norm: at two threads slower at 2x32x64,
#: faster at 2x64x128).
MIN_ROWS = 16384


def row_groups(x: Tensor, training: bool) -> int:
    """``k`` for :class:`_RowBatchNorm`, or 0 where PyTorch's own kernel is taken.

    The row path is taken only where PyTorch's shares cache lines between threads and it pays:
    a training BatchNorm on a CPU with more than one thread, a 4-D channels-last input of at
    least :data:`MIN_ROWS` pixels whose channel count is not a multiple of 16, outside
    ``torch.compile`` (which generates its own kernels).
    """
    c = x.shape[1] if x.dim() == 4 else 0
    if (
        torch.compiler.is_compiling()
        or not training
        or c % CACHE_LINE_FLOATS == 0
        or x.device.type != "cpu"
        or torch.get_num_threads() < 2
        or x.is_contiguous()
        or not x.is_contiguous(memory_format=torch.channels_last)
    ):
        return 0
    rows = x.numel() // c
    if rows < MIN_ROWS:
        return 0
    k = 1
    while (k * c) % CACHE_LINE_FLOATS:
        k *= 2
    return k if rows % k == 0 else 0


def _rows(t: Tensor, k: int) -> Tensor:
    """A channels-last ``(N, C, H, W)`` tensor's memory as ``(N H W / k, k C)`` rows (a view)."""
    return t.permute(0, 2, 3, 1).reshape(-1, k * t.shape[1])


class _RowBatchNorm(torch.autograd.Function):
    """Training-mode BatchNorm of a channels-last CPU tensor: PyTorch's forward, and its backward
    formula with the per-channel sums and the input gradient computed on the row view."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor,
        running_mean: Tensor,
        running_var: Tensor,
        momentum: float,
        eps: float,
        k: int,
    ) -> Tensor:
        y, mean, invstd = torch.native_batch_norm(
            x, weight, bias, running_mean, running_var, True, momentum, eps
        )
        ctx.save_for_backward(x, weight, mean, invstd)
        ctx.k = k
        return y

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        k, (n, c, h, w) = ctx.k, x.shape
        m = n * h * w
        g_rows, x_rows = _rows(g.contiguous(memory_format=torch.channels_last), k), _rows(x, k)
        # per-group sum(g) and sum(g (x - mean)) invstd, from PyTorch's kernel on the rows
        _, dot, total = torch.ops.aten.native_batch_norm_backward(
            g_rows, x_rows, None, None, None, mean.repeat(k), invstd.repeat(k),
            True, 0.0, [False, True, True],
        )  # fmt: skip
        dot, total = dot.view(k, c).sum(0), total.view(k, c).sum(0)
        dx = None
        if ctx.needs_input_grad[0]:
            # dx = w invstd (g - total / m - (x - mean) invstd dot / m) = a g + b x + s:
            # a g + s in one affine pass (eval-mode BatchNorm, fp32 arithmetic), b x added after
            a = weight * invstd
            b = dot * invstd * a / -m
            s = -(b * mean + a * total / m)
            coef = torch.stack([a, s, torch.zeros_like(a), torch.ones_like(a)]).repeat(1, k)
            dx = torch.batch_norm(g_rows, *coef, False, 0.0, 0.0, False)  # type: ignore[misc]
            dx.addcmul_(x_rows, b.to(x.dtype).repeat(k))
            dx = dx.view(n, h, w, c).permute(0, 3, 1, 2)
        return dx, dot, total, None, None, None, None, None


def batch_norm(
    bn: nn.BatchNorm2d, x: Tensor, scale: Tensor | None = None, width: int | None = None
) -> Tensor:
    """``scale * BN(x)`` with the scale folded into the affine parameters.

    ``scale`` is a per-channel vector (C,); ``width`` uses only the first ``width`` channels of
    the layer (its statistics are updated in place through the slice). Same running-statistics
    update as ``bn(x)``.
    """
    k = row_groups(x, bn.training)
    if scale is None and width is None and not k:
        return bn(x)
    c = bn.num_features if width is None else width
    w, b = bn.weight[:c], bn.bias[:c]
    if scale is not None:
        w, b = w * scale, b * scale
    if bn.training and bn.num_batches_tracked is not None:
        bn.num_batches_tracked.add_(1)
    momentum = bn.momentum if bn.momentum is not None else 0.0
    mean, var = bn.running_mean[:c], bn.running_var[:c]
    if k:
        return _RowBatchNorm.apply(x, w, b, mean, var, momentum, bn.eps, k)
    return F.batch_norm(x, mean, var, w, b, bn.training, momentum, bn.eps)
