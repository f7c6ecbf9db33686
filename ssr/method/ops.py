"""Building blocks shared by the supernet and derived networks (docs/method.md §2.1, §2.2, §7).

One implementation of each block serves both: the supernet runs :class:`FactorizedOp` at the
stage's maximum width and passes per-channel scales (the FBNetV2 prefix masks times the op
weight, docs/method.md §2.3) which are folded into the BatchNorm affine parameters, so masking
costs no extra tensor; a derived network runs the same op at its own widths with no scales.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr.method.batch_norm import batch_norm

BN_EPS = 1e-3  # ERFNet's BatchNorm epsilon (docs/method.md §2.1)


class Downsampler(nn.Module):
    """ERFNet DownsamplerBlock: ``ReLU(BN([conv3x3/2(x), maxpool2(x)]))`` (docs/method.md §2.1).

    The max-pool rounds up (``ceil_mode``) like the stride-2 convolution, so an odd side (45 rows
    of a 360x480 CamVid image at 1/8) gives ``ceil(h / 2)`` rows on both halves and any input
    size works (docs/method.md §8.3); at even sizes this is ERFNet's block exactly.
    """

    def __init__(self, c_in: int, c_conv: int) -> None:
        super().__init__()
        self.c_in, self.c_conv = c_in, c_conv
        self.conv = nn.Conv2d(c_in, c_conv, 3, stride=2, padding=1, bias=True)
        self.bn = nn.BatchNorm2d(c_in + c_conv, eps=BN_EPS)

    def forward(self, x: Tensor, pool_scale: Tensor | None = None) -> Tensor:
        """``pool_scale`` (c_in,) scales the pooled half after the ReLU (supernet only).

        NOTE: the supernet masks the pooled channels of a narrowed stage so that, with one-hot
        architecture weights, this block equals the derived reduction exactly
        (docs/method.md §12.8). Where that stage's width is decided, the supernet passes ``x``
        at it (fewer channels than ``c_in``, no mask), and the block is that derived reduction,
        computed as a slice: the conv's first input channels, BatchNorm's first channels.
        """
        # NOTE: under autocast the convolution's output is bf16/fp16, and the pooled half and the
        # mask product follow it, so the stream after the block stays in that type: else both
        # would promote it to fp32 and every later convolution cast its input (BENCHMARKS.md)
        c_in = x.shape[1]
        if c_in < self.c_in:
            w, b = self.conv.weight[:, :c_in], self.conv.bias
            c = F.conv2d(x, w, b, self.conv.stride, self.conv.padding)
        else:
            c = self.conv(x)
        y = torch.cat([c, max_pool(x, 2).to(c.dtype)], 1)
        y = F.relu(batch_norm(self.bn, y, width=y.shape[1] if c_in < self.c_in else None))
        if pool_scale is not None:
            ones = pool_scale.new_ones(self.c_conv)
            mask = torch.cat([ones, pool_scale]).view(1, -1, 1, 1)
            y = (y * mask).to(y.dtype)  # the mask's gradient in fp32, the stream in y's type
        return y


def _conv(conv: nn.Conv2d, x: Tensor, c_out: int | None) -> Tensor:
    """``conv(x)``, or with its first ``c_out`` filters over ``x``'s channels (a width slice)."""
    if c_out is None:
        return conv(x)
    w, b = conv.weight[:c_out, : x.shape[1]], conv.bias[:c_out]
    return F.conv2d(x, w, b, conv.stride, conv.padding, conv.dilation)


def dropout2d(v: Tensor, p: float, channels: int | None = None) -> Tensor:
    """Training-mode ``F.dropout2d(v, p)``; with ``channels`` > ``v``'s, the noise is drawn for
    ``channels`` channels and its first ones used: the same random stream, and the same values
    on those channels, as dropout over the full width (``torch.empty(N, C, 1, 1)
    .bernoulli_(1 - p) / (1 - p)`` is what ``F.dropout2d`` draws)."""
    if channels is None or channels == v.shape[1]:
        return F.dropout2d(v, p, training=True)
    noise = v.new_empty(v.shape[0], channels, 1, 1).bernoulli_(1 - p).div_(1 - p)
    return v * noise[:, : v.shape[1]]


