"""A lost node is a failed trial, not a lost sweep: the raylet of a worker node is killed.

A two-node cluster on loopback (head 127.0.0.2, worker 127.0.0.3, one CPU each, token
authentication as users run it), started like ``tests/sweeps/test_sweep_cluster.py`` does: each
node with ``ray start --block`` in its own session, stopped by killing exactly those process
groups. While a trial runs on the worker node, that node's raylet is SIGKILLed: the node is lost
with its trial; the sweep runs its other trials on the head, measures, reports, exits 0.
"""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import (
    PYTHON,
    RUN,
    SMOKE,
    WORKER,
    kill_group,
    reap_group,
    start,
    start_cluster,
    sweep_env,
)

from sweeps.runtime.reaper import descendants

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def find(root: int, test, timeout: float) -> int:
    """The pid of a descendant of ``root`` whose command line passes ``test``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for pid, _ in descendants(root):
            if test(cmdline(pid)):
                return pid
        time.sleep(0.3)
    raise TimeoutError("no such process")


def running_on_worker(run_dir: Path, timeout: float) -> None:
    """Wait until a trial has reported an epoch from the worker node (its ``result.json``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for result in run_dir.glob("trial_*/result.json"):
            if f'"node": "{WORKER}"' in result.read_text(errors="replace"):
                return
        time.sleep(0.3)
    raise TimeoutError(f"no trial reported from {WORKER} within {timeout} s")


def test_a_lost_node_fails_its_trial_and_the_sweep_completes(tmp_path: Path) -> None:
    env = sweep_env()
    nodes: list = []
    try:
        address = start_cluster(tmp_path, env, nodes)
        storage = tmp_path / "runs"
        sweep = start(
            [PYTHON, str(RUN), "--config", str(SMOKE), "--num-samples", "3",
             "--set", "budget.retrain_epochs=0", "--storage", str(storage), "--name", "lost",
             "--cluster"],
            tmp_path / "sweep.log", sweep_env(RAY_ADDRESS=address),
        )  # fmt: skip
        try:
            running_on_worker(storage / "lost", timeout=180)  # it reported an epoch there
            raylet = find(nodes[1].pid, lambda c: "/raylet/raylet " in c, timeout=5)
            subprocess.run(["kill", "-9", str(raylet)], check=True)
            sweep.wait(timeout=400)
        finally:
            reap_group(sweep)
    finally:
        for p in reversed(nodes):
            kill_group(p, signal.SIGTERM, wait=5)
            reap_group(p)
    out = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, out[-4000:]
    df = pd.read_parquet(storage / "lost" / "results.parquet")
    assert len(df) == 3, df[["trial_id", "status", "node"]]
    failed = df[df["status"] == "failed"]
    assert len(failed) >= 1 and (df["status"] == "complete").any(), df[["status", "error"]]
    assert set(failed["node"]) == {WORKER}  # the trial of the lost node, and only that one
    assert (storage / "lost" / "report" / "report.md").is_file()
