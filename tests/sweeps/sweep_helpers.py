"""Shared helpers for the sweep tests: run the CLI as a process group, free ports, cleanup.

Every process a test starts is started in its own session (``start_new_session=True``) and
stopped by killing that process group, so nothing outlives a test and nobody else's Ray or
MLflow processes are touched (no ``ray stop``, no ``pkill``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "sweeps" / "run.py"
SMOKE = REPO / "sweeps" / "configs" / "smoke.yaml"
PYTHON = sys.executable
BIN = Path(sys.executable).parent


def sweep_env(**extra: str) -> dict[str, str]:
    """The environment of a test's sweep or Ray process: token authentication, as users run it
    (the token is made where Ray keeps it, ``~/.ray/auth_token``, if it is missing)."""
    from sweeps.runtime.cluster import ensure_token

    ensure_token({})
    env = dict(os.environ)
    env.update(
        RAY_AUTH_MODE="token",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
    )
    env.pop("RAY_ADDRESS", None)
    env.update(extra)
    return env


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
    """Signal the process group of ``proc`` (started with start_new_session) and reap it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=wait)


def reap_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGKILL whatever is left of the process group of ``proc`` until it is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.poll()  # NOTE: reap the leader, or its zombie keeps the group alive
        time.sleep(0.2)


