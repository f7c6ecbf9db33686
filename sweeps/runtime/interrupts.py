"""A driver interrupt told apart from a failed trial: SIGINT and SIGTERM as the driver sees them.

A trial that raises, or whose worker or node dies, is a result (a ``failed`` row); only an
interrupt of the driver itself (Ctrl-C, SIGTERM from a scheduler or ``kill``) leaves a sweep
unfinished for ``--resume``. Tune cannot tell the two apart afterwards: its in-memory trials all
read finished after it stops, and its saved experiment state can still list an errored trial as
RUNNING. So the driver handles the signals itself (Tune's own SIGINT handler is off:
``TUNE_DISABLE_SIGINT_HANDLER=1``, :data:`sweeps.runtime.cluster.RAY_ENV`) and remembers them:

- the first SIGINT or SIGTERM during ``Tuner.fit`` is passed to Tune's stop handler (the one Tune
  installs for SIGUSR1: it ends the run after writing the experiment state one last time), and
  :attr:`Interrupts.received` names it;
- outside the fit, or a second signal, raises :class:`KeyboardInterrupt` at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

log = logging.getLogger("sweeps")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """The driver's SIGINT/SIGTERM handler (see the module docstring)."""

    def __init__(self) -> None:
        #: Name of the first signal received (``SIGINT``, ``SIGTERM``), None while there is none.
        self.received: str | None = None
        self._in_fit = False
        self._previous: dict[int, Any] = {}

    def install(self) -> Interrupts:
        """Handle SIGINT and SIGTERM in this (main) thread until :meth:`restore`.

        Call it again once Ray is up: ``ray.init`` puts a C++ handler on SIGTERM that aborts the
        driver (no clean-up, exit -6); installing again puts this one back.
        """
        for sig in SIGNALS:
            previous = signal.signal(sig, self._handle)
            self._previous.setdefault(sig, previous)
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    @contextmanager
    def fit(self) -> Iterator[None]:
        """While Tune fits: a first signal stops Tune gracefully instead of raising."""
        self._in_fit = True
        try:
            yield
        finally:
            self._in_fit = False

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        first = self.received is None
        self.received = self.received or name
        stop_tune = signal.getsignal(signal.SIGUSR1) if hasattr(signal, "SIGUSR1") else None
        if first and self._in_fit and callable(stop_tune):
            log.warning(
                "%s: stopping the sweep after Tune saves its state (again to stop at once)", name
            )
            stop_tune(signum, frame)
            return
        raise KeyboardInterrupt(name)
