"""Expected latency of the derived network under the architecture distribution (docs/method.md §4.4).

FBNet (Wu et al. 2019) and ProxylessNAS (Cai et al. 2019) add ``E[latency]``, read from a
per-op lookup table, to the architecture loss; FasterSeg (Chen et al. 2020) does so for
real-time segmentation. Here the table is :class:`ssr.method.latency_table.LatencyTable` and the
distribution is SSR's factorised one (docs/method.md §3): depth per stage, op per layer, output
and mid width per (layer, op), all independent. The expectation is **exact** for that
distribution (not the FLOPs term's product of expected widths, §12.3), and differentiable in the
architecture logits as :meth:`ssr.method.supernet.Supernet.expected_macs` is:

- ``natural`` layout (each layer at its own widths): a layer's input width is the previous
  layer's output, independent of the layer's own choices, so
  ``E[g(c_in, c_mid, c_out)] = sum q_in(a) p_mid(j) p_out(k) g[a, j, k]`` per op;
- ``padded`` layout (ONNX Runtime's deploy form): every layer of a stage runs at the stream
  width ``P = max(r, c_out of every live layer)``. Its CDF is a product of the layers' CDFs
  mixed over depths, ``P(P <= v) = F_r(v) sum_d p_d prod_{t<d} F_t(v)``; the cost of layer ``i``
  with op ``o`` uses the distribution of ``P`` given ``o`` and ``depth > i``, so the correlation
  between a layer's op and ``P`` is kept. Reduction and head use ``P`` given the previous
  stage's output width, which they also read.

A layer deeper than the chosen depth is not in the derived network and costs nothing. One-hot
probabilities give exactly the table sum of that genotype (:func:`ssr.method.latency_table.table_sum_ms`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ssr.config import SpaceConfig
from ssr.method.latency_table import LatencyTable, Piece, StageGrid, check_space, op_names

__all__ = ["LatencyModel", "latency_model"]


def _dense(piece: Piece, maps: list[dict[int, list[int]]], shape: tuple[int, ...]) -> Tensor:
    """``piece`` on the model's axes: ``maps[a][width]`` lists the model indices of that width
    on axis ``a``; combinations the table leaves None (they cannot occur) are 0."""
    out = torch.zeros(shape)

    def fill(ms, idx: tuple[list[int], ...], depth: int) -> None:
        if depth == len(maps):
            if ms is not None:
                out[torch.meshgrid(*[torch.tensor(i) for i in idx], indexing="ij")] = float(ms)
            return
        for width, sub in zip(list(piece.axes.values())[depth], ms):
            targets = maps[depth].get(width, [])
            if targets:
                fill(sub, (*idx, targets), depth + 1)

    fill(piece.ms, (), 0)
    return out


def _index(values: tuple[int, ...]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for i, v in enumerate(values):
        out.setdefault(v, []).append(i)
    return out


class LatencyModel:
    """A table laid out as tensors for the expectation over a space's architecture parameters.

    ``space`` is the search's space (its depths give the layers); the table must have been
    built for the same widths and ops (:func:`ssr.method.latency_table.check_space`).
    :meth:`expected_ms` takes the supernet's probabilities (``depth``, ``op``, ``out``, ``mid``).
    """

    def __init__(self, table: LatencyTable, space: SpaceConfig) -> None:
        check_space(table, space)
        self.table, self.space = table, space
        self.padded = table.layout == "padded"
        self.grids: list[StageGrid] = table.grids()
        names = op_names(space)
        self.tensors: dict[str, Tensor] = {"stem": torch.tensor(float(table.stem_ms))}
        prev_values: tuple[int, ...] = (space.stem_width,)
        for s, g in enumerate(self.grids):
            v, k = _index(g.values), _index(g.options)
            n_v, n_k, n_p = len(g.values), len(g.options), len(prev_values)
            opts = torch.tensor(g.options)[:, None]
            vals = torch.tensor(g.values)[None, :]
            self.tensors[f"onehot{s}"] = (opts == vals).float()  # option j -> its value
            self.tensors[f"upto{s}"] = (opts <= vals).float()  # 1[w_j <= v]
            r = torch.tensor([g.r_of[g.prev.index(c)] if c in g.prev else 0 for c in prev_values])
            self.tensors[f"r_upto{s}"] = (r[:, None] <= vals).float()
            self.tensors[f"r_onehot{s}"] = (r[:, None] == vals).float()
            if self.padded:
                ops = [_dense(table.ops[s][n], [v, k], (n_v, n_k)) for n in names]
                red = _dense(table.reductions[s], [_index(prev_values), v], (n_p, n_v))
            else:
                ops = [_dense(table.ops[s][n], [v, k, k], (n_v, n_k, n_k)) for n in names]
                red = _dense(table.reductions[s], [_index(prev_values)], (n_p,))
            self.tensors[f"ops{s}"], self.tensors[f"red{s}"] = torch.stack(ops), red
            prev_values = g.values
        first, last = _index(self.grids[0].values), _index(self.grids[-1].values)
        n0, n1 = len(self.grids[0].values), len(self.grids[-1].values)
        if table.head == "aggregation":
            self.tensors["head"] = _dense(table.head_piece, [last, first], (n1, n0))
        else:
            self.tensors["head"] = _dense(table.head_piece, [last], (n1,))
        self._cache: dict[tuple[torch.device, torch.dtype], dict[str, Tensor]] = {}

    def _on(self, like: Tensor) -> dict[str, Tensor]:
        """The tensors on ``like``'s device and dtype, copied once (no copy per step)."""
        key = (like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = {k: t.to(like.device, like.dtype) for k, t in self.tensors.items()}
        return self._cache[key]

    def expected_ms(self, probs: dict[str, Tensor], corrected: bool = True) -> Tensor:
        """Differentiable expected latency (ms) of the derived network under ``probs``, with
        the table's correction unless ``corrected=False``."""
        t = self._on(probs["op"])
        total = t["stem"]
        q_prev = t["stem"].new_ones(1)  # distribution of the previous stage's output width
        start = 0
        cond_last = q_last = q_first = None
        for s, st in enumerate(self.space.stages):
            idx = slice(start, start + st.max_depth)
            start += st.max_depth
            p_depth = probs["depth"][s, : st.max_depth]
            p_op, p_out, p_mid = probs["op"][idx], probs["out"][idx], probs["mid"][idx]
            pi = torch.einsum("lo,lok->lk", p_op, p_out)  # each layer's output width
            stage = self._padded if self.padded else self._natural
            cost, cond = stage(s, t, q_prev, p_depth, p_op, p_out, p_mid, pi)
            total = total + cost
            q_out = torch.einsum("l,lk,kv->v", p_depth, pi, t[f"onehot{s}"])
            if s == 0:
                q_first = q_out
            cond_last, q_last = cond, q_prev
            q_prev = q_out
        assert q_first is not None and q_last is not None
        total = total + self._head(t, q_first, q_prev, cond_last, q_last)
        corr = self.table.correction
        if corrected and corr is not None:
            total = corr.scale * total + corr.offset_ms
        return total

    def _natural(self, s, t, q_prev, p_depth, p_op, p_out, p_mid, pi):
        """Stage cost in the natural layout (reduction + live layers); no stream width."""
        pi_v = pi @ t[f"onehot{s}"]  # (L, V): output width of each layer, on the value axis
        q_r = q_prev @ t[f"r_onehot{s}"]  # the first layer's input: the reduction's output
        q_in = torch.cat([q_r[None], pi_v[:-1]])
        reach = p_depth.flip(0).cumsum(0).flip(0)  # P(depth > i)
        layers = torch.einsum(
            "l,lo,la,loj,lok,oajk->", reach, p_op, q_in, p_mid, p_out, t[f"ops{s}"]
        )
        return layers + q_prev @ t[f"red{s}"], None

    def _padded(self, s, t, q_prev, p_depth, p_op, p_out, p_mid, pi):
        """Stage cost in the padded layout; also returns P(P <= v | previous output width c)."""
        upto = t[f"upto{s}"]
        cdf_layer = pi @ upto  # (L, V): P(c_out_i <= v)
        cdf_op = p_out @ upto  # (L, O, V): the same given the layer's op
        n = cdf_layer.shape[0]
        # tail[i] = sum_{d > i} p_d prod_{i < t < d} F_t ; head[i] = prod_{t < i} F_t
        tails = [p_depth[n - 1].expand(cdf_layer.shape[1])]
        for i in range(n - 2, -1, -1):
            tails.append(p_depth[i] + cdf_layer[i + 1] * tails[-1])
        tail = torch.stack(tails[::-1])
        heads = torch.cumprod(torch.cat([torch.ones_like(cdf_layer[:1]), cdf_layer[:-1]]), 0)
        cdf_r = q_prev @ t[f"r_upto{s}"]
        cdf = cdf_r * cdf_op * (heads * tail)[:, None, :]  # P(P <= v, depth > i | op o)
        pmf = cdf - F.pad(cdf, (1, 0))[..., :-1]
        cost_op = torch.einsum("loj,ovj->lov", p_mid, t[f"ops{s}"])
        layers = torch.einsum("lo,lov,lov->", p_op, pmf, cost_op)
        cdf_max = cdf_layer[0] * tail[0]  # P(max layer output <= v)
        cond = t[f"r_upto{s}"] * cdf_max  # (prev, V): P(P <= v | previous output c)
        pmf_cond = cond - F.pad(cond, (1, 0))[..., :-1]
        red = torch.einsum("c,cv,cv->", q_prev, pmf_cond, t[f"red{s}"])
        return layers + red, pmf_cond

    def _head(self, t, q_first, q_final, pmf_cond_last, q_before_last) -> Tensor:
        """The head: the last stage's stream (padded) or output width (natural), and for the
        aggregation head the first stage's output width too."""
        head = t["head"]
        agg = self.table.head == "aggregation"
        if not self.padded:
            return torch.einsum("a,b,ab->", q_final, q_first, head) if agg else q_final @ head
        # the last stage's stream width depends on the stage before it (its reduction's input)
        if agg and len(self.grids) == 2:  # ... which is the first stage: joint distribution
            return torch.einsum("c,cv,vc->", q_first, pmf_cond_last, head)
        pmf_last = q_before_last @ pmf_cond_last
        return torch.einsum("v,c,vc->", pmf_last, q_first, head) if agg else pmf_last @ head


def latency_model(path: str | None, space: SpaceConfig) -> LatencyModel | None:
    """The search's :class:`LatencyModel` of table ``path`` (None without a table); a table
    of another space is refused with a :class:`ssr.config.ConfigError` naming the difference."""
    if path is None:
        return None
    return LatencyModel(LatencyTable.load(path), space)
