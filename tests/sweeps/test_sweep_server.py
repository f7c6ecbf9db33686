"""The smoke sweep against a real ``mlflow server``, with ASHA, and a server that goes away.

The server (127.0.0.1, one worker, no job runner) is stopped once the first trial has finished;
the sweep must still finish with every row in results.parquet. A new server on the same store
then gets everything MLflow missed from ``--resume`` (per-epoch history from Tune's
progress.csv, final records, artifacts, logged models): one parent, N children, no duplicates.
What a user of MLflow sees is checked through the client: the training view, run names,
statuses, logged models, and the front in the model registry with its aliases.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from sweep_helpers import (
    PYTHON,
    RUN,
    SMOKE,
    check_sweep,
    children,
    mlflow_server,
    reap_group,
    run_sweep,
    start,
    wait_rows,
)

pytestmark = pytest.mark.slow
N = 4
ASHA = "scheduler={kind: asha, metric: val_miou, mode: max, grace_period: 1, reduction_factor: 2}"


@pytest.fixture(scope="module")
def server_sweep(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("server")
    storage = tmp / "runs"
    run_dir = storage / "smoke-server"
    base = ["--config", str(SMOKE), "--storage", str(storage), "--name", "smoke-server"]
    with mlflow_server(tmp / "mlflow") as uri:
        proc = start([PYTHON, str(RUN), *base, "--tracking-uri", uri, "--set", ASHA], tmp / "a.log")
        try:
            wait_rows(run_dir / "results.parquet", 1, proc)
            _, kids_before = children(uri, "ssr-smoke")
        except BaseException:
            reap_group(proc)
            raise
    # the server is gone now; the sweep goes on
    try:
        proc.wait(timeout=420)
    finally:
        reap_group(proc)
    first = (tmp / "a.log").read_text()
    rows_after_outage = pd.read_parquet(run_dir / "results.parquet")
    with mlflow_server(tmp / "mlflow") as uri2:
        code, out = run_sweep([*base, "--resume", "--tracking-uri", uri2], tmp / "b.log")
        parents, kids = children(uri2, "ssr-smoke")
        result = {
            "uri": uri2, "run_dir": run_dir, "first_code": proc.returncode, "first": first,
            "rows_after_outage": rows_after_outage, "code": code, "out": out,
            "kids_before": kids_before, "parents": parents, "kids": kids,
        }  # fmt: skip
        if code == 0:
            check_sweep(uri2, "ssr-smoke", run_dir, N)
            result["checked"] = True
        # a new sweep may not take a name that the experiment already has
        other = ["--config", str(SMOKE), "--storage", str(tmp / "other"), "--name", "smoke-server"]
        result["clash"] = run_sweep([*other, "--tracking-uri", uri2], tmp / "c.log", timeout=120)
        yield result


def test_sweep_survives_the_server_going_away(server_sweep: dict) -> None:
    assert server_sweep["first_code"] == 0, server_sweep["first"][-4000:]
    rows = server_sweep["rows_after_outage"]
    assert len(rows) == N and rows["trial_id"].is_unique  # nothing computed was lost
    assert "results stay in results.parquet" in server_sweep["first"]  # one warning, not a crash
    assert len(server_sweep["kids_before"]) >= 1


def test_resume_syncs_mlflow_without_duplicates(server_sweep: dict) -> None:
    assert server_sweep["code"] == 0, server_sweep["out"][-4000:]
    assert server_sweep.get("checked")  # check_sweep: 1 parent, N children, artifacts, rows
    assert server_sweep["parents"][0].info.status == "FINISHED"


def test_early_stopped_trials_are_marked(server_sweep: dict) -> None:
    df = pd.read_parquet(server_sweep["run_dir"] / "results.parquet")
    kids = {k.data.tags["ssr.trial_id"]: k for k in server_sweep["kids"]}
    for row in df.itertuples():
        assert kids[row.trial_id].data.tags["ssr.status"] == row.status
        if row.status == "early_stopped":
            assert "stopped early" in row.error
            assert pd.isna(row.derived_miou)  # no low-fidelity value passes for a final one
            assert kids[row.trial_id].info.status == "FINISHED"  # stopped as it should be
    from analysis.load import from_parquet

    canon = from_parquet(server_sweep["run_dir"] / "results.parquet")
    assert (canon["usable"] == (canon["status"] == "complete")).all()


def test_a_sweep_name_is_not_reused_by_a_new_sweep(server_sweep: dict) -> None:
    code, out = server_sweep["clash"]
    assert code == 2, out[-3000:]
    assert "already has a sweep named 'smoke-server'" in out and "Traceback" not in out


def test_artifacts_went_through_the_server(server_sweep: dict) -> None:
    root = Path(server_sweep["run_dir"]).parents[1] / "mlflow" / "artifacts"
    assert list(root.rglob("model.onnx")), "artifacts must be proxied to the server's store"


def test_runs_are_named_and_the_experiment_opens_on_them(server_sweep: dict) -> None:
    import re
    import urllib.request

    import mlflow

    uri = server_sweep["uri"]
    exp = mlflow.MlflowClient(uri).get_experiment_by_name("ssr-smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    link = f"{uri}/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    out = server_sweep["out"]
    assert "view the runs:\n" in out  # a server's address is the UI's: no command to run
    assert f"  trials: {link}&viewStateShareKey=" in out  # saved views (docs/mlflow.md)
    assert f"  front:  {link}&viewStateShareKey=" in out
    with urllib.request.urlopen(uri + "/", timeout=10) as page:  # the UI itself is served
        assert page.status == 200
    pattern = re.compile(r"^(stopped@\d · )?(ssr|darts_pruning|no_shrink)( [a-z.]+=\S+)+ #0[1-9]$")
    names = [k.info.run_name for k in server_sweep["kids"]]
    assert all(pattern.match(n) for n in names), names
    for k in server_sweep["kids"]:  # a stopped trial says so where the runs table shows it
        stopped = k.data.tags["ssr.status"] == "early_stopped"
        assert k.info.run_name.startswith("stopped@") == stopped, k.info.run_name
    assert len(set(names)) == len(names)
    for k in server_sweep["kids"]:
        assert set(k.data.params) <= {
            "cfg.ssr.op", "cfg.ssr.out", "cfg.shrink.threshold", "cfg.baseline", "cfg.seed",
            "cfg.data.name", "cfg.data.height", "cfg.data.width", "cfg.epochs",
            "cfg.retrain.epochs",
        }  # fmt: skip
        assert k.data.params["cfg.baseline"] == k.data.tags["ssr.baseline"]


def test_front_is_registered_once_with_aliases(server_sweep: dict) -> None:
    import mlflow

    from analysis.load import from_parquet
    from analysis.report import write_report
    from sweeps.tracking import Tracker, register_front

    uri, run_dir = server_sweep["uri"], server_sweep["run_dir"]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("ssr-smoke")
    complete = [k for k in server_sweep["kids"] if k.data.tags["ssr.status"] == "complete"]
    models = client.search_logged_models([exp.experiment_id])
    assert len(models) == len(complete)  # one per derived architecture, none twice
    for m in models:
        assert m.status.name == "READY" and m.tags["ssr.sweep"] == "smoke-server"
        assert {"derived_miou", "fps_shared", "fps_exclusive"} <= {x.key for x in m.metrics}
        files = {a.path for a in client.list_logged_model_artifacts(m.model_id)}
        assert {"MLmodel", "model.onnx", "input_example.json"} <= files
        meta = Path(
            mlflow.artifacts.download_artifacts(f"{m.artifact_location}/MLmodel", tracking_uri=uri)
        )
        assert "onnx:" in meta.read_text() and "signature:" in meta.read_text()
    result = write_report(from_parquet(run_dir / "results.parquet"), None, run_dir / "r2")
    tracker = Tracker(uri, "ssr-smoke", "smoke-server")
    first = register_front(tracker, result.front, result.objectives)
    again = register_front(
        Tracker(uri, "ssr-smoke", "smoke-server"), result.front, result.objectives
    )
    assert first == again and {"most-accurate", "fastest"} <= set(first)
    versions = client.search_model_versions("name = 'ssr-smoke-front'")
    assert sorted(v.tags["ssr.trial_id"] for v in versions) == sorted(result.front["trial_id"])
    best = client.get_model_version_by_alias("ssr-smoke-front", "most-accurate")
    top = result.front.sort_values(result.objectives[0][0], ascending=False).iloc[0]
    assert best.tags["ssr.trial_id"] == top["trial_id"]
