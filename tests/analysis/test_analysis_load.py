"""analysis.load: Parquet and MLflow loaders, objective resolution."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from analysis import AnalysisInputError, from_mlflow, from_parquet, resolve_objectives
from analysis.load import resolve_objectives_with_notes
from analysis.schema import write_records


def test_from_parquet_flags_unusable_trials(records, tmp_path) -> None:
    write_records(records(), tmp_path / "results.parquet")
    df = from_parquet(tmp_path)  # a run folder works too
    assert str(df["usable"].dtype) == "boolean"
    assert df["usable"].tolist() == (df["status"] == "complete").tolist()
    assert set(df["status"]) == {"complete", "failed", "early_stopped"}


def test_from_parquet_errors_are_clear(tmp_path) -> None:
    with pytest.raises(AnalysisInputError, match="no results file"):
        from_parquet(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(AnalysisInputError, match="cannot read"):
        from_parquet(tmp_path / "bad.parquet")
    pd.DataFrame({"sweep": pd.Series([], dtype="string")}).to_parquet(tmp_path / "e.parquet")
    with pytest.raises(AnalysisInputError, match="no trials"):
        from_parquet(tmp_path / "e.parquet")


def test_resolve_objectives_aliases_and_notes(records, tmp_path) -> None:
    """An older file (no recorded objectives): aliases resolve by the defaults."""
    write_records(records(), tmp_path / "results.parquet")
    df = from_parquet(tmp_path / "results.parquet")
    assert "objectives" not in df.attrs
    pairs, notes = resolve_objectives_with_notes("miou:max,fps:max", df)
    assert pairs == [("derived_miou", True), ("fps_exclusive", True)]
    assert "miou -> derived_miou" in notes[0]
    df = df.assign(retrained_miou=df["derived_miou"], fps_exclusive=pd.NA, retrain_epochs=40)
    assert resolve_objectives("miou,fps,latency,params", df) == [
        ("retrained_miou", True),
        ("fps_shared", True),
        ("latency_ms_median", False),
        ("params_m", False),
    ]
    assert resolve_objectives("gmacs:max,latency_ms_median:min", df)[0] == ("gmacs", True)
    for bad, message in [
        ("miou", "at least two"),
        ("miou,nope:max", "unknown objective"),
        ("miou,gmacs:best", "direction"),
        ("miou,supernet_miou", "direction"),
    ]:
        with pytest.raises(AnalysisInputError, match=message):
            resolve_objectives(bad, df)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> str:
    """A SQLite MLflow store with one sweep: a parent run and three nested trial runs."""
    mlflow = pytest.importorskip("mlflow")
    from mlflow.entities import Metric, Param

    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow')}/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("ssr-sweeps")
    recorded = (
        '[{"metric": "derived_miou", "mode": "max"}, {"metric": "fps_exclusive", "mode": "max"}]'
    )
    parent = client.create_run(
        experiment,
        run_name="smoke",
        tags={"ssr.role": "sweep", "ssr.sweep": "smoke", "ssr.objectives": recorded},
    )
    for i, status in enumerate(["complete", "complete", "failed"]):
        tags = {
            "ssr.role": "trial",
            "mlflow.parentRunId": parent.info.run_id,
            "ssr.sweep": "smoke",
            "ssr.trial_id": f"trial_{i}",
            "ssr.status": status,
            "ssr.device": "cpu",
            "ssr.dataset": "synthetic",
        }
        if status == "failed":
            tags["ssr.error"] = "RuntimeError: out of memory"
        else:
            tags["ssr.genotype_id"] = f"{i:02d}aabbccdd"
            tags["ssr.genotype"] = '{"depth": [1, 2]}'
        run = client.create_run(experiment, run_name=f"trial_{i}", tags=tags)
        now = int(time.time() * 1000)
        metrics = [
            Metric("completion_order", i + 1, now, 0),
            Metric("threads", 2, now, 0),
            Metric("train_loss", 1.0, now, 5),
        ]
        if status == "complete":
            metrics += [
                Metric("derived_miou", 0.4 + 0.1 * i, now, 0),
                Metric("fps_exclusive", 120.0 - 30 * i, now, 0),
                Metric("fps_shared_device", 0.0, now, 0),
            ]
        params = [
            Param("cfg.ssr.op", str(20 + 5 * i)),
            Param("cfg.baseline", ["ssr", "darts_pruning", "no_shrink"][i]),
            Param("cfg.arch_optim.lr", "0.0003"),
        ]
        client.log_batch(run.info.run_id, metrics=metrics, params=params)
        client.set_terminated(run.info.run_id, "FAILED" if status == "failed" else "FINISHED")
    client.set_terminated(parent.info.run_id)
    return uri


@pytest.mark.slow
def test_from_mlflow_reads_nested_trial_runs(mlflow_store: str) -> None:
    df = from_mlflow(mlflow_store, "ssr-sweeps")
    df = df.sort_values("trial_id", ignore_index=True)
    assert df["trial_id"].tolist() == ["trial_0", "trial_1", "trial_2"]
    assert df["sweep"].tolist() == ["smoke"] * 3
    assert df["usable"].tolist() == [True, True, False]
    assert df.loc[2, "error"] == "RuntimeError: out of memory"
    assert df["derived_miou"].tolist()[:2] == pytest.approx([0.4, 0.5])
    assert str(df["cfg.ssr.op"].dtype) == "Int64" and df["cfg.ssr.op"].tolist() == [20, 25, 30]
    assert df["baseline"].tolist() == ["ssr", "darts_pruning", "no_shrink"]
    assert str(df["threads"].dtype) == "Int64" and str(df["device"].dtype) == "string"
    assert df["fps_shared_device"].tolist()[:2] == [False, False]
    assert "train_loss" not in df.columns  # per-epoch metrics are not record columns
    assert df["mlflow_run_id"].notna().all()
    assert df.attrs["objectives"] == [
        {"metric": "derived_miou", "mode": "max"},
        {"metric": "fps_exclusive", "mode": "max"},
    ]
    assert len(from_mlflow(mlflow_store, "ssr-sweeps", sweep="smoke")) == 3


@pytest.mark.slow
def test_from_mlflow_missing_experiment_or_store(mlflow_store: str, tmp_path) -> None:
    with pytest.raises(AnalysisInputError, match=r"no MLflow experiment named 'nope'.*ssr-sweeps"):
        from_mlflow(mlflow_store, "nope")
    with pytest.raises(AnalysisInputError, match="no trial runs"):
        from_mlflow(mlflow_store, "ssr-sweeps", sweep="other")
    with pytest.raises(AnalysisInputError, match="no MLflow database"):
        from_mlflow(f"sqlite:///{tmp_path}/absent.db", "ssr-sweeps")
    assert not (tmp_path / "absent.db").exists()
