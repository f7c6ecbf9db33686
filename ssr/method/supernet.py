"""The SSR supernet: joint search over depth, op (dilation x resolution) and two widths.

Structure (docs/method.md §2): stem and reductions are fixed; every stage holds ``max_depth`` shared
layers; every layer holds one :class:`~ssr.method.ops.FactorizedOp` per (dilation, pool) candidate
at the stage's maximum width. Architecture parameters (docs/method.md §3) are registered
``nn.Parameter``s in their own container :attr:`Supernet.arch`:

- ``op``    (L, O)     one group per layer over its ops;
- ``out``   (L, O, K)  one group per (layer, op) over output widths (FBNetV2 prefix masks);
- ``mid``   (L, O, K)  the same for the width between the two convs;
- ``depth`` (S, D)     one group per stage over depths 1..D (docs/method.md §2.5).

Probabilities are element-wise sigmoids normalised over the alive candidates of a group. Alive
masks are boolean buffers (saved in checkpoints) mirrored on the host, so the forward pass
never synchronises with the device to decide what to run, and pruned candidates are never
computed.

Per layer (docs/method.md §2.4), with ``S_o = p_o * m_out_o`` (op weight times expected output mask)::

    y = ReLU( sum_o S_o * (f_o(x) + x) ) = ReLU( sum_o S_o * f_o(x) + (sum_o S_o) * x )

``S_o`` is folded into the second BatchNorm's affine parameters and the mid mask into the
first's, so masking creates no extra activation tensors. No op is computed at a width its masks
then zero: once the widest options of an op are pruned, its convolutions run at its widest alive
widths (an exact slice, :class:`ForwardPlan`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr.config import SpaceConfig
from ssr.method.ops import (
    Downsampler,
    FactorizedOp,
    pad_channels,
    pool_input,
    residual_add,
    upsample_to,
)

DIMENSIONS = ("depth", "op", "out", "mid")


def normalized_probs(logits: Tensor, alive: Tensor) -> Tensor:
    """Sigmoid of each logit normalised over the alive candidates of its group (docs/method.md §3)."""
    s = torch.sigmoid(logits) * alive
    return s / s.sum(-1, keepdim=True).clamp_min(1e-12)


def _add_prefix_(acc: Tensor, v: Tensor) -> None:
    """``acc[:, :C_v] += v`` in place (``v`` computed at a width <= ``acc``'s)."""
    (acc if v.shape[1] == acc.shape[1] else acc[:, : v.shape[1]]).add_(v)


def _sum_prefix(a: Tensor, b: Tensor) -> Tensor:
    """``a + b`` of two op outputs of different widths, the narrower zero-padded."""
    c = max(a.shape[1], b.shape[1])
    return pad_channels(a, c) + pad_channels(b, c)


@dataclass(frozen=True)
class LayerRef:
    """Where a global layer index sits: its stage and its position (0-based) in the stage."""

    stage: int
    index: int


@dataclass(frozen=True)
class ForwardPlan:
    """What :meth:`Supernet.forward` computes: a value, compared (and guarded by
    ``torch.compile``) as a whole.

    ``depths[s]``: the depths stage ``s`` mixes (1-based); ``narrow[l]``: ``(op, c_mid, c_out)``
    of a decided layer, run at its own widths, or None; ``mixed[l]``: the ``(op, c_mid, c_out)``
    of each op of a mixed layer, computed at those widths: its widest alive options, so that no
    channel is computed that every alive option masks to zero (an exact slice: the masks of the
    dropped channels are exactly 0). A plan that computes more than the alive candidates (a
    *held* plan, :attr:`Supernet.hold_plan`) gives the same values: what it computes beyond them
    is weighted by probabilities that are exactly 0.
    """

    depths: tuple[tuple[int, ...], ...]
    narrow: tuple[tuple[int, int, int] | None, ...]
    mixed: tuple[tuple[tuple[int, int, int], ...], ...]

    def covers(self, other: ForwardPlan) -> bool:
        """Whether this plan computes everything ``other`` computes (at least as wide)."""
        if any(not set(b) <= set(a) for a, b in zip(self.depths, other.depths)):
            return False
        for li, (mine, theirs) in enumerate(zip(self.mixed, other.mixed)):
            if self.narrow[li] is not None:
                if self.narrow[li] != other.narrow[li]:
                    return False
                continue
            have = {o: (cm, co) for o, cm, co in mine}
            need = theirs if other.narrow[li] is None else (other.narrow[li],)
            for o, cm, co in need:
                if o not in have or have[o][0] < cm or have[o][1] < co:
                    return False
        return True

    def cost(self, net: Supernet) -> float:
        """Relative conv MACs of one forward pass under this plan (the same unit for every
        plan of ``net``; pooled ops count a quarter per pooling factor squared)."""
        total = 0.0
        for s, depths in enumerate(self.depths):
            width = net.widths[s]
            for li in net.stage_layers(s)[: max(depths)]:
                ops = (self.narrow[li],) if self.narrow[li] is not None else self.mixed[li]
                for o, cm, co in ops:
                    total += (width * cm + cm * co) / net.ops[o][1] ** 2
        return total


class Supernet(nn.Module):
    """Encoder supernet with a 1x1 classifier at the last stage's stride (docs/method.md §2.1)."""

    def __init__(self, space: SpaceConfig, num_classes: int) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes
        self.ops = [(d, p) for p in space.pools for d in space.dilations]
        self.widths = [st.width for st in space.stages]
        self.layer_refs = [
            LayerRef(s, i) for s, st in enumerate(space.stages) for i in range(st.max_depth)
        ]
        n_layers, n_ops, n_ch = len(self.layer_refs), len(self.ops), len(space.channel_remove)
        max_depth = max(st.max_depth for st in space.stages)

        self.stem = Downsampler(3, space.stem_width - 3)
        prev = space.stem_width
        self.reductions = nn.ModuleList()
        self.layers = nn.ModuleList()
        for st in space.stages:
            self.reductions.append(Downsampler(prev, st.width - prev))
            for _ in range(st.max_depth):
                self.layers.append(
                    nn.ModuleList(
                        FactorizedOp(st.width, st.width, st.width, d, p, st.dropout)
                        for d, p in self.ops
                    )
                )
            prev = st.width
        self.head = nn.Conv2d(prev, num_classes, 1, bias=True)

        self.arch = nn.ParameterDict(
            {
                "depth": nn.Parameter(torch.zeros(len(space.stages), max_depth)),
                "op": nn.Parameter(torch.zeros(n_layers, n_ops)),
                "out": nn.Parameter(torch.zeros(n_layers, n_ops, n_ch)),
                "mid": nn.Parameter(torch.zeros(n_layers, n_ops, n_ch)),
            }
        )
        depth_alive = torch.zeros(len(space.stages), max_depth, dtype=torch.bool)
        for s, st in enumerate(space.stages):
            lo = st.min_depth if space.search_depth else st.max_depth
            depth_alive[s, lo - 1 : st.max_depth] = True
        self.register_buffer("alive_depth", depth_alive)
        self.register_buffer("alive_op", torch.ones(n_layers, n_ops, dtype=torch.bool))
        self.register_buffer("alive_out", torch.ones(n_layers, n_ops, n_ch, dtype=torch.bool))
        self.register_buffer("alive_mid", torch.ones(n_layers, n_ops, n_ch, dtype=torch.bool))
        #: keep running the current :class:`ForwardPlan` after pruning while it covers the alive
        #: candidates (a compiled search: a new plan is a new graph); :meth:`replan` adopts the exact one
        self.hold_plan = False
        # prefix masks per stage (K, C): option j keeps the first C - remove[j] channels
        for s, w in enumerate(self.widths):
            keep = torch.tensor([w - r for r in space.channel_remove])
            mask = (torch.arange(w)[None, :] < keep[:, None]).float()
            self.register_buffer(f"prefix_{s}", mask, persistent=False)
        self.refresh_alive()

    # ---- parameters ---------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.arch[d] for d in DIMENSIONS]

    def weight_parameters(self) -> list[nn.Parameter]:
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    # ---- alive bookkeeping ----------------------------------------------------------------
    def alive(self, dim: str) -> Tensor:
        return getattr(self, f"alive_{dim}")

    def refresh_alive(self) -> None:
        """Mirror the alive buffers on the host (call after pruning or loading a state)."""
        self._alive_ops = [
            [o for o in range(len(self.ops)) if bool(row[o])] for row in self.alive_op.cpu()
        ]
        self._alive_depths = [
            [d + 1 for d in range(row.numel()) if bool(row[d])] for row in self.alive_depth.cpu()
        ]
        self._active = self._compute_active()
        self._narrow = [self._narrow_widths(li) for li in range(len(self.layer_refs))]
        exact = self.make_plan()
        held = self.__dict__.get("_plan")
        if not (self.__dict__.get("hold_plan", False) and held is not None and held.covers(exact)):
            self._plan = exact

    def make_plan(self, narrow: bool = True, slice_widths: bool = True) -> ForwardPlan:
        """The exact plan of the alive candidates; ``narrow=False`` runs decided layers as
        mixtures, ``slice_widths=False`` computes every op at the stage width (both: the form
        the tests compare against)."""
        widths = [self.widths[ref.stage] for ref in self.layer_refs]
        keep = [torch.tensor([w - r for r in self.space.channel_remove]) for w in self.widths]
        alive_mid, alive_out = self.alive_mid.cpu(), self.alive_out.cpu()
        mixed = []
        for li, ops in enumerate(self._alive_ops):
            k, w = keep[self.layer_refs[li].stage], widths[li]
            mixed.append(
                tuple(
                    (o, int(k[alive_mid[li, o]].max()), int(k[alive_out[li, o]].max()))
                    if slice_widths
                    else (o, w, w)
                    for o in ops
                )
            )
        return ForwardPlan(
            depths=tuple(tuple(d) for d in self._alive_depths),
            narrow=tuple(self._narrow) if narrow else (None,) * len(self._narrow),
            mixed=tuple(mixed),
        )

    @property
    def plan(self) -> ForwardPlan:
        """The plan :meth:`forward` runs (the exact one unless :attr:`hold_plan` kept an older)."""
        return self._plan

    def replan(self) -> bool:
        """Run the exact plan of the alive candidates from now on; whether it changed."""
        exact = self.make_plan()
        changed = exact != self._plan
        self._plan = exact
        return changed

    def _narrow_widths(self, li: int) -> tuple[int, int, int] | None:
        """(op, c_mid, c_out) of a layer whose op and both widths are decided, else None."""
        if len(self._alive_ops[li]) != 1:
            return None
        o = self._alive_ops[li][0]
        j_out = torch.nonzero(self.alive_out[li, o].cpu()).flatten()
        j_mid = torch.nonzero(self.alive_mid[li, o].cpu()).flatten()
        if len(j_out) != 1 or len(j_mid) != 1:
            return None
        width = self.widths[self.layer_refs[li].stage]
        remove = self.space.channel_remove
        return o, width - remove[int(j_mid)], width - remove[int(j_out)]

    def active_groups(self, dim: str) -> Tensor:
        """Boolean (groups,) mask, on the buffers' device: groups that still matter.

        Layers deeper than every alive depth and the channel groups of pruned ops are
        collapsed (docs/method.md §5 hierarchy) and take no part in SSR or shrinking. Cached by
        :meth:`refresh_alive`, so reading it never synchronises with the device.
        """
        return self._active[dim]

    def _compute_active(self) -> dict[str, Tensor]:
        layer_live = torch.tensor(
            [ref.index < max(self._alive_depths[ref.stage], default=0) for ref in self.layer_refs],
            dtype=torch.bool,
        )
        dev = self.alive_op.device
        return {
            "depth": torch.ones(self.alive_depth.shape[0], dtype=torch.bool, device=dev),
            "op": layer_live.to(dev),
            "out": (self.alive_op.cpu() & layer_live[:, None]).reshape(-1).to(dev),
            "mid": (self.alive_op.cpu() & layer_live[:, None]).reshape(-1).to(dev),
        }

    def _apply(self, fn, recurse=True):  # keep the cached masks on the module's device
        out = super()._apply(fn, recurse)
        if hasattr(self, "_alive_ops"):
            self.refresh_alive()
        return out

    def is_discrete(self) -> bool:
        for dim in DIMENSIONS:
            alive = self.alive(dim).cpu().reshape(-1, self.alive(dim).shape[-1])
            active = self.active_groups(dim).cpu()
            if bool((alive[active].sum(-1) > 1).any()):
                return False
        return True

    # ---- probabilities ----------------------------------------------------------------------
    def probs(self, dim: str) -> Tensor:
        return normalized_probs(self.arch[dim], self.alive(dim))

    def stage_layers(self, s: int) -> list[int]:
        return [i for i, ref in enumerate(self.layer_refs) if ref.stage == s]

    def layer_scales(self) -> tuple[Tensor, Tensor, Tensor]:
        """Per (layer, op) output scale ``S = p_op * m_out`` and mid mask, and per-layer sum.

        Returns lists indexed by layer of (O, C) tensors; computed once per forward with one
        matmul per stage (vectorised channel masks, no per-option Python loop).
        """
        p_op, p_out, p_mid = self.probs("op"), self.probs("out"), self.probs("mid")
        scales, mids, totals = [], [], []
        for s in range(len(self.widths)):
            idx = self.stage_layers(s)
            prefix = getattr(self, f"prefix_{s}")
            m_out = p_out[idx] @ prefix  # (Ls, O, C)
            m_mid = p_mid[idx] @ prefix
            sc = p_op[idx, :, None] * m_out
            scales.extend(sc.unbind(0))
            mids.extend(m_mid.unbind(0))
            totals.extend(sc.sum(1).unbind(0))
        return scales, mids, totals

    # ---- forward ------------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        scales, mids, totals = self.layer_scales()
        p_depth = self.probs("depth")
        plan = self._plan
        y = self.stem(x)
        stage_mask: Tensor | None = None
        for s, width in enumerate(self.widths):
            # a stage that ends in one decided layer hands over its own width, unmasked
            y = self.reductions[s](y, pool_scale=stage_mask)
            depths = plan.depths[s]
            layer_ids = self.stage_layers(s)
            out: Tensor | None = None
            stage_mask = None
            for i, li in enumerate(layer_ids[: max(depths)]):
                narrow = plan.narrow[li]
                if narrow is not None:  # decided layer: run it at its own widths, exactly
                    o, c_mid, c_out = narrow
                    v = self.layers[li][o].branch(y, widths=(c_mid, c_out))
                    y = F.relu(residual_add(v, y), inplace=True)
                else:
                    y = pad_channels(y, width)
                    y = F.relu(
                        self._mixed(li, plan.mixed[li], y, mids, scales, totals), inplace=True
                    )
                if len(depths) == 1:
                    out, stage_mask = y, (totals[li] if narrow is None else None)
                elif i + 1 in depths:
                    w = p_depth[s, i]
                    y = pad_channels(y, width)
                    out = w * y if out is None else out + w * y
                    m = w * totals[li]
                    stage_mask = m if stage_mask is None else stage_mask + m
            assert out is not None  # at least one depth is always alive
            y = out
        return self.head(pad_channels(y, self.head.in_channels))

    def _mixed(self, li: int, ops, y: Tensor, mids, scales, totals) -> Tensor:
        """``sum_o S_o * (f_o(y) + y)`` over the ops ``(o, c_mid, c_out)`` of layer ``li``'s plan
        (before the ReLU).

        Each op runs at its plan widths (its channels beyond them have masks exactly 0; their
        dropout noise is still drawn, so the random stream is that of the full width). Ops of
        the same pooling factor share one pooled input, and their outputs are summed at the
        reduced resolution and upsampled once (bilinear upsampling is linear), so a layer
        pools and upsamples once per factor instead of once per op.
        """
        acc = (totals[li].view(1, -1, 1, 1) * y).to(y.dtype)  # autocast: y's type (ops.py)
        pooled: dict[int, Tensor] = {}
        low: dict[int, Tensor] = {}
        for o, cm, co in ops:
            op = self.layers[li][o]
            mid, scale, widths = mids[li][o], scales[li][o], None
            if (cm, co) != (op.c_mid, op.c_out):
                mid, scale, widths = mid[:cm], scale[:co], (cm, co)
            if op.pool == 1:  # in place: no tensor per op
                _add_prefix_(acc, op.core(y, mid, scale, widths, noise_channels=op.c_out))
                continue
            if op.pool not in pooled:
                pooled[op.pool] = pool_input(y, op.pool)
            v = op.core(pooled[op.pool], mid, scale, widths, noise_channels=op.c_out)
            low[op.pool] = v if op.pool not in low else _sum_prefix(low[op.pool], v)
        for v in low.values():
            _add_prefix_(acc, upsample_to(v, y.shape[-2:]))
        return acc

    # ---- expected cost ----------------------------------------------------------------------
    def expected_macs(
        self, height: int, width: int, probs: dict[str, Tensor] | None = None
    ) -> Tensor:
        """Differentiable expected conv MACs of the derived network at ``height x width``.

        Exact under the factorised distribution (docs/method.md §12.3 fixed): every group is independent,
        so ``E[c_in * c_mid] = E[c_in] E[c_mid]``; a layer's input width is the expectation of
        the previous layer's output over its ops, ``E[c_out] = sum_o p_o E_o[c_out]`` (the
        official code took the last op's width); a layer at depth ``i`` counts with
        probability ``P(depth >= i)``. Conv MACs only, the same count as
        :func:`ssr.method.complexity.count_macs` (BN, pooling and interpolation excluded).
        """
        if probs is None:
            probs = {d: self.probs(d) for d in DIMENSIONS}
        h, w = (height + 1) // 2, (width + 1) // 2
        c_stem = self.space.stem_width
        total = torch.zeros((), device=probs["op"].device) + 9 * 3 * (c_stem - 3) * h * w
        c_prev: Tensor = total.new_full((), float(c_stem))  # no host-to-device copy
        prev_max = c_stem
        for s, st in enumerate(self.space.stages):
            h, w = (h + 1) // 2, (w + 1) // 2
            c_conv = st.width - prev_max
            total = total + 9 * c_prev * c_conv * h * w
            c_in = c_prev + c_conv
            keep = getattr(self, f"prefix_{s}").sum(1)  # (K,)
            reach = probs["depth"][s].flip(0).cumsum(0).flip(0)  # P(depth >= i+1)
            c_stage = torch.zeros((), device=total.device)
            for i, li in enumerate(self.stage_layers(s)):
                e_mid = probs["mid"][li] @ keep  # (O,)
                e_out = probs["out"][li] @ keep
                hw = self._op_pixels(h, w, total)
                macs = 3 * (c_in * e_mid + e_mid * e_out) * hw
                total = total + reach[i] * (probs["op"][li] * macs).sum()
                c_in = (probs["op"][li] * e_out).sum()
                c_stage = c_stage + probs["depth"][s, i] * c_in
            c_prev, prev_max = c_stage, st.width
        return total + c_prev * self.num_classes * h * w

    def _op_pixels(self, h: int, w: int, like: Tensor) -> Tensor:
        """Output pixels of each op at ``h x w``, cached per size and device: building it from a
        list every architecture step would copy from the host and wait for a GPU (docs/architecture.md §6)."""
        key = (h, w, like.device, like.dtype)
        cache = self.__dict__.setdefault("_pixels", {})
        if key not in cache:
            pixels = [((h + p - 1) // p) * ((w + p - 1) // p) for _, p in self.ops]
            cache[key] = torch.tensor(pixels, dtype=like.dtype).to(like.device)
        return cache[key]

    def max_probs(self) -> dict[str, Tensor]:
        """One-hot probabilities of the largest sub-network: deepest, widest, full resolution."""
        out = {d: torch.zeros_like(self.arch[d]) for d in DIMENSIONS}
        for s, st in enumerate(self.space.stages):
            out["depth"][s, st.max_depth - 1] = 1.0
        full_res = min(range(len(self.ops)), key=lambda o: (self.ops[o][1], o))
        out["op"][:, full_res] = 1.0
        widest = min(
            range(len(self.space.channel_remove)), key=lambda j: self.space.channel_remove[j]
        )
        out["out"][..., widest] = 1.0
        out["mid"][..., widest] = 1.0
        return out

    def max_macs(self, height: int, width: int) -> float:
        """Conv MACs of the largest sub-network: the FLOPs normaliser (docs/method.md §12.4)."""
        with torch.no_grad():
            return float(self.expected_macs(height, width, self.max_probs()))