def start(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start a command in a new session, output to ``log``."""
    fh = log.open("w")
    return subprocess.Popen(
        args, stdout=fh, stderr=subprocess.STDOUT, env=env or sweep_env(), cwd=REPO,
        start_new_session=True,
    )  # fmt: skip


#: A loopback Ray cluster: Ray rewrites 127.0.0.1 to the routable address, not 127.0.0.2/3
#: (docs/stack.md §3); each node gets a capped memory so two fit on the test machine.
HEAD, WORKER = "127.0.0.2", "127.0.0.3"
NODE_MEM = ["--memory=3000000000", "--object-store-memory=300000000"]


def wait_ray(
    address: str, expr: str, expected: str, env: dict[str, str], timeout: float = 90
) -> None:
    """Wait until ``print(<expr>)`` in a client of the cluster at ``address`` prints ``expected``
    (e.g. ``sum(1 for x in ray.nodes() if x['Alive'])`` and ``"2"``)."""
    code = f"import ray; ray.init(address='{address}', logging_level='ERROR'); print({expr})"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            [PYTHON, "-c", code], capture_output=True, text=True, env=env, timeout=60,
            start_new_session=True,
        )  # fmt: skip
        if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [expected]:
            return
        time.sleep(2)
    raise RuntimeError(f"the Ray cluster at {address} did not reach {expr} == {expected}")


def start_cluster(
    logs: Path,
    env: dict[str, str],
    procs: list,
    head: tuple[str, ...] = (),
    head_cpus: int = 1,
    workers: int = 1,
) -> str:
    """``ray start`` a head on HEAD with ``head_cpus`` CPUs (``head``: extra options such as
    ``--num-gpus=2``) and ``workers`` one-CPU nodes on WORKER,
    appending each process to ``procs`` (stop them with kill_group/reap_group); returns the
    address once every node is alive."""
    port = free_port(HEAD)
    address = f"{HEAD}:{port}"
    ray = str(BIN / "ray")
    procs.append(start(
        [ray, "start", "--head", "--block", f"--node-ip-address={HEAD}", f"--port={port}",
         f"--num-cpus={head_cpus}", *NODE_MEM, "--include-dashboard=false",
         "--disable-usage-stats", *head],
        logs / "head.log", env,
    ))  # fmt: skip
    if workers:
        time.sleep(3)
    for i in range(workers):
        procs.append(start_worker(address, logs / f"worker{i}.log", env))
    wait_ray(address, "sum(1 for x in ray.nodes() if x['Alive'])", str(1 + workers), env)
    return address


def start_worker(address: str, log: Path, env: dict[str, str]) -> subprocess.Popen:
    """``ray start`` a one-CPU node on WORKER joining ``address`` (not waiting for it)."""
    return start(
        [str(BIN / "ray"), "start", "--block", f"--address={address}",
         f"--node-ip-address={WORKER}", "--num-cpus=1", *NODE_MEM],
        log, env,
    )  # fmt: skip


def run_sweep(
    args: list[str], log: Path, env: dict[str, str] | None = None, timeout: float = 420
) -> tuple[int, str]:
    """Run ``sweeps/run.py args`` to the end; returns (exit code, output)."""
    proc = start([PYTHON, str(RUN), *args], log, env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc)
        pytest.fail(f"sweep did not finish within {timeout} s; log: {log.read_text()[-3000:]}")
    finally:
        reap_group(proc)
    return proc.returncode, log.read_text()


def wait_rows(parquet: Path, n: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    """Wait until results.parquet holds ``n`` rows (the driver writes it as trials end)."""
    import pandas as pd

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return
        if parquet.is_file():
            with contextlib.suppress(Exception):
                if len(pd.read_parquet(parquet)) >= n:
                    return
        time.sleep(1.0)
    raise TimeoutError(f"{parquet} did not reach {n} rows in {timeout} s")


@contextlib.contextmanager
def mlflow_server(root: Path) -> Iterator[str]:
    """A real ``mlflow server`` on 127.0.0.1 (one worker, no job runner), stopped by group kill."""
    port = free_port()
    root.mkdir(parents=True, exist_ok=True)
    proc = start(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts")],
        root / "server.log",
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(root / 'server.log').read_text()}"
                )
            time.sleep(0.5)
        yield uri
    finally:
        kill_group(proc, signal.SIGTERM, wait=15)
        reap_group(proc)


def children(uri: str, experiment: str) -> tuple[list, list]:
    """(parent runs, child runs) of an experiment."""
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment} at {uri}"
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("ssr.role") == "sweep"]
    kids = [r for r in runs if r.data.tags.get("ssr.role") == "trial"]
    return parents, kids


def artifact_names(uri: str, run_id: str) -> set[str]:
    import mlflow

    return {a.path for a in mlflow.MlflowClient(uri).list_artifacts(run_id)}


def check_sweep(uri: str, experiment: str, run_dir: Path, n: int) -> None:
    """The shared assertions: one parent, n children with artifacts, n unique rows."""
    import pandas as pd

    from analysis.load import from_parquet
    from analysis.objectives import recorded_objectives

    parents, kids = children(uri, experiment)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    parent = parents[0]
    assert parent.data.tags["ssr.sweep"] == run_dir.name
    assert len(kids) == n, [k.info.run_name for k in kids]
    trial_ids = [k.data.tags["ssr.trial_id"] for k in kids]
    assert len(set(trial_ids)) == n
    for k in kids:
        assert k.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert any(p.startswith("cfg.") for p in k.data.params)
        status = k.data.tags["ssr.status"]
        assert status in ("complete", "early_stopped", "failed")
        if status == "complete":
            names = artifact_names(uri, k.info.run_id)
            for a in ("genotype.json", "history.jsonl", "prune_events.jsonl", "summary.json",
                      "architecture.png", "config.resolved.yaml"):  # fmt: skip
                assert a in names, (k.info.run_name, names)
            assert len(k.outputs.model_outputs) == 1  # model.onnx is the run's logged model
            assert k.data.tags["ssr.genotype_id"]
            assert k.data.tags["ssr.fps_shared_device"] == "true"
            for m in ("derived_miou", "fps_shared", "gmacs", "fps_exclusive", "search/val_miou"):
                assert m in k.data.metrics, (m, k.info.run_name)
    df = pd.read_parquet(run_dir / "results.parquet")
    assert len(df) == n
    assert df["trial_id"].is_unique
    assert set(df["trial_id"]) == set(trial_ids)
    canon = from_parquet(run_dir / "results.parquet")  # the analysis schema accepts it
    complete = canon[canon["status"] == "complete"]
    assert len(complete) >= 1
    assert complete["fps_exclusive"].notna().all()
    # interleaved passes: every exclusive FPS keeps its spread, and says where it ran
    assert (complete["fps_exclusive_lo"] <= complete["fps_exclusive"]).all()
    assert (complete["fps_exclusive"] <= complete["fps_exclusive_hi"]).all()
    assert complete["exclusive_device"].notna().all()
    assert complete["baseline"].isin(["ssr", "darts_pruning", "no_shrink"]).all()
    assert complete["derived_miou_lo"].notna().all() and complete["search_input_size"].notna().all()
    # the sweep records the front it ranked, so every later view ranks the same one
    assert recorded_objectives(canon) == [("derived_miou", True), ("fps_exclusive", True)]
    assert complete["fps_shared_device"].all()
    assert (run_dir / "report" / "report.md").is_file()
    assert (run_dir / "report" / "pareto.png").is_file()