class _ChannelPrefix(torch.autograd.Function):
    """``x[:, :c]`` whose gradient keeps ``x``'s memory format.

    Autograd's own gradient of a slice (``slice_backward``) allocates NCHW zeros whatever the
    layout of ``x``, so in a channels-last network every gradient after a channel slice is NCHW
    and the ops it meets (ReLU's and BatchNorm's backward) run on PyTorch's slow mixed-layout
    path (BENCHMARKS.md, "Layouts in the backward pass"). Here the gradient is ``g`` zero-padded by
    ``F.pad``, which keeps ``g``'s layout; the values are the same.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, c: int) -> Tensor:
        ctx.c_in = x.shape[1]
        return x[:, :c]

    @staticmethod
    def backward(ctx: Any, g: Tensor) -> tuple[Tensor, None]:
        return pad_channels(g, ctx.c_in), None


def channel_prefix(x: Tensor, c: int) -> Tensor:
    """The first ``c`` channels of ``x`` (a view), with a layout-preserving gradient."""
    return x if c >= x.shape[1] else _ChannelPrefix.apply(x, c)


def pad_channels(x: Tensor, c: int) -> Tensor:
    """``x`` with zero channels appended up to ``c`` (same memory format; its gradient is a
    view of the incoming one)."""
    return x if x.shape[1] >= c else F.pad(x, (0, 0, 0, 0, 0, c - x.shape[1]))


def residual_add(v: Tensor, x: Tensor) -> Tensor:
    """Residual sum across a width change (docs/method.md §7).

    The identity is truncated or zero-padded to the width of ``v``.
    """
    co = v.shape[1]
    return v + pad_channels(channel_prefix(x, co), co)


class FactorizedOp(nn.Module):
    """Half of an ERFNet non-bottleneck-1D block, dilated, at full or pooled resolution.

    ``conv3x1_d -> BN -> ReLU -> conv1x3_d -> BN [-> upsample] -> Dropout2d``
    (docs/method.md §2.2). With ``pool > 1`` the convs run on ``maxpool_pool(x)`` and the result
    is upsampled bilinearly (align_corners=True) to the input size; the residual always stays at
    full resolution. ``dropout`` is the Dropout2d rate.
    """

    def __init__(
        self, c_in: int, c_mid: int, c_out: int, dilation: int, pool: int, dropout: float
    ) -> None:
        super().__init__()
        d = dilation
        self.dilation, self.pool, self.dropout = dilation, pool, dropout
        self.c_in, self.c_mid, self.c_out = c_in, c_mid, c_out
        self.conv1 = nn.Conv2d(c_in, c_mid, (3, 1), padding=(d, 0), dilation=(d, 1), bias=True)
        self.bn1 = nn.BatchNorm2d(c_mid, eps=BN_EPS)
        self.conv2 = nn.Conv2d(c_mid, c_out, (1, 3), padding=(0, d), dilation=(1, d), bias=True)
        self.bn2 = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def core(
        self,
        x: Tensor,
        mid_scale: Tensor | None = None,
        out_scale: Tensor | None = None,
        widths: tuple[int, int] | None = None,
        noise_channels: int | None = None,
    ) -> Tensor:
        """Convs, BNs and dropout at the op's own resolution (``x`` already pooled).

        ``mid_scale``/``out_scale``: supernet channel scales. ``widths=(c_mid, c_out)`` runs
        the op on the first ``x.shape[1]`` input and those output channels of its weights (a
        discrete supernet layer computed at its own width: an exact slice). Dropout2d scales
        whole channels, so applying it before the upsampling equals applying it after;
        ``noise_channels`` draws its noise for that many channels and uses the first ones
        (:func:`dropout2d`).
        """
        cm, co = widths if widths is not None else (None, None)
        u = F.relu(batch_norm(self.bn1, _conv(self.conv1, x, cm), mid_scale, cm), inplace=True)
        z = _conv(self.conv2, u, co)
        v = batch_norm(self.bn2, z, out_scale, co)
        if self.training and self.dropout > 0:
            v = dropout2d(v, self.dropout, noise_channels)
        return v

    def branch(
        self,
        x: Tensor,
        mid_scale: Tensor | None = None,
        out_scale: Tensor | None = None,
        widths: tuple[int, int] | None = None,
    ) -> Tensor:
        """The op without its residual: pool, :meth:`core`, upsample back to ``x``'s size."""
        if self.pool == 1:
            return self.core(x, mid_scale, out_scale, widths)
        v = self.core(pool_input(x, self.pool), mid_scale, out_scale, widths)
        return upsample_to(v, x.shape[-2:])

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(residual_add(self.branch(x), x))


