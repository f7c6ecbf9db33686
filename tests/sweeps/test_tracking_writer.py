"""The MLflow writer process: events applied in order off the driver's loop, drained before the
driver reads MLflow, and never outliving its driver (sweeps/tracking/writer.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from sweeps.contract.protocol import COMPLETE
from sweeps.define.spec import CONFIG_DIR, load_sweep
from sweeps.tracking import Tracker
from sweeps.tracking.writer import Writer

REPO = Path(__file__).resolve().parents[2]


def started(tmp_path: Path) -> Tracker:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "sw", tmp_path / "art")
    tracker.start(params={}, tags={}, artifacts=[])
    return tracker


def test_events_are_logged_in_order_by_the_writer_and_the_driver_reads_them_back(
    tmp_path: Path,
) -> None:
    tracker = started(tmp_path)
    writer = Writer(tracker)
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    config = {**sweep.param_space(), "dims": {"ssr.op": 10.0, "seed": 0}}
    t0 = time.perf_counter()
    for t in ("a", "b"):
        writer.send(("start", t, f"1_{t}", config))
        for step in (1, 2, 3):
            writer.send(("epoch", t, config, {"step": step, "phase": 0, "val_miou": step / 10}))
        row = {"trial_id": t, "status": COMPLETE, "iterations": 3, "derived_miou": 0.42}
        writer.send(("final", row, config, None))
    queued_s = time.perf_counter() - t0
    figures = writer.close(timeout=120)
    assert figures["sent"] == figures["events"] == 10 and figures["failed"] == 0
    assert figures["cpu_s"] > 0
    assert queued_s < 5  # the sends only queue (the writer's start and writes are its own)

    tracker.load_children()  # what the driver does after the drain (MlflowCallback.close)
    for t in ("a", "b"):
        assert tracker.book.is_final(t)
        run = tracker.client.get_run(tracker.book.run_id(t))
        assert run.info.status == "FINISHED" and run.data.tags["ssr.final"] == "1"
        steps = [
            m.step for m in tracker.client.get_metric_history(run.info.run_id, "search/val_miou")
        ]
        assert steps == [1, 2, 3]
        assert run.data.metrics["derived_miou"] == 0.42
    assert len(tracker.client.search_runs([tracker.experiment_id])) == 3  # parent + 2 children


def test_a_writer_never_outlives_its_driver(tmp_path: Path) -> None:
    """A killed driver takes its writer with it (a resumed sweep must not have two)."""
    code = f"""
import sys, time
sys.path.insert(0, {str(REPO)!r})
from pathlib import Path
from sweeps.tracking import Tracker
from sweeps.tracking.writer import Writer
tmp = Path({str(tmp_path)!r})
tracker = Tracker(f"sqlite:///{{tmp / 'mlflow.db'}}", "exp", "sw", tmp / "art")
tracker.start(params={{}}, tags={{}}, artifacts=[])
writer = Writer(tracker)
writer.send(("start", "a", None, None))
while writer._done.value < 1:  # the writer is up and has logged the event
    time.sleep(0.05)
print(writer._proc.pid, flush=True)
time.sleep(600)
"""
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        pid = int(driver.stdout.readline())
        os.kill(pid, 0)  # the writer runs
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        if _zombie(pid):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    raise AssertionError("the MLflow writer outlived its killed driver")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return False


def test_an_abandoned_writer_stops_at_once(tmp_path: Path) -> None:
    """An interrupted driver stops its writer without draining it (the resume's sync catches up)."""
    tracker = started(tmp_path)
    writer = Writer(tracker)
    writer.send(("start", "a", None, None))
    proc = writer._proc
    t0 = time.monotonic()
    writer.abandon()
    assert not proc.is_alive() and time.monotonic() - t0 < 10
    assert writer.close() == {"sent": 1, "wait_s": 0.0}  # nothing left to wait for
