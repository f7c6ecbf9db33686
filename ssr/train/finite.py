"""Divergence checks of training steps (:class:`StepChecks`): a loss, gradient norm or parameter
that is not finite stops the run, without a host synchronisation per step (docs/architecture.md
§6).

Search and retraining refuse a non-finite loss, gradient norm or parameter norm
(:class:`ssr.config.errors.DivergenceError`, one line naming the phase, epoch, quantity and what to
change). Reading a value on the host waits for the device, and on a GPU a wait per step stalls
the queue of kernels, so :class:`StepChecks` has two modes:

- immediate (CPU, and the default): every :meth:`StepChecks.check` reads its values at once
  (one read for all of them) and raises before the optimiser steps, as it always did;
- deferred (CUDA): each quantity keeps, on the device, whether it was ever non-finite this
  epoch and the first non-finite value; :meth:`StepChecks.flush` reads them all at once at the
  end of the epoch and raises for the first quantity (in the order first checked) that went
  bad. The steps after the bad one have run on garbage, but the epoch is never reported,
  checkpointed or derived from: the run stops with the same one-line error.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from ssr.config.errors import check_finite

__all__ = ["StepChecks"]


class StepChecks:
    """Non-finite checks for one phase (``search`` or ``retraining``); see the module text."""

    def __init__(self, phase: str, deferred: bool) -> None:
        self.phase, self.deferred, self.epoch = phase, deferred, 0
        self._bad: dict[str, Tensor] = {}
        self._first: dict[str, Tensor] = {}
        self._advice: dict[str, str] = {}

    def start(self, epoch: int) -> None:
        """Begin 1-based ``epoch`` (forgets what the previous epoch's flush already read)."""
        self.epoch = epoch
        self._bad.clear()
        self._first.clear()
        self._advice.clear()

    def check(self, values: Sequence[tuple[str, Tensor]], advice: str) -> None:
        """Refuse non-finite scalars ``(quantity, value)`` now, or at :meth:`flush` if deferred."""
        if not values:
            return
        scalars = [v.detach().float().reshape(()) for _, v in values]
        if not self.deferred:
            for (quantity, _), value in zip(values, torch.stack(scalars).tolist()):
                check_finite(value, quantity, phase=self.phase, epoch=self.epoch, advice=advice)
            return
        for (quantity, _), value in zip(values, scalars):
            bad = ~torch.isfinite(value)
            if quantity not in self._bad:
                self._bad[quantity], self._first[quantity] = bad, value
                self._advice[quantity] = advice
                continue
            seen = self._bad[quantity]
            self._first[quantity] = torch.where(seen, self._first[quantity], value)
            self._bad[quantity] = seen | bad

    def flush(self) -> None:
        """Read the deferred flags (one host sync) and raise for the first bad quantity."""
        if not self._bad:
            return
        names = list(self._bad)
        firsts = torch.stack([self._first[n] for n in names]).tolist()
        bads = torch.stack([self._bad[n] for n in names]).tolist()
        for name, bad, value in zip(names, bads, firsts):
            if bad:
                check_finite(
                    value, name, phase=self.phase, epoch=self.epoch, advice=self._advice[name]
                )
        self.start(self.epoch)
