"""Nothing aborts: faults injected into real smoke sweeps, as an operator meets them
(docs/architecture.md §6).

One run carries the sequence of faults that share it (module fixtures, in order):

1. a trial worker is SIGKILLed with ``max_failures: 0``: the sweep still measures, reports and
   syncs, exit 0, with one ``failed`` row and a FAILED child run; meanwhile a second driver with
   the same ``--name`` and a ``--resume`` of the running sweep are refused and change no byte of
   its files;
2. ``results.parquet`` is truncated, then ``--resume``: the rows come back from Tune's records,
   and the failed trial is not run again;
3. ``--resume --retry-failed``: the failed trial runs again and its old error is gone.

Apart: a search that diverges (a huge architecture learning rate) fails its trial with the
one-line reason, and Optuna is told FAIL, without a retry also in a ``preemptible`` sweep; SIGTERM to the driver stops it resumably (exit 130);
a SIGKILLed driver leaves no Ray process behind.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import PYTHON, REPO, RUN, SMOKE, children, reap_group, run_sweep, start

from sweeps.runtime.reaper import alive, descendants

pytestmark = pytest.mark.slow
#: Two short trials (no retraining): the fault, and a trial that completes beside it.
ARGS = ["--config", str(SMOKE), "--num-samples", "2", "--set", "budget.retrain_epochs=0"]
FILES = ("sweep.yaml", "run.json", ".lock")


def wait_worker(proc: subprocess.Popen, timeout: float = 120) -> int:
    """The pid of a trial's worker process (``ray::ImplicitFunc``) under the driver ``proc``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        for pid, _ in descendants(proc.pid):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_text()
            except OSError:
                continue
            if cmd.startswith("ray::ImplicitFunc"):
                return pid
        time.sleep(0.3)
    raise TimeoutError(f"no trial worker under the driver within {timeout} s")


def snapshot(run_dir: Path) -> dict[str, bytes]:
    return {name: (run_dir / name).read_bytes() for name in FILES}


def cli(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, str(RUN), *args], capture_output=True, text=True, cwd=REPO, timeout=120,
        start_new_session=True,
    )  # fmt: skip


def own(out: str) -> str:
    """The driver's own output: without the lines Ray forwards from its workers (``(run_trial
    pid=...)``; a worker stopped at the end of a sweep may print Python's shutdown noise)."""
    return "\n".join(ln for ln in out.splitlines() if not re.match(r"(\x1b\[\d+m)?\(", ln))


def rows(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "results.parquet").set_index("trial_id")


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("faults")
    storage = tmp / "runs"
    run_dir = storage / "faults"
    where = ["--storage", str(storage), "--name", "faults"]
    proc = start([PYTHON, str(RUN), *ARGS, *where], tmp / "first.log")
    try:
        worker = wait_worker(proc)
        before = snapshot(run_dir)
        second = cli([*ARGS, *where])  # a new sweep of the same name
        resume = cli(["--resume", *where])  # the running sweep, resumed by a second driver
        after = snapshot(run_dir)
        os.kill(worker, signal.SIGKILL)
        proc.wait(timeout=300)
    finally:
        reap_group(proc)
    return {
        "code": proc.returncode, "out": (tmp / "first.log").read_text(), "run_dir": run_dir,
        "where": where, "tmp": tmp, "second": second, "resume": resume, "before": before,
        "after": after,
    }  # fmt: skip


def test_a_killed_worker_is_a_failed_result(killed: dict) -> None:
    assert killed["code"] == 0, killed["out"][-3000:]
    run_dir: Path = killed["run_dir"]
    df = rows(run_dir)
    assert sorted(df["status"]) == ["complete", "failed"], df[["status", "error"]]
    failed = df[df["status"] == "failed"].iloc[0]
    assert "died" in failed["error"].splitlines()[0]
    assert (run_dir / "report" / "report.md").is_file()  # measured and reported all the same
    assert df.loc[df["status"] == "complete", "fps_exclusive"].notna().all()
    assert "Traceback" not in own(killed["out"])
    parents, kids = children(f"sqlite:///{run_dir.parent / 'mlflow.db'}", "ssr-smoke")
    assert [p.info.status for p in parents] == ["FINISHED"]
    by_trial = {k.data.tags["ssr.trial_id"]: k for k in kids}
    run = by_trial[failed.name]
    assert run.info.status == "FAILED" and "died" in run.data.tags["ssr.error"]


def test_a_second_driver_changes_nothing(killed: dict) -> None:
    second, resume = killed["second"], killed["resume"]
    assert second.returncode == 2 and "already holds a sweep" in second.stderr, second.stderr
    assert resume.returncode == 2, resume.stderr
    assert "in use by another driver" in resume.stderr
    for out in (second, resume):
        assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert killed["after"] == killed["before"]  # byte for byte


