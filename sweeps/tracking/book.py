"""The run book of a sweep: what each trial's MLflow run already holds, kept by one owner.

Nothing of a sweep may reach MLflow twice, also across a killed and resumed driver, so the
tracking code remembers per trial its child run, its number in the sweep (``#08``), whether the
run's params are complete, the last per-epoch step the run holds, whether its final record is
in, and its logged model. :class:`RunBook` holds all of it; the other tracking modules read and
change it only through its methods (docs/architecture.md §4).

**One step, once.** A per-epoch step is checked against the run's last step and the last step
advanced in one critical section per run (:meth:`RunBook.log_step`), with the write inside it.
The last step is what the store holds, never a separate marker:

- on attaching to a sweep it is read from the run's metrics (the largest step among them),
  because a marker written beside them can be lost: MLflow's SQL store commits the metrics and
  the tags of one ``log_batch`` in separate transactions, so a driver killed between the two
  left a step whose marker said it was missing, and the resumed trial logged it again;
- after a write that failed it is unknown: the write may have landed (the driver's HTTP call
  timed out after the server committed, or the store raised after its first commit), so it is
  read back from the store before the run takes another step.

**A gap below the last step.** A killed driver's MLflow writer loses the events still queued;
a trial it ran continues from its checkpoint in the resumed sweep and reports only the epochs
after it, so its run can hold steps {1, 3} with 2 missing below the last. The end-of-sweep sync
fills such a step from Tune's history (:func:`sweeps.tracking.sync.fill_gaps`) having read
which steps the store holds, past the last-step rule (:meth:`RunBook.fill_step`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

#: Reads a run's last step from the store; None when the store cannot answer now.
StepReader = Callable[[], "int | None"]


@dataclass
class _Run:
    """What one trial's child run holds."""

    run_id: str
    #: Last step the run holds; None: unknown since a write that may have landed.
    last_step: int | None = 0
    params_done: bool = False
    final: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


class RunBook:
    """The child runs of a sweep's trials and what each holds; safe to use from threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._runs: dict[str, _Run] = {}
        self._numbers: dict[str, str] = {}  # trial id -> its number in the sweep ("#08")
        self._models: dict[str, str] = {}  # trial id -> its logged model's id

    # ---- runs ---------------------------------------------------------------------------------
    def add(self, trial_id: str, run_id: str, last_step: int = 0, final: bool = False) -> str:
        """Record ``run_id`` as the trial's run (a trial keeps the first run recorded: the oldest,
        when runs are read in start order); returns the trial's run id. Reading the same run
        again (the store may hold more than this book knows: another copy of the callback)
        raises its last step and final flag to what was read."""
        with self._lock:
            run = self._runs.setdefault(trial_id, _Run(run_id, last_step, final=final))
        if run.run_id == run_id:
            with run.lock:
                if run.last_step is not None:
                    run.last_step = max(run.last_step, last_step)
                run.final = run.final or final
        return run.run_id

    def run_id(self, trial_id: str) -> str | None:
        """The trial's child run, if recorded."""
        run = self._runs.get(trial_id)
        return run.run_id if run else None

    def trials(self) -> list[str]:
        """The trials that have a run."""
        with self._lock:
            return list(self._runs)

    def forget(self, trial_id: str) -> None:
        """Drop the trial's run (a removed orphan)."""
        with self._lock:
            self._runs.pop(trial_id, None)

    def _run(self, trial_id: str) -> _Run:
        run = self._runs.get(trial_id)
        if run is None:
            raise KeyError(f"trial {trial_id} has no run in the run book")
        return run

    # ---- params, final record, numbers, models ------------------------------------------------
    def params_done(self, trial_id: str) -> bool:
        """True once the run's params are known to be complete."""
        run = self._runs.get(trial_id)
        return bool(run and run.params_done)

    def mark_params(self, trial_id: str) -> None:
        """The run's params are complete."""
        self._run(trial_id).params_done = True

    def is_final(self, trial_id: str) -> bool:
        """True once the trial's final record is in its run."""
        run = self._runs.get(trial_id)
        return bool(run and run.final)

    def mark_final(self, trial_id: str, step: int) -> None:
        """The final record is in, at ``step``: later values (the re-measurement) go there."""
        run = self._run(trial_id)
        with run.lock:
            run.final = True
            run.last_step = max(run.last_step or 0, step)

    def reopen(self, trial_id: str) -> None:
        """The trial runs again (``--retry-failed``): its run takes a new final record."""
        run = self._runs.get(trial_id)
        if run is not None:
            run.final = False

    def number(self, trial_id: str) -> str | None:
        """The trial's number in the sweep (``#08``), if known."""
        return self._numbers.get(trial_id)

    def note_number(self, trial_id: str, number: str) -> None:
        """Remember the trial's number (the first one seen stays)."""
        with self._lock:
            self._numbers.setdefault(trial_id, number)

    def model_id(self, trial_id: str) -> str | None:
        """The id of the trial's logged model, if known."""
        return self._models.get(trial_id)

    def note_model(self, trial_id: str, model_id: str) -> None:
        """Remember the trial's logged model."""
        with self._lock:
            self._models[trial_id] = model_id

    # ---- steps --------------------------------------------------------------------------------
    def last_step(self, trial_id: str, read: StepReader) -> int | None:
        """The last step the trial's run holds (read from the store when a failed write left it
        unknown); None when it is unknown and the store cannot answer."""
        run = self._run(trial_id)
        with run.lock:
            return self._known(run, read)

    def log_step(
        self, trial_id: str, step: int, write: Callable[[], bool], read: StepReader
    ) -> bool:
        """Write ``step`` once: unless the run already holds it, ``write()`` it and advance the run's
        last step, all in the run's critical section. True when the run holds the step after
        the call; False when the store could not take it (it is unknown then whether it did)."""
        run = self._run(trial_id)
        with run.lock:
            last = self._known(run, read)
            if last is None:
                return False
            if step <= last:
                return True
            if write():
                run.last_step = step
                return True
            run.last_step = None
            return False

    def fill_step(self, trial_id: str, step: int, write: Callable[[], bool]) -> bool:
        """Write ``step`` whatever the run's last step: a step the store was just read not to hold
        (a gap a killed driver left below the last step). True when it was written; a failed
        write leaves the last step unknown, as in :meth:`log_step`."""
        run = self._run(trial_id)
        with run.lock:
            if write():
                if run.last_step is not None:
                    run.last_step = max(run.last_step, step)
                return True
            run.last_step = None
            return False

    def unsure(self, trial_id: str) -> None:
        """A write to the trial's run failed and may have landed: read its last step back."""
        run = self._runs.get(trial_id)
        if run is not None:
            with run.lock:
                run.last_step = None

    @staticmethod
    def _known(run: _Run, read: StepReader) -> int | None:
        if run.last_step is None:
            run.last_step = read()
        return run.last_step