def pool_input(x: Tensor, pool: int) -> Tensor:
    """The reduced-resolution input of a pooled op (max-pool, docs/method.md §2.2)."""
    return max_pool(x, pool)


def max_pool(x: Tensor, k: int) -> Tensor:
    """``k x k`` max pooling, stride ``k``, rounding up (``ceil_mode``): the pooled half of
    :class:`Downsampler` and the input of a pooled op (docs/method.md §2.1, §2.2).

    Where no gradient flows through it (the input image in training, every pool in evaluation)
    on a CPU, a power-of-two ``k`` runs as 2x2 steps, each the maximum of four strided views
    (a last odd row or column repeated): the same values, 4-7x faster than PyTorch's kernel in
    NCHW or at 3 channels (``benchmarks/cpu_kernels.py --only pool``). Channels-last at 32
    channels or more, where PyTorch's kernel is as fast, a gradient (it goes to one element of
    a tie), an export and a compile take ``F.max_pool2d``.
    """
    if (
        torch.compiler.is_compiling()
        or (x.requires_grad and torch.is_grad_enabled())
        or x.device.type != "cpu"
        or k & (k - 1)
        or (x.shape[1] >= 32 and x.is_contiguous(memory_format=torch.channels_last))
        or torch.onnx.is_in_onnx_export()
        or torch.jit.is_tracing()
    ):
        return F.max_pool2d(x, k, k, ceil_mode=True)
    while k > 1:
        h, w = x.shape[-2:]
        if h % 2 or w % 2:
            x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
        top, bottom = x[..., ::2, :], x[..., 1::2, :]
        x = torch.maximum(
            torch.maximum(top[..., ::2], top[..., 1::2]),
            torch.maximum(bottom[..., ::2], bottom[..., 1::2]),
        )
        k //= 2
    return x


def upsample_to(v: Tensor, size: Sequence[int]) -> Tensor:
    """Back to full resolution: bilinear, align_corners=True (docs/method.md §2.2)."""
    return F.interpolate(v, size=tuple(size), mode="bilinear", align_corners=True)


def halve(x: Tensor) -> Tensor:
    """2x2 average pooling that rounds up (``ceil(h / 2)``), matching :class:`Downsampler`'s
    output size at odd sides; the aggregation head brings the 1/2 stem features to 1/4 with it."""
    return F.avg_pool2d(x, 2, 2, ceil_mode=True)


def pool_matrix(n_in: int, n_out: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(n_out, n_in) matrix of adaptive average pooling along one axis.

    Bin ``i`` averages ``[floor(i*n/k), ceil((i+1)*n/k))``, exactly as
    ``F.adaptive_avg_pool2d``. As two matmuls the PSP pooling exports to a handful of ONNX
    nodes instead of one slice per bin (the official export has 2,906 nodes).
    """
    m = torch.zeros(n_out, n_in, device=device, dtype=dtype)
    for i in range(n_out):
        lo = (i * n_in) // n_out
        hi = -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_avg_pool(x: Tensor, bins: int) -> Tensor:
    """Adaptive average pooling to ``bins x bins`` written as ``P_h @ x @ P_w^T``."""
    h, w = x.shape[-2:]
    ph = pool_matrix(h, bins, x.device, x.dtype)
    pw = pool_matrix(w, bins, x.device, x.dtype)
    return torch.matmul(torch.matmul(ph, x), pw.t())
