"""Catching MLflow up with what the sweep has: back-fill after an outage, orphan pruning.

A tracking server that goes away mid-sweep costs no data: at the end of the sweep (or on
``--resume``) every results row whose final record is not in MLflow yet is logged, with the
per-epoch history the outage missed read back from Tune's ``progress.csv``. A driver killed
between starting a trial and Tune's next experiment snapshot leaves a child run for a trial the
restored experiment does not know; :func:`prune_orphans` removes it.
"""

from __future__ import annotations

import logging
from typing import Any

from sweeps.contract.protocol import COMPLETE, FINAL_KEY
from sweeps.record.results import ResultsTable
from sweeps.tracking.records import log_epoch, log_final
from sweeps.tracking.runs import Tracker

log = logging.getLogger(__name__)


def sync(tracker: Tracker, table: ResultsTable, results: dict[str, Any]) -> int:
    """Log every row whose final record is not in MLflow yet, with the per-epoch history a
    tracking outage missed (from Tune's ``progress.csv``); returns how many are missing.

    ``results`` maps trial ids to Tune ``Result`` objects (config, checkpoint, history).
    """
    tracker.store.reconnect()
    if tracker.attach() and not tracker.knows_all("runs"):  # NOTE: else the drain just listed
        tracker.store.call("listing the sweep's runs", tracker.load_children)
    missing = 0
    for row in table.rows():
        t = row["trial_id"]
        if tracker.book.is_final(t):
            continue
        res = results.get(t)
        config = getattr(res, "config", None)
        tracker.note_number(t, (getattr(res, "metrics", None) or {}).get("experiment_tag"))
        if not _backfill(tracker, t, config, res, int(row.get("iterations") or 0)):
            missing += 1
            continue
        checkpoint = getattr(res, "checkpoint", None) if row.get("status") == COMPLETE else None
        if not log_final(tracker, row, config, checkpoint):
            missing += 1
    return missing


def _backfill(tracker: Tracker, trial_id: str, config: Any, result: Any, last: int) -> bool:
    """Log the epochs of ``result``'s history that the child run lacks (False: MLflow failed)."""
    if not tracker.child(trial_id, config):
        return False
    done = tracker.last_step(trial_id)
    if done is None:
        return False
    if result is None or done >= last - 1:
        return True
    try:
        history = result.metrics_dataframe
    except Exception as exc:  # no progress.csv: the final record still gets logged
        log.warning("no per-epoch history for trial %s: %s", trial_id, exc)
        return True
    if history is None:
        return True
    for rec in history.to_dict("records"):
        if rec.get(FINAL_KEY) != 1.0 and not log_epoch(tracker, trial_id, config, rec):
            return False
    return True


def prune_orphans(tracker: Tracker, known: set[str]) -> list[str]:
    """Soft-delete child runs of trials that Tune never recorded (returns their trial ids).

    The resumed search runs the orphan's point again under a new trial id. The orphan (no final
    record, partial metrics) is tagged ``ssr.orphan`` and deleted (MLflow keeps it restorable
    until ``mlflow gc``).
    """
    from mlflow.entities import RunStatus

    if not tracker.knows_all("runs") and not tracker.store.call(
        "listing the sweep's runs", tracker.load_children
    ):
        return []
    book = tracker.book
    orphans = [t for t in book.trials() if t not in known and not book.is_final(t)]
    for t in orphans:

        def drop(run_id: str | None = book.run_id(t)) -> None:
            tracker.client.set_tag(run_id, "ssr.orphan", "1")
            tracker.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
            tracker.client.delete_run(run_id)

        if tracker.store.call(f"removing the orphaned run of trial {t}", drop):
            book.forget(t)
    return orphans
