"""MLflow writes off the driver's loop: the trials' events applied in order by one writer process.

Every MLflow write is a round trip (a SQLite commit, or an HTTP request to a team's server) plus
its client's work: about 100 ms of CPU per trial of three epochs on 2 cores (BENCHMARKS.md,
``benchmarks/driver_scale.py``). So :class:`~sweeps.tracking.callback.MlflowCallback` hands each
event (a trial started, an epoch, a final record) to a :class:`Writer` (the process machinery is
:mod:`sweeps.runtime.writer`) and returns. The writer process has its own MLflow client and
applies the events with the same functions the driver used (:func:`apply`:
:mod:`sweeps.tracking.records`) under the same outage rules (:class:`~sweeps.tracking.store.Store`):
whatever it could not log is caught up by the end-of-sweep sync (:mod:`sweeps.tracking.sync`).
The driver waits for it to drain before it syncs, re-measures and registers
(:meth:`Writer.close`). Events a killed driver had not written yet are in ``results.parquet``
and Tune's storage, which the resumed sweep's sync reads.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from sweeps.runtime.writer import Writer as ProcessWriter


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


def mlflow_applier(settings: dict[str, Any]) -> Callable[[tuple], None]:
    """In the writer process: a tracker attached to the sweep's parent run (made by the
    driver), and the function that applies one event to it."""
    from sweeps.tracking.runs import Tracker

    tracker = Tracker(**settings["tracker"])
    tracker.attach()
    if settings["models_known"]:
        tracker.assume_no_models()
    return partial(apply, tracker)


class Writer(ProcessWriter):
    """The MLflow writer of one sweep's tracker."""

    dead_note = ": the sweep goes on, and what MLflow misses is logged by the sync at its end"

    def __init__(self, tracker: Any) -> None:
        settings = {"tracker": tracker.__getstate__(), "models_known": tracker.knows_all("models")}
        super().__init__(mlflow_applier, settings, name="ssr-mlflow-writer", what="MLflow")

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        # NOTE: a restored driver does not know which models its runs already have
        return {**state, "settings": {**state["settings"], "models_known": False}}
