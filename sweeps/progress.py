"""A live sweep on the console: trial starts and ends, progress, ETA, and a heartbeat.

:class:`ProgressCallback` is a Tune callback of the driver (docs/architecture.md §4). It prints

- a start line per trial, at most :data:`MAX_LINE` characters: its number, baseline and the
  values the sweep varied (``#08 start  ssr op=32 out=12 thr=.15 seed=1``), or, for a trial
  that ran before (a lost node, a resumed sweep), where it was
  (``#08 resumed from its last checkpoint (was at search 3/16)``);
- an end line per trial: its status and objectives (and ``resumed 1x`` when it continued from
  a checkpoint, after a lost node or a resumed sweep), the epoch and score at which the
  scheduler stopped it, or the first line of its error; followed by the progress line;
- the progress line: trials done/total and running, time elapsed, the estimated time left and
  the size of the Pareto front of the complete trials so far
  (``[5/16] 2 running | 4m12s elapsed, ETA ~9m | front 3``);
- every :data:`HEARTBEAT_S` seconds the progress line with each running trial's phase and
  epoch (``#06 search 3/16``), so a sweep whose first epoch takes minutes still shows life.

``--quiet`` turns all of it off (warnings, errors and the final report still print). The ETA
counts epochs: each trial's budget is ``search_epochs + retrain_epochs + 1`` reports, and the
rate is the epochs done in this invocation over its time; trials a scheduler stops early end
sooner than it assumes, so it errs long.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from ray.tune import Callback

from sweeps.contract.protocol import COMPLETE, EARLY_STOPPED, FAILED, is_finite_number
from sweeps.define.definition import Sweep
from sweeps.record.results import ResultsTable
from sweeps.tracking.names import settings_text, short_value, trial_number

#: Seconds between heartbeats (the running trials' phases and epochs).
HEARTBEAT_S = 30.0
#: Longest start line (characters).
MAX_LINE = 100
#: Running trials listed in a heartbeat before "+N more".
MAX_LISTED = 6


def varied_keys(sweep: Sweep) -> list[str]:
    """The keys of the sweep's space that are sampled (not constants)."""
    return [p.key for p in sweep.params if p.kind != "const"]


def duration(seconds: float) -> str:
    """``47s``, ``4m12s``, ``1h02m``."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def clip(text: str, limit: int = MAX_LINE) -> str:
    """``text`` cut to ``limit`` characters (``...`` marks a cut)."""
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def number(trial: Any) -> str:
    """The trial's number in the sweep (``#08``)."""
    return trial_number(trial.trial_id, getattr(trial, "experiment_tag", None))


def start_line(number: str, config: dict[str, Any], varied: Sequence[str] | None) -> str:
    """``#08 start  ssr op=32 out=12 thr=.15 seed=1`` (at most :data:`MAX_LINE` characters)."""
    return clip(f"{number} start  {settings_text(config, varied)}")


def phase_epoch(result: dict[str, Any] | None, search_epochs: int, retrain_epochs: int) -> str:
    """Where a running trial is: ``search 3/16``, ``retrain 2/3``, or ``starting``."""
    step = (result or {}).get("step")
    if not isinstance(step, (int, float)) or step != step or step < 1:
        return "starting"
    step = int(step)
    if int((result or {}).get("phase") or 0) == 1 or step > search_epochs:
        return f"retrain {max(1, step - search_epochs)}/{retrain_epochs}"
    return f"search {step}/{search_epochs}"


def end_line(
    number: str,
    row: dict[str, Any],
    objectives: Sequence[str],
    max_t: int,
    scheduler_metric: str,
    last: dict[str, Any] | None,
) -> str:
    """One line for a finished trial: objectives when complete, epoch and score when stopped
    early, the first line of the error when failed."""
    head = f"{number} {row.get('status')}"
    status = row.get("status")
    if status == COMPLETE:
        values = [f"{m}={short_value(row[m])}" for m in objectives if row.get(m) is not None]
        geno = f"genotype {row['genotype_id']}" if row.get("genotype_id") else ""
        wall = duration(row["wall_s"]) if isinstance(row.get("wall_s"), (int, float)) else ""
        resumes = int(row["resumes"]) if is_finite_number(row.get("resumes")) else 0
        resumed = f"resumed {resumes}x" if resumes else ""  # a lost node, or a resumed sweep
        return "  ".join(p for p in (head, " ".join(values), geno, wall, resumed) if p)
    if status == EARLY_STOPPED:
        last = last or {}
        step = last.get("step", row.get("iterations"))
        at = f"at epoch {int(step)}/{max_t - 1}" if isinstance(step, (int, float)) else ""
        score = last.get(scheduler_metric)
        value = f"{scheduler_metric}={short_value(score)}" if is_finite_number(score) else ""
        return "  ".join(p for p in (head, at, value) if p)
    if status == FAILED:
        lines = [ln for ln in str(row.get("error") or "").splitlines() if ln.strip()]
        return f"{head}: {(lines[0] if lines else 'no error text')[:200]}"
    return head


