"""``<run folder>/results.parquet``: one row per trial in the :mod:`analysis.schema` record.

Rows are built in the driver from what Tune hands over (the trial config and its last report).
Each finished trial's row is appended at once to a journal beside the table,
``results.journal.jsonl`` (one JSON row per line), so a killed driver loses nothing that
finished; the table itself is rewritten atomically (:func:`ssr.files.atomic.atomic_path`) only when the
journal holds :data:`COMPACT_FRACTION` of the rows or is :data:`COMPACT_S` seconds old, and at
the end of the sweep, after which the journal is emptied. Rewriting the whole file for every
trial would cost O(n) per trial, O(n^2) per sweep (``benchmarks/driver_scale.py``). Every reader
of the table in the driver (:class:`ResultsTable`) replays the journal over the file. With a
remote ``--storage`` each change is copied to the store (:mod:`sweeps.runtime.mirror`). Early-stopped (ASHA) and failed trials get a row too, marked
by ``status`` and ``error``, so that analysis can leave them out of the fronts (an ASHA-stopped
trial carries low-fidelity values, docs/stack.md §2). A resumed sweep starts from the rows on disk.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ssr.files.atomic import atomic_path, finite
from sweeps.contract.params import flat_params
from sweeps.contract.protocol import (
    COMPLETE,
    EARLY_STOPPED,
    FAILED,
    FINAL_KEY,
    NUMERIC_FIELDS,
    TEXT_FIELDS,
    TRIAL_DIR_PREFIX,
    is_finite_number,
)
from sweeps.runtime.rundir import journal_path, run_mirror

log = logging.getLogger(__name__)

#: The table is rewritten once the journal holds this share of its rows (amortised O(1) per row;
#: every row is durable in the journal at once, and readers replay it).
COMPACT_FRACTION = 0.1
#: ... or once the oldest row of the journal is this many seconds old (fresh for other readers).
COMPACT_S = 30.0


def _plain(value: Any) -> Any:
    """A JSON value for a numpy scalar (or, failing that, its text)."""
    return value.item() if hasattr(value, "item") else str(value)


def read_journal(path: Path) -> list[dict[str, Any]]:
    """The rows of a journal in order; a line cut short by a killed driver is skipped."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("trial_id") is not None:
            rows.append({k: v for k, v in rec.items() if v is not None})
    return rows


def trial_status(trial: Any) -> str:
    """``failed`` (errored), ``complete`` (final record reported) or ``early_stopped``."""
    if getattr(trial, "status", None) == "ERROR":
        return FAILED
    return COMPLETE if (trial.last_result or {}).get(FINAL_KEY) == 1.0 else EARLY_STOPPED


def error_text(trial: Any, limit: int = 2000) -> str:
    """The exception line of a failed trial (Tune's error.txt), with the traceback's tail."""
    text = ""
    local = getattr(trial, "error_file", None)  # the driver's copy, there at once
    if local and Path(local).is_file():
        text = Path(local).read_text(errors="replace")
    if not text.strip():
        try:
            text = trial.get_error() or ""
        except Exception as exc:  # storage unreachable: say so rather than lose the row
            text = f"(error text unavailable: {exc})"
    lines = [ln for ln in str(text).splitlines() if ln.strip()]
    if not lines:
        return "trial failed (no error text)"
    last = lines[-1].strip()
    for ln in reversed(lines):  # Ray appends its own lines after the exception; find it
        if not ln.startswith((" ", "\t")) and ":" in ln and "Traceback" not in ln:
            last = ln.strip()
            break
    tail = "\n".join(lines[-20:])
    return (last + ("\n---\n" + tail if tail != last else ""))[:limit]


