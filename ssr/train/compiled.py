"""``torch.compile`` for the training steps of search and retraining (docs/architecture.md §2.1).

``compile: true`` (``SearchConfig``, ``RetrainConfig``) runs a step's forward pass, and through
AOTAutograd its backward pass, as one compiled graph: inductor fuses the memory-bound work
around the convolutions (training-mode BatchNorm, the folded channel scales, ReLU, the op sums
of a mixed layer, dropout) into a few loops, while the convolutions stay oneDNN's (CPU) or
cuDNN's (CUDA). What :class:`CompiledForward` adds to a plain ``torch.compile(model)``:

- **one backward per step kind**: a compiled backward computes the gradient of every input
  that required one when the forward ran, whatever ``backward(inputs=...)`` asks for. So that
  the search's architecture step computes no weight gradients (the eager step does not),
  :meth:`CompiledForward.grads_for` turns ``requires_grad`` off for the other parameters
  during the forward; each step kind gets its own graph, compiled once.
- **counted compiles**: every graph compiled through it is counted (``compiles``), with the
  seconds spent compiling (``compile_seconds``: the calls that compiled a forward graph, and
  inductor's compilation of each backward graph at its first backward). The search records
  both.
- **bounded recompiles**: a graph is valid for one :class:`ssr.method.supernet.ForwardPlan`.
  The supernet holds its plan across prunes (``hold_plan``) and the search replans only when the
  held plan computes much more than the alive candidates need
  (:data:`REPLAN_FACTOR`, :func:`should_replan`), so a search compiles a few graphs per step
  kind, not one per prune event. The recompile limit is raised for these calls only, so that a
  long search never falls back to eager silently.
- **the eager random stream**: ``fallback_random`` keeps dropout on torch's generator, so a
  compiled and an eager run from one seed draw the same masks.

The eager path (``compile: false``) does not go through this module at all.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["REPLAN_FACTOR", "CompiledForward", "should_replan"]

#: Replan (and recompile) once the held plan computes this many times the alive candidates'
#: MACs: at most ``log(start / end) / log(REPLAN_FACTOR)`` replans per search (4 for the
#: paper's space, which shrinks ~9x).
REPLAN_FACTOR = 1.75

#: The backend graphs are compiled with (tests use ``aot_eager``: the same capture, no codegen).
BACKEND = "inductor"

#: Inductor options: dropout on torch's generator (the eager random stream).
OPTIONS = {"fallback_random": True}

#: Graphs one compiled function may hold (dynamo's default, 8, is below a search's count).
RECOMPILE_LIMIT = 64


def should_replan(held_cost: float, exact_cost: float, discrete: bool) -> bool:
    """Whether a compiled search should adopt the exact plan: once the network is discrete
    (it runs that plan to the end), or once the held plan costs :data:`REPLAN_FACTOR` times
    the exact one."""
    return held_cost > exact_cost and (discrete or held_cost >= REPLAN_FACTOR * exact_cost)


class CompiledForward:
    """``model``'s forward through ``torch.compile`` (``enabled``), or the model itself.

    Call it like the model. ``compiles`` counts the graphs compiled for it, ``compile_seconds``
    the time spent compiling them (forward and backward), ``replans`` the plan changes the
    caller reported (:meth:`replanned`).
    """

    def __init__(self, model: nn.Module, enabled: bool, cudagraphs: bool = False) -> None:
        """``cudagraphs``: inductor replays the compiled graphs as CUDA graphs (``mode=
        "reduce-overhead"``; shapes and plan must stay fixed: a retraining, a discrete search)."""
        self.model, self.enabled = model, enabled
        self.options = {**OPTIONS, **({"triton.cudagraphs": True} if cudagraphs else {})}
        self.compiles = 0
        self.replans = 0
        self.compile_seconds = 0.0
        self._in_call = False
        self._fn: Callable[..., Tensor] = model
        if enabled:
            self._fn = torch.compile(model, backend=self._backend, dynamic=False)

    def _backend(self, gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Any:
        self.compiles += 1
        if BACKEND != "inductor":
            from torch._dynamo.backends.registry import lookup_backend

            return lookup_backend(BACKEND)(gm, example_inputs)
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner

        def inner(*args: Any, **kwargs: Any) -> Any:  # times the backward's lazy compilation
            t0 = time.perf_counter()
            try:
                return compile_fx_inner(*args, **kwargs)
            finally:
                if not self._in_call:  # a forward's compile is in its call's time already
                    self.compile_seconds += time.perf_counter() - t0

        return compile_fx(gm, example_inputs, inner, config_patches=dict(self.options))

    def __call__(self, x: Tensor) -> Tensor:
        if not self.enabled:
            return self._fn(x)
        before, t0 = self.compiles, time.perf_counter()
        self._in_call = True
        try:
            with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT):
                out = self._fn(x)
        finally:
            self._in_call = False
        if self.compiles != before:  # this call traced and compiled a forward graph
            self.compile_seconds += time.perf_counter() - t0
        return out

    def replanned(self) -> None:
        self.replans += 1

    @contextlib.contextmanager
    def grads_for(self, others: Sequence[nn.Parameter]) -> Iterator[None]:
        """Compiled: ``others`` take no gradient in the forward run inside (their own graph);
        eager: nothing changes (``backward(inputs=...)`` already skips them)."""
        if not self.enabled:
            yield
            return
        flags = [p.requires_grad for p in others]
        for p in others:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p, f in zip(others, flags):
                p.requires_grad_(f)

    def stats(self) -> dict[str, Any]:
        """What a run records: whether it compiled, the graphs, the seconds, the replans."""
        return {
            "compile": self.enabled,
            "compiles": self.compiles,
            "compile_seconds": round(self.compile_seconds, 2),
            "replans": self.replans,
        }
