"""Catching MLflow up with what the sweep has: back-fill after an outage, orphan pruning.

A tracking server that goes away mid-sweep costs no data: at the end of the sweep (or on
``--resume``) every results row whose final record is not in MLflow yet is logged, with the
per-epoch history the outage missed read back from Tune's ``progress.csv``. A driver killed
with epochs still queued for MLflow leaves a gap below the last step of a trial that the
resumed sweep continues from its checkpoint; :func:`fill_gaps` fills it from the same history. A driver killed
between starting a trial and Tune's next experiment snapshot leaves a child run for a trial the
restored experiment does not know; :func:`prune_orphans` removes it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sweeps.contract.protocol import COMPLETE, FINAL_KEY
from sweeps.record.results import ResultsTable
from sweeps.tracking.records import epoch_metrics, epoch_step, log_epoch, log_final
from sweeps.tracking.runs import Tracker

log = logging.getLogger(__name__)


def sync(tracker: Tracker, table: ResultsTable, results: dict[str, Any]) -> int:
    """Log every row whose final record is not in MLflow yet, with the per-epoch history a
    tracking outage missed (from Tune's ``progress.csv``), and fill the gaps a killed driver left
    in the history of trials that continued from a checkpoint (:func:`fill_gaps`); returns how
    many trials MLflow still lacks something of.

    ``results`` maps trial ids to Tune ``Result`` objects (config, checkpoint, history).
    """
    tracker.store.reconnect()
    if tracker.attach() and not tracker.knows_all("runs"):  # NOTE: else the drain just listed
        tracker.store.call("listing the sweep's runs", tracker.load_children)
    missing = 0
    for row in table.rows():
        t = row["trial_id"]
        res = results.get(t)
        caught_up = tracker.book.is_final(t) or _catch_up(tracker, row, res)
        if not caught_up or (resumed(row) and not fill_gaps(tracker, t, res)):
            missing += 1
    return missing


def resumed(row: dict[str, Any]) -> bool:
    """True when the row's trial continued from a checkpoint (``resumes``, counted by the trial
    itself in every report): the only trials whose MLflow history can have a gap below its last
    step, so the only ones whose history is read back (a few per kill, not every trial)."""
    return _count(row.get("resumes")) > 0


def _count(v: Any) -> int:
    """A row's count (``iterations``, ``resumes``) as an int; 0 when it has none (None, NaN)."""
    try:
        return int(v)
    except (TypeError, ValueError, OverflowError):
        return 0


def _catch_up(tracker: Tracker, row: dict[str, Any], res: Any) -> bool:
    """The epochs and the final record of a row that is not final in MLflow (False: it failed)."""
    t = row["trial_id"]
    config = getattr(res, "config", None)
    tracker.note_number(t, (getattr(res, "metrics", None) or {}).get("experiment_tag"))
    if not _backfill(tracker, t, config, res, _count(row.get("iterations"))):
        return False
    checkpoint = getattr(res, "checkpoint", None) if row.get("status") == COMPLETE else None
    return log_final(tracker, row, config, checkpoint)


def _backfill(tracker: Tracker, trial_id: str, config: Any, result: Any, last: int) -> bool:
    """Log the epochs of ``result``'s history that the child run lacks (False: MLflow failed)."""
    if not tracker.child(trial_id, config):
        return False
    done = tracker.last_step(trial_id)
    if done is None:
        return False
    if result is None or done >= last - 1:
        return True
    history = _history(trial_id, result)
    for rec in history:
        if rec.get(FINAL_KEY) != 1.0 and not log_epoch(tracker, trial_id, config, rec):
            return False
    return True


def _history(trial_id: str, result: Any) -> list[dict[str, Any]]:
    """The trial's reports from Tune's ``progress.csv`` (none when it cannot be read: the final
    record still gets logged)."""
    try:
        frame = result.metrics_dataframe
    except Exception as exc:  # no progress.csv
        log.warning("no per-epoch history for trial %s: %s", trial_id, exc)
        return []
    return [] if frame is None else frame.to_dict("records")


def fill_gaps(tracker: Tracker, trial_id: str, result: Any) -> bool:
    """Log the per-epoch values of ``result``'s history that the trial's run lacks, by metric
    and step, whatever the run's last step (False: MLflow failed; the next sync tries again).

    A killed driver's MLflow writer loses the events still queued; the trial continues from its
    checkpoint in the resumed sweep and reports only the epochs after it, so its run holds the
    later steps and lacks the lost ones below them, which the last-step rule of
    :meth:`~sweeps.tracking.book.RunBook.log_step` never writes. What the run holds is read
    from the store (each metric's history), and each step is written once.
    """
    run_id = tracker.book.run_id(trial_id)
    if run_id is None or result is None:
        return True
    epochs: dict[int, dict[str, float]] = {}
    for rec in _history(trial_id, result):
        step = epoch_step(rec)
        if rec.get(FINAL_KEY) != 1.0 and step is not None:
            epochs.setdefault(step, epoch_metrics(rec))  # a resumed trial's repeat: the first
    keys = sorted({k for values in epochs.values() for k in values})

    def held() -> dict[str, set[int]]:
        history = tracker.client.get_metric_history
        return {k: {m.step for m in history(run_id, k)} for k in keys}

    have = tracker.store.fetch(f"reading the epoch history of {trial_id}", held) if keys else {}
    if have is None:
        return False
    for step, values in sorted(epochs.items()):
        lacking = {k: v for k, v in values.items() if step not in have[k]}
        if lacking and not _fill(tracker, trial_id, run_id, step, lacking):
            return False
    return True


def _fill(
    tracker: Tracker, trial_id: str, run_id: str, step: int, values: dict[str, float]
) -> bool:
    """Log ``values`` at ``step`` of the trial's run, a step the run was read to lack."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in values.items()]
    return tracker.book.fill_step(
        trial_id,
        step,
        lambda: tracker.store.call(
            f"filling epoch {step} of {trial_id}",
            lambda: tracker.client.log_batch(run_id, metrics=items),
        ),
    )


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