def build_row(
    sweep: str,
    trial_id: str,
    config: dict[str, Any],
    last: dict[str, Any],
    status: str,
    error: str | None = None,
) -> dict[str, Any]:
    """One record from a trial's config and last report (schema columns + a few extras)."""
    row: dict[str, Any] = {
        "sweep": sweep,
        "trial_id": trial_id,
        "status": status,
        "error": error,
        "dataset": ((config.get("base") or {}).get("search", {}).get("data", {}) or {}).get(
            "name", "synthetic"
        ),
    }
    try:
        row.update(flat_params(config))
    except Exception as exc:  # a row must never be lost to a config problem
        log.warning("trial %s: cannot resolve its config for cfg.* columns: %s", trial_id, exc)
    for key in TEXT_FIELDS:
        if isinstance(last.get(key), str) and last[key]:
            row[key] = last[key]
    for key in NUMERIC_FIELDS:
        if is_finite_number(last.get(key)):
            row[key] = float(last[key])
    if status == COMPLETE:
        row["fps_shared_device"] = True
    it = last.get("step", last.get("training_iteration"))
    if is_finite_number(it):
        row["iterations"] = int(it)
    if is_finite_number(last.get("time_total_s")):
        row["wall_s"] = float(last["time_total_s"])
    return row


class DamagedResults(RuntimeError):
    """``results.parquet`` exists but cannot be read (truncated, not Parquet, no trial ids)."""


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a results file, missing values left out; :class:`DamagedResults` (one line
    naming the file) when it cannot be read."""
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
        if "trial_id" not in frame.columns:
            raise ValueError("no trial_id column")
        records = frame.astype(object).where(frame.notna(), None).to_dict("records")
    except Exception as exc:  # pyarrow's ArrowInvalid, OSError, ValueError, ...
        why = " ".join(str(exc).split())[:200]
        raise DamagedResults(f"{path} cannot be read ({type(exc).__name__}: {why})") from None
    return [{k: v for k, v in rec.items() if v is not None} for rec in records]


class ResultsTable:
    """The rows of one sweep, keyed by trial id, mirrored to Parquet on every change.

    A file that cannot be read raises :class:`DamagedResults`; a resumed driver then rebuilds
    the rows from Tune's records (:func:`sweeps.driver.set_aside_damaged`).
    """

    def __init__(
        self, path: Path, objectives: list[tuple[str, bool]] | None = None, load: bool = True
    ) -> None:
        self.path = Path(path)
        #: The columns the sweep's front ranks, (column, maximise): recorded in the file's
        #: schema metadata (``ssr.objectives``) so that every view ranks the same front.
        self.objectives = list(objectives) if objectives is not None else None
        self._rows: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._order = 0  # the largest completion_order so far
        self._pending = 0  # rows in the journal since the table was last written
        self._journal_since: float | None = None
        #: The run's copy in object storage (``--storage s3://...``), kept current on every
        #: change (:mod:`sweeps.runtime.mirror`); None for a local run.
        self.mirror = run_mirror(self.path.parent) if load else None
        if load and self.path.is_file():
            for rec in read_rows(self.path):
                self._rows[str(rec["trial_id"])] = rec
        if load:
            for rec in read_journal(journal_path(self.path)):
                self._rows[str(rec["trial_id"])] = rec
                self._pending += 1
        self._order = max(
            (int(r.get("completion_order") or 0) for r in self._rows.values()), default=0
        )

    def __contains__(self, trial_id: str) -> bool:
        return trial_id in self._rows

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, trial_id: str) -> dict[str, Any] | None:
        return self._rows.get(trial_id)

    def rows(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self._rows.values()]

    def upsert(self, row: dict[str, Any]) -> dict[str, Any]:
        """Insert or update a row; a new finished trial gets the next ``completion_order``."""
        with self._lock:
            old = self._rows.get(row["trial_id"], {})
            merged = {**old, **{k: v for k, v in row.items() if v is not None}}
            if row.get("status") is not None and row.get("error") is None:
                merged.pop("error", None)  # a trial that ran again keeps no old error
            if "completion_order" not in merged:
                self._order += 1
                merged["completion_order"] = self._order
            self._rows[row["trial_id"]] = merged
            return dict(merged)

    def record(self, row: dict[str, Any]) -> dict[str, Any]:
        """:meth:`upsert` a finished trial's row and make it durable: appended to the journal at
        once, the table rewritten when the journal is due (see the module docstring)."""
        import time

        merged = self.upsert(row)
        with self._lock:
            line = json.dumps(finite(merged), allow_nan=False, default=_plain)
            with open(journal_path(self.path), "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            self._pending += 1
            if self._journal_since is None:
                self._journal_since = time.monotonic()
            due = self._pending >= max(1.0, COMPACT_FRACTION * len(self._rows))
            due = due or time.monotonic() - self._journal_since >= COMPACT_S
        if due:
            self.write()
        elif self.mirror is not None:
            self.mirror.sync()
        return merged

    def update_many(self, trial_ids: Iterable[str], values: dict[str, Any]) -> None:
        with self._lock:
            for t in trial_ids:
                if t in self._rows:
                    self._rows[t].update(values)

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment; the rows are reloaded from disk
        return {"path": str(self.path), "objectives": self.objectives}

    def __setstate__(self, state: dict[str, Any]) -> None:
        try:
            self.__init__(Path(state["path"]), state.get("objectives"))
        except DamagedResults:  # NOTE: unpickled with Tune's state; the driver says what to do
            self.__init__(Path(state["path"]), state.get("objectives"), load=False)

    def frame(self) -> Any:
        """Canonical DataFrame (:func:`analysis.schema.coerce_records`, validated)."""
        from analysis.schema import records_frame

        return records_frame(self.rows())

    def write(self) -> Path:
        """Atomically replace ``results.parquet`` with the current rows; empty the journal."""
        from analysis.schema import write_records

        with self._lock:
            rows = self.rows()
            with atomic_path(self.path) as tmp:  # NOTE: write_records coerces and validates once
                write_records(rows, tmp, objectives=self.objectives)
            journal_path(self.path).unlink(missing_ok=True)  # NOTE: its rows are in the file now
            self._pending, self._journal_since = 0, None
        if self.mirror is not None:
            self.mirror.sync(force=True)
        return self.path


class ResultsCallback(Callback):
    """Tune callback (driver side): a row per trial as soon as it ends, written at once.

    It writes rows only; the console lines are :class:`sweeps.progress.ProgressCallback`'s.
    """

    def __init__(self, table: ResultsTable, sweep: str) -> None:
        self.table = table
        self.sweep = sweep
        self.trials: list[Any] = []

    def __getstate__(self) -> dict[str, Any]:
        return {"table": self.table, "sweep": self.sweep, "trials": []}

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.trials = trials

    def _record(self, trial: Any, status: str, error: str | None) -> None:
        row = build_row(
            self.sweep, trial.trial_id, trial.config, trial.last_result or {}, status, error
        )
        if not row.get("node") and getattr(trial, "node_ip", None):
            row["node"] = trial.node_ip
        try:
            self.table.record(row)
        except Exception as exc:  # keep the sweep going; the row stays in memory and in Tune
            log.warning("could not write %s: %s", self.table.path, exc)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        status = trial_status(trial)
        error = None
        if status == EARLY_STOPPED:
            last = trial.last_result or {}
            error = (
                f"stopped early by the scheduler after {last.get('training_iteration', '?')} "
                f"reports (low-fidelity values; not a final record)"
            )
        self._record(trial, status, error)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._record(trial, FAILED, error_text(trial))


def result_trial_id(result: Any) -> str:
    """The trial id of a ResultGrid entry (from its last report, else its folder name)."""
    metrics = result.metrics or {}
    return str(metrics.get("trial_id") or Path(result.path).name.removeprefix(TRIAL_DIR_PREFIX))


def row_from_result(sweep: str, result: Any) -> dict[str, Any]:
    """A row from a ResultGrid entry (used to fill rows a killed driver never wrote)."""
    last = dict(result.metrics or {})
    trial_id = result_trial_id(result)
    if result.error is not None:
        lines = str(result.error).strip().splitlines()
        return build_row(
            sweep, trial_id, result.config or {}, last, FAILED, lines[-1] if lines else "failed"
        )
    status = COMPLETE if last.get(FINAL_KEY) == 1.0 else EARLY_STOPPED
    err = None if status == COMPLETE else "stopped early by the scheduler (low-fidelity values)"
    return build_row(sweep, trial_id, result.config or {}, last, status, err)


def genotype_json(row: dict[str, Any]) -> str | None:
    """The row's genotype as compact JSON text (None when the trial has none)."""
    g = row.get("genotype")
    if not g:
        return None
    try:
        return json.dumps(json.loads(g), separators=(",", ":"))
    except (TypeError, ValueError):
        return str(g)
