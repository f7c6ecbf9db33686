"""The smoke sweep with ``--cluster`` on a real two-node Ray cluster on loopback.

Head on 127.0.0.2, a second node on 127.0.0.3 (Ray rewrites 127.0.0.1 to the routable address;
docs/stack.md §3), one CPU and capped memory each, both started with ``ray start --block`` in
their own sessions so that killing the process groups stops exactly these nodes (never
``ray stop``: it would stop every Ray process on the machine). The driver joins through
``RAY_ADDRESS``; trials must have run on both nodes.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import (
    HEAD,
    SMOKE,
    WORKER,
    check_sweep,
    kill_group,
    reap_group,
    run_sweep,
    start_cluster,
    sweep_env,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]
N = 4


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("cluster")
    env = sweep_env()
    procs: list = []
    try:
        address = start_cluster(tmp, env, procs)
        yield {"address": address, "tmp": tmp}
    finally:
        for p in reversed(procs):
            kill_group(p, signal.SIGTERM, wait=5)
            reap_group(p)


@pytest.fixture(scope="module")
def cluster_sweep(cluster: dict) -> dict:
    tmp: Path = cluster["tmp"]
    storage = tmp / "runs"  # shared storage: both nodes see this folder
    env = sweep_env(RAY_ADDRESS=cluster["address"])
    code, out = run_sweep(
        ["--config", str(SMOKE), "--storage", str(storage), "--name", "smoke-cluster", "--cluster"],
        tmp / "sweep.log",
        env,
    )
    return {"code": code, "out": out, "run_dir": storage / "smoke-cluster"}


def test_cluster_sweep_completes(cluster_sweep: dict) -> None:
    assert cluster_sweep["code"] == 0, cluster_sweep["out"][-4000:]
    run_dir: Path = cluster_sweep["run_dir"]
    check_sweep(f"sqlite:///{run_dir.parent / 'mlflow.db'}", "ssr-smoke", run_dir, N)


def test_trials_ran_on_both_nodes(cluster_sweep: dict) -> None:
    df = pd.read_parquet(cluster_sweep["run_dir"] / "results.parquet")
    assert set(df["node"]) == {HEAD, WORKER}, df[["trial_id", "node"]]
    assert "Ray auto" in cluster_sweep["out"] or "Ray " + HEAD in cluster_sweep["out"]