def progress_line(
    done: int, total: int | None, running: int, elapsed: float, eta: float | None, front: int
) -> str:
    """``[5/16] 2 running | 4m12s elapsed, ETA ~9m12s | front 3``."""
    count = f"[{done}/{total}]" if total and total > 0 else f"[{done}]"
    timing = f"{duration(elapsed)} elapsed" + (f", ETA ~{duration(eta)}" if eta is not None else "")
    return f"{count} {running} running | {timing} | front {front}"


def eta_seconds(
    elapsed: float, progress: float, progress_at_start: float, total: int | None
) -> float | None:
    """Time left at the rate of this invocation: ``progress`` and ``total`` in trials (a running
    trial counts by the share of its epochs done); None before there is a rate."""
    gained = progress - progress_at_start
    if not total or total <= 0 or gained <= 0 or elapsed <= 0:
        return None
    return max(0.0, (total - progress) * elapsed / gained)


def front_size(rows: Sequence[dict[str, Any]], objectives: Sequence[tuple[str, str]]) -> int:
    """Points on the Pareto front of the complete rows (their objectives all finite)."""
    import numpy as np

    from analysis.pareto import pareto_mask

    cols = [m for m, _ in objectives]
    pts = [
        [float(r[c]) for c in cols]
        for r in rows
        if r.get("status") == COMPLETE and all(isinstance(r.get(c), (int, float)) for c in cols)
    ]
    if not pts:
        return 0
    return int(pareto_mask(np.asarray(pts), [d == "max" for _, d in objectives]).sum())


class RunningFront:
    """The Pareto front of the complete rows so far, kept up to date one finished trial at a
    time: O(front) per trial where :func:`front_size` over the whole table is O(n log n) per
    trial, O(n^2 log n) per sweep (``benchmarks/driver_scale.py``). Equal points are all kept
    and rows with a missing or non-finite objective are left out, as :func:`front_size` does.
    """

    def __init__(self, objectives: Sequence[tuple[str, str]]) -> None:
        self.objectives = list(objectives)
        self.points: dict[str, tuple[float, ...]] = {}  # trial_id -> objectives, all maximised
        self.rows: Callable[[], Sequence[dict[str, Any]]] | None = None

    def _point(self, row: dict[str, Any]) -> tuple[float, ...] | None:
        values = [row.get(m) for m, _ in self.objectives]
        if row.get("status") != COMPLETE or not all(is_finite_number(v) for v in values):
            return None
        return tuple(
            float(v) if d == "max" else -float(v) for v, (_, d) in zip(values, self.objectives)
        )

    @staticmethod
    def _dominates(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
        return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))

    def reset(self, rows: Sequence[dict[str, Any]]) -> None:
        """The front of ``rows`` from scratch."""
        self.points = {}
        for row in rows:
            self.add(row)

    def add(self, row: dict[str, Any]) -> None:
        """Account for a finished trial's row (a new one, or one that changed)."""
        trial_id, p = str(row["trial_id"]), self._point(row)
        old = self.points.get(trial_id)
        if old is not None and old != p and self.rows is not None:
            self.reset([r for r in self.rows() if str(r["trial_id"]) != trial_id])  # rare
        if p is None or any(self._dominates(q, p) for t, q in self.points.items() if t != trial_id):
            self.points.pop(trial_id, None)
            return
        self.points = {t: q for t, q in self.points.items() if not self._dominates(p, q)}
        self.points[trial_id] = p

    def __len__(self) -> int:
        return len(self.points)


