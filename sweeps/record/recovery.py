"""What a resumed driver repairs before Tune restores: failed trials, a damaged results table.

**Failed trials stay failed.** Ray 2.60 does not mark a trial for its next experiment snapshot
when the trial's actor is already gone as it fails (a SIGKILLed worker, a lost node): the
snapshot keeps listing the trial as RUNNING, and ``Tuner.restore`` would run it again. The
results table is the driver's own record of how each trial ended (written the moment Tune reports
the error), so :func:`settle_failed` sets those trials to ERROR in Tune's saved state, with its
error files, before the restore: ``--resume`` leaves them as they are, ``--retry-failed`` resumes
them from their last checkpoints (``Tuner.restore(resume_errored=True)``). Without a readable
table, a trial whose ``error.txt`` records more failures than ``max_failures`` allows is taken as
failed. The state is Tune's private JSON (``experiment_state-*.json``: per trial a JSON state with
``status`` and a JSON run metadata with ``error_filename``), rewritten atomically;
``tests/sweeps/test_faults.py`` fails when a Ray release changes what a resume then does.

**A damaged ``results.parquet``** (truncated, not Parquet) is moved aside as
``results.parquet.damaged-<time>`` (:func:`set_aside_damaged`) and its rows are rebuilt from Tune's
saved trials (:func:`rebuild_rows`: config, last report, error), the same way the driver fills
rows a killed driver never wrote.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ssr.files.atomic import atomic_write
from sweeps.contract.protocol import EARLY_STOPPED, FAILED, TRIAL_DIR_PREFIX
from sweeps.record.results import (
    DamagedResults,
    ResultsTable,
    build_row,
    error_text,
    read_rows,
    trial_status,
)

log = logging.getLogger("sweeps")

#: Tune's experiment snapshots in an experiment folder.
STATE_GLOB = "experiment_state-*.json"
#: Tune's error files in a trial folder (``EXPR_ERROR_FILE``, ``EXPR_ERROR_PICKLE_FILE``).
ERROR_FILES = ("error.txt", "error.pkl")
FINISHED = ("TERMINATED", "ERROR")


def set_aside_damaged(path: Path) -> Path | None:
    """Move an unreadable results file aside; its new path, or None when it reads fine."""
    if not path.is_file():
        return None
    try:
        read_rows(path)
        return None
    except DamagedResults as exc:
        aside = path.with_name(f"{path.name}.damaged-{_dt.datetime.now():%Y%m%d-%H%M%S}")
        path.rename(aside)
        log.warning("%s; moved to %s, its rows are rebuilt from Tune's records", exc, aside)
        return aside


def failure_count(trial_dir: Path) -> int:
    """Failures Tune recorded in a trial folder's ``error.txt`` (``Failure # N`` lines)."""
    path = trial_dir / ERROR_FILES[0]
    if not path.is_file():
        return 0
    return len(re.findall(r"^Failure # \d+", path.read_text(errors="replace"), re.M))


def failed_trials(exp_dir: Path, table_path: Path, max_failures: int) -> set[str]:
    """Trial ids that ended failed: ``failed`` rows of the table (when it can be read) and trial
    folders whose ``error.txt`` records more than ``max_failures`` failures (Tune retries a
    trial up to ``max_failures`` times; -1: forever)."""
    out = set()
    with contextlib.suppress(DamagedResults):  # NOTE: the table with its journal's rows
        rows = ResultsTable(table_path).rows()
        out = {str(r["trial_id"]) for r in rows if r.get("status") == FAILED}
    if max_failures >= 0:
        for d in exp_dir.glob(f"{TRIAL_DIR_PREFIX}*"):
            if failure_count(d) > max_failures:
                out.add(d.name.removeprefix(TRIAL_DIR_PREFIX))
    return out


def settle_failed(exp_dir: Path, failed: Iterable[str]) -> list[str]:
    """Set ``failed`` trials that Tune's saved state lists as unfinished to ERROR; their ids."""
    failed = set(failed)
    changed: set[str] = set()
    for state_file in sorted(exp_dir.glob(STATE_GLOB)):
        state = json.loads(state_file.read_text())
        touched = False
        for entry in state.get("trial_data", []):
            trial = json.loads(entry[0])
            tid = trial.get("trial_id")
            if tid not in failed or trial.get("status") in FINISHED:
                continue
            trial["status"] = "ERROR"
            entry[0] = json.dumps(trial, indent=2)
            if len(entry) > 1:
                meta = json.loads(entry[1])
                trial_dir = exp_dir / f"{TRIAL_DIR_PREFIX}{tid}"
                for key, name in zip(("error_filename", "pickled_error_filename"), ERROR_FILES):
                    if (trial_dir / name).is_file():
                        meta[key] = name
                entry[1] = json.dumps(meta, indent=2)
            changed.add(tid)
            touched = True
        if touched:
            atomic_write(state_file, json.dumps(state))
    if changed:
        log.info("trial(s) %s ended failed: kept as failed", ", ".join(sorted(changed)))
    return sorted(changed)


def rebuild_rows(table: ResultsTable, exp_dir: Path, sweep_name: str) -> int:
    """Rows for the finished trials of Tune's saved state that the table lacks; how many."""
    from ray.tune import ExperimentAnalysis

    if not any(exp_dir.glob(STATE_GLOB)):  # Tune never saved a state: nothing finished
        return 0
    try:
        trials: list[Any] = list(ExperimentAnalysis(str(exp_dir)).trials)
    except Exception as exc:  # no readable state: the rows come back at the end of the fit
        log.warning("cannot read Tune's experiment state in %s: %s", exp_dir, exc)
        return 0
    added = 0
    for t in trials:
        if t.status not in FINISHED or t.trial_id in table:
            continue
        status = trial_status(t)
        error = error_text(t) if status == FAILED else None
        if status == EARLY_STOPPED:
            error = "stopped early by the scheduler (low-fidelity values)"
        table.upsert(
            build_row(sweep_name, t.trial_id, t.config, t.last_result or {}, status, error)
        )
        added += 1
    if added:
        table.write()
        log.info("rebuilt %d result row(s) from Tune's experiment state", added)
    return added
