"""What MLflow holds for a sweep's trials, written by the driver-side tracking in process (no Ray):
run names, statuses, params, phase-grouped metrics, the logged model with its signature, input
example and linked metrics, and the front in the model registry with its aliases (registered
again without duplicates). The same code against a real server: test_tracking_server.py."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from sweeps.define.spec import CONFIG_DIR, load_sweep
from sweeps.tracking import Tracker, log_epoch, log_final, register_front, view_lines
from sweeps.tracking.models import find_model
from sweeps.tracking.ui import EXPERIMENT_KIND_TAG, TRAINING_KIND, VIEW_TAG, view_key

pytestmark = pytest.mark.slow
GENOTYPE = Path(__file__).parents[2] / "ssr" / "genotypes" / "ssr_cityscapes.json"


class DirCheckpoint:
    """A Tune checkpoint's interface over a local folder."""

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def as_directory(self) -> Iterator[str]:
        yield str(self.path)


def tiny_onnx(path: Path) -> None:
    """A one-node ONNX model with a fixed 1x3x8x16 input."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 16])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 3, 8, 16])
    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))


def final_files(folder: Path) -> DirCheckpoint:
    folder.mkdir(parents=True)
    (folder / "genotype.json").write_text(GENOTYPE.read_text())
    (folder / "config.resolved.yaml").write_text("search: {}\n")
    tiny_onnx(folder / "model.onnx")
    return DirCheckpoint(folder)


def row(trial_id: str, status: str, miou: float | None = None, fps: float | None = None) -> dict:
    r = {
        "sweep": "sw", "trial_id": trial_id, "status": status, "baseline": "ssr",
        "genotype_id": json.loads(GENOTYPE.read_text()).get("id", "0123456789"),
        "genotype": GENOTYPE.read_text(), "iterations": 4, "dataset": "synthetic",
    }  # fmt: skip
    if miou is not None:
        r.update(derived_miou=miou, fps_shared=fps, fps_exclusive=fps, gmacs=0.5)
    if status == "failed":
        r["error"] = "ValueError: width must be positive\n---\nTraceback (most recent call last)"
    return r


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("tracking")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    varied = [p.key for p in sweep.params]
    tracker = Tracker(uri, "exp", "sw", tmp / "mlartifacts", varied)
    tracker.start(params={"sweep.name": "sw"}, tags={}, artifacts=[])
    space = sweep.param_space()
    configs = {}
    for i, (t, op, baseline) in enumerate(
        [("t1", 10.0, "ssr"), ("t2", 40.0, "no_shrink"), ("t3", 20.0, "ssr"), ("t4", 5.0, "ssr")]
    ):
        dims = {"ssr.op": op, "ssr.out": 1.0, "shrink.threshold": 0.1, "baseline": baseline,
                "seed": 0}  # fmt: skip
        configs[t] = {**space, "dims": dims}
        tracker.note_number(t, f"{i + 1}_dims=...")
        tracker.child(t, configs[t])
        log_epoch(tracker, t, configs[t], {"step": 1, "phase": 0.0, "val_miou": 0.1,
                                           "derived_miou_epoch": 0.05, "arch_step": 1.0,
                                           "discrete": 0.0})  # fmt: skip
        log_epoch(tracker, t, configs[t], {"step": 3, "phase": 1.0, "val_miou": 0.2})
    rows = {
        "t1": row("t1", "complete", 0.5, 100.0),
        "t2": row("t2", "complete", 0.3, 300.0),
        "t3": row("t3", "early_stopped"),
        "t4": row("t4", "failed"),
    }
    for t, r in rows.items():
        checkpoint = final_files(tmp / t) if r["status"] == "complete" else None
        assert log_final(tracker, r, configs[t], checkpoint)
    front = pd.DataFrame(
        [
            {"trial_id": "t1", "genotype_id": "a", "baseline": "ssr", "derived_miou": 0.5,
             "fps_exclusive": 100.0, "is_knee": True},
            {"trial_id": "t2", "genotype_id": "b", "baseline": "no_shrink", "derived_miou": 0.3,
             "fps_exclusive": 300.0, "is_knee": False},
        ]
    )  # fmt: skip
    objectives = [("derived_miou", True), ("fps_exclusive", True)]
    first = register_front(tracker, front, objectives)
    # a resumed sweep: a new driver (its process-wide MLflow URI is not the sweep's) and a new
    # tracker find everything again; the front shrank to t2
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp / 'elsewhere.db'}")
    again = Tracker(uri, "exp", "sw", tmp / "mlartifacts", varied)
    again.start(params={}, tags={}, artifacts=[], resume=True)
    assert again.book.is_final("t1")
    again.book.reopen("t1")  # as if the first attempt had been cut off before the end
    assert log_final(again, rows["t1"], configs["t1"], DirCheckpoint(tmp / "t1"))
    second = register_front(again, front.iloc[1:].assign(is_knee=False), objectives)
    links = view_lines(again, objectives, front)
    return {
        "uri": uri, "tracker": again, "first": first, "second": second, "tmp": tmp,
        "links": links,
    }  # fmt: skip


def runs(uri: str) -> dict:
    import mlflow

    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    found = client.search_runs([exp.experiment_id], "tags.`ssr.role` = 'trial'")
    return {r.data.tags["ssr.trial_id"]: r for r in found}


def test_experiment_opens_in_the_training_view(logged: dict) -> None:
    import mlflow

    exp = mlflow.MlflowClient(logged["uri"]).get_experiment_by_name("exp")
    assert exp.tags[EXPERIMENT_KIND_TAG] == TRAINING_KIND


def test_run_names_statuses_and_params(logged: dict) -> None:
    by_trial = runs(logged["uri"])
    assert by_trial["t1"].info.run_name == "ssr op=10 out=1 thr=.1 seed=0 #01"
    assert by_trial["t2"].info.run_name.startswith("no_shrink op=40 ")
    assert {t: r.info.status for t, r in by_trial.items()} == {
        "t1": "FINISHED", "t2": "FINISHED", "t3": "FINISHED", "t4": "FAILED",
    }  # fmt: skip
    assert by_trial["t3"].data.tags["ssr.status"] == "early_stopped"
    # a stopped trial ends FINISHED like a complete one: its name says it stopped, first
    assert by_trial["t3"].info.run_name == "stopped@3 · ssr op=20 out=1 thr=.1 seed=0 #03"
    assert by_trial["t4"].data.tags["ssr.error"] == "ValueError: width must be positive"
    assert set(by_trial["t1"].data.params) == {
        "cfg.ssr.op", "cfg.ssr.out", "cfg.shrink.threshold", "cfg.baseline", "cfg.seed",
        "cfg.data.name", "cfg.data.height", "cfg.data.width", "cfg.epochs", "cfg.retrain.epochs",
    }  # fmt: skip
    assert by_trial["t1"].data.tags["ssr.baseline"] == "ssr"


def test_metrics_are_grouped_by_phase_and_final_values_plain(logged: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(logged["uri"])
    run = runs(logged["uri"])["t2"]
    metrics = set(run.data.metrics)
    assert {"search/val_miou", "search/derived_miou", "retrain/val_miou"} <= metrics
    assert {"derived_miou", "fps_shared", "gmacs"} <= metrics
    assert not any(m in metrics for m in ("val_miou", "step", "phase", "derived_miou_epoch"))
    assert not {"search/arch_step", "search/discrete"} & metrics  # flags: no constant charts
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "search/val_miou")]
    assert steps == [1]
    history = client.get_metric_history(run.info.run_id, "derived_miou")
    assert [(m.step, m.value) for m in history] == [(4, 0.3)]  # logged once, at the final step


def test_each_complete_trial_is_a_logged_model(logged: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(logged["uri"])
    run = runs(logged["uri"])["t1"]
    model = find_model(logged["tracker"], "t1")
    assert model.source_run_id == run.info.run_id and model.status.name == "READY"
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    linked = {m.key: m.value for m in model.metrics}
    assert linked["derived_miou"] == 0.5 and linked["fps_shared"] == 100.0
    assert model.tags["ssr.trial_id"] == "t1" and model.tags["ssr.weights"] == "initial"
    files = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "model.onnx", "input_example.json"} <= files
    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert tuple(info.signature.inputs.to_dict()[0]["tensor-spec"]["shape"]) == (1, 3, 8, 16)
    assert info.run_id == run.info.run_id and info.model_id == model.model_id  # its MLmodel
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"genotype.json", "architecture.png", "config.resolved.yaml"} <= names
    assert "model.onnx" not in names  # it is the logged model's
    exp = client.get_experiment_by_name("exp")
    assert len(client.search_logged_models([exp.experiment_id])) == 2  # none logged twice


def test_failed_trials_keep_their_error_text(logged: dict) -> None:
    import mlflow

    run = runs(logged["uri"])["t4"]
    text = mlflow.MlflowClient(logged["uri"]).download_artifacts(
        run.info.run_id, "error.txt", str(logged["tmp"])
    )
    assert "Traceback" in Path(text).read_text()


def test_front_is_registered_with_aliases_and_no_duplicates(logged: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(logged["uri"])
    assert logged["first"] == {"knee": "1", "most-accurate": "1", "fastest": "2"}
    assert logged["second"] == {"most-accurate": "2", "fastest": "2"}  # t2 alone, no knee
    versions = client.search_model_versions("name = 'exp-front'")
    assert sorted(v.tags["ssr.trial_id"] for v in versions) == ["t1", "t2"]
    on_front = {v.tags["ssr.trial_id"]: v.tags["ssr.on_front"] for v in versions}
    assert on_front == {"t1": "false", "t2": "true"}
    assert set(client.get_registered_model("exp-front").aliases) == {"most-accurate", "fastest"}
    v = client.get_model_version_by_alias("exp-front", "fastest")
    assert v.tags["ssr.trial_id"] == "t2" and v.source.startswith("models:/m-")
    for v in versions:  # each logged model lists its version (the UI: "Registered")
        model = client.get_logged_model(v.source.removeprefix("models:/"))
        listed = json.loads(model.tags["mlflow.modelVersions"])
        assert listed == [{"name": "exp-front", "version": str(v.version)}], listed


def test_the_printed_links_open_saved_views(logged: dict) -> None:
    import mlflow

    client = mlflow.MlflowClient(logged["uri"])
    exp = client.get_experiment_by_name("exp")
    trials = json.loads(exp.tags[VIEW_TAG + view_key("sw", "trials")])
    front = json.loads(exp.tags[VIEW_TAG + view_key("sw", "front")])
    assert trials["searchFilter"] == "tags.`ssr.sweep` = 'sw' and tags.`ssr.role` = 'trial'"
    found = client.search_runs([exp.experiment_id], trials["searchFilter"])
    assert sorted(r.data.tags["ssr.trial_id"] for r in found) == ["t1", "t2", "t3", "t4"]
    assert trials["orderByKey"] == "metrics.`derived_miou`"  # flat rows, best first
    assert {"metrics.`fps_exclusive`", "tags.`ssr.status`"} <= set(trials["selectedColumns"])
    found = client.search_runs([exp.experiment_id], front["searchFilter"])
    assert sorted(r.data.tags["ssr.trial_id"] for r in found) == ["t1", "t2"]
    (chart,) = front["compareRunCharts"]
    assert chart["type"] == "SCATTER"
    assert (chart["xaxis"]["key"], chart["yaxis"]["key"]) == ("fps_exclusive", "derived_miou")
    lines = logged["links"].splitlines()
    assert lines[0].startswith(f"view the runs: mlflow ui --backend-store-uri {logged['uri']}")
    assert f"viewStateShareKey={view_key('sw', 'trials')}&compareRunsMode=TABLE" in lines[1]
    assert f"viewStateShareKey={view_key('sw', 'front')}&compareRunsMode=CHART" in lines[2]


def cut_off_once(client: object, method: str) -> list[str]:
    """Make ``client.<method>`` do its work, then raise once (a store time limit that ran out
    after the store committed); returns the calls made."""
    real = getattr(client, method)
    calls: list[str] = []

    def cut_off(*args: object, **kwargs: object) -> object:
        calls.append(method)
        out = real(*args, **kwargs)
        if len(calls) == 1:
            raise TimeoutError(f"{method}: the store's time limit ran out")
        return out

    setattr(client, method, cut_off)
    return calls


@pytest.mark.parametrize("method", ["log_model_artifacts", "finalize_logged_model"])
def test_a_model_cut_off_by_the_store_is_completed_by_the_retry(
    tmp_path: Path, method: str
) -> None:
    """The store fails partway through saving a trial's model (the files or the READY mark
    landed, the call raised): the record is not in, the model stays PENDING (not FAILED), and
    the retry of the record (the end-of-sweep sync, a new tracker) completes that same model:
    one READY model, linked to its run once, its metrics logged once."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", "sw", tmp_path / "mlartifacts")
    tracker.start(params={}, tags={}, artifacts=[])
    r = row("t1", "complete", 0.5, 100.0)
    checkpoint = final_files(tmp_path / "t1")
    calls = cut_off_once(tracker.client, method)
    assert not log_final(tracker, r, None, checkpoint)
    assert calls == [method]
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    (model,) = client.search_logged_models([exp.experiment_id])
    assert model.status.name == ("PENDING" if method == "log_model_artifacts" else "READY")

    again = Tracker(uri, "exp", "sw", tmp_path / "mlartifacts")
    again.start(params={}, tags={}, artifacts=[], resume=True)
    assert log_final(again, r, None, checkpoint)
    (model,) = client.search_logged_models([exp.experiment_id])
    assert model.status.name == "READY" and model.tags["ssr.trial_id"] == "t1"
    files = {a.path for a in client.list_logged_model_artifacts(model.model_id)}
    assert {"MLmodel", "model.onnx", "input_example.json"} <= files
    run = runs(uri)["t1"]
    assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert "model.onnx" not in {a.path for a in client.list_artifacts(run.info.run_id)}
    history = client.get_metric_history(run.info.run_id, "derived_miou")
    assert [(m.step, m.value) for m in history] == [(4, 0.5)]
    assert run.info.status == "FINISHED"


