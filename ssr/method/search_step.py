"""One iteration of the SSR search: a weight step, then an architecture step (docs/method.md §6).

The weight step minimises the class-weighted CE of a weight batch with gradients for the
weights only; the architecture step minimises ``ce_scale * CE + sum_dim lambda_dim * S_dim +
lambda_F * L_FLOPs (+ lambda_T * L_latency)`` (docs/method.md §4.2-§4.4) of an architecture
batch with gradients for the architecture parameters only, clipped. :class:`SearchStep` is that iteration as an object,
so that :func:`ssr.method.search.run_search`, ``benchmarks/gpu_check.py`` and the sweep planner
(``sweeps/schedule/plan.py``) all run and time the same code.

Precision (ssr/train/precision.py): the forward passes run under autocast; the CE is computed on fp32
logits and the SSR and FLOPs terms outside autocast, from the fp32 architecture parameters; each
optimiser has its own gradient scaler for fp16. Divergence (a non-finite loss, gradient norm or
architecture parameter) raises :class:`ssr.config.errors.DivergenceError`: at once on CPU, at the end
of the epoch on CUDA (:class:`ssr.train.finite.StepChecks`), so that a step never waits for the device.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ssr.config import SearchConfig
from ssr.config.errors import DivergenceError, check_finite, check_finite_tensor
from ssr.method.latency import latency_model
from ssr.method.supernet import DIMENSIONS, ForwardPlan, Supernet
from ssr.train.compiled import CompiledForward, should_replan
from ssr.train.finite import StepChecks
from ssr.train.loss import flops_loss, latency_loss, ssr_regularizer, ssr_weight, weighted_ce
from ssr.train.optim import make_adam
from ssr.train.precision import Stepper, autocast, to_device

__all__ = ["SearchStep", "labels_at_stride", "ssr_terms"]


def labels_at_stride(y: Tensor, stride: int) -> Tensor:
    """Labels at the supernet's output stride, sampled at the cell centres (docs/method.md §6).

    Output cell ``i`` of a stride-``s`` prediction covers input rows ``s*i .. s*i + s - 1``,
    centred at ``s*i + (s - 1)/2``; the label nearest to that centre is row ``s*i + s//2`` (the
    official code's nearest resize samples ``8i + 4``). ``y[:, ::s, ::s]`` would take the cell's
    corner instead.
    """
    if stride == 1:
        return y
    off = stride // 2
    return y[:, off::stride, off::stride]


def ssr_terms(net: Supernet, cfg: SearchConfig) -> dict[str, Tensor]:
    """The SSR term of every dimension (fp32: call it outside autocast)."""
    return {
        dim: ssr_regularizer(
            net.arch[dim], net.alive(dim), cfg.ssr.averaging, active=net.active_groups(dim)
        )
        for dim in DIMENSIONS
    }


def weight_advice(cfg: SearchConfig) -> str:
    clip = "" if cfg.weight_optim.grad_clip else " or set weight_optim.grad_clip"
    return f"lower weight_optim.lr ({cfg.weight_optim.lr:g}){clip}"


def arch_advice(cfg: SearchConfig) -> str:
    return (
        f"lower arch_optim.lr ({cfg.arch_optim.lr:g}), the SSR weights (ssr.op/out/mid/depth) "
        f"or weight_optim.lr ({cfg.weight_optim.lr:g})"
    )


class SearchStep:
    """The bi-level iteration on ``net`` (already on ``device``) with both optimisers.

    Call :meth:`start_epoch` before an epoch's batches, the object on each
    ``((x_weight, y_weight), (x_arch, y_arch))`` batch, and :meth:`end_epoch` with the epoch's
    averaged stats. Steps return 0-d tensors (``train_loss``, and with the architecture step
    ``arch_loss``, ``arch_ce``, ``flops_loss``; with fp16 also ``weight_skipped`` /
    ``arch_skipped``, 1 for a step the scaler skipped), read once per epoch by
    :func:`ssr.train.loop.run_epoch`.
    """

    def __init__(
        self, net: Supernet, cfg: SearchConfig, weights: Tensor, device: torch.device
    ) -> None:
        self.net, self.cfg, self.weights, self.device = net, cfg, weights, device
        w_params, a_params = net.weight_parameters(), net.arch_parameters()
        self.w = Stepper(
            w_params, make_adam(w_params, cfg.weight_optim), device, cfg.precision,
            cfg.weight_optim.grad_clip,
        )  # fmt: skip
        self.a = Stepper(
            a_params, make_adam(a_params, cfg.arch_optim), device, cfg.precision,
            cfg.arch_optim.grad_clip,
        )  # fmt: skip
        self.max_macs = net.max_macs(cfg.flops.height, cfg.flops.width)
        # the latency term's table (docs/method.md §4.4), None without one
        self.latency = latency_model(cfg.latency.table, net.space)
        self.checks = StepChecks("search", deferred=device.type == "cuda")
        self.fp16 = self.w.fp16
        self.epoch = 0  # 0-based
        # compile: one graph per step kind and plan; the plan is held across prunes
        # (ssr/train/compiled.py); eager: the network itself, plan exact after every prune
        net.hold_plan = cfg.compile
        self.forward = CompiledForward(net, cfg.compile)

    # ---- per epoch ------------------------------------------------------------------------
    def start_epoch(self, epoch: int) -> None:
        """Begin 0-based ``epoch`` (the SSR weights' warm-up and error messages use it)."""
        self.epoch = epoch
        self.checks.start(epoch + 1)

    def end_epoch(self) -> None:
        """Deferred checks, fp16 scale collapse and the weights' norm (one host read each)."""
        self.checks.flush()
        for what, stepper in (("weight", self.w), ("architecture", self.a)):
            if stepper.fp16 and stepper.scaler.get_scale() < 1.0:
                raise DivergenceError(
                    f"search diverged at epoch {self.epoch + 1}: the fp16 {what} gradients "
                    f"overflow even unscaled (gradient scale {stepper.scaler.get_scale():.3g}); "
                    "use precision bf16 or fp32"
                )
        self.check_parameters(weights=True)

    # ---- one iteration --------------------------------------------------------------------
    def __call__(self, batch: Any, search_arch: bool = True) -> dict[str, Tensor]:
        (xw, yw), (xa, ya) = batch
        self.net.train()
        stats = self.weight_step(xw, yw)
        if search_arch:
            stats.update(self.arch_step(xa, ya))
        return stats

    def _logits(self, x: Tensor, frozen: list[Tensor]) -> Tensor:
        """Logits (fp32); compiled, ``frozen`` take no gradient in this forward."""
        x = to_device(x, self.device, self.cfg.channels_last)
        with self.forward.grads_for(frozen), autocast(self.device, self.cfg.precision):
            return self.forward(x).float()

    def _labels(self, y: Tensor) -> Tensor:
        return labels_at_stride(to_device(y, self.device), self.cfg.label_stride)

    def weight_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        loss = weighted_ce(self._logits(x, self.a.params), self._labels(y), self.weights)
        norm = self.w.backward(loss)
        self._check("weight", loss, norm, weight_advice(self.cfg))
        skipped = self.w.step(norm)
        out = {"train_loss": loss.detach()}
        if self.fp16:
            out["weight_skipped"] = skipped
        return out

    def arch_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        cfg = self.cfg
        ce = weighted_ce(self._logits(x, self.w.params), self._labels(y), self.weights)
        terms = ssr_terms(self.net, cfg)  # fp32, outside autocast
        e_macs = self.net.expected_macs(cfg.flops.height, cfg.flops.width)
        fl = flops_loss(e_macs, self.max_macs, cfg.flops)
        loss = cfg.ce_scale * ce + cfg.flops.weight * fl
        lat = None
        if self.latency is not None and cfg.latency.weight > 0:
            lat = latency_loss(self.expected_latency_ms(), cfg.latency)
            loss = loss + cfg.latency.weight * lat
        for dim, t in terms.items():
            loss = loss + ssr_weight(cfg.ssr, dim, self.epoch) * t
        norm = self.a.backward(loss)
        # a non-finite CE here comes from the weights, not from alpha
        self.checks.check([("cross-entropy of the architecture batch", ce)], weight_advice(cfg))
        self._check("architecture", loss, norm, arch_advice(cfg))
        skipped = self.a.step(norm)
        self.check_parameters(weights=False)
        out = {"arch_loss": loss.detach(), "arch_ce": ce.detach(), "flops_loss": fl.detach()}
        if lat is not None:
            out["latency_loss"] = lat.detach()
        if self.fp16:
            out["arch_skipped"] = skipped
        return out

    def expected_latency_ms(self) -> Tensor:
        """Expected latency (ms) of the derived network under the current architecture
        distribution, from the table of ``latency.table`` (docs/method.md §4.4)."""
        assert self.latency is not None, "no latency.table"
        return self.latency.expected_ms({d: self.net.probs(d) for d in DIMENSIONS})

    def _check(self, what: str, loss: Tensor, norm: Tensor, advice: str) -> None:
        values = [(f"{what} loss", loss)]
        if not self.fp16:  # fp16: an overflowing gradient is a step the scaler skips
            values.append((f"{what} gradient norm", norm))
        self.checks.check(values, advice)

    @torch.no_grad()
    def check_parameters(self, weights: bool = True) -> None:
        """Refuse non-finite architecture parameters (after every architecture step: deferred
        on CUDA) and, with ``weights=True`` (the end of an epoch: read at once), the weights."""
        net, epoch, advice = self.net, self.epoch + 1, arch_advice(self.cfg)
        if self.checks.deferred and not weights:
            self.checks.check(
                [(f"architecture parameter alpha.{d}", net.arch[d].norm()) for d in DIMENSIONS],
                advice,
            )
        elif not math.isfinite(float(torch.nn.utils.get_total_norm(net.arch_parameters()))):
            for dim in DIMENSIONS:
                check_finite_tensor(net.arch[dim], f"architecture parameter alpha.{dim}",
                                    phase="search", epoch=epoch, advice=advice)  # fmt: skip
        if weights:
            norm = torch.nn.utils.get_total_norm(net.weight_parameters())
            check_finite(float(norm), "the supernet's weight norm", phase="search", epoch=epoch,
                         advice=weight_advice(self.cfg))  # fmt: skip

    def after_prune(self) -> bool:
        """After shrinking: a compiled search adopts the exact plan when
        :func:`ssr.train.compiled.should_replan` says so (the next steps recompile); an eager
        one always runs it already. Whether the plan changed."""
        net = self.net
        if not self.cfg.compile:
            return False
        held, exact = net.plan.cost(net), net.make_plan().cost(net)
        if should_replan(held, exact, net.is_discrete()) and net.replan():
            self.forward.replanned()
            return True
        return False

    # ---- checkpoints ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        plan = self.net.plan
        return {
            "w_opt": self.w.optimizer.state_dict(),
            "a_opt": self.a.optimizer.state_dict(),
            "w_scaler": self.w.state_dict(),
            "a_scaler": self.a.state_dict(),
            # the plan a compiled search holds: a resumed one computes (and draws) the same
            "plan": {"depths": plan.depths, "narrow": plan.narrow, "mixed": plan.mixed},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.w.optimizer.load_state_dict(state["w_opt"])
        self.a.optimizer.load_state_dict(state["a_opt"])
        self.w.load_state_dict(state.get("w_scaler"))
        self.a.load_state_dict(state.get("a_scaler"))
        if self.cfg.compile and state.get("plan") is not None:
            saved = ForwardPlan(**{k: _tuples(v) for k, v in state["plan"].items()})
            if saved.covers(self.net.make_plan()):
                self.net._plan = saved


def _tuples(value: Any) -> Any:
    """Nested lists (a plan read back from a checkpoint) as nested tuples."""
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value
