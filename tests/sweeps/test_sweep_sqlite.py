"""The smoke sweep end to end on the embedded default store (one SQLite mlflow.db beside the run
folders) and its Optuna study (SQLite in the run folder).

One sweep serves every assert (module fixture): it is killed (SIGKILL of its process group,
driver and local Ray alike) once two trials have finished, then continued with ``--resume``;
the result must be exactly the sweep that was asked for: 4 child runs, 4 rows, no duplicates,
and one Optuna study that went on where it stopped.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
from sweep_helpers import (
    PYTHON,
    RUN,
    SMOKE,
    check_sweep,
    children,
    kill_group,
    reap_group,
    run_sweep,
    start,
    wait_rows,
)

pytestmark = pytest.mark.slow
N = 4


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("sqlite")
    storage = tmp / "runs"
    args = ["--config", str(SMOKE), "--storage", str(storage), "--name", "smoke-sqlite"]
    run_dir = storage / "smoke-sqlite"
    proc = start([PYTHON, str(RUN), *args], tmp / "first.log")
    try:
        wait_rows(run_dir / "results.parquet", 2, proc)
    finally:
        kill_group(proc, signal.SIGKILL)
        reap_group(proc)
    first = (tmp / "first.log").read_text()
    code, out = run_sweep([*args, "--resume"], tmp / "resume.log")
    return {"run_dir": run_dir, "code": code, "out": out, "first": first}


def test_killed_sweep_resumes_without_duplicates(resumed: dict) -> None:
    assert resumed["code"] == 0, resumed["out"][-4000:]
    run_dir: Path = resumed["run_dir"]
    uri = f"sqlite:///{run_dir.parent / 'mlflow.db'}"
    check_sweep(uri, "ssr-smoke", run_dir, N)


def test_per_epoch_metrics_are_logged_once(resumed: dict) -> None:
    import mlflow

    run_dir: Path = resumed["run_dir"]
    uri = f"sqlite:///{run_dir.parent / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    _, kids = children(uri, "ssr-smoke")
    for k in kids:
        search = [m.step for m in client.get_metric_history(k.info.run_id, "search/val_miou")]
        # every step, none twice; in the order logged: a step that the killed driver's writer
        # lost is filled in by the resumed sweep's sync after the later ones (tracking/sync.py)
        assert sorted(search) == [1, 2], (k.info.run_name, search)
        if k.data.tags["ssr.status"] == "complete":  # 1 retrain epoch, after the 2 of search
            retrain = client.get_metric_history(k.info.run_id, "retrain/val_miou")
            assert [m.step for m in retrain] == [3]


def test_output_ends_with_table_report_and_ui_command(resumed: dict) -> None:
    out = resumed["out"]
    assert "hypervolume" in out  # the Pareto table
    db = resumed["run_dir"].parent / "mlflow.db"
    assert f"mlflow ui --backend-store-uri sqlite:///{db}" in out
    assert "runs?workflowType=machine_learning" in out
    assert "report:" in out and "results:" in out


def test_rows_match_the_analysis_loaders(resumed: dict) -> None:
    from analysis.load import from_mlflow, from_parquet

    run_dir: Path = resumed["run_dir"]
    a = from_parquet(run_dir / "results.parquet").sort_values("trial_id").reset_index(drop=True)
    b = from_mlflow(f"sqlite:///{run_dir.parent / 'mlflow.db'}", "ssr-smoke")
    b = b.sort_values("trial_id")
    b = b.reset_index(drop=True)
    assert list(a["trial_id"]) == list(b["trial_id"])
    assert list(a["status"]) == list(b["status"])
    assert list(a["genotype_id"]) == list(b["genotype_id"])
    for col in ("derived_miou", "fps_exclusive", "cfg.ssr.op"):
        assert (a[col].astype(float) - b[col].astype(float)).abs().max() < 1e-6, col
    assert set(a["cfg.baseline"]) <= {"ssr", "darts_pruning", "no_shrink"}


def test_the_optuna_study_is_continued_by_the_resume(resumed: dict) -> None:
    import optuna
    import pandas as pd

    run_dir: Path = resumed["run_dir"]
    study = optuna.load_study(
        study_name="smoke-sqlite", storage=f"sqlite:///{run_dir / 'optuna.db'}"
    )
    assert study.metric_names == ["derived_miou", "fps_shared"]
    assert not [t.number for t in study.trials if t.state.name == "RUNNING"]  # orphans: FAIL
    told = {t.user_attrs.get("trial_id"): t for t in study.trials}
    rows = pd.read_parquet(run_dir / "results.parquet")
    for row in rows.to_dict("records"):  # one study across both drivers, labelled
        t = told[row["trial_id"]]
        assert t.user_attrs["status"] == row["status"]
        assert t.user_attrs["baseline"] == row["baseline"]
        if row["status"] == "complete":
            assert t.state.name == "COMPLETE"
            assert t.values == pytest.approx([row["derived_miou"], row["fps_shared"]])
            assert t.user_attrs["genotype_id"] == row["genotype_id"]


def test_the_console_shows_a_live_sweep(resumed: dict) -> None:
    first, out = resumed["first"], resumed["out"]
    starts = [ln for ln in first.splitlines() if " start  " in ln]
    assert starts and all(len(ln) <= 100 for ln in starts)
    # two trials start together: either may print first
    assert any(ln.startswith("#01 start  ") for ln in starts) and all("op=" in ln for ln in starts)
    assert "[1/4] " in first and "elapsed" in first  # progress lines after each end
    assert "[4/4] " in out
    # the default MLflow store sits beside the run folders, not in them
    run_dir: Path = resumed["run_dir"]
    assert (run_dir.parent / "mlflow.db").is_file() and not (run_dir / "mlflow.db").exists()


def test_a_complete_trial_keeps_its_retrained_network_for_evaluate(resumed: dict) -> None:
    """The final checkpoint holds the retrained weights at their training size and the
    retraining's config, so ``python -m ssr evaluate`` scores the network as retraining did."""
    import json
    import subprocess

    from analysis.load import from_parquet

    run_dir: Path = resumed["run_dir"]
    rows = from_parquet(run_dir / "results.parquet")
    done = rows[rows["status"] == "complete"].iloc[0]
    final = max(run_dir.glob(f"*{done['trial_id']}*/checkpoint_*"), key=lambda p: p.name)
    assert (final / "retrained.pt").is_file() and (final / "retrain.yaml").is_file()
    cmd = [PYTHON, "-m", "ssr", "evaluate", "--genotype", str(final / "genotype.json"),
           "--weights", str(final / "retrained.pt"), "--config", str(final / "retrain.yaml"),
           "--resamples", "50", "--json"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    scored = json.loads(out)
    assert abs(scored["miou"] - float(done["retrained_miou"])) < 1e-6
