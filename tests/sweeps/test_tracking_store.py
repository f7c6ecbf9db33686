"""The default tracking store (one mlflow.db beside the run folders), its first use by two drivers
at once, and the line that says how to open the runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from sweeps.tracking import artifact_root, default_uri, view_line
from sweeps.tracking.ui import runs_url

REPO = Path(__file__).resolve().parents[2]


def test_sweeps_share_one_store_beside_their_folders(tmp_path: Path) -> None:
    storage = tmp_path / "runs"
    assert default_uri(storage / "a") == f"sqlite:///{storage / 'mlflow.db'}"
    assert default_uri(storage / "b") == default_uri(storage / "a")
    assert artifact_root(default_uri(storage / "a")) == storage / "mlartifacts"
    assert artifact_root("http://127.0.0.1:5000") is None


def test_a_run_folder_with_its_own_store_keeps_it(tmp_path: Path) -> None:
    old = tmp_path / "runs" / "old"
    old.mkdir(parents=True)
    (old / "mlflow.db").write_bytes(b"")
    assert default_uri(old) == f"sqlite:///{old / 'mlflow.db'}"
    assert artifact_root(default_uri(old)) == old / "mlartifacts"


def test_view_line_opens_the_runs_table_in_the_training_view() -> None:
    url = runs_url("http://127.0.0.1:5000", "3")
    assert url == "http://127.0.0.1:5000/#/experiments/3/runs?workflowType=machine_learning"
    assert view_line("http://h:1", "3") == runs_url("http://h:1", "3")
    line = view_line("sqlite:////x/runs/mlflow.db", "3")
    assert line.startswith("mlflow ui --backend-store-uri sqlite:////x/runs/mlflow.db --port 5000")
    assert line.endswith(url)


FIRST_USE = """
import sys, time
from pathlib import Path
from sweeps.tracking import Tracker, probe
uri, name, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
import mlflow  # noqa: F401  (imported before the start line, so both race the store itself)
while not go.exists():
    time.sleep(0.01)
probe(uri)
Tracker(uri, "shared", name, Path(uri[10:]).parent / "mlartifacts").start({}, {}, [])
print("ok", name)
"""


@pytest.mark.slow
def test_two_drivers_can_use_a_new_store_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}"
    go = tmp_path / "go"
    args = {"cwd": REPO, "stdout": subprocess.PIPE, "stderr": subprocess.STDOUT, "text": True}
    procs = [
        subprocess.Popen([sys.executable, "-c", FIRST_USE, uri, name, str(go)], **args)
        for name in ("sweep-a", "sweep-b")
    ]
    time.sleep(3.0)  # both have imported mlflow and wait
    # NOTE: without the lock in tracking.probe, one of them fails most times (alembic races)
    go.touch()
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("shared")
    parents = client.search_runs([exp.experiment_id], "tags.`ssr.role` = 'sweep'")
    assert sorted(r.data.tags["ssr.sweep"] for r in parents) == ["sweep-a", "sweep-b"]
