"""One sweep trial without Ray: search -> derive -> retrain -> measure -> export."""

import json

from ssr.config import PipelineConfig, load_config
from ssr.pipeline import run_pipeline

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


def test_pipeline_record_files_and_resume(tmp_path) -> None:
    cfg = load_config(PipelineConfig, None, TINY)
    steps: list[tuple[float, int]] = []
    record = run_pipeline(cfg, tmp_path, lambda m, s: steps.append((m["phase"], s)), progress=False)
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
