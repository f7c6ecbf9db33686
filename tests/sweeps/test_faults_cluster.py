"""A lost node on a two-node loopback cluster: a failed trial, or with ``preemptible: true`` a
trial that continues from its last checkpoint on another node.

One cluster for the module: a head on 127.0.0.2 (one CPU) whose GCS declares a silent node dead
within about 2 s (Ray's default health check takes about 15 s, docs/stack.md §3), started like
``tests/sweeps/test_sweep_cluster.py`` does: each node with ``ray start --block`` in its own
session, stopped by killing exactly those process groups. Each test loses its own one-CPU worker
node on 127.0.0.3 while a trial runs there:

1. its raylet is SIGKILLed: the node is lost with its trial, which fails; the sweep runs its
   other trials on the head, measures, reports, exits 0;
2. with ``preemptible: true``, every process of the node is SIGKILLed (raylet, workers, agents:
   the node vanishes) once its trial has reported a checkpoint: the trial continues from it on
   the head and completes, not failed, with ``resumes == 1`` and both nodes in its record, the
   same genotype and mIoU as its twin (the same config and seed) that ran uninterrupted, and
   each epoch once in MLflow.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml
from sweep_helpers import (
    HEAD,
    PYTHON,
    RUN,
    SMOKE,
    WORKER,
    kill_group,
    reap_group,
    start,
    start_cluster,
    start_worker,
    sweep_env,
    wait_ray,
)

from sweeps.runtime.reaper import descendants

pytestmark = [pytest.mark.slow, pytest.mark.cluster]

#: The head's GCS declares a node dead after 2 missed health checks 1 s apart.
FAST_HEALTH_CHECK = (
    '--system-config={"health_check_period_ms":1000,"health_check_failure_threshold":2}'
)


@dataclass
class Cluster:
    address: str
    env: dict[str, str]
    logs: Path
    procs: list
    spare: subprocess.Popen | None = None

    def take_worker(self) -> subprocess.Popen:
        """A live worker node for a test that loses it (a new one once the last is taken)."""
        if self.spare is None:
            self.spare = start_worker(self.address, self.logs / f"w{len(self.procs)}.log", self.env)
            self.procs.append(self.spare)
            wait_ray(self.address, "sum(1 for x in ray.nodes() if x['Alive'])", "2", self.env)
        proc, self.spare = self.spare, None
        return proc


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    env, logs, procs = sweep_env(), tmp_path_factory.mktemp("cluster"), []
    try:
        address = start_cluster(logs, env, procs, head=(FAST_HEALTH_CHECK,))
        yield Cluster(address, env, logs, procs, spare=procs[1])
    finally:
        for p in reversed(procs):
            kill_group(p, signal.SIGTERM, wait=5)
            reap_group(p)


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


def on_worker(run_dir: Path, timeout: float, min_step: int = 1) -> Path:
    """The folder of a trial that reported epoch ``min_step`` or later from the worker node and
    not yet its final record (its last ``result.json`` line)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for result in run_dir.glob("trial_*/result.json"):
            lines = result.read_text(errors="replace").splitlines()
            with contextlib.suppress(ValueError, IndexError):
                last = json.loads(lines[-1])
                if (last.get("node") == WORKER and last.get("step", 0) >= min_step
                        and last.get("final_record") == 0):  # fmt: skip
                    return result.parent
        time.sleep(0.2)
    raise TimeoutError(f"no trial reported epoch {min_step} from {WORKER} within {timeout} s")