class ProgressCallback(Callback):
    """Tune callback (driver side) printing the sweep's progress (see the module docstring)."""

    def __init__(
        self,
        sweep: Sweep,
        table: ResultsTable,
        varied: Sequence[str] | None = None,
        verbose: bool = True,
        heartbeat_s: float = HEARTBEAT_S,
        clock: Callable[[], float] = time.monotonic,
        out: Callable[[str], None] | None = None,
    ) -> None:
        self.sweep = sweep
        self.table = table
        self.varied = list(varied) if varied is not None else varied_keys(sweep)
        self.verbose = verbose
        self.heartbeat_s = heartbeat_s
        self.clock = clock
        self.out = out
        self.total: int | None = sweep.spec.num_samples
        self.trials: list[Any] = []
        self.t0 = clock()
        self.last_beat = self.t0
        self.progress_at_start = float(len(table))
        self.front = RunningFront([(o.metric, o.mode) for o in sweep.spec.objectives])
        self.front.rows = table.rows
        self.front.reset(table.rows())

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment state: the settings only
        keys = ("sweep", "table", "varied", "verbose", "heartbeat_s")
        return {k: getattr(self, k) for k in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def _print(self, line: str) -> None:
        if not self.verbose:
            return
        if self.out is not None:
            self.out(line)
        else:
            print(line, flush=True)

    # ---- what the line says ----------------------------------------------------------------
    def _running(self) -> list[Any]:
        return [t for t in self.trials if getattr(t, "status", None) == "RUNNING"]

    def _progress(self) -> float:
        done = len(self.table)
        budget = max(1, self.sweep.max_t)
        partial = sum(
            min(1.0, float((t.last_result or {}).get("step") or 0) / budget)
            for t in self._running()
            if t.trial_id not in self.table
        )
        return done + partial

    def status_line(self) -> str:
        """The progress line now."""
        elapsed = self.clock() - self.t0
        eta = eta_seconds(elapsed, self._progress(), self.progress_at_start, self.total)
        return progress_line(
            len(self.table), self.total, len(self._running()), elapsed, eta, len(self.front)
        )

    def heartbeat_line(self) -> str:
        """The progress line with each running trial's phase and epoch."""
        b = self.sweep.spec.budget
        running = [t for t in self._running() if t.trial_id not in self.table]
        parts = [
            f"{number(t)} {phase_epoch(t.last_result, b.search_epochs, b.retrain_epochs)}"
            for t in running[:MAX_LISTED]
        ]
        if len(running) > MAX_LISTED:
            parts.append(f"+{len(running) - MAX_LISTED} more")
        return self.status_line() + (" | " + ", ".join(parts) if parts else "")

    # ---- Tune's hooks --------------------------------------------------------------------
    def setup(self, total_num_samples: int | None = None, **info: Any) -> None:
        if total_num_samples and total_num_samples > 0:
            self.total = total_num_samples
        self.t0 = self.last_beat = self.clock()
        self.progress_at_start = float(len(self.table))
        self.front.reset(self.table.rows())

    def on_step_end(self, iteration: int, trials: list[Any], **info: Any) -> None:
        self.trials = trials
        now = self.clock()
        if now - self.last_beat >= self.heartbeat_s:
            self.last_beat = now
            self._print(self.heartbeat_line())

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.trials = trials
        if (trial.last_result or {}).get("step"):  # it ran before: a lost node, a resumed sweep
            self.on_trial_restore(iteration, trials, trial)
            return
        self._print(start_line(number(trial), trial.config, self.varied))

    def on_trial_restore(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        # NOTE: Tune 2.60 never calls this hook; on_trial_start does, for a trial that ran before
        self.trials = trials
        b = self.sweep.spec.budget
        where = phase_epoch(trial.last_result, b.search_epochs, b.retrain_epochs)
        self._print(clip(f"{number(trial)} resumed from its last checkpoint (was at {where})"))

    def _ended(self, trials: list[Any], trial: Any) -> None:
        self.trials = trials
        row = self.table.get(trial.trial_id)
        if row is None:  # the results callback runs first; without a row there is nothing to say
            return
        self.front.add(row)
        s = self.sweep
        objectives = [o.metric for o in s.spec.objectives]
        last = trial.last_result
        self._print(
            end_line(number(trial), row, objectives, s.max_t, s.spec.scheduler.metric, last)
        )
        self._print(self.status_line())

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trials, trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._ended(trials, trial)
