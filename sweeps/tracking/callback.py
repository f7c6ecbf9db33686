"""The Tune callback that writes a sweep's trials to MLflow from the driver.

Logging from the driver (docs/architecture.md §4) means one writer, so a SQLite store never locks, and
workers on a cluster need no route to the tracking server: a trial hands its epochs, its final
record and its artifacts to Tune (reports and checkpoints), and this callback passes them on.
"""

from __future__ import annotations

from typing import Any

from ray.tune import Callback

from sweeps.contract.protocol import COMPLETE, FINAL_KEY
from sweeps.record.results import ResultsTable
from sweeps.tracking.records import log_epoch, log_final
from sweeps.tracking.runs import Tracker


class MlflowCallback(Callback):
    """Tune callback (driver side): child runs, per-epoch metrics, final records, artifacts."""

    def __init__(self, tracker: Tracker, table: ResultsTable) -> None:
        self.tracker = tracker
        self.table = table

    def _child(self, trial: Any) -> None:
        self.tracker.note_number(trial.trial_id, getattr(trial, "experiment_tag", None))
        self.tracker.child(trial.trial_id, trial.config)

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._child(trial)

    def on_trial_restore(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._child(trial)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if result.get(FINAL_KEY) != 1.0:  # the final record is logged from the row, once
            log_epoch(self.tracker, trial.trial_id, trial.config, result)

    def _final(self, trial: Any) -> None:
        row = self.table.get(trial.trial_id)
        if row is not None:
            checkpoint = trial.checkpoint if row.get("status") == COMPLETE else None
            log_final(self.tracker, row, trial.config, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._final(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._final(trial)