def vanish(node: subprocess.Popen) -> None:
    """SIGKILL every process of a node at once: its raylet, workers and agents."""
    for pid in [pid for pid, _ in descendants(node.pid)] + [node.pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    reap_group(node)


def test_a_lost_node_fails_its_trial_and_the_sweep_completes(cluster: Cluster, tmp_path) -> None:
    worker = cluster.take_worker()
    storage = tmp_path / "runs"
    sweep = start(
        [PYTHON, str(RUN), "--config", str(SMOKE), "--num-samples", "3",
         "--set", "budget.retrain_epochs=0", "--storage", str(storage), "--name", "lost",
         "--cluster"],
        tmp_path / "sweep.log", sweep_env(RAY_ADDRESS=cluster.address),
    )  # fmt: skip
    try:
        on_worker(storage / "lost", timeout=180)  # it reported an epoch there
        raylet = find(worker.pid, lambda c: "/raylet/raylet " in c, timeout=5)
        subprocess.run(["kill", "-9", str(raylet)], check=True)
        sweep.wait(timeout=400)
    finally:
        reap_group(sweep)
        reap_group(worker)
    out = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, out[-4000:]
    df = pd.read_parquet(storage / "lost" / "results.parquet")
    assert len(df) == 3, df[["trial_id", "status", "node"]]
    failed = df[df["status"] == "failed"]
    assert len(failed) >= 1 and (df["status"] == "complete").any(), df[["status", "error"]]
    assert set(failed["node"]) == {WORKER}  # the trial of the lost node, and only that one
    assert (storage / "lost" / "report" / "report.md").is_file()


def twins_sweep(path: Path) -> Path:
    """The smoke sweep as two trials of one config and seed (each the other's uninterrupted
    run), six search epochs with a checkpoint after each, preemptible, nothing after the fit
    that this test does not check (no re-measurement, no ONNX)."""
    raw = yaml.safe_load(SMOKE.read_text())
    raw.update(
        name="twins", num_samples=2, max_concurrent=2, searcher={"kind": "random", "seed": 0},
        budget={"search_epochs": 6, "retrain_epochs": 0, "checkpoint_every": 1},
        preemptible=True, max_resumes=1, remeasure=False,
        space={"ssr.op": 20.0, "ssr.out": 10.0, "shrink.threshold": 0.1, "baseline": "ssr",
               "seed": 0},
    )  # fmt: skip
    raw["base"]["export_onnx"] = False
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def test_a_lost_node_resumes_its_trial_from_its_checkpoint(cluster: Cluster, tmp_path) -> None:
    worker = cluster.take_worker()
    storage, run = tmp_path / "runs", tmp_path / "runs" / "twins"
    sweep = start(
        [PYTHON, str(RUN), "--config", str(twins_sweep(tmp_path / "twins.yaml")),
         "--storage", str(storage), "--name", "twins", "--cluster"],
        tmp_path / "sweep.log", sweep_env(RAY_ADDRESS=cluster.address),
    )  # fmt: skip
    try:
        lost = on_worker(run, timeout=400, min_step=2)  # checkpoints of epochs 1 and 2 are in
        vanish(worker)
        sweep.wait(timeout=400)
    finally:
        reap_group(sweep)
    out = (tmp_path / "sweep.log").read_text()
    assert sweep.returncode == 0, out[-4000:]
    assert "continues from its last checkpoint (resume 1 of 1)" in out, out[-4000:]
    df = pd.read_parquet(run / "results.parquet")
    assert len(df) == 2 and df["trial_id"].is_unique, df[["trial_id", "status", "resumes"]]
    assert (df["status"] == "complete").all() and df["error"].isna().all(), df[["status", "error"]]
    resumed = df[df["trial_id"] == lost.name.removeprefix("trial_")].iloc[0]
    twin = df[df["trial_id"] != resumed["trial_id"]].iloc[0]
    assert resumed["resumes"] == 1 and twin["resumes"] == 0
    nodes = json.loads(resumed["nodes"])
    assert [n["ip"] for n in nodes] == [WORKER, HEAD] and nodes[0]["node_id"] != nodes[1]["node_id"]
    assert not (lost / "error.txt").exists()  # not counted as a failure
    # the same config and seed, interrupted or not: the same architecture and scores
    # NOTE: exact, since the search resumes its RNG, data order and weights from the checkpoint
    # and both runs use one thread on the same CPU (tests/ssr/test_search.py)
    for col in ("genotype_id", "derived_miou", "supernet_miou", "gmacs"):
        assert resumed[col] == twin[col], col
    check_mlflow(f"sqlite:///{storage / 'mlflow.db'}", resumed["trial_id"])


def check_mlflow(uri: str, trial_id: str) -> None:
    """The resumed trial's run: complete, its resume recorded, each epoch step once."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("ssr-smoke")
    runs = client.search_runs([exp.experiment_id], f"tags.`ssr.trial_id` = '{trial_id}'")
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["ssr.status"] == "complete"
    assert run.data.metrics["resumes"] == 1
    assert [n["ip"] for n in json.loads(run.data.tags["ssr.nodes"])] == [WORKER, HEAD]
    for name in ("search/train_loss", "search/val_miou"):
        steps = [m.step for m in client.get_metric_history(run.info.run_id, name)]
        assert sorted(steps) == list(range(1, 7)), (name, steps)  # re-run epochs logged once
