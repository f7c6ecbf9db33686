"""The one epoch driver of search and retraining: resume, history, checkpoint cadence, reports.

Search (:mod:`ssr.method.search`) and retraining (:mod:`ssr.run.retrain`) run different epochs around the
same :func:`ssr.train.loop.run_epoch`, and share everything between two epochs, which lives here so
that it is done once and the same way:

- **resume**: the last checkpoint (if any) gives the epoch to start from, the history so far
  and the RNG state; the caller restores its own parts (weights, optimisers, ...) from it;
- **history**: one row per epoch, appended in order (and, with ``history_file``, written after
  every epoch, so a stopped run keeps what it measured);
- **checkpoints**: every ``checkpoint_every`` epochs and after the last one, the caller's
  state with the epoch, history and RNG state, written atomically (:mod:`ssr.train.checkpoint`);
- **reports**: ``reporter(metrics, epoch)`` after the checkpoint of that epoch, since a
  reporter may stop the process (Ray Tune does) and a resumed run must not redo the epoch.
  The metrics are the row's float values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssr.files.atomic import write_jsonl
from ssr.train.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ssr.train.loop import Reporter

__all__ = ["EpochDriver"]

log = logging.getLogger(__name__)


@dataclass
class EpochDriver:
    """Epochs ``start + 1 .. epochs`` (1-based) of one run; see the module docstring.

    ``checkpoint`` is the run's last checkpoint (None: none written, no resume);
    ``history_file`` the JSON-lines history rewritten after every epoch (None: not written).
    """

    epochs: int
    checkpoint_every: int
    checkpoint: Path | None = None
    reporter: Reporter | None = None
    history_file: Path | None = None
    start: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)

    def resume(self, restore: Callable[[dict[str, Any]], None]) -> bool:
        """Continue from ``checkpoint`` if it exists: ``restore(state)`` sets the caller's parts,
        then the epoch, history and RNG state are taken. False when there is nothing to resume."""
        if self.checkpoint is None or not self.checkpoint.is_file():
            return False
        state = load_checkpoint(self.checkpoint)
        restore(state)
        self.start, self.history = int(state["epoch"]), list(state["history"])
        set_rng_state(state["rng"])
        log.info("resumed from %s after epoch %d", self.checkpoint, self.start)
        return True

    def run(
        self,
        epoch: Callable[[int], dict[str, Any]],
        state: Callable[[], dict[str, Any]],
        stop: Callable[[], bool] = lambda: False,
    ) -> list[dict[str, Any]]:
        """Run the remaining epochs: ``epoch(e)`` (0-based) returns the epoch's history row;
        ``state()`` what the checkpoint holds besides the epoch, history and RNG state;
        ``stop()`` ends the run early (after the epoch's checkpoint and report)."""
        self._write_history()
        for e in range(self.start, self.epochs):
            self.history.append(epoch(e))
            self._write_history()
            done = e + 1
            if self.checkpoint is not None and (
                done % self.checkpoint_every == 0 or done == self.epochs
            ):
                save_checkpoint(
                    self.checkpoint, **state(), epoch=done, history=self.history, rng=rng_state()
                )
            if self.reporter is not None:  # after the checkpoint: a reporter may stop the process
                row = self.history[-1]
                self.reporter({k: v for k, v in row.items() if isinstance(v, float)}, done)
            if stop():
                break
        return self.history

    def _write_history(self) -> None:
        if self.history_file is not None:
            self.history_file.parent.mkdir(parents=True, exist_ok=True)
            write_jsonl(self.history_file, self.history)
