"""Supernet: one-hot equals derived network, expected MACs, gradients, pruned ops cost nothing."""

import pytest
import torch

from ssr.config import SpaceConfig
from ssr.method.derive import derive_network, genotype_from_supernet
from ssr.method.supernet import DIMENSIONS, Supernet


def randomize_bn(net: torch.nn.Module) -> None:
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()


def make_one_hot(net: Supernet, seed: int) -> None:
    """Keep one random alive candidate per group (the state shrinking ends in)."""
    g = torch.Generator().manual_seed(seed)
    for dim in DIMENSIONS:
        flat = net.alive(dim).view(-1, net.alive(dim).shape[-1])
        for r in range(flat.shape[0]):
            idx = torch.nonzero(flat[r]).flatten()
            keep = idx[torch.randint(len(idx), (1,), generator=g)]
            flat[r] = False
            flat[r, keep] = True
    net.refresh_alive()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_one_hot_supernet_equals_derived_network(tiny_space: SpaceConfig, seed: int) -> None:
    net = Supernet(tiny_space, num_classes=5)
    randomize_bn(net)
    make_one_hot(net, seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_()  # logits are irrelevant once a single candidate is alive
    assert net.is_discrete()
    derived = derive_network(net)
    net.eval()
    derived.eval()
    x = torch.randn(2, 3, 64, 96)
    seen: list[int] = []
    hook = net.reductions[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    with torch.no_grad():
        torch.testing.assert_close(net(x), derived(x), atol=1e-5, rtol=1e-5)
    hook.remove()
    # the decided first stage hands its own width to the reduction, not a masked padding
    assert seen == [derived.genotype.reductions[1].c_in]


def test_genotype_widths_follow_the_alive_masks(tiny_space: SpaceConfig) -> None:
    net = Supernet(tiny_space, num_classes=5)
    make_one_hot(net, 7)
    g = genotype_from_supernet(net)
    assert g.depths == tuple(int(torch.nonzero(net.alive_depth[s]).item()) + 1 for s in range(2))
    widths = {16 - r for r in tiny_space.channel_remove} | {
        24 - r for r in tiny_space.channel_remove
    }
    assert all(layer.c_out in widths and layer.c_mid in widths for layer in g.layers)
    assert g.reductions[1].c_in == g.stage_out(0)


def test_expected_macs_of_largest_config_equal_counted_macs(tiny_space: SpaceConfig) -> None:
    from ssr.method.complexity import count_macs

    net = Supernet(tiny_space, num_classes=5)
    probs = net.max_probs()
    for dim in DIMENSIONS:  # make the largest configuration the surviving one
        net.alive(dim).copy_(probs[dim] > 0)
    net.refresh_alive()
    derived = derive_network(net)
    counted = count_macs(derived, (1, 3, 128, 192))
    assert net.expected_macs(128, 192).item() == pytest.approx(counted, rel=1e-6)
    assert net.max_macs(128, 192) == pytest.approx(counted, rel=1e-6)


def test_expected_macs_shrink_with_narrow_choices(tiny_space: SpaceConfig) -> None:
    net = Supernet(tiny_space, num_classes=5)
    uniform = net.expected_macs(128, 192).item()
    with torch.no_grad():
        net.arch["out"][..., 0] = 5.0  # favour the narrowest width
    assert net.expected_macs(128, 192).item() < uniform < net.max_macs(128, 192)


def test_every_architecture_parameter_receives_a_gradient(tiny_space: SpaceConfig) -> None:
    net = Supernet(tiny_space, num_classes=5).train()
    with torch.no_grad():
        for p in net.arch_parameters():
            p.normal_(0, 0.1)  # away from the symmetric point
    loss = net(torch.randn(2, 3, 64, 64)).square().mean() + net.expected_macs(64, 64) * 1e-9
    loss.backward(inputs=net.arch_parameters())
    for dim in DIMENSIONS:
        grad = net.arch[dim].grad
        assert grad is not None, dim
        live = net.alive(dim)
        if dim == "depth":  # depths below min_depth are never candidates
            assert (grad[live] != 0).all(), dim
        else:
            assert (grad != 0).all(), dim
    assert all(p.grad is None for p in net.weight_parameters())  # arch step: arch grads only


def test_pruned_ops_are_never_computed(tiny_space: SpaceConfig) -> None:
    net = Supernet(tiny_space, num_classes=5)
    calls: list[tuple[int, int]] = []

    def spy(f, key):
        def wrapped(*args, **kwargs):
            calls.append(key)
            return f(*args, **kwargs)

        return wrapped

    for li, ops in enumerate(net.layers):
        for o, op in enumerate(ops):
            op.core = spy(op.core, (li, o))
    net.alive_op[:, 1:] = False
    net.alive_depth[:] = False
    net.alive_depth[:, 0] = True  # depth 1 everywhere: deeper layers are dead
    net.refresh_alive()
    net(torch.randn(1, 3, 32, 32))
    stage_first = [net.stage_layers(s)[0] for s in range(2)]
    assert sorted(set(calls)) == [(li, 0) for li in stage_first]


def test_decided_layers_run_narrow_with_the_same_result(tiny_space: SpaceConfig) -> None:
    """A layer whose op and widths are decided runs sliced; results equal the masked form."""
    space = SpaceConfig(
        stem_width=tiny_space.stem_width,
        stages=tuple(
            st.__class__(st.width, st.max_depth, st.min_depth, 0.0) for st in tiny_space.stages
        ),
        dilations=tiny_space.dilations,
        pools=tiny_space.pools,
        channel_remove=tiny_space.channel_remove,
    )
    net = Supernet(space, num_classes=5)
    randomize_bn(net)
    make_one_hot(net, 3)
    net.alive_op[1, :] = True  # layer 1 undecided again: a mix of narrow and masked layers
    net.alive_depth[1, :] = net.alive_depth[1, :] | (torch.arange(net.alive_depth.shape[1]) >= 1)
    net.refresh_alive()
    narrowed = net.plan.narrow
    assert any(n is not None for n in narrowed) and any(n is None for n in narrowed)
    x = torch.randn(2, 3, 64, 64)

    def run(narrow: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        net.refresh_alive()
        if not narrow:  # every layer a mixture over the stage width: the masked form
            net._plan = net.make_plan(narrow=False, slice_widths=False)
        net.zero_grad()
        y = net(x)
        y.square().mean().backward()
        return y.detach(), [p.grad.clone() for p in net.weight_parameters() if p.grad is not None]

    for mode in (net.eval, net.train):
        mode()
        state = {k: v.clone() for k, v in net.state_dict().items()}
        y1, g1 = run(True)
        net.load_state_dict(state)
        y2, g2 = run(False)
        net.load_state_dict(state)
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-4)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_restrict_to_the_paper_genotype() -> None:
    from ssr.method.derive import restrict_to
    from ssr.method.genotype import Genotype, GenotypeError

    paper = Genotype.load("ssr_cityscapes")
    net = Supernet(SpaceConfig(), num_classes=19)
    restrict_to(net, paper)
    assert net.is_discrete()
    g = genotype_from_supernet(net)
    key = [(x.stage, x.dilation, x.pool, x.c_mid, x.c_out) for x in g.layers]
    assert key == [(x.stage, x.dilation, x.pool, x.c_mid, x.c_out) for x in paper.layers]
    # exact sub-network: the reduction keeps the supernet's conv width (64 + 48 = 112 inputs)
    assert g.reductions[1].c_conv == 64 and g.layers[4].c_in == 112
    layers = paper.to_dict()["layers"]
    bad = Genotype.from_dict(
        {**paper.to_dict(), "layers": [{**layers[0], "dilation": 3}, *layers[1:]]}
    )
    with pytest.raises(GenotypeError, match="not in the search space"):
        restrict_to(Supernet(SpaceConfig(), num_classes=19), bad)


def test_reduction_width_rule_official_decodes_the_released_genotype() -> None:
    from ssr.method.derive import restrict_to
    from ssr.method.genotype import Genotype

    paper = Genotype.load("ssr_cityscapes")
    net = Supernet(SpaceConfig(), num_classes=19)
    restrict_to(net, paper)
    official = genotype_from_supernet(net, reduction="official")
    # the official decode widens the stage-2 conv (48 -> 80) so the block outputs 128 channels
    assert official == paper
    assert official.reductions[1].c_conv == 80 and official.layers[4].c_in == 128
    exact = genotype_from_supernet(net)
    assert exact != official and exact.reductions[1].c_conv == 64
    derive_network(net, exact)  # the exact sub-network inherits weights
    with pytest.raises(ValueError, match="exact sub-network"):
        derive_network(net, official)
    with pytest.raises(ValueError, match="reduction"):
        genotype_from_supernet(net, reduction="nearest")


def test_mixed_ops_run_at_their_widest_alive_widths(tiny_space: SpaceConfig) -> None:
    """Once an op's widest options are pruned it runs sliced to its widest alive widths: the
    same output, gradients and live BN statistics as the masked full-width form, dropout
    included (its noise is drawn for the full width)."""
    net = Supernet(tiny_space, num_classes=5)
    randomize_bn(net)
    g = torch.Generator().manual_seed(0)
    for dim in ("out", "mid"):  # prune the widest option (remove 0) of about half the ops
        drop = torch.rand(net.alive(dim).shape[:2], generator=g) < 0.5
        net.alive(dim)[..., -1] &= ~drop
        net.alive(dim)[..., -2] &= ~(drop & (torch.rand(drop.shape, generator=g) < 0.5))
    net.refresh_alive()
    sliced = net.plan
    full = net.make_plan(slice_widths=False)
    assert sliced != full and full.covers(sliced) and not sliced.covers(full)
    assert sliced.cost(net) < full.cost(net)
    x = torch.randn(2, 3, 64, 64)

    def run(plan) -> tuple[torch.Tensor, list[torch.Tensor], dict[str, torch.Tensor]]:
        net._plan = plan
        net.zero_grad()
        torch.manual_seed(1)
        y = net(x)
        y.square().mean().backward()
        grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
        stats = {n: b.clone() for n, b in net.named_buffers() if "running" in n}
        return y.detach(), grads, stats

    for mode in (net.eval, net.train):
        mode()
        state = {k: v.clone() for k, v in net.state_dict().items()}
        y1, g1, s1 = run(sliced)
        net.load_state_dict(state)
        y2, g2, s2 = run(full)
        net.load_state_dict(state)
        torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-4)
        assert len(g1) == len(g2)
        for a, b in zip(g1, g2):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
        for li, ops in enumerate(sliced.mixed):  # the live channels' statistics agree
            for o, cm, co in ops:
                for bn, c in (("bn1", cm), ("bn2", co)):
                    for stat in ("running_mean", "running_var"):
                        key = f"layers.{li}.{o}.{bn}.{stat}"
                        torch.testing.assert_close(s1[key][:c], s2[key][:c])


def test_a_held_plan_computes_the_same_as_the_exact_one(tiny_space: SpaceConfig) -> None:
    """``hold_plan``: after pruning, the old plan keeps running (a compiled search recompiles
    only when it replans) and gives the exact plan's values; :meth:`replan` adopts the exact."""
    net = Supernet(tiny_space, num_classes=5).eval()
    randomize_bn(net)
    net.hold_plan = True
    start = net.plan
    net.alive_op[:, 1:] = False
    net.alive_depth[:] = net.alive_depth & (net.alive_depth.cumsum(1) == 1)  # shallowest depth
    net.refresh_alive()
    assert net.plan is start and start.covers(net.make_plan())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        held = net(x)
        assert net.replan() and net.plan.cost(net) < start.cost(net)
        torch.testing.assert_close(net(x), held, atol=1e-5, rtol=1e-4)
        assert not net.replan()
