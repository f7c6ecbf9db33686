"""The Tune callback that hands a sweep's trial events to MLflow's writer, from the driver.

Logging from the driver (docs/architecture.md §4) means workers on a cluster need no route to
the tracking server: a trial hands its epochs, its final record and its artifacts to Tune
(reports and checkpoints), and this callback passes them on. It does not write them itself: it
queues them for one writer process (:mod:`sweeps.tracking.writer`), so Tune's loop never waits
on MLflow, and one writer means a SQLite store never locks. The driver closes it
(:meth:`MlflowCallback.close`) before anything else reads MLflow.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from sweeps.contract.protocol import COMPLETE, FINAL_KEY
from sweeps.record.results import ResultsTable
from sweeps.tracking.runs import Tracker
from sweeps.tracking.writer import Writer


class MlflowCallback(Callback):
    """Tune callback (driver side): child runs, per-epoch metrics, final records, artifacts."""

    def __init__(self, tracker: Tracker, table: ResultsTable) -> None:
        self.tracker = tracker
        self.table = table
        self.writer = Writer(tracker)

    def _child(self, trial: Any) -> None:
        tag = getattr(trial, "experiment_tag", None)
        self.writer.send(("start", trial.trial_id, tag, trial.config))

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._child(trial)

    def on_trial_restore(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._child(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if result.get(FINAL_KEY) != 1.0:  # the final record is logged from the row, once
            self.writer.send(("epoch", trial.trial_id, trial.config, result))

    def _final(self, trial: Any) -> None:
        row = self.table.get(trial.trial_id)
        if row is not None:
            checkpoint = trial.checkpoint if row.get("status") == COMPLETE else None
            self.writer.send(("final", dict(row), trial.config, checkpoint))

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._final(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._final(trial)

    def close(self) -> dict[str, Any]:
        """Wait for the writer to log what was handed to it, then read the sweep's runs into
        the driver's run book once (the sync, orphan pruning, re-measurement and registry that
        follow use it; they list again only after a store failure, ``Tracker.knows_all``).
        Returns the writer's figures (:meth:`~sweeps.tracking.writer.Writer.close`)."""
        figures = self.writer.close()
        if self.tracker.attach():
            self.tracker.store.call("listing the sweep's runs", self.tracker.load_children)
        return figures
