"""Fractional GPUs: ``gpus_per_trial: 0.5`` on a cluster with two (logical) GPUs runs 4 trials at
once, two per GPU, each seeing its own device assignment (docs/stack.md §3).

The head node on 127.0.0.2 declares ``--num-gpus 2`` (Ray assigns GPU ids whether or not the
machine has the hardware) and 4 CPUs; the smoke sweep runs with ``--gpus-per-trial 0.5`` and
every device set to CPU. Each trial's record says which ``CUDA_VISIBLE_DEVICES`` Ray gave its
process (``visible_devices``) and when it ran (``started_at``/``finished_at``,
:mod:`ssr.run.pipeline`). Processes are started in their own sessions and stopped by killing those
process groups (never ``ray stop``), as in ``test_sweep_cluster.py``.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from sweep_helpers import (
    SMOKE,
    kill_group,
    reap_group,
    run_sweep,
    start_cluster,
    sweep_env,
    wait_ray,
)

pytestmark = [pytest.mark.slow, pytest.mark.cluster]


@pytest.fixture(scope="module")
def gpu_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("gpus")
    env = sweep_env()
    procs: list = []
    try:
        # one node declaring two logical GPUs; ready once the cluster reports them
        address = start_cluster(tmp, env, procs, head=("--num-gpus=2",), head_cpus=4, workers=0)
        wait_ray(address, "ray.cluster_resources().get('GPU', 0)", "2.0", env)
        storage = tmp / "runs"
        t0 = time.monotonic()
        code, out = run_sweep(
            ["--config", str(SMOKE), "--storage", str(storage), "--name", "gpus", "--cluster",
             "--gpus-per-trial", "0.5", "--cpus-per-trial", "1", "--max-concurrent", "4",
             "--quiet", "--set", "base.search.device=cpu", "--set", "base.retrain.device=cpu",
             "--set", "base.bench.device=cpu", "--set", "base.export_onnx=false"],
            tmp / "sweep.log", sweep_env(RAY_ADDRESS=address),
        )  # fmt: skip
        yield {"code": code, "out": out, "run_dir": storage / "gpus",
               "seconds": time.monotonic() - t0}  # fmt: skip
    finally:
        for p in reversed(procs):
            kill_group(p, signal.SIGTERM, wait=5)
            reap_group(p)


def _records(run_dir: Path) -> list[dict]:
    """Each trial's final record (the record.json of its final Tune checkpoint), one per trial."""
    seen: dict[float, dict] = {}
    for path in run_dir.rglob("record.json"):
        rec = json.loads(path.read_text())
        seen[rec["started_at"]] = rec
    return list(seen.values())


def test_half_a_gpu_per_trial_runs_four_trials_at_once(gpu_sweep: dict) -> None:
    assert gpu_sweep["code"] == 0, gpu_sweep["out"][-4000:]
    records = _records(gpu_sweep["run_dir"])
    assert len(records) == 4, [r.get("visible_devices") for r in records]
    # all four ran at the same time: the latest start is before the earliest end
    assert max(r["started_at"] for r in records) < min(r["finished_at"] for r in records)
    # each trial saw one GPU id of its own, two trials per GPU (0.5 + 0.5)
    ids = [r["visible_devices"] for r in records]
    assert all(v in ("0", "1") for v in ids), ids
    assert Counter(ids) == {"0": 2, "1": 2}, ids
    assert all(r["search_device"] == "cpu" and r["retrain_device"] == "cpu" for r in records)
