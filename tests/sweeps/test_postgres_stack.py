"""A team's tracking stack (README "A team's setup"): ``mlflow server`` on PostgreSQL with its
artifacts in S3, the Optuna studies on the same PostgreSQL server, the runs in an S3 bucket, and
two sweeps started at the same time against all of it.

Every server is real and bound to 127.0.0.1, started and stopped by this module (process
groups): PostgreSQL from the machine's own binaries (``initdb``/``postgres``, Debian's
``postgresql`` package or any other install on PATH; skipped without them), moto's S3 server,
MLflow's tracking server. PostgreSQL refuses to run as root: as root the test runs it as
``nobody``. Two databases: MLflow's and Optuna's (both use an ``alembic_version`` table).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from s3_server import BUCKET, aws_env, keys, moto_server
from sweep_helpers import BIN, PYTHON, RUN, SMOKE, kill_group, reap_group, start, sweep_env

pytestmark = pytest.mark.slow
PG_BIN = Path(shutil.which("postgres") or "/usr/lib/postgresql/15/bin/postgres").resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unprivileged() -> Callable[[], None] | None:
    """A pre-exec function that drops root to ``nobody`` (PostgreSQL will not run as root)."""
    if os.geteuid() != 0:
        return None
    pw = pwd.getpwnam("nobody")

    def drop() -> None:
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    return drop


@contextlib.contextmanager
def postgres(folder: Path) -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 with databases ``mlflow`` and ``optuna``; its base URL
    (``postgresql+psycopg://ssr@127.0.0.1:PORT``)."""
    pytest.importorskip("psycopg")
    import psycopg

    if not (PG_BIN / "initdb").is_file():
        pytest.skip("no PostgreSQL server binaries (initdb, postgres) on this machine")
    # NOTE: a folder of its own under the system's temp folder: as root the server runs as
    # nobody, who cannot enter pytest's (0700) folders
    base = Path(tempfile.mkdtemp(prefix="ssr-pg-"))
    data, sock = base / "data", base / "sock"
    for d in (base, data, sock):
        d.mkdir(mode=0o700, exist_ok=True)
        if os.geteuid() == 0:
            os.chown(d, pwd.getpwnam("nobody").pw_uid, -1)
    folder.mkdir(parents=True, exist_ok=True)
    drop = unprivileged()
    subprocess.run([str(PG_BIN / "initdb"), "-D", str(data), "-U", "ssr", "--auth=trust",
                    "-E", "UTF8"], check=True, capture_output=True, preexec_fn=drop, cwd="/")  # fmt: skip
    port = free_port()
    proc = subprocess.Popen(
        [str(PG_BIN / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
         "-k", str(sock)],
        stdout=(folder / "pg.log").open("w"), stderr=subprocess.STDOUT, preexec_fn=drop,
        start_new_session=True, cwd="/",
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with psycopg.connect(f"host=127.0.0.1 port={port} user=ssr dbname=postgres",
                                     autocommit=True) as conn:  # fmt: skip
                    conn.execute("CREATE DATABASE mlflow")
                    conn.execute("CREATE DATABASE optuna")
                break
            except psycopg.OperationalError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((folder / "pg.log").read_text()[-2000:]) from None
                time.sleep(0.5)
        yield f"postgresql+psycopg://ssr@127.0.0.1:{port}"
    finally:
        kill_group(proc, signal.SIGTERM, wait=20)  # NOTE: SIGTERM = PostgreSQL's smart shutdown
        reap_group(proc)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def mlflow_server(folder: Path, backend: str, env: dict[str, str]) -> Iterator[str]:
    """``mlflow server`` with the PostgreSQL backend and artifacts proxied to S3."""
    port = free_port()
    proc = start(
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1", "--backend-store-uri", backend,
         "--artifacts-destination", f"s3://{BUCKET}/mlartifacts"],
        folder / "mlflow.log", env,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            with contextlib.suppress(OSError), urllib.request.urlopen(uri + "/health", timeout=2):
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((folder / "mlflow.log").read_text()[-3000:])
            time.sleep(1)
        yield uri
    finally:
        kill_group(proc, signal.SIGTERM, wait=15)
        reap_group(proc)


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """Two sweeps started together on the stack; what each printed and where they wrote."""
    tmp = tmp_path_factory.mktemp("team")
    with moto_server(tmp, BUCKET) as s3, postgres(tmp / "pg") as pg:
        env = sweep_env(**aws_env(s3), SSR_RUNS=str(tmp / "runs"))
        with mlflow_server(tmp, f"{pg}/mlflow", env) as uri:
            procs = {}
            for name in ("team-a", "team-b"):
                args = ["--config", str(SMOKE), "--set", "num_samples=2", "--set",
                        f"searcher.storage={pg}/optuna", "--storage", f"s3://{BUCKET}/runs",
                        "--name", name, "--tracking-uri", uri, "--quiet"]  # fmt: skip
                procs[name] = start([PYTHON, str(RUN), *args], tmp / f"{name}.log", env)
            codes = {}
            for name, proc in procs.items():
                try:
                    codes[name] = proc.wait(timeout=900)
                finally:
                    kill_group(proc)
                    reap_group(proc)
            yield {"uri": uri, "pg": pg, "s3": s3, "tmp": tmp, "codes": codes,
                   "logs": {n: (tmp / f"{n}.log").read_text() for n in procs}}  # fmt: skip


def test_two_sweeps_at_once_finish(team: dict) -> None:
    for name, code in team["codes"].items():
        log = team["logs"][name]
        assert code == 0, log[-4000:]
        assert "database is locked" not in log and "could not serialize" not in log


def test_mlflow_on_postgres_has_every_run_once(team: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(team["uri"])
    exp = client.get_experiment_by_name("ssr-smoke")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = {r.data.tags["ssr.sweep"]: r for r in runs if r.data.tags.get("ssr.role") == "sweep"}
    assert sorted(parents) == ["team-a", "team-b"]
    for name, parent in parents.items():
        kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        trial_ids = [k.data.tags["ssr.trial_id"] for k in kids]
        assert len(kids) == 2 and len(set(trial_ids)) == 2, (name, trial_ids)
        assert all(k.data.tags["ssr.sweep"] == name for k in kids)
        assert parent.info.status == "FINISHED"
    stored = keys(team["s3"], "mlartifacts/")  # artifacts went through the server to S3
    assert any(k.endswith("genotype.json") for k in stored), sorted(stored)[:20]


def test_optuna_studies_on_the_same_postgres(team: dict) -> None:
    import optuna

    storage = optuna.storages.RDBStorage(f"{team['pg']}/optuna")
    names = sorted(optuna.study.get_all_study_names(storage))
    assert names == ["team-a", "team-b"]
    for name in names:
        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        assert len(trials) == 2 and {t.user_attrs["trial_id"] for t in trials}
        assert all(t.state.is_finished() for t in trials)


def test_runs_and_results_in_the_bucket(team: dict) -> None:
    import pandas as pd

    for name in ("team-a", "team-b"):
        stored = keys(team["s3"], f"runs/{name}/")
        assert f"runs/{name}/results.parquet" in stored and f"runs/{name}/sweep.yaml" in stored
        rows = pd.read_parquet(team["tmp"] / "runs" / name / "results.parquet")
        assert len(rows) == 2 and rows["trial_id"].is_unique
