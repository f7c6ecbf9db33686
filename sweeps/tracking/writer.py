"""MLflow writes off the driver's loop: one writer process applies the trials' events in order.

Every MLflow write is a round trip (a SQLite commit, or an HTTP request to a team's server) plus
its client's work: about 100 ms of CPU per trial of three epochs on 2 cores (BENCHMARKS.md,
``benchmarks/driver_scale.py``). Written from Tune's callbacks, they held Tune's loop: at
thousands of trials the driver spent more time logging than scheduling, and a slow or
unreachable server held every trial's scheduling up to the store's time limit.

So :class:`~sweeps.tracking.callback.MlflowCallback` hands each event (a trial started, an epoch,
a final record) to a :class:`Writer` and returns. The writer is one process, spawned with its
own MLflow client, that applies the events in the order they were sent with the same functions
the driver used (:func:`apply`: :mod:`sweeps.tracking.records`) and under the same outage rules
(:class:`~sweeps.tracking.store.Store`): one writer, so a SQLite store never locks, and whatever
it could not log is caught up by the end-of-sweep sync as before (:mod:`sweeps.tracking.sync`).
The driver waits for it to drain before it syncs, re-measures and registers
(:meth:`Writer.close`).

A writer whose driver dies exits with it (``PR_SET_PDEATHSIG`` on Linux, and the parent's pid
checked every second everywhere): a resumed sweep never has two writers. Events a killed driver
had not written yet are in ``results.parquet`` and Tune's storage, which the resumed sweep's
sync reads.
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
from typing import Any

log = logging.getLogger(__name__)

#: Seconds :meth:`Writer.close` waits for the writer to drain before it stops it (what is left
#: is caught up by the sync that follows).
DRAIN_S = 600.0
#: Seconds between progress lines while the driver waits for the writer.
DRAIN_NOTE_S = 30.0


def apply(tracker: Any, event: tuple) -> None:
    """One event on ``tracker`` (in the writer): ``("start", trial_id, tag, config)``,
    ``("epoch", trial_id, config, result)`` or ``("final", row, config, checkpoint)``."""
    from sweeps.tracking.records import log_epoch, log_final

    kind = event[0]
    if kind == "start":
        _, trial_id, tag, config = event
        tracker.note_number(trial_id, tag)
        tracker.child(trial_id, config)
    elif kind == "epoch":
        _, trial_id, config, result = event
        log_epoch(tracker, trial_id, config, result)
    elif kind == "final":
        _, row, config, checkpoint = event
        log_final(tracker, row, config, checkpoint)
    else:
        raise ValueError(f"unknown MLflow writer event {kind!r}")


def _die_with_parent() -> None:
    """Ask Linux to kill this process when the driver that spawned it dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(Exception):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def serve(
    parent: int, settings: dict[str, Any], models_known: bool, events: Any, done: Any, out: Any
) -> None:
    """The writer process of the driver ``parent`` (its pid): apply events until ``None`` arrives
    or the driver is gone; put its CPU seconds and counts on ``out``."""
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before this process could ask to die with it
        return
    from sweeps.tracking.runs import Tracker

    tracker = Tracker(**settings)
    tracker.attach()  # the sweep's parent run, made by the driver
    if models_known:
        tracker.assume_no_models()
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
            apply(tracker, event)
        except Exception as exc:  # NOTE: one event's bug must not stop the others; sync retries
            failed += 1
            log.warning("MLflow writer: %s event of a trial not logged: %r", event[0], exc)
        with done.get_lock():
            done.value += 1
    out.put({"cpu_s": time.process_time(), "events": done.value, "failed": failed})


class Writer:
    """The driver's side: a queue of events to one writer process, started on the first event."""

    def __init__(self, tracker: Any) -> None:
        self.settings = tracker.__getstate__()
        self.models_known = tracker.knows_all("models")
        self.sent = 0
        self._proc: Any = None
        self._dead_noted = False

    def _start(self) -> None:
        ctx = mp.get_context("spawn")  # NOTE: never fork a process that runs Ray's threads
        self._events, self._out = ctx.Queue(), ctx.Queue()
        self._done = ctx.Value("q", 0)
        self._proc = ctx.Process(
            target=serve,
            args=(
                os.getpid(),
                self.settings,
                self.models_known,
                self._events,
                self._done,
                self._out,
            ),
            name="ssr-mlflow-writer",
            daemon=True,
        )
        self._proc.start()

    def send(self, event: tuple) -> None:
        """Queue one event (returns at once; the writer applies it in order)."""
        if self._proc is None:
            self._start()
        if not self._proc.is_alive():
            if not self._dead_noted:
                self._dead_noted = True
                log.warning(
                    "the MLflow writer exited (code %s): the sweep goes on, and what MLflow "
                    "misses is logged by the sync at its end",
                    self._proc.exitcode,
                )
            return
        self._events.put(event)
        self.sent += 1

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
                print(f"MLflow: {self.sent - self._done.value} event(s) left to log", flush=True)
        if self._proc.is_alive():
            log.warning("the MLflow writer did not finish in %.0f s: stopped", timeout)
            self._proc.terminate()
            self._proc.join(5.0)
        with contextlib.suppress(queue.Empty, OSError, ValueError):
            figures.update(self._out.get(timeout=1.0))
        figures["wait_s"] = round(time.monotonic() - t0, 3)
        self._events.cancel_join_thread()  # NOTE: a dead writer leaves events nobody reads
        self._proc = None
        return figures

    def abandon(self) -> None:
        """Stop the writer without waiting for it (the driver is being interrupted): what it had
        not logged is caught up by the sync of the resumed sweep."""
        if self._proc is None:
            return
        self._events.cancel_join_thread()  # NOTE: else exit waits on a pipe nobody reads
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5.0)
        self._proc = None

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment state: the settings, not the process
        return {"settings": self.settings, "models_known": False, "sent": 0}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _proc=None, _dead_noted=False)
