"""Each per-epoch step reaches MLflow once, whatever cuts a write off.

MLflow's SQL store commits a ``log_batch`` in several transactions (metrics, then tags), and an
HTTP client can time out on a write the server committed. So a write can land although the
driver never learns it did: the driver is killed between the commits, or the call raises after
the commit. A resumed trial then reports the same epochs again. The run book
(:mod:`sweeps.tracking.book`) takes a run's last step from the metrics the store holds, and
after a write that may have landed reads it back before writing again; these tests cut writes
off on purpose (docs/architecture.md §4).
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.tracking import Tracker, log_epoch

REPO = Path(__file__).resolve().parents[2]
METRIC = "search/val_miou"


def report(step: int) -> dict:
    """A trial's per-epoch report at ``step`` (search phase)."""
    return {"step": step, "phase": 0, "val_miou": 0.01 * step}


def steps(uri: str, run_id: str) -> list[int]:
    import mlflow

    history = mlflow.MlflowClient(uri).get_metric_history(run_id, METRIC)
    return sorted(m.step for m in history)


def started(uri: str, tmp: Path) -> Tracker:
    tracker = Tracker(uri, "exp", "sw", tmp / "mlartifacts")
    tracker.start(params={}, tags={}, artifacts=[], resume=True)
    return tracker


def test_a_write_that_landed_but_raised_is_not_repeated(tmp_path: Path) -> None:
    """The client raises after the store committed (a timed-out HTTP call): the step is not
    logged again, neither by this driver nor by a resumed one."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = started(uri, tmp_path)
    assert log_epoch(tracker, "t1", None, report(1))
    run_id = tracker.child("t1", None)
    real = tracker.client.log_batch

    def committed_then_lost(*args: object, **kwargs: object) -> None:
        real(*args, **kwargs)
        raise ConnectionError("read timed out")

    tracker.client.log_batch = committed_then_lost  # type: ignore[method-assign]
    assert not log_epoch(tracker, "t1", None, report(2))
    tracker.client.log_batch = real  # type: ignore[method-assign]
    tracker.store.reconnect()
    assert log_epoch(tracker, "t1", None, report(2))  # the trial's next report, or a back-fill
    assert steps(uri, run_id) == [1, 2]
    again = started(uri, tmp_path)  # a resumed driver; the trial reports from its start again
    for s in (1, 2, 3):
        assert log_epoch(again, "t1", None, report(s))
    assert steps(uri, run_id) == [1, 2, 3]


def test_a_driver_killed_between_two_commits_leaves_no_duplicate(tmp_path: Path) -> None:
    """The metrics of a step are committed, then the driver dies before anything else of that
    write (the tags of the same ``log_batch`` are a later transaction)."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = started(uri, tmp_path)
    assert log_epoch(tracker, "t1", None, report(1))
    run_id = tracker.child("t1", None)
    real = tracker.client.log_batch

    def metrics_only(run_id: str, metrics: object = (), **kwargs: object) -> None:
        real(run_id, metrics=metrics)
        raise SystemExit("killed")  # nothing after the metrics' commit runs

    tracker.client.log_batch = metrics_only  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        log_epoch(tracker, "t1", None, report(2))
    again = started(uri, tmp_path)
    for s in (1, 2, 3):
        assert log_epoch(again, "t1", None, report(s))
    assert steps(uri, run_id) == [1, 2, 3]


DRIVER = """
import sys
from pathlib import Path
from sweeps.tracking import Tracker, log_epoch
uri, tmp, last = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
tracker = Tracker(uri, "exp", "sw", tmp / "mlartifacts")
tracker.start(params={}, tags={}, artifacts=[], resume=True)
tracker.child("t1", None)
print("ready", flush=True)
for step in range(1, last + 1):  # a restored trial reports its epochs from the start again
    assert log_epoch(tracker, "t1", None, {"step": step, "phase": 0, "val_miou": 0.01 * step})
print("done", flush=True)
"""


