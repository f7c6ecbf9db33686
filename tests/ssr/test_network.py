"""Derived networks: output shapes over genotypes with pooled layers and width changes."""

import pytest
import torch

from ssr.genotype import Genotype, LayerGene, ReductionGene
from ssr.network import DerivedNet
from ssr.ops import adaptive_avg_pool, residual_add


def small(head: str = "aggregation") -> Genotype:
    # widths change in both directions, pooled (1/2 and 1/4) and dilated layers
    return Genotype(
        stem=8,
        reductions=(ReductionGene(8, 8), ReductionGene(12, 20)),
        layers=(
            LayerGene(0, 1, 1, 16, 12, 20),  # widen
            LayerGene(0, 2, 2, 20, 16, 12),  # narrow, pooled
            LayerGene(1, 4, 1, 32, 32, 28),
            LayerGene(1, 1, 4, 28, 20, 36),  # pool 4
        ),
        head=head,
    )


@pytest.mark.parametrize("genotype", [small(), small("search"), Genotype.load("ssr_cityscapes")])
@pytest.mark.parametrize("size", [(64, 128), (96, 160)])
def test_output_shapes(genotype: Genotype, size: tuple[int, int]) -> None:
    net = DerivedNet(genotype, num_classes=7).eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, *size))
    if genotype.head == "aggregation":
        assert y.shape == (2, 7, *size)
    else:
        assert y.shape == (2, 7, size[0] // 8, size[1] // 8)


def test_training_mode_backward_reaches_every_weight() -> None:
    net = DerivedNet(small(), num_classes=5).train()
    net(torch.randn(2, 3, 64, 64)).sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_residual_across_width_changes() -> None:
    x = torch.ones(1, 4, 2, 2)
    v = torch.full((1, 6, 2, 2), 2.0)
    y = residual_add(v, x)  # widen: identity padded with zeros
    assert y[:, :4].eq(3).all() and y[:, 4:].eq(2).all()
    y = residual_add(torch.full((1, 3, 2, 2), 2.0), x)  # narrow: identity truncated
    assert y.shape[1] == 3 and y.eq(3).all()


@pytest.mark.parametrize("bins", [1, 2, 3, 6, 9])
def test_matmul_pooling_equals_adaptive_avg_pool(bins: int) -> None:
    x = torch.randn(2, 5, 64, 128)
    ref = torch.nn.functional.adaptive_avg_pool2d(x, bins)
    torch.testing.assert_close(adaptive_avg_pool(x, bins), ref, atol=1e-5, rtol=1e-5)
