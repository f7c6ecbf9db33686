"""``--storage s3://bucket/prefix`` against a real S3 API: moto's server on 127.0.0.1, started and
stopped by this module (its process group), with the endpoint and keys in the standard AWS
variables, as a user would point the sweep at MinIO or a cloud bucket.

- the mirror of a run's driver files (:mod:`sweeps.runtime.mirror`): push, pull, the journal removed once
  its rows are in the table, the Optuna study copied consistently;
- a store that cannot be reached is one line and exit 3, nothing left behind;
- the smoke sweep on S3 (slow): checkpoints and final files in the bucket, then ``--resume`` on
  an empty local run folder rebuilds ``results.parquet`` and the report from the store, with no
  MLflow run duplicated.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from s3_server import BUCKET, aws_env, keys, moto_server
from sweep_helpers import PYTHON, RUN, SMOKE, check_sweep, run_sweep, sweep_env


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """moto's S3 server with one bucket; the AWS variables that reach it, and a client."""
    with moto_server(tmp_path_factory.mktemp("moto"), BUCKET) as env:
        yield env


def test_mirror_round_trip(s3: dict, tmp_path: Path) -> None:
    from sweeps.runtime import mirror
    from sweeps.runtime.rundir import JOURNAL_FILE as JOURNAL
    from sweeps.runtime.rundir import MIRRORED

    run = tmp_path / "a" / "r1"
    run.mkdir(parents=True)
    (run / "sweep.yaml").write_text("name: r1\n")
    (run / "results.journal.jsonl").write_text('{"trial_id": "t1"}\n')
    with contextlib.closing(sqlite3.connect(run / "optuna.db")) as db:
        db.execute("create table t (x)")
        db.execute("insert into t values (42)")
        db.commit()
    storage = f"s3://{BUCKET}/mirror"
    assert set(mirror.push(storage, "r1", run, MIRRORED)) == {"sweep.yaml", JOURNAL, "optuna.db"}
    assert mirror.has_file(storage, "r1", "sweep.yaml")
    assert not mirror.has_file(storage, "r2", "sweep.yaml")
    assert "mirror/r1/results.journal.jsonl" in keys(s3, "mirror/r1/")
    (run / "results.journal.jsonl").unlink()  # its rows went into the table
    mirror.push(storage, "r1", run, MIRRORED, transient=(JOURNAL,))
    assert "mirror/r1/results.journal.jsonl" not in keys(s3, "mirror/r1/")
    other = tmp_path / "b" / "r1"
    assert set(mirror.pull(storage, "r1", other, MIRRORED)) == {"sweep.yaml", "optuna.db"}
    assert (other / "sweep.yaml").read_text() == "name: r1\n"
    with contextlib.closing(sqlite3.connect(other / "optuna.db")) as db:
        assert db.execute("select x from t").fetchall() == [(42,)]
    assert oct(other.stat().st_mode & 0o777) == "0o700"


def test_unreachable_store_is_one_line(s3: dict, tmp_path: Path) -> None:
    env = sweep_env(**aws_env(s3), SSR_RUNS=str(tmp_path))
    env["AWS_ENDPOINT_URL"] = "http://127.0.0.1:9"  # nothing listens there
    out = subprocess.run(
        [PYTHON, str(RUN), "--resume", "--name", "gone", "--storage", f"s3://{BUCKET}/runs"],
        capture_output=True, text=True, env=env, timeout=120, start_new_session=True,
    )  # fmt: skip
    assert out.returncode == 3, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "AWS_ENDPOINT_URL" in lines[0], out.stderr
    assert not (tmp_path / "gone").exists()


@pytest.mark.slow
def test_sweep_on_s3_resumes_from_an_empty_run_folder(s3: dict, tmp_path: Path) -> None:
    local = tmp_path / "runs"
    env = sweep_env(**aws_env(s3), SSR_RUNS=str(local))
    uri = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"  # stands for the team's server
    args = ["--config", str(SMOKE), "--set", "num_samples=2", "--storage", f"s3://{BUCKET}/runs",
            "--name", "s3run", "--tracking-uri", uri, "--quiet"]  # fmt: skip
    code, out = run_sweep(args, tmp_path / "first.log", env, timeout=900)
    assert code == 0, out[-4000:]
    run_dir = local / "s3run"
    first = (run_dir / "results.parquet").read_bytes()
    stored = keys(s3, "runs/s3run/")
    for name in ("sweep.yaml", "run.json", "results.parquet", "optuna.db", "exclusive.json"):
        assert f"runs/s3run/{name}" in stored, sorted(stored)
    finals = [k for k in stored if "/checkpoint_" in k and k.endswith("/record.json")]
    assert len(finals) == 2, sorted(stored)  # each trial's final files went through the store
    assert any(k.endswith("experiment_state") or "experiment_state-" in k for k in stored)

    shutil.rmtree(run_dir)  # another machine: nothing of the run on its disk
    code, out = run_sweep([*args, "--resume"], tmp_path / "resume.log", env, timeout=900)
    assert code == 0, out[-4000:]
    assert "fetched sweep.yaml, run.json, results.parquet" in out
    import pandas as pd

    again = pd.read_parquet(run_dir / "results.parquet")
    assert sorted(again["trial_id"]) == sorted(pd.read_parquet(io.BytesIO(first))["trial_id"])
    assert (run_dir / "report" / "report.md").is_file()
    check_sweep(uri, "ssr-smoke", run_dir, 2)  # one parent, 2 children, no duplicates