@pytest.fixture(scope="module")
def rebuilt(killed: dict) -> dict:
    run_dir: Path = killed["run_dir"]
    before = rows(run_dir)
    table = run_dir / "results.parquet"
    data = table.read_bytes()
    table.write_bytes(data[: len(data) // 2])
    code, out = run_sweep(["--resume", *killed["where"]], killed["tmp"] / "resume.log")
    return {"code": code, "out": out, "before": before, "run_dir": run_dir}


def test_a_truncated_table_is_rebuilt_and_failed_trials_stay_failed(rebuilt: dict) -> None:
    assert rebuilt["code"] == 0, rebuilt["out"][-3000:]
    run_dir: Path = rebuilt["run_dir"]
    assert "cannot be read" in rebuilt["out"] and list(run_dir.glob("results.parquet.damaged-*"))
    after, before = rows(run_dir), rebuilt["before"]
    assert after["status"].sort_index().tolist() == before["status"].sort_index().tolist()
    assert not re.search(r"#\d+ (start|resumed)", rebuilt["out"])  # nothing ran again


def test_retry_failed_runs_it_again_and_clears_its_error(rebuilt: dict, killed: dict) -> None:
    run_dir: Path = rebuilt["run_dir"]
    failed = rebuilt["before"].index[rebuilt["before"]["status"] == "failed"][0]
    code, out = run_sweep(["--resume", "--retry-failed", *killed["where"]], killed["tmp"] / "r.log")
    assert code == 0, out[-3000:]
    assert re.search(r"#\d+ start", out)
    df = rows(run_dir)
    assert (df["status"] == "complete").all() and df["error"].isna().all()
    _, kids = children(f"sqlite:///{run_dir.parent / 'mlflow.db'}", "ssr-smoke")
    run = next(k for k in kids if k.data.tags["ssr.trial_id"] == failed)
    assert run.info.status == "FINISHED" and "ssr.error" not in run.data.tags


def test_a_diverged_search_is_a_failed_trial_and_optuna_is_told(tmp_path: Path) -> None:
    import optuna

    storage = tmp_path / "runs"
    code, out = run_sweep(
        [*ARGS, "--num-samples", "1", "--set", "base.search.arch_optim.lr=1e30",
         "--set", "preemptible=true", "--storage", str(storage), "--name", "diverged"],
        tmp_path / "diverged.log",
    )  # fmt: skip
    assert code == 1 and "1 failed" in out, out[-3000:]  # no trial completed
    assert "error: unexpected" not in out
    df = rows(storage / "diverged")
    assert df["status"].tolist() == ["failed"] and df["genotype_id"].isna().all()
    # the trial's own error, not a lost node: failed at once, also when preemptible
    errors = (storage / "diverged" / f"trial_{df.index[0]}" / "error.txt").read_text()
    assert errors.count("Failure # ") == 1 and "continues from its last checkpoint" not in out
    line = df["error"].iloc[0].splitlines()[0]
    assert "DivergenceError: search diverged at epoch 1" in line and "arch_optim.lr" in line
    assert "Traceback" not in own(out)
    url = f"sqlite:///{storage / 'diverged' / 'optuna.db'}"
    study = optuna.load_study(study_name="diverged", storage=url)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.FAIL]


def test_sigterm_stops_the_driver_resumably(tmp_path: Path) -> None:
    proc = start([PYTHON, str(RUN), *ARGS, "--storage", str(tmp_path), "--name", "t"],
                 tmp_path / "t.log")  # fmt: skip
    try:
        wait_worker(proc)
        known = descendants(proc.pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=90)
        deadline = time.monotonic() + 20
        while any(alive(p) for p in known) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [p for p in known if alive(p)]
    finally:
        reap_group(proc)
    out = (tmp_path / "t.log").read_text()
    assert proc.returncode == 130, out[-3000:]
    assert "interrupted (SIGTERM)" in out and "--resume --name t" in out
    assert "Traceback" not in own(out)
    assert not left  # Ray stopped with the driver
    parents, _ = children(f"sqlite:///{tmp_path / 'mlflow.db'}", "ssr-smoke")
    assert [p.info.status for p in parents] == ["KILLED"]


def test_a_killed_driver_leaves_no_ray_process(tmp_path: Path) -> None:
    proc = start([PYTHON, str(RUN), *ARGS, "--storage", str(tmp_path), "--name", "k"],
                 tmp_path / "k.log")  # fmt: skip
    try:
        wait_worker(proc)
        known = descendants(proc.pid)
        assert len(known) >= 4  # GCS, raylet, agents, workers, the watchdog
        os.kill(proc.pid, signal.SIGKILL)  # the driver alone, not its process group
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(alive(p) for p in known) and time.monotonic() < deadline:
            time.sleep(0.5)
        left = [p for p in known if alive(p)]
    finally:
        reap_group(proc)
    assert not left, [Path(f"/proc/{pid}/cmdline").read_text()[:60] for pid, _ in left]