@pytest.mark.slow
def test_drivers_killed_at_random_under_load_log_each_step_once(tmp_path: Path) -> None:
    """Drivers SIGKILLed at random moments while logging, with the CPUs busy, then one that runs
    to the end: every step is in MLflow exactly once."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    last, rounds = 60, 8
    rng = random.Random(0)
    hogs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)
    ]  # NOTE: a loaded machine stretches the time between a write's commits
    args = [sys.executable, "-c", DRIVER, uri, str(tmp_path), str(last)]
    try:
        for _ in range(rounds):
            proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, text=True)
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=120)
        out = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert out.returncode == 0, out.stderr[-3000:]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    (run,) = client.search_runs([exp.experiment_id], "tags.`ssr.trial_id` = 't1'")
    assert steps(uri, run.info.run_id) == list(range(1, last + 1))


def test_a_gap_below_the_last_step_of_a_resumed_trial_is_filled_once(tmp_path: Path) -> None:
    """A killed driver's writer lost epoch 2 of a trial; the trial continued from its checkpoint
    and its run got epoch 3 and its final record, so the run holds steps {1, 3}. The resumed
    sweep's sync fills step 2 from Tune's history (NaN in the columns of the other phase and of
    the final report), each step once, also when it syncs again; a trial that never continued
    from a checkpoint has its history left unread."""
    import math
    from types import SimpleNamespace

    import pandas as pd

    from sweeps.contract.protocol import COMPLETE, FINAL_KEY
    from sweeps.record.results import ResultsTable
    from sweeps.tracking import log_final, sync

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    nan = math.nan
    epochs = [  # a search epoch reports ``alpha_lr``, a retraining one does not
        {"step": 1.0, "phase": 0.0, "alpha_lr": 0.1, "val_miou": 0.01},
        {"step": 2.0, "phase": 0.0, "alpha_lr": 0.2, "val_miou": 0.02},
        {"step": 3.0, "phase": 1.0, "alpha_lr": nan, "val_miou": 0.5},
    ]
    final = {"step": 4.0, "phase": nan, "alpha_lr": nan, "val_miou": nan, FINAL_KEY: 1.0}
    history = [
        *[{**e, "training_iteration": i + 1.0, FINAL_KEY: 0.0} for i, e in enumerate(epochs)],
        {"step": 3.0, "phase": 1.0, "alpha_lr": nan, "val_miou": 0.6, FINAL_KEY: 0.0},  # repeat
        {"step": nan, "training_iteration": nan, "phase": nan, "val_miou": 0.9},  # no epoch
        {**final, "training_iteration": 5.0},
    ]
    tracker = started(uri, tmp_path)
    rows = []
    for t, resumes in (("t1", 1), ("t2", 0)):
        for e in epochs:
            if (t, e["step"]) != ("t1", 2.0):  # the event the killed driver's writer lost
                assert log_epoch(tracker, t, None, e)
        row = {"trial_id": t, "status": COMPLETE, "iterations": 4, "resumes": resumes}
        assert log_final(tracker, row, None, None)
        rows.append(row)
    assert log_epoch(tracker, "t1", None, epochs[1])  # below the last step: skipped, as before
    assert steps(uri, tracker.book.run_id("t1")) == [1]

    again = started(uri, tmp_path)  # the resumed driver
    table = ResultsTable(tmp_path / "results.parquet", load=False)
    for row in rows:
        table.upsert(row)
    results = {t: SimpleNamespace(config=None, metrics={}, metrics_dataframe=pd.DataFrame(history))
               for t in ("t1", "t2")}  # fmt: skip
    read = []
    real = again.client.get_metric_history

    def history_of(run_id: str, key: str) -> list:
        read.append(run_id)
        return real(run_id, key)

    again.client.get_metric_history = history_of  # type: ignore[method-assign]
    assert sync(again, table, results) == 0
    assert sync(again, table, results) == 0  # a second sync logs nothing twice
    import mlflow

    client = mlflow.MlflowClient(uri)
    for t in ("t1", "t2"):
        run_id = again.book.run_id(t)
        assert steps(uri, run_id) == [1, 2]
        retrain = client.get_metric_history(run_id, "retrain/val_miou")
        assert [(m.step, m.value) for m in retrain] == [(3, 0.5)]
        for key in ("search/alpha_lr", "search/val_miou"):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [1, 2]
    assert set(read) == {again.book.run_id("t1")}
