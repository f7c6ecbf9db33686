"""Derived networks: a :class:`~ssr.method.genotype.Genotype` turned into an ``nn.Module`` (docs/method.md §7, §8.1).

The encoder is ERFNet-style: a stem downsampler (1/2), then per stage a reduction (1/4, 1/8,
...) followed by the searched layers. Two heads:

- ``aggregation`` (the retraining network, docs/method.md §8.1): PSP pooling on the last stage, fused with
  the 1/4 features and the pooled stem features, classifier, bilinear upsampling to the input
  size. The low path's width is derived from the genotype (``c(x1) + stem``), not hard-coded.
- ``search``: the supernet's 1x1 classifier at the last stage's stride, used to evaluate a
  derived network with weights inherited from the supernet (the discretization gap).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr.config.errors import ConfigError
from ssr.method.genotype import Genotype, GenotypeError
from ssr.method.ops import BN_EPS, Downsampler, FactorizedOp, adaptive_avg_pool, halve

PSP_BINS = (1, 2, 3, 6, 9)
PSP_WIDTH = 40
AGG_WIDTH = 128
LOW_WIDTH = 64
DEFAULT_DROPOUT = (0.03, 0.3)


def _conv_bn_relu(c_in: int, c_out: int, k: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS),
        nn.ReLU(inplace=True),
    )


class Encoder(nn.Module):
    """Stem, then per stage a reduction and the searched layers. Returns every stage output."""

    def __init__(self, genotype: Genotype, dropout: Sequence[float] = DEFAULT_DROPOUT) -> None:
        super().__init__()
        self.stem = Downsampler(3, genotype.stem - 3)
        self.reductions = nn.ModuleList(Downsampler(r.c_in, r.c_conv) for r in genotype.reductions)
        self.stages = nn.ModuleList()
        for s in range(genotype.num_stages):
            p = dropout[min(s, len(dropout) - 1)]
            self.stages.append(
                nn.Sequential(
                    *(
                        FactorizedOp(g.c_in, g.c_mid, g.c_out, g.dilation, g.pool, p)
                        for g in genotype.stage_layers(s)
                    )
                )
            )

    def forward(self, x: Tensor) -> list[Tensor]:
        feats = [self.stem(x)]
        y = feats[0]
        for red, stage in zip(self.reductions, self.stages):
            y = stage(red(y))
            feats.append(y)
        return feats


class AggregationHead(nn.Module):
    """Hand-designed aggregation block of the retraining network (docs/method.md §8.1)."""

    def __init__(self, c_stem: int, c_low: int, c_last: int, num_classes: int) -> None:
        super().__init__()
        self.bins = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(c_last, PSP_WIDTH, 1, bias=False), nn.BatchNorm2d(PSP_WIDTH, eps=BN_EPS)
            )
            for _ in PSP_BINS
        )
        self.psp_fuse = _conv_bn_relu(c_last + PSP_WIDTH * len(PSP_BINS), AGG_WIDTH)
        self.low = _conv_bn_relu(c_low + c_stem, LOW_WIDTH, k=3)
        self.fuse = _conv_bn_relu(AGG_WIDTH + LOW_WIDTH, AGG_WIDTH)
        self.classifier = nn.Conv2d(AGG_WIDTH, num_classes, 1, bias=True)

    def forward(self, feats: list[Tensor], size: Sequence[int]) -> Tensor:
        x0, x1, x2 = feats[0], feats[1], feats[-1]
        h, w = x2.shape[-2:]
        pooled = [x2]
        for b, branch in zip(PSP_BINS, self.bins):
            p = branch(adaptive_avg_pool(x2, b))
            pooled.append(F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False))
        y = F.dropout2d(self.psp_fuse(torch.cat(pooled, 1)), 0.1, self.training)
        y = F.interpolate(y, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        low = self.low(torch.cat([halve(x0), x1], 1))
        y = F.dropout2d(self.fuse(torch.cat([y, low], 1)), 0.1, self.training)
        y = self.classifier(y)
        return F.interpolate(y, size=tuple(size), mode="bilinear", align_corners=False)


class DerivedNet(nn.Module):
    """The network a genotype describes, with the aggregation or the search head.

    ``forward`` returns logits at the input size (aggregation head) or at the last stage's
    stride (search head, like the supernet; losses upsample to the label size).
    """

    def __init__(
        self, genotype: Genotype, num_classes: int, dropout: Sequence[float] = DEFAULT_DROPOUT
    ) -> None:
        super().__init__()
        if genotype.head == "aggregation" and genotype.num_stages < 2:  # validated genotypes pass
            raise GenotypeError("the aggregation head needs at least two stages")
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"num_classes must be an integer >= 1, got {num_classes!r}")
        self.genotype = genotype
        self.num_classes = num_classes
        self.encoder = Encoder(genotype, dropout)
        c_last = genotype.stage_out(genotype.num_stages - 1)
        if genotype.head == "aggregation":
            self.head: nn.Module = AggregationHead(
                genotype.stem, genotype.stage_out(0), c_last, num_classes
            )
        else:
            self.head = nn.Conv2d(c_last, num_classes, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        feats = self.encoder(x)
        if isinstance(self.head, AggregationHead):
            return self.head(feats, x.shape[-2:])
        return self.head(feats[-1])
