"""One trial of a sweep, end to end: search -> derive -> retrain -> evaluate -> measure.

:func:`run_pipeline` is what a sweep's trial runs (``sweeps/trial.py``) and what
``python -m ssr pipeline`` runs by hand. It reports every search and retraining epoch through
one reporter with a global step, writes everything it computes into ``out_dir`` (so a crashed
or resumed trial loses nothing), and returns the trial's record (docs/architecture.md §3).

Besides the results, the record says how the trial ran: the search's and retraining's
``precision``, ``channels_last`` and ``compile`` (``search_precision``, ...; ``search_compiles``
the graphs the search compiled; ``precision`` itself is the
benchmark's, a column of the result record), the devices asked for, ``visible_devices`` (the
``CUDA_VISIBLE_DEVICES`` a scheduler such as Ray gave the process, None when unset) and the
wall-clock seconds of each phase (``search_seconds``, ``retrain_seconds``, ``measure_seconds``,
which ``sweeps/schedule/plan.py``'s estimates are checked against) and when the trial ran
(``started_at``, ``finished_at``: Unix seconds).
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

from ssr.config import PipelineConfig, RetrainConfig, dump_yaml
from ssr.files.atomic import write_json
from ssr.method.genotype import Genotype
from ssr.method.search import SearchResult, run_search
from ssr.train.loop import Reporter

log = logging.getLogger(__name__)
RECORD = "record.json"


def retrain_config(cfg: PipelineConfig) -> RetrainConfig:
    """The retraining that runs: :attr:`ssr.config.PipelineConfig.resolved_retrain` (the
    search's data, device, precision and memory format where ``retrain`` leaves them None)."""
    return cfg.resolved_retrain


def run_pipeline(
    cfg: PipelineConfig,
    out_dir: str | Path,
    reporter: Reporter | None = None,
    resume: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run one trial; return its record (also written to ``out_dir/record.json``).

    Reporter steps count search epochs first, then retraining epochs; every report carries
    ``phase`` (0 search, 1 retrain) and ``val_miou`` (the current phase's validation mIoU).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / RECORD).is_file():
        return json.loads((out / RECORD).read_text())
    if cfg.search.latency.table is not None:  # refused before the search, in one line
        from ssr.data import dataset_info
        from ssr.method.latency_table import check_table_for

        classes = dataset_info(cfg.search.data.name).num_classes
        check_table_for(cfg.search.latency.table, cfg.bench, cfg.search.space, classes)
    dump_yaml(cfg.resolved(), out / "config.resolved.yaml")

    started_at = time.time()
    t0 = time.perf_counter()
    search = run_search(cfg.search, out / "search", reporter, resume=resume, progress=progress)
    search_seconds = time.perf_counter() - t0
    genotype = search.genotype
    genotype.save(out / "genotype.json")
    for name in ("history.jsonl", "prune_events.jsonl", "summary.json"):
        src = out / "search" / name
        if src.is_file():
            (out / name).write_bytes(src.read_bytes())

    record = search_record(cfg, search)
    record["search_seconds"] = search_seconds
    rcfg = cfg.resolved_retrain
    if rcfg.epochs > 0:
        from ssr.run.retrain import run_retrain

        offset = len(search.history)

        def retrain_reporter(metrics: dict[str, float], step: int) -> None:
            if reporter is not None:
                reporter({**metrics, "phase": 1.0}, offset + step)

        t0 = time.perf_counter()
        result = run_retrain(rcfg, genotype, out / "retrain", retrain_reporter, resume=resume)
        record["retrained_miou"] = result.miou
        record["retrained_miou_lo"] = result.miou_lo
        record["retrained_miou_hi"] = result.miou_hi
        record["retrained_best_miou"] = result.best_miou
        record["retrained_pixel_acc"] = result.pixel_acc
        record["retrained_per_class_iou"] = dict(zip(result.class_names, result.per_class_iou))
        record["class_names"] = list(result.class_names)
        record["class_weights"] = list(result.class_weights)
        record["retrain_seconds"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    record.update(measure_record(genotype, cfg, out, search.supernet.num_classes))
    record["measure_seconds"] = time.perf_counter() - t0
    record.update(started_at=started_at, finished_at=time.time())
    write_json(out / RECORD, record)
    return record


#: The search summary's fields a trial's record carries (besides the gaps at gap_epochs).
SEARCH_FIELDS = (
    "supernet_miou",
    "derived_miou",
    "derived_miou_lo",
    "derived_miou_hi",
    "discretization_gap",
    "discrete_at_epoch",
    "gap_at_discrete",
    "supernet_miou_at_discrete",
    "derived_miou_at_discrete",
    "fallback_prunes",
    "params_m",
    "gmacs",
    "space_log10_size",
)
#: The latency term's fields (docs/method.md §4.4): None without a latency table.
LATENCY_FIELDS = (
    "expected_latency_ms",
    "predicted_latency_ms",
    "latency_target_ms",
    "latency_table",
    "latency_table_device",
    "derive_rule",
    "argmax_predicted_latency_ms",
    "derive_changed_groups",
    "derive_log_prob_given_up",
)


def search_record(cfg: PipelineConfig, search: SearchResult) -> dict[str, Any]:
    """The record of a trial after its search: genotype, the search's results, how both phases
    run (precision, memory format, device; the retraining's as it inherits them)."""
    genotype, rcfg = search.genotype, cfg.resolved_retrain
    return {
        "genotype_id": genotype.id,
        "genotype": genotype.to_json(indent=None),
        **{k: search.summary[k] for k in SEARCH_FIELDS},
        **{k: search.summary.get(k) for k in LATENCY_FIELDS},
        # the gaps at common epochs (search.gap_epochs; docs/method.md §7)
        **{f"gap_at_{e}": search.summary[f"gap_at_{e}"] for e in cfg.search.gap_epochs},
        "search_epochs": search.summary["epochs"],
        "retrained_miou": None,
        "dataset": cfg.search.data.name,
        "search_precision": cfg.search.precision,
        "search_channels_last": cfg.search.channels_last,
        "search_compile": cfg.search.compile,
        "search_compiles": search.summary.get("compiles", 0),  # graphs (ssr/train/compiled.py)
        "search_device": cfg.search.device,
        "retrain_precision": rcfg.precision,
        "retrain_channels_last": rcfg.channels_last,
        "retrain_compile": rcfg.compile,
        "retrain_device": rcfg.device,
        "visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


def measure_record(
    genotype: Genotype, cfg: PipelineConfig, out: Path, num_classes: int
) -> dict[str, Any]:
    """FPS of the derived network on this (possibly shared) device, and its ONNX export.

    The exported network carries the best retraining epoch's weights when the trial retrained
    (``retrain/best.pt``), else its initial weights (``exported_weights`` says which).
    """
    from ssr.deploy.onnx_export import export_onnx
    from ssr.measure.bench import measure
    from ssr.method.network import DerivedNet

    b = cfg.bench
    model = DerivedNet(genotype, num_classes).eval()
    weights = "initial"  # the architecture only: the search trains the search head, not this one
    best = out / "retrain" / "best.pt"
    if best.is_file():  # retrained: measure and export the network with its best weights
        from ssr.train.checkpoint import load_checkpoint

        state = load_checkpoint(best)
        model.load_state_dict(state["model"])
        weights = f"retrained (best epoch {state.get('epoch', '?')})"
    shape = (b.batch, 3, b.height, b.width)
    # NOTE: the deployment form, as the sweep's exclusive re-measurement (sweeps/trial.py)
    res = measure(model, shape, b, optimize=True).to_dict()
    rec: dict[str, Any] = {
        "fps_shared": res["fps_median"],
        "latency_ms_median": res["latency_ms_median"],
        "latency_ms_p90": res["latency_ms_p90"],
        "device": res["device"],
        "threads": res["threads"],
        "precision": res.get("precision", b.precision),
        "batch": b.batch,
        "input_size": f"{b.height}x{b.width}",
        "backend": f"{res.get('backend', b.backend)} ({res.get('form', 'as given')})",
        "fps_shared_device": True,
        "exported_weights": weights,
    }
    if cfg.export_onnx:
        try:
            export_onnx(model, shape, out / "model.onnx")
        except Exception as exc:  # export is an artifact, not a result: never lose the trial
            log.warning("ONNX export failed: %s", exc)
            rec["onnx_error"] = str(exc)
    return rec
