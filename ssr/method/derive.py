"""Derivation: from a (discrete) supernet to a genotype and a network (docs/method.md §7, §12.7).

- :func:`genotype_from_supernet` reads the alive masks (after shrinking, one candidate per
  active group; otherwise the argmax with the lowest index among ties) and chains widths.
  Probabilities that are not finite are refused (:class:`~ssr.config.errors.DivergenceError`): a
  diverged search has no genotype.
- :func:`derive_network` builds the :class:`~ssr.method.network.DerivedNet` with the search head and
  copies the supernet's weights into it: an exact sub-network, so with one-hot architecture
  weights both give the same output (docs/method.md §13).
- :func:`recalibrate_bn` re-estimates BatchNorm statistics on training batches.

**The reduction after a narrowed stage** (docs/method.md §12.8). When stage ``s`` ends narrower
than its maximum width (say 48 of 64 channels), the next DownsamplerBlock can be decoded two
ways (``reduction``):

- ``"exact"`` (the exact sub-network): the conv keeps the supernet's width (``128 - 64 = 64``)
  and the max-pool passes the 48 real channels, so the block outputs ``64 + 48 = 112`` channels;
  with one-hot architecture weights the supernet computes exactly this (it masks the pooled
  channels of the narrowed stage), so the derived network can inherit its weights.
- ``"official"`` (the official ``decode.py``): the conv widens to ``128 - 48 = 80`` so that the
  block always outputs the stage width (128); the released Cityscapes genotype is decoded this
  way. It is not a sub-network of the supernet (the conv has more filters than the supernet's),
  which is harmless for retraining from scratch but means weights cannot be inherited.

:func:`derive_network` always builds the exact sub-network.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ssr.config import SpaceConfig
from ssr.config.errors import DivergenceError
from ssr.method.genotype import Genotype, LayerGene, ReductionGene
from ssr.method.network import DerivedNet
from ssr.method.ops import Downsampler, FactorizedOp
from ssr.method.supernet import Supernet

REDUCTION_RULES = ("exact", "official")


def _choice(probs: Tensor, alive: Tensor) -> int:
    """The surviving candidate, or the first maximum among the alive ones."""
    row = torch.where(alive, probs, torch.full_like(probs, -1.0))
    return int(torch.argmax(row))


#: A supernet's discrete choice: the depth of each stage and (op, out option, mid option) of
#: each kept layer, in order (indices into ``Supernet.ops`` and ``space.channel_remove``).
Selection = tuple[list[int], list[tuple[int, int, int]]]


def checked_probs(net: Supernet) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The probabilities and alive masks of every dimension, on the host; probabilities that
    are not finite among alive candidates are refused (:class:`DivergenceError`)."""
    with torch.no_grad():
        probs = {d: net.probs(d).cpu() for d in ("depth", "op", "out", "mid")}
    alive = {d: net.alive(d).cpu() for d in ("depth", "op", "out", "mid")}
    for d, p in probs.items():
        bad = ~torch.isfinite(p) & alive[d]
        if bool(bad.any()):
            raise DivergenceError(
                f"cannot derive a genotype: architecture probabilities of {d!r} are "
                f"{float(p[bad][0])} (the search diverged); lower arch_optim.lr or the SSR weights"
            )
    return probs, alive


def selected(net: Supernet) -> Selection:
    """Chosen depth per stage and (op, out option, mid option) per kept layer."""
    probs, alive = checked_probs(net)
    depths = [_choice(probs["depth"][s], alive["depth"][s]) + 1 for s in range(len(net.widths))]
    choices = []
    for s in range(len(net.widths)):
        for li in net.stage_layers(s)[: depths[s]]:
            o = _choice(probs["op"][li], alive["op"][li])
            choices.append(
                (
                    o,
                    _choice(probs["out"][li, o], alive["out"][li, o]),
                    _choice(probs["mid"][li, o], alive["mid"][li, o]),
                )
            )
    return depths, choices


