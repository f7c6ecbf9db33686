"""One sweep trial without Ray: search -> derive -> retrain -> measure -> export."""

import json
from pathlib import Path

import pytest
import torch

from ssr.config import PipelineConfig, load_config
from ssr.deploy.onnx_export import ort_session
from ssr.method.complexity import count_macs, count_params
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet
from ssr.run.pipeline import run_pipeline
from ssr.train.checkpoint import load_checkpoint

TINY = [
    "search.space.stem_width=8",
    "search.space.stages=[{width: 16, max_depth: 2, min_depth: 1, dropout: 0.0},"
    " {width: 24, max_depth: 2, min_depth: 1, dropout: 0.0}]",
    "search.space.dilations=[1, 2]",
    "search.space.channel_remove=[4, 0]",
    "search.data.height=32",
    "search.data.width=64",
    "search.data.train_size=8",
    "search.data.val_size=4",
    "search.epochs=2",
    "search.gap_epochs=[1]",
    "search.bn_recalibration_batches=1",
    "retrain.epochs=1",
    "bench.height=32",
    "bench.width=64",
    "bench.warmup=1",
    "bench.iters=2",
    "bench.repeats=1",
]


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_pipeline_record_files_and_resume(tmp_path) -> None:
    cfg = load_config(PipelineConfig, None, TINY)
    steps: list[tuple[float, int]] = []
    reports: list[dict] = []

    def reporter(metrics: dict, step: int) -> None:
        steps.append((metrics["phase"], step))
        reports.append(dict(metrics))

    record = run_pipeline(cfg, tmp_path, reporter, progress=False)
    assert [s for _, s in steps] == [1, 2, 3] and [p for p, _ in steps] == [0.0, 0.0, 1.0]
    for key in ("genotype_id", "supernet_miou", "derived_miou", "retrained_miou",
                "discretization_gap", "params_m", "gmacs", "fps_shared", "latency_ms_median",
                "latency_ms_p90", "device", "threads", "input_size"):  # fmt: skip
        assert record[key] is not None, key
    assert record["fps_shared_device"] is True and record["input_size"] == "32x64"
    # the honest gap and the accuracy's noise (docs/method.md §7, §8.3)
    for key in ("derived_miou_lo", "derived_miou_hi", "gap_at_1", "fallback_prunes"):
        assert record[key] is not None, key
    assert 0 <= record["derived_miou_lo"] <= record["derived_miou_hi"] <= 1
    for key in ("gap_at_discrete", "supernet_miou_at_discrete", "derived_miou_at_discrete"):
        assert key in record  # None unless shrinking made the net discrete
    assert (record["gap_at_discrete"] is None) == (record["discrete_at_epoch"] is None)
    for name in ("genotype.json", "record.json", "history.jsonl", "prune_events.jsonl",
                 "model.onnx", "config.resolved.yaml"):  # fmt: skip
        assert (tmp_path / name).is_file(), name
    assert json.loads((tmp_path / "genotype.json").read_text())["id"] == record["genotype_id"]
    again = run_pipeline(cfg, tmp_path, resume=True, progress=False)  # completed: no recompute
    assert again == json.loads(json.dumps(record))
    _record_holds_what_each_phase_computed(record, reports, tmp_path)


def _record_holds_what_each_phase_computed(record: dict, reports: list[dict], out: Path) -> None:
    """The record's values are the phases' own results, not just present."""
    summary = json.loads((out / "summary.json").read_text())
    for key in ("supernet_miou", "derived_miou", "derived_miou_lo", "derived_miou_hi",
                "discretization_gap", "discrete_at_epoch", "fallback_prunes", "params_m",
                "gmacs", "gap_at_1"):  # fmt: skip
        assert record[key] == summary[key], key
    assert record["discretization_gap"] == pytest.approx(
        record["supernet_miou"] - record["derived_miou"]
    )
    search_rows = _jsonl(out / "history.jsonl")
    assert [r["val_miou"] for r in reports[:2]] == [r["val_miou"] for r in search_rows]
    # retraining: the record's mIoU is the last evaluated epoch's, and the reporter saw it
    retrain_rows = [r for r in _jsonl(out / "retrain" / "history.jsonl") if r["evaluated"]]
    assert record["retrained_miou"] == retrain_rows[-1]["val_miou"] == reports[2]["val_miou"]
    # its 90 % interval over validation images brackets it and is not a point
    assert record["retrained_miou_lo"] <= record["retrained_miou"] <= record["retrained_miou_hi"]
    assert record["retrained_miou_lo"] < record["retrained_miou_hi"]
    # per-class IoU by name, and the class weights the loss used (ENet, from the train split)
    assert list(record["retrained_per_class_iou"]) == record["class_names"]
    assert len(record["class_names"]) == len(record["class_weights"]) == 19
    got = list(record["retrained_per_class_iou"].values())
    want = retrain_rows[-1]["val_per_class_iou"]
    assert got == pytest.approx(want, nan_ok=True)
    # size: the derived network's, counted at the search's FLOPs input size
    geno = Genotype.load(out / "genotype.json")
    net = DerivedNet(geno, 19)
    flops = load_config(PipelineConfig, None, TINY).search.flops
    assert record["params_m"] == count_params(net) / 1e6
    assert record["gmacs"] == count_macs(net, (1, 3, flops.height, flops.width)) / 1e9
    # speed: one measurement, FPS and latency of the same batch-1 forward
    assert record["fps_shared"] == pytest.approx(1000 / record["latency_ms_median"], rel=1e-3)
    assert record["latency_ms_median"] <= record["latency_ms_p90"]
    # the exported network is the retrained one (best epoch's weights), as the record says
    assert record["exported_weights"] == "retrained (best epoch 1)"
    net.load_state_dict(load_checkpoint(out / "retrain" / "best.pt")["model"])
    sess = ort_session(out / "model.onnx")
    x = torch.randn(1, 3, 32, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = net.eval()(x).numpy()
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    assert abs(got - ref).max() < 1e-4
