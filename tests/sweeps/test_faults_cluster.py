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
    BIN,
    PYTHON,
    RUN,
    SMOKE,
    free_port,
    kill_group,
    reap_group,
    start,
    sweep_env,
)

from sweeps.reaper import descendants

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
HEAD, WORKER = "127.0.0.2", "127.0.0.3"
MEM = ["--memory=3000000000", "--object-store-memory=300000000"]


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


def wait_nodes(address: str, n: int, env: dict[str, str], timeout: float = 90) -> None:
    code = (
        f"import ray; ray.init(address='{address}', logging_level='ERROR'); "
        "print(sum(1 for x in ray.nodes() if x['Alive']))"
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=60,
            start_new_session=True,
        )  # fmt: skip
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(n)]:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {n} nodes")


def test_a_lost_node_fails_its_trial_and_the_sweep_completes(tmp_path: Path) -> None:
    port = free_port(HEAD)
    address = f"{HEAD}:{port}"
    env = sweep_env()
    ray = str(BIN / "ray")
    nodes = []
    try:
        nodes.append(start(
            [ray, "start", "--head", "--block", f"--node-ip-address={HEAD}", f"--port={port}",
             "--num-cpus=1", *MEM, "--include-dashboard=false", "--disable-usage-stats"],
            tmp_path / "head.log", env,
        ))  # fmt: skip
        time.sleep(3)
        nodes.append(start(
            [ray, "start", "--block", f"--address={address}", f"--node-ip-address={WORKER}",
             "--num-cpus=1", *MEM],
            tmp_path / "worker.log", env,
        ))  # fmt: skip
        wait_nodes(address, 2, env)
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