def space_ops(space: SpaceConfig) -> list[tuple[int, int]]:
    """A layer's candidate ops ``(dilation, pool)`` in the supernet's order."""
    return [(d, p) for p in space.pools for d in space.dilations]


def genotype_from_choices(
    space: SpaceConfig,
    selection: Selection,
    head: str = "aggregation",
    reduction: str = "exact",
) -> Genotype:
    """The genotype of ``selection`` (depths, then (op, out, mid) per kept layer), widths
    chained: a layer reads its predecessor's output; a reduction reads the previous stage's
    output and, decoded ``"exact"``, keeps the supernet's conv width, ``"official"`` fills the
    stage width (module docstring)."""
    if reduction not in REDUCTION_RULES:
        raise ValueError(f"reduction must be one of {REDUCTION_RULES}, got {reduction!r}")
    depths, choices = selection
    ops = space_ops(space)
    reductions, layers = [], []
    prev, prev_max = space.stem_width, space.stem_width
    it = iter(choices)
    for s, st in enumerate(space.stages):
        c_conv = st.width - (prev_max if reduction == "exact" else prev)
        red = ReductionGene(c_in=prev, c_conv=c_conv)
        reductions.append(red)
        c_in = red.c_out
        for _ in range(depths[s]):
            o, j_out, j_mid = next(it)
            d, p = ops[o]
            c_mid = st.width - space.channel_remove[j_mid]
            c_out = st.width - space.channel_remove[j_out]
            layers.append(LayerGene(s, d, p, c_in, c_mid, c_out))
            c_in = c_out
        prev, prev_max = c_in, st.width
    return Genotype(space.stem_width, tuple(reductions), tuple(layers), head)


def genotype_from_supernet(
    net: Supernet,
    head: str = "aggregation",
    reduction: str = "exact",
    selection: Selection | None = None,
) -> Genotype:
    """The genotype the supernet's alive masks (or argmax) describe, widths chained.

    ``reduction`` decodes the reduction after a narrowed stage: ``"exact"`` (the supernet's
    sub-network) or ``"official"`` (output = stage width); see the module docstring.
    ``selection`` gives the choices instead of :func:`selected` (e.g. the target-aware ones of
    :mod:`ssr.method.derive_target`).
    """
    chosen = selected(net) if selection is None else selection
    return genotype_from_choices(net.space, chosen, head, reduction)


def _copy_bn(dst: nn.BatchNorm2d, src: nn.BatchNorm2d, idx: Tensor | slice) -> None:
    dst.weight.copy_(src.weight[idx])
    dst.bias.copy_(src.bias[idx])
    dst.running_mean.copy_(src.running_mean[idx])
    dst.running_var.copy_(src.running_var[idx])
    dst.num_batches_tracked.copy_(src.num_batches_tracked)


def _copy_op(dst: FactorizedOp, src: FactorizedOp) -> None:
    ci, cm, co = dst.c_in, dst.c_mid, dst.c_out
    dst.conv1.weight.copy_(src.conv1.weight[:cm, :ci])
    dst.conv1.bias.copy_(src.conv1.bias[:cm])
    _copy_bn(dst.bn1, src.bn1, slice(0, cm))
    dst.conv2.weight.copy_(src.conv2.weight[:co, :cm])
    dst.conv2.bias.copy_(src.conv2.bias[:co])
    _copy_bn(dst.bn2, src.bn2, slice(0, co))


def _copy_reduction(dst: Downsampler, src: Downsampler) -> None:
    dst.conv.weight.copy_(src.conv.weight[:, : dst.c_in])
    dst.conv.bias.copy_(src.conv.bias)
    _copy_bn(dst.bn, src.bn, slice(0, dst.c_conv + dst.c_in))


