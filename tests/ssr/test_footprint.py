"""ssr.measure.footprint: memory estimated from a genotype before anything is allocated."""

from pathlib import Path

import pytest
import torch

from ssr.config.errors import ConfigError
from ssr.measure.footprint import (
    GIB,
    Footprint,
    available_bytes,
    check_fits,
    check_input_size,
    estimate,
    supernet_genotypes,
)
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet


def paper() -> Genotype:
    return Genotype.load("ssr_cityscapes")


@pytest.mark.parametrize("head", ["aggregation", "search"])
def test_parameters_are_counted_from_the_genotype(head: str) -> None:
    g = paper().with_head(head)
    net = DerivedNet(g, 19)
    real = sum(p.numel() for p in net.parameters()) + sum(b.numel() for b in net.buffers())
    assert estimate(g, 19, 1, 64, 128).params / 4 == pytest.approx(real, rel=0.01)


def _saved_bytes(net: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd keeps for the backward pass of ``net(x)`` (no weights)."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        net(x)
    weights = {p.untyped_storage().data_ptr() for p in net.parameters()}
    return sum(n for ptr, n in storages.items() if ptr not in weights)


def test_activations_are_a_lower_bound_that_scales() -> None:
    """The training estimate is below what autograd really keeps (so a refused run cannot fit),
    and grows with batch and pixels as the tensors do."""
    g = paper()
    one = estimate(g, 19, 1, 128, 256)
    assert estimate(g, 19, 4, 128, 256).activations == 4 * one.activations
    assert estimate(g, 19, 1, 256, 512).activations == pytest.approx(4 * one.activations, 0.01)
    train = estimate(g, 19, 2, 128, 256, training=True)
    assert train.activations > 2 * 3 * one.activations
    real = _saved_bytes(DerivedNet(g, 19).train(), torch.zeros(2, 3, 128, 256))
    assert 0.5 * real < train.activations <= real


def test_a_supernet_estimate_is_a_lower_bound(tiny_space) -> None:
    from ssr.method.supernet import Supernet

    nets = supernet_genotypes(
        tiny_space.stem_width,
        [s.width for s in tiny_space.stages],
        [s.max_depth for s in tiny_space.stages],
        [(d, p) for p in tiny_space.pools for d in tiny_space.dilations],
    )
    est = estimate(nets, 19, 2, 64, 128, training=True)
    real = _saved_bytes(Supernet(tiny_space, 19).train(), torch.zeros(2, 3, 64, 128))
    assert 0.3 * real < est.activations <= real


def test_a_huge_input_is_refused_in_one_line() -> None:
    g = paper()
    huge = estimate(g, 19, 1, 99999, 99999)
    assert huge.activations > 1000 * GIB
    with pytest.raises(ConfigError) as err:
        check_fits(huge, "input 99999x99999", free=20 * GIB)
    msg = str(err.value)
    assert msg.startswith("input 99999x99999 needs ~") and "GiB for activations" in msg
    assert msg.endswith("this machine has 20.0 GiB free") and "\n" not in msg
    check_fits(estimate(g, 19, 1, 512, 1024), "input 512x1024", free=20 * GIB)  # fits
    with pytest.raises(ConfigError, match="for its parameters"):
        check_fits(Footprint(params=30 * GIB, activations=0), "net", free=20 * GIB)


def test_any_positive_input_size_is_accepted_and_counted_as_the_network_runs() -> None:
    for h, w in ((64, 128), (33, 64), (360, 480), (180, 240)):
        check_input_size(paper(), h, w)
    with pytest.raises(ConfigError, match="must be positive"):
        check_input_size(paper(), 0, 64)
    # odd sides round up at every reduction, as the network does: 45 rows at 1/8 give 23
    assert (
        estimate(paper(), 11, 1, 360, 480).activations
        > estimate(paper(), 11, 1, 352, 480).activations
    )


def test_a_supernet_is_every_candidate_op_at_full_width(tiny_space) -> None:
    ops = [(d, p) for p in tiny_space.pools for d in tiny_space.dilations]
    nets = supernet_genotypes(
        tiny_space.stem_width,
        [s.width for s in tiny_space.stages],
        [s.max_depth for s in tiny_space.stages],
        ops,
    )
    assert len(nets) == len(ops) and all(n.head == "search" for n in nets)
    assert nets[0].depths == (3, 4) and nets[0].stage_out(1) == 24
    both = estimate(nets, 19, 2, 64, 128, training=True)
    assert both.activations > estimate(nets[0], 19, 2, 64, 128, training=True).activations


def _meminfo_bytes(key: str) -> int:
    """A ``/proc/meminfo`` field in bytes, read here independently of ssr.measure.footprint."""
    line = next(x for x in Path("/proc/meminfo").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) * 1024


@pytest.mark.skipif(not Path("/proc/meminfo").is_file(), reason="reads Linux's /proc/meminfo")
def test_this_machine_has_free_memory() -> None:
    """On Linux the CPU's free memory is a number of bytes: never None, at least a page, at most
    the machine's total."""
    free = available_bytes("cpu")
    assert isinstance(free, int) and not isinstance(free, bool)
    assert 4096 <= free <= _meminfo_bytes("MemTotal:")
