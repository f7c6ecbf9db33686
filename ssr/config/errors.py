"""The two kinds of failure the library reports in one line (docs/architecture.md §6).

:class:`ConfigError` is bad input: an unknown key, a wrong type, a value out of range, a missing
file, a genotype the network cannot build, an input that does not fit in memory. Entry points
print it as one ``error: ...`` line and exit with status 2. Its subclasses (``GenotypeError``,
``DatasetError``) stay with the code that raises them.

:class:`DivergenceError` is a run whose numbers stopped being numbers: a search or retraining
whose loss, gradient norm or parameters became NaN or infinite can only produce garbage (a
genotype read off NaN probabilities, a NaN mIoU on a front), so it raises as soon as the value is
seen. Its message is one line that names the phase, the epoch, the quantity and what to change,
e.g.::

    search diverged at epoch 1: architecture parameter alpha.op is NaN; lower arch_optim.lr
    (0.5) or the SSR weights

The exit statuses of every command of the project (``python -m ssr``, ``sweeps/run.py``) are
defined here, once, next to the failures they report.

This module is a leaf: it imports nothing of ours and no torch at import time, so that
:mod:`ssr.config` (read by the sweep driver) stays light.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "EXIT_USAGE",
    "ConfigError",
    "DivergenceError",
    "check_finite",
    "check_finite_tensor",
]

#: Exit status: done.
EXIT_OK = 0
#: Exit status: the run failed (it diverged; no trial of a sweep completed; an unexpected error).
EXIT_FAILED = 1
#: Exit status: bad input (options, config, sweep file, dataset, genotype; a run folder in use).
EXIT_USAGE = 2
#: Exit status: a service the command needs cannot be reached (tracking store, Ray cluster, a
#: remote storage Tune cannot use).
EXIT_UNREACHABLE = 3
#: Exit status: interrupted (SIGINT/SIGTERM; a sweep continues with ``--resume``).
EXIT_INTERRUPTED = 130


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range (bad input)."""


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
    import torch

    with torch.no_grad():
        bad = ~torch.isfinite(t.detach())
        if bool(bad.any()):
            value = float(t.detach()[bad].flatten()[0])
            check_finite(value, quantity, phase=phase, epoch=epoch, advice=advice)