def test_a_model_that_cannot_be_exported_is_failed_and_not_registered(tmp_path: Path) -> None:
    """An ONNX file the flavour cannot be written from: the record is in with ``model.onnx`` as
    a plain file, the model is FAILED, and the front leaves the trial out of the registry."""
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, "exp", "sw", tmp_path / "mlartifacts")
    tracker.start(params={}, tags={}, artifacts=[])
    r = row("t1", "complete", 0.5, 100.0)
    checkpoint = final_files(tmp_path / "t1")
    (tmp_path / "t1" / "model.onnx").write_bytes(b"not an onnx model")
    assert log_final(tracker, r, None, checkpoint)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("exp")
    (model,) = client.search_logged_models([exp.experiment_id])
    assert model.status.name == "FAILED"
    run = runs(uri)["t1"]
    assert "model.onnx" in {a.path for a in client.list_artifacts(run.info.run_id)}
    front = pd.DataFrame([{"trial_id": "t1", "genotype_id": "a", "baseline": "ssr",
                           "derived_miou": 0.5, "fps_exclusive": 100.0, "is_knee": True}])  # fmt: skip
    objectives = [("derived_miou", True), ("fps_exclusive", True)]
    assert register_front(tracker, front, objectives) == {}
    assert client.search_model_versions("name = 'exp-front'") == []