def derive_network(net: Supernet, genotype: Genotype | None = None) -> DerivedNet:
    """The derived network (search head) with weights inherited from the supernet.

    Always the exact sub-network; a ``genotype`` given to save recomputing it must be the
    supernet's exact one (ValueError otherwise, e.g. for an ``"official"`` reduction decode).
    """
    exact = genotype_from_supernet(net, head="search")
    if genotype is not None and genotype.with_head("search") != exact:
        raise ValueError(
            "derive_network needs the supernet's exact sub-network genotype "
            "(reduction='exact'); weights cannot be inherited into another one"
        )
    geno = exact
    dropout = [st.dropout for st in net.space.stages]
    model = DerivedNet(geno, net.num_classes, dropout).to(net.head.weight.device)
    depths, choices = selected(net)
    with torch.no_grad():
        model.encoder.stem.load_state_dict(net.stem.state_dict())
        it = iter(choices)
        for s in range(len(net.widths)):
            _copy_reduction(model.encoder.reductions[s], net.reductions[s])
            for k, li in enumerate(net.stage_layers(s)[: depths[s]]):
                o, _, _ = next(it)
                _copy_op(model.encoder.stages[s][k], net.layers[li][o])
        c_last = geno.stage_out(geno.num_stages - 1)
        model.head.weight.copy_(net.head.weight[:, :c_last])
        model.head.bias.copy_(net.head.bias)
    return model


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[Tensor], device: torch.device) -> int:
    """Re-estimate every BatchNorm's running statistics as a cumulative average.

    Only the BN layers run in training mode (dropout stays off). Returns the batch count.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    was_training = model.training
    model.eval()
    saved = []
    for bn in bns:
        saved.append(bn.momentum)
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    n = 0
    for x in batches:
        model(x.to(device))
        n += 1
    for bn, m in zip(bns, saved):
        bn.momentum = m
    model.train(was_training)
    return n


def restrict_to(net: Supernet, genotype: Genotype) -> None:
    """Switch off every candidate that ``genotype`` does not use (a discrete supernet).

    Raises :class:`~ssr.method.genotype.GenotypeError` if the genotype is not in the supernet's space.
    """
    from ssr.method.genotype import GenotypeError

    space = net.space
    if genotype.num_stages != len(space.stages):
        raise GenotypeError(
            f"genotype has {genotype.num_stages} stages, the space {len(space.stages)}"
        )
    alive = {d: torch.zeros_like(net.alive(d)) for d in ("depth", "op", "out", "mid")}
    for s, st in enumerate(space.stages):
        layers = genotype.stage_layers(s)
        if not st.min_depth <= len(layers) <= st.max_depth:
            raise GenotypeError(
                f"stage {s} depth {len(layers)} not in {st.min_depth}..{st.max_depth}"
            )
        alive["depth"][s, len(layers) - 1] = True
        for li, g in zip(net.stage_layers(s), layers):
            try:
                o = net.ops.index((g.dilation, g.pool))
                j_mid = space.channel_remove.index(st.width - g.c_mid)
                j_out = space.channel_remove.index(st.width - g.c_out)
            except ValueError:
                raise GenotypeError(f"layer {g} is not in the search space") from None
            alive["op"][li, o] = True
            alive["out"][li, o, j_out] = True
            alive["mid"][li, o, j_mid] = True
    for d, a in alive.items():
        net.alive(d).copy_(a)
    net.refresh_alive()


def sample_genotype(
    space: SpaceConfig, rng: random.Random, reduction: str = "exact", head: str = "aggregation"
) -> Genotype:
    """A genotype drawn uniformly from ``space``: each group (depth of a stage, op, mid and
    output width of a layer, drawn in that order) picks one candidate, decoded as
    :func:`genotype_from_supernet` (the draws are the ones of every table built so far: a
    table's reference networks are redrawn from its seed)."""
    n_ops, n_ch = len(space_ops(space)), len(space.channel_remove)
    depths, choices = [], []
    for st in space.stages:
        lo = st.min_depth if space.search_depth else st.max_depth
        depths.append(rng.randint(lo, st.max_depth))
        for _ in range(depths[-1]):
            o = rng.choice(range(n_ops))
            j_mid = rng.choice(range(n_ch))
            choices.append((o, rng.choice(range(n_ch)), j_mid))
    return genotype_from_choices(space, (depths, choices), head, reduction)
