"""What a child run holds: per-epoch metrics, the final record, artifacts, re-measurements.

A child holds the flattened trial config as params ``cfg.<key>`` (see
:meth:`~sweeps.tracking.runs.Tracker.child`), the per-epoch metrics (step = the pipeline's epoch
step), the final record as metrics named like the record's numeric columns and tags
``ssr.<column>`` for its text fields, the files of the trial's final Tune checkpoint (genotype,
history, prune events, summary, ONNX) plus a drawing of the architecture, and the exclusive
re-measurement. Every function returns False when MLflow could not take it (it is synced later).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from sweeps.protocol import (
    EXCLUSIVE_FIELDS,
    FINAL_ARTIFACTS,
    FINAL_KEY,
    NUMERIC_FIELDS,
    is_finite_number,
)
from sweeps.results import genotype_json
from sweeps.tracking.runs import Tracker

#: Tune bookkeeping keys that are not metrics of the trial.
_SKIP = frozenset(
    {
        "timestamp", "pid", "done", "training_iteration", "time_since_restore",
        "iterations_since_restore", "trial_id", "date", "hostname", "node_ip", "experiment_tag",
        "config", "checkpoint_dir_name", "should_checkpoint", FINAL_KEY,
    }
)  # fmt: skip
#: Columns of a results row logged as ``ssr.<column>`` tags.
TAG_COLUMNS = (
    "genotype_id", "trial_id", "sweep", "status", "node", "device", "precision", "input_size",
    "dataset", "error",
)  # fmt: skip
#: Columns of a results row logged as metrics.
ROW_METRICS = (*NUMERIC_FIELDS, *EXCLUSIVE_FIELDS, "completion_order", "iterations", "wall_s")


def log_epoch(
    tracker: Tracker, trial_id: str, config: dict[str, Any], result: dict[str, Any]
) -> bool:
    """Per-epoch metrics at the pipeline's epoch step (the training iteration; a step that a
    resumed trial reports again is skipped). False when MLflow could not take them."""
    from mlflow.entities import Metric

    run_id = tracker.child(trial_id, config)
    if not run_id:
        return False
    step = int(result.get("step") or result.get("training_iteration") or 0)
    if step <= tracker.last_step.get(run_id, 0):
        return True
    now = int(time.time() * 1000)
    items = [
        Metric(k, float(v), now, step)
        for k, v in result.items()
        if k not in _SKIP and "/" not in k and is_finite_number(v)
    ]
    ok = tracker.store.call(
        f"logging epoch metrics of {trial_id}",
        lambda: tracker.client.log_batch(run_id, metrics=items),
    )
    if ok:
        tracker.last_step[run_id] = step
    return ok


def log_final(
    tracker: Tracker, row: dict[str, Any], config: dict[str, Any] | None, checkpoint: Any
) -> bool:
    """The final record (metrics, ``ssr.*`` tags), artifacts, and the run's end status."""
    from mlflow.entities import Metric, RunTag

    trial_id = row["trial_id"]
    run_id = tracker.child(trial_id, config)
    if not run_id:
        return False
    step = max(int(row.get("iterations") or 0), tracker.last_step.get(run_id, 0))
    now = int(time.time() * 1000)
    metrics = [
        Metric(k, float(row[k]), now, step) for k in ROW_METRICS if is_finite_number(row.get(k))
    ]
    tags = [
        RunTag(f"ssr.{k}", str(row[k])[:5000]) for k in TAG_COLUMNS if row.get(k) not in (None, "")
    ]
    geno = genotype_json(row)
    if geno:
        tags.append(RunTag("ssr.genotype", geno[:7500]))
    if row.get("fps_shared_device") is not None:
        tags.append(RunTag("ssr.fps_shared_device", str(bool(row["fps_shared_device"])).lower()))
    if not tracker.store.call(
        f"logging the record of {trial_id}",
        lambda: tracker.client.log_batch(run_id, metrics=metrics, tags=tags),
    ):
        return False
    if checkpoint is not None and not log_artifacts(tracker, run_id, row, checkpoint):
        return False
    return tracker.end_child(trial_id, row["status"])


def log_artifacts(tracker: Tracker, run_id: str, row: dict[str, Any], checkpoint: Any) -> bool:
    """The files of the trial's final checkpoint and a drawing of its architecture."""

    def upload() -> None:
        with checkpoint.as_directory() as d, tempfile.TemporaryDirectory() as tmp:
            src = Path(d)
            for name in FINAL_ARTIFACTS:
                if (src / name).is_file():
                    tracker.client.log_artifact(run_id, str(src / name))
            geno = src / "genotype.json"
            if geno.is_file():
                from sweeps.archplot import draw_genotype

                title = f"{row.get('trial_id')}  genotype {row.get('genotype_id', '')}"
                png = draw_genotype(geno, Path(tmp) / "architecture.png", title=title)
                tracker.client.log_artifact(run_id, str(png))

    return tracker.store.call(f"uploading the artifacts of {row.get('trial_id')}", upload)


def log_values(
    tracker: Tracker, trial_id: str, values: dict[str, Any], tags: dict[str, str]
) -> bool:
    """Extra metrics and tags on a child run (the exclusive re-measurement)."""
    from mlflow.entities import Metric, RunTag

    run_id = tracker.children.get(trial_id)
    if not run_id:
        return False
    step = tracker.last_step.get(run_id, 0)
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, step) for k, v in values.items() if is_finite_number(v)]
    rtags = [RunTag(k, str(v)) for k, v in tags.items()]
    return tracker.store.call(
        f"logging exclusive measurements of {trial_id}",
        lambda: tracker.client.log_batch(run_id, metrics=metrics, tags=rtags),
    )
