"""Derived networks: output shapes over genotypes with pooled layers and width changes, their
gradients, and their MACs against the supernet's expectation."""

import statistics

import pytest
import torch

from ssr.config import SpaceConfig
from ssr.method.complexity import count_macs
from ssr.method.derive import genotype_from_supernet
from ssr.method.genotype import Genotype, LayerGene, ReductionGene
from ssr.method.network import DerivedNet
from ssr.method.ops import adaptive_avg_pool, max_pool, residual_add
from ssr.method.supernet import DIMENSIONS, Supernet


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


def _cancelled_by_batch_norm(name: str) -> bool:
    """Biases whose gradient is 0 in training mode: each only adds a per-channel constant that
    a training-mode BatchNorm right after subtracts again with the batch mean. These are the
    biases of the convolutions in front of a BN (every encoder conv) and the BN biases of the
    PSP bins (constant per channel after upsampling, then a 1x1 conv and ``psp_fuse``'s BN)."""
    return (name.startswith("encoder.") and "conv" in name and name.endswith(".bias")) or (
        name.startswith("head.bins.") and name.endswith(".1.bias")
    )


def test_training_mode_backward_reaches_every_weight() -> None:
    net = DerivedNet(small(), num_classes=5).train()
    y = net(torch.randn(2, 3, 64, 64))
    (y * torch.randn(y.shape)).sum().backward()  # a loss whose gradient is not uniform
    grads = {n: p.grad.abs().max().item() for n, p in net.named_parameters()}
    top = max(grads.values())
    dead = {n for n in grads if _cancelled_by_batch_norm(n)}
    assert len(dead) == 3 + 2 * 4 + 5  # stem, 2 reductions, 2 convs x 4 layers, 5 PSP bins
    for name, g in grads.items():
        if name in dead:  # 0 up to float rounding (measured ~1e-7 of the largest gradient)
            assert g < 1e-5 * top, (name, g, top)
        else:  # measured: every other tensor's largest gradient is > 8e-3 of the largest
            assert g > 1e-3 * top, (name, g, top)


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


@pytest.mark.parametrize("k", [2, 4, 8])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_max_pool_without_gradient_is_pytorch_max_pool(k: int, dtype, layout: str) -> None:
    """The strided-maximum pool (no gradient) gives F.max_pool2d's values, shape and layout at
    even and odd sides (a CamVid 360x480 input reaches 45 rows at 1/8), NaN included."""
    g = torch.Generator().manual_seed(0)
    for shape in [(2, 3, 64, 96), (1, 13, 45, 61), (2, 16, 7, 3), (1, 4, 1, 1)]:
        x = torch.randn(*shape, generator=g).to(dtype)
        x[0, 0, 0, 0] = float("nan")
        if layout == "channels_last":
            x = x.contiguous(memory_format=torch.channels_last)
        ref = torch.nn.functional.max_pool2d(x, k, k, ceil_mode=True)
        out = max_pool(x, k)
        torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True)
        assert out.stride() == ref.stride() or min(ref.shape[-2:]) == 1


def test_max_pool_with_gradient_is_pytorch_max_pool() -> None:
    """Where a gradient flows, a tie sends it to one element, as F.max_pool2d does."""
    x = torch.zeros(1, 1, 2, 2, requires_grad=True)
    max_pool(x, 2).sum().backward()
    assert x.grad.sum() == 1 and x.grad.max() == 1


def _sample_subnetwork(net: Supernet, probs: dict[str, torch.Tensor], g: torch.Generator) -> None:
    """Make one sub-network the only survivor: every group draws one candidate from ``probs``,
    independently, as the factorised distribution of docs/method.md §3 says."""
    for dim in DIMENSIONS:
        p = probs[dim].reshape(-1, probs[dim].shape[-1])
        pick = torch.multinomial(p, 1, generator=g).flatten()
        alive = torch.zeros(p.shape, dtype=torch.bool)
        alive[torch.arange(len(pick)), pick] = True
        net.alive(dim).copy_(alive.view_as(net.alive(dim)))
    net.refresh_alive()


def test_expected_macs_are_the_mean_macs_of_sampled_subnetworks(tiny_space: SpaceConfig) -> None:
    """``Supernet.expected_macs`` at a configuration far from one-hot (docs/method.md §4.3) is the
    mean of ``count_macs`` over derived networks sampled from it. Tolerance: 4 standard errors
    of the Monte Carlo mean (sample sd / sqrt(N)); for a correct expectation the CLT puts the
    chance of a larger miss near 6e-5, and the seeded generator makes the draw the same each
    run. N = 200 keeps it to a few seconds with the standard error near 2 % of the mean; ignoring
    the depth or the op probabilities in the formula moves it by more than 4 of them."""
    net = Supernet(tiny_space, num_classes=5)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 1.0)  # probabilities far from one-hot and from uniform
        pooled = torch.tensor([pool > 1 for _, pool in net.ops])
        net.arch["op"][:, ~pooled] -= 3.0  # and most of the op mass on the cheap pooled ops
        probs = {d: net.probs(d) for d in DIMENSIONS}
        expected = net.expected_macs(32, 48).item()
    assert all(bool((p.max(-1).values < 0.99).all()) for p in probs.values())
    g = torch.Generator().manual_seed(1)
    counted: list[int] = []
    for _ in range(200):
        _sample_subnetwork(net, probs, g)
        geno = genotype_from_supernet(net, head="search")
        counted.append(count_macs(DerivedNet(geno, 5), (1, 3, 32, 48)))
    se = statistics.stdev(counted) / len(counted) ** 0.5
    assert se < 0.03 * expected  # the check is sharp enough to mean something
    assert abs(statistics.fmean(counted) - expected) < 4 * se


@pytest.mark.parametrize("c_in, c_out", [(12, 8), (8, 12), (8, 8)])
def test_residual_add_keeps_channels_last_in_its_gradients(c_in: int, c_out: int) -> None:
    """Across a width change the residual's gradients equal autograd's own (slice / zero pad)
    and keep the channels-last layout, so the backward pass after it does not fall back to
    mixed-layout kernels (BENCHMARKS.md, "Layouts in the backward pass")."""
    cl = torch.channels_last
    v0, x0 = torch.randn(2, c_out, 5, 7), torch.randn(2, c_in, 5, 7)
    g = torch.randn(2, c_out, 5, 7).contiguous(memory_format=cl)
    v, x = (t.clone().contiguous(memory_format=cl).requires_grad_() for t in (v0, x0))
    residual_add(v, x).backward(g)
    rv, rx = v0.clone().requires_grad_(), x0.clone().requires_grad_()
    c = min(c_in, c_out)
    ref = rv.clone()
    ref = torch.cat([ref[:, :c] + rx[:, :c], ref[:, c:]], 1)  # the sum, written out
    ref.backward(g.contiguous())
    assert torch.equal(residual_add(v0, x0), ref.detach())
    assert torch.equal(v.grad, rv.grad) and torch.equal(x.grad, rx.grad)
    for grad in (v.grad, x.grad):
        assert grad.is_contiguous(memory_format=cl) or grad.stride(1) == 1, grad.stride()
