"""Divergence: a run whose numbers stopped being numbers fails, with one line (docs/design.md §6).

A search or retraining whose loss, gradient norm or parameters became NaN or infinite can
only produce garbage: a genotype read off NaN probabilities, a NaN mIoU on a front. Such a run
raises :class:`DivergenceError` as soon as the value is seen. Its message is one line that
names the phase, the epoch, the quantity and what to change, e.g.::

    search diverged at epoch 1: architecture parameter alpha.op is NaN; lower arch_optim.lr
    (0.5) or the SSR weights

:class:`~ssr.config.ConfigError` (bad input) stays where it is and is re-exported here so that
callers can import both kinds of error from one place.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ssr.config import ConfigError

__all__ = ["ConfigError", "DivergenceError", "check_finite", "check_finite_tensor"]


class DivergenceError(RuntimeError):
    """A loss, gradient or parameter is not finite: the run cannot produce a result."""


def _what(value: float) -> str:
    return "NaN" if math.isnan(value) else ("inf" if value > 0 else "-inf")


def check_finite(value: float, quantity: str, *, phase: str, epoch: int, advice: str) -> None:
    """Raise :class:`DivergenceError` if ``value`` is NaN or infinite.

    ``phase`` is ``"search"`` or ``"retraining"``; ``epoch`` is 1-based; ``advice`` says what
    to change (e.g. ``"lower weight_optim.lr (0.002)"``).
    """
    if not math.isfinite(value):
        raise DivergenceError(
            f"{phase} diverged at epoch {epoch}: {quantity} is {_what(value)}; {advice}"
        )


def check_finite_tensor(t: Tensor, quantity: str, *, phase: str, epoch: int, advice: str) -> None:
    """:func:`check_finite` for every element of ``t`` (one host sync)."""
    with torch.no_grad():
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            value = float(t.detach()[bad].flatten()[0])
            check_finite(value, quantity, phase=phase, epoch=epoch, advice=advice)
