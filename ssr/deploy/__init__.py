"""Inference forms of a derived network: same outputs, cheaper graphs (docs/architecture.md §5).

- :func:`fold_bn` folds every Conv -> BatchNorm pair into the conv (a copy, eval mode).
- :func:`deploy` builds :class:`DeployNet`, the form the ONNX Runtime numbers are measured on.
  Two rewrites, both exact:

  1. **Padded residual streams.** A searched stage narrows and widens its residual stream
     (e.g. 64 -> 52 -> 44 -> 48 channels), so every residual sum needs a channel slice or a
     pad (docs/method.md §7, :func:`ssr.method.ops.residual_add`). In ONNX Runtime's blocked (NCHWc)
     layout a slice forces two layout reorders and stops the ``Conv + Add + ReLU`` fusion,
     which cost ~20 % of the paper network's CPU time. Here each stage's stream keeps the
     stage's widest width ``P``; unused channels hold exact zeros. Convs read zero weights for
     them; the second conv of a narrowing op gives its dropped channels a bias of
     ``MASK = -1e30``, so ``ReLU(v + x)`` clears the channels the original truncates (``x`` is a
     finite post-ReLU activation, far below 1e30). One slice per stage is left, where the stream
     leaves it.
  2. **Concat-free head.** A conv over a concatenation is a sum of convs over the parts, which
     the runtime fuses (``Conv`` with a summand input); and the 1x1 fuse conv on the upsampled
     PSP path commutes with the bilinear upsampling, so it runs at 1/8 instead of 1/4
     resolution (0.4 GMACs less at 512x1024).

``DeployNet`` is for fp32 inference only (``MASK`` overflows fp16) and has no dropout. For eager
PyTorch it does not pay (slices are free views there); use ``fold_bn`` + channels-last instead.

Layers, from the bottom up, ``ssr.deploy`` sits above :mod:`ssr.method` and below
:mod:`ssr.measure` (``tests/test_layers.py``). The package holds this folded form, the ONNX export
(:mod:`ssr.deploy.onnx_export`) and the int8 form (:mod:`ssr.deploy.quantize`). It may import
:mod:`ssr.method` and the layers below it (``train``, ``data``, ``config``, ``files``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr.method.network import PSP_BINS, AggregationHead, DerivedNet
from ssr.method.ops import FactorizedOp, adaptive_avg_pool, halve

MASK = -1e30  # bias of dropped residual channels: ReLU(MASK + x) == 0 for any |x| < 1e29


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    return fuse_conv_bn_eval(conv, bn)


def fold_bn(model: nn.Module) -> nn.Module:
    """Inference copy of ``model`` with every Conv2d -> BatchNorm2d pair folded into the conv.

    ``W' = W * g / sqrt(v + eps)``, ``b' = (b - m) * g / sqrt(v + eps) + beta`` with the running
    statistics; the BN becomes ``nn.Identity``. Folded: ``conv1/bn1`` and ``conv2/bn2`` of every
    :class:`~ssr.method.ops.FactorizedOp` and every ``Conv2d`` directly followed by a ``BatchNorm2d``
    in an ``nn.Sequential`` (the aggregation head). The :class:`~ssr.method.ops.Downsampler`'s BN
    normalises the concatenation of a conv and a max-pool and is kept. The copy is in eval mode
    and must stay there (training would no longer normalise).
    """
    import itertools

    folded = copy.deepcopy(model).eval()
    for mod in folded.modules():
        if isinstance(mod, FactorizedOp):
            for c, b in (("conv1", "bn1"), ("conv2", "bn2")):
                if isinstance(getattr(mod, b), nn.BatchNorm2d):  # idempotent
                    setattr(mod, c, _fold(getattr(mod, c), getattr(mod, b)))
                    setattr(mod, b, nn.Identity())
        elif isinstance(mod, nn.Sequential):
            for a, b in itertools.pairwise(list(mod._modules)):
                conv, bn = mod._modules[a], mod._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    mod._modules[a] = _fold(conv, bn)
                    mod._modules[b] = nn.Identity()
    return folded


def _conv_like(
    conv: nn.Conv2d, c_in: int, c_out: int, bias: bool, in_slice: slice, in_offset: int = 0
) -> nn.Conv2d:
    """A conv of ``c_in -> c_out`` channels holding ``conv``'s input channels ``in_slice`` at
    input positions ``in_offset...`` and its outputs at the first positions; zeros elsewhere."""
    w = conv.weight.detach()[:, in_slice]
    new = nn.Conv2d(
        c_in, c_out, conv.kernel_size, conv.stride, conv.padding, conv.dilation, bias=bias
    )
    with torch.no_grad():
        new.weight.zero_()
        new.weight[: w.shape[0], in_offset : in_offset + w.shape[1]] = w
        if bias:
            new.bias.zero_()
            if conv.bias is not None:
                new.bias[: w.shape[0]] = conv.bias.detach()
    return new


class PaddedOp(nn.Module):
    """A folded :class:`~ssr.method.ops.FactorizedOp` on a residual stream of constant width ``P``."""

    def __init__(self, op: FactorizedOp, width: int) -> None:
        super().__init__()
        self.pool = op.pool
        self.conv1 = _conv_like(op.conv1, width, op.c_mid, True, slice(None))
        self.conv2 = _conv_like(op.conv2, op.c_mid, width, True, slice(None))
        with torch.no_grad():
            self.conv2.bias[op.c_out :] = MASK  # the channels residual_add truncates or lacks

    def forward(self, x: Tensor) -> Tensor:
        y = F.max_pool2d(x, self.pool, self.pool, ceil_mode=True) if self.pool > 1 else x
        v = self.conv2(F.relu(self.conv1(y)))
        if self.pool > 1:
            v = F.interpolate(v, size=x.shape[-2:], mode="bilinear", align_corners=True)
        return F.relu(v + x)


class DeployNet(nn.Module):
    """Exact fp32 inference form of a :class:`~ssr.method.network.DerivedNet` (see the module doc)."""

    def __init__(self, net: DerivedNet) -> None:
        super().__init__()
        net = fold_bn(net)
        g = net.genotype
        self.stem, self.reductions = net.encoder.stem, net.encoder.reductions
        self.stages = nn.ModuleList()
        self.pads: list[int] = []
        self.widths: list[int] = []
        for s, stage in enumerate(net.encoder.stages):
            r = g.reductions[s].c_out
            width = max([r] + [layer.c_out for layer in g.stage_layers(s)])
            self.pads.append(width - r)
            self.widths.append(g.stage_out(s))
            self.stages.append(nn.Sequential(*(PaddedOp(op, width) for op in stage)))
        last = width
        head = net.head
        self.aggregation = isinstance(head, AggregationHead)
        if not self.aggregation:
            self.classifier = _conv_like(head, last, head.out_channels, True, slice(None))
            return
        assert isinstance(head, AggregationHead)
        w2, c_stem, c1 = self.widths[-1], g.stem, self.widths[0]
        self.bins = nn.ModuleList(
            _conv_like(b[0], last, b[0].out_channels, True, slice(None)) for b in head.bins
        )
        psp = head.psp_fuse[0]
        n_psp = psp.in_channels
        self.psp_x = _conv_like(psp, last, psp.out_channels, True, slice(0, w2))
        self.psp_p = _conv_like(psp, n_psp - w2, psp.out_channels, False, slice(w2, n_psp))
        low = head.low[0]
        self.low_a = _conv_like(low, c_stem, low.out_channels, True, slice(0, c_stem))
        self.low_b = _conv_like(low, c1, low.out_channels, False, slice(c_stem, c_stem + c1))
        fuse = head.fuse[0]
        n_y = fuse.in_channels - low.out_channels
        self.fuse_y = _conv_like(fuse, n_y, fuse.out_channels, True, slice(0, n_y))
        self.fuse_low = _conv_like(
            fuse, low.out_channels, fuse.out_channels, False, slice(n_y, fuse.in_channels)
        )
        self.classifier = head.classifier

    def encode(self, x: Tensor) -> list[Tensor]:
        """Stage outputs at true width, except the last one (padded: the head reads it so)."""
        feats = [self.stem(x)]
        y = feats[0]
        n = len(self.stages)
        for s, (red, stage) in enumerate(zip(self.reductions, self.stages)):
            y = red(y)
            if self.pads[s]:
                y = F.pad(y, (0, 0, 0, 0, 0, self.pads[s]))
            y = stage(y)
            if s < n - 1 and y.shape[1] != self.widths[s]:
                y = y[:, : self.widths[s]]  # the one slice per stage
            feats.append(y)
        return feats

    def forward(self, x: Tensor) -> Tensor:
        feats = self.encode(x)
        if not self.aggregation:
            return self.classifier(feats[-1])
        return self._aggregate(feats, x.shape[-2:])

    def _aggregate(self, feats: list[Tensor], size: Sequence[int]) -> Tensor:
        x0, x1, x2 = feats[0], feats[1], feats[-1]
        h, w = x2.shape[-2:]
        pooled = [
            F.interpolate(
                conv(adaptive_avg_pool(x2, b)), (h, w), mode="bilinear", align_corners=False
            )
            for b, conv in zip(PSP_BINS, self.bins)
        ]
        psp = F.relu(self.psp_x(x2) + self.psp_p(torch.cat(pooled, 1)))
        # NOTE: the 1x1 fuse conv commutes with bilinear upsampling (weights sum to one)
        z = F.interpolate(self.fuse_y(psp), x1.shape[-2:], mode="bilinear", align_corners=False)
        low = F.relu(self.low_a(halve(x0)) + self.low_b(x1))
        y = self.classifier(F.relu(self.fuse_low(low) + z))
        return F.interpolate(y, tuple(size), mode="bilinear", align_corners=False)


def deploy(model: DerivedNet) -> DeployNet:
    """The exact fp32 inference form of ``model`` (eval mode); see :class:`DeployNet`."""
    if not isinstance(model, DerivedNet):
        raise TypeError(f"deploy() takes a DerivedNet, got {type(model).__name__}")
    return DeployNet(model).eval()
