"""Writes off the driver's loop: one spawned process applies a queue of events in order.

Every write to a store is a round trip (a SQLite commit, an HTTP request to a team's MLflow
server, a query of PostgreSQL) plus its client's work. Made from Tune's callbacks or its
searcher, they hold Tune's loop: at thousands of trials the driver spent more time writing than
scheduling (BENCHMARKS.md, ``benchmarks/driver_scale.py``), and a slow or unreachable store
held every trial's scheduling up to the store's time limit.

So a component that writes (the MLflow callback, :mod:`sweeps.tracking.writer`; the Optuna
study's mirror, :mod:`sweeps.schedule.study_mirror`) hands each event to a :class:`Writer` and
returns. The writer is one process, spawned (never forked: the driver runs Ray's threads), that
builds its own client from picklable settings (``make(settings)`` returns the function applying
one event) and applies the events in the order they were sent. One writer per store, so a
SQLite file never locks.

A writer whose driver dies exits with it (``PR_SET_PDEATHSIG`` on Linux, and the parent's pid
checked every second everywhere), so a resumed sweep never has two writers for one store. What a
killed driver had not written is caught up by the resumed sweep (each component says how).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: Seconds :meth:`Writer.close` waits for the writer to drain before it stops it.
DRAIN_S = 600.0
#: Seconds between progress lines while the driver waits for the writer.
DRAIN_NOTE_S = 30.0

#: ``make(settings)`` in the writer process: the function that applies one event.
Make = Callable[[Any], Callable[[tuple], None]]


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the driver that spawned it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def serve(
    parent: int, make: Make, settings: Any, what: str, events: Any, done: Any, out: Any
) -> None:
    """The writer process of the driver ``parent`` (its pid): apply events until ``None`` arrives
    or the driver is gone; put its CPU seconds and counts on ``out``."""
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before this process could ask to die with it
        return
    apply = make(settings)
    failed = 0
    while True:
        try:
            event = events.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent:
                return
            continue
        if event is None:
            break
        try:
            apply(event)
        except Exception as exc:  # NOTE: one event's bug must not stop the others
            failed += 1
            log.warning("%s writer: %s event not written: %r", what, event[0], exc)
        with done.get_lock():
            done.value += 1
    out.put({"cpu_s": time.process_time(), "events": done.value, "failed": failed})


class Writer:
    """The driver's side: a queue of events to one writer process, started on the first event.

    ``make`` must be a module-level function (the spawned process imports it by name),
    ``settings`` picklable; ``what`` names the store in messages ("MLflow", "Optuna").
    """

    #: Appended to the warning when the writer process has died (what happens to the writes).
    dead_note = ""

    def __init__(self, make: Make, settings: Any, name: str, what: str) -> None:
        self.make, self.settings, self.name, self.what = make, settings, name, what
        self.sent = 0
        self._proc: Any = None
        self._dead_noted = False

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # NOTE: never fork a process that runs Ray's threads
        self._events, self._out = ctx.Queue(), ctx.Queue()
        self._done = ctx.Value("q", 0)
        args = (os.getpid(), self.make, self.settings, self.what, self._events, self._done)
        self._proc = ctx.Process(target=serve, args=(*args, self._out), name=self.name, daemon=True)
        self._proc.start()

    def alive(self) -> bool:
        """Whether events sent now are applied (the writer runs, or starts on the next send)."""
        if self._proc is None or self._proc.is_alive():
            return True
        if not self._dead_noted:
            self._dead_noted = True
            code = self._proc.exitcode
            log.warning("the %s writer exited (code %s)%s", self.what, code, self.dead_note)
        return False

    def send(self, event: tuple) -> None:
        """Queue one event (returns at once; the writer applies it in order)."""
        if self._proc is None:
            self._start()
        if not self.alive():
            return
        self._events.put(event)
        self.sent += 1

    def pending(self) -> int:
        """Events sent and not applied yet."""
        return 0 if self._proc is None else self.sent - self._done.value

    def flush(self, timeout: float = DRAIN_S) -> bool:
        """Wait (up to ``timeout`` seconds) until the writer has applied what was sent; the
        writer goes on. False if it did not finish in time or is gone."""
        deadline = time.monotonic() + timeout
        while self.pending() > 0:
            if not (self._proc.is_alive() and time.monotonic() < deadline):
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout: float = DRAIN_S) -> dict[str, Any]:
        """Wait for the writer to apply what was sent (up to ``timeout`` seconds), stop it, and
        return its figures: CPU seconds, events applied and failed, seconds waited."""
        figures: dict[str, Any] = {"sent": self.sent, "wait_s": 0.0}
        if self._proc is None:
            return figures
        t0 = time.monotonic()
        if self._proc.is_alive():
            self._events.put(None)
        note = t0 + DRAIN_NOTE_S
        while self._proc.is_alive() and time.monotonic() - t0 < timeout:
            self._proc.join(1.0)
            if time.monotonic() > note and self._proc.is_alive():
                note += DRAIN_NOTE_S
                print(f"{self.what}: {self.pending()} event(s) left to write", flush=True)
        if self._proc.is_alive():
            log.warning("the %s writer did not finish in %.0f s: stopped", self.what, timeout)
            self._proc.terminate()
            self._proc.join(5.0)
        with contextlib.suppress(queue.Empty, OSError, ValueError):
            figures.update(self._out.get(timeout=1.0))
        figures["wait_s"] = round(time.monotonic() - t0, 3)
        self._events.cancel_join_thread()  # NOTE: a dead writer leaves events nobody reads
        self._proc = None
        return figures

    def abandon(self) -> None:
        """Stop the writer without waiting for it (the driver is being interrupted)."""
        if self._proc is None:
            return
        self._events.cancel_join_thread()  # NOTE: else exit waits on a pipe nobody reads
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)
        self._proc = None

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment state: the settings, not the process
        keep = ("make", "settings", "name", "what")
        return {**{k: self.__dict__[k] for k in keep}, "sent": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None, _dead_noted=False)
