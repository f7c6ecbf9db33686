"""What a child run holds: per-epoch metrics, the final record, artifacts, its logged model.

- per-epoch metrics at the pipeline's epoch step, grouped by phase: ``search/<name>`` and
  ``retrain/<name>`` (the MLflow UI draws one section of charts per prefix); a value the trial
  reports as ``<objective>_epoch`` is logged as ``search/<objective>``;
- the final record under the plain column names of :mod:`analysis.schema` (``derived_miou``,
  ``fps_shared``, ...), linked to the trial's logged model, and its text fields as tags
  ``ssr.<column>`` (``ssr.status``; a failed trial's ``ssr.error`` is the first line of its
  error, the whole text is the artifact ``error.txt``);
- the files of the trial's final Tune checkpoint (genotype, history, prune events, summary,
  record, ``config.resolved.yaml``: the whole config) plus a drawing of the architecture, and
  ``model.onnx`` as the logged model of :mod:`sweeps.tracking.models`;
- the exclusive re-measurement.

Every function returns False when MLflow could not take it (it is synced later).
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

from analysis.schema import COLUMNS
from sweeps.contract.params import flat_params
from sweeps.contract.protocol import (
    COMPLETE,
    EARLY_STOPPED,
    FAILED,
    FINAL_ARTIFACTS,
    FINAL_KEY,
    is_finite_number,
)
from sweeps.record.results import genotype_json
from sweeps.tracking.models import ExportError, is_ready, model_of, prepare_model, save_model
from sweeps.tracking.names import defining_params, stopped_label
from sweeps.tracking.runs import Tracker

log = logging.getLogger(__name__)

#: Report keys that are Tune's bookkeeping or the epoch's coordinates, not metrics of the trial.
_SKIP = frozenset(
    {
        "timestamp", "pid", "done", "training_iteration", "time_since_restore",
        "iterations_since_restore", "trial_id", "date", "hostname", "node_ip", "experiment_tag",
        "config", "checkpoint_dir_name", "should_checkpoint", "time_total_s", "step", "phase",
        "epoch", "resumes", FINAL_KEY,
    }
)  # fmt: skip
#: Per-epoch state flags, not logged: 0/1 values that stay constant over most runs (the MLflow
#: UI would chart each) and that the record already tells (``discrete_at_epoch``; an epoch
#: without evaluation reports no score). They stay in the trial's ``history.jsonl``.
_FLAGS = frozenset({"arch_step", "discrete", "evaluated"})
#: Per-epoch report keys logged under another name.
_RENAME = {"time_this_iter_s": "epoch_s"}
#: Phase prefixes of per-epoch metrics (the trial reports ``phase`` 0 or 1).
PHASES = {0: "search", 1: "retrain"}
#: Numeric row fields that are not record columns but are logged with the final record.
EXTRA_METRICS = ("wall_s",)
#: Run files of the trial's model, logged as files only when the logged model fails.
_MODEL_FILES = ("model.onnx", "model.onnx.data")


def epoch_step(result: dict[str, Any]) -> int | None:
    """The pipeline's epoch step of a report (``step``, else Tune's ``training_iteration``);
    None when it has neither as a finite number (a ``progress.csv`` row holds NaN in the columns
    of the reports it is not)."""
    finite = [
        int(result[k]) for k in ("step", "training_iteration") if is_finite_number(result.get(k))
    ]
    return next((v for v in finite if v), finite[0] if finite else None)


def epoch_metrics(result: dict[str, Any]) -> dict[str, float]:
    """The per-epoch metrics of a report, named ``<phase>/<name>``."""
    phase_no = result.get("phase")
    phase = PHASES.get(int(phase_no) if is_finite_number(phase_no) else 0, "search")
    out = {}
    for k, v in result.items():
        if k in _SKIP or k in _FLAGS or "/" in k or not is_finite_number(v):
            continue
        name = _RENAME.get(k, k.removesuffix("_epoch") if k.endswith("_epoch") else k)
        out[f"{phase}/{name}"] = float(v)
    return out


def log_epoch(
    tracker: Tracker, trial_id: str, config: dict[str, Any] | None, result: dict[str, Any]
) -> bool:
    """Per-epoch metrics at the pipeline's epoch step, each step once (a step that a resumed
    trial reports again is skipped: :meth:`~sweeps.tracking.runs.Tracker.log_step`). False when
    MLflow could not take them."""
    from mlflow.entities import Metric

    tracker.note_number(trial_id, result.get("experiment_tag"))
    if not tracker.child(trial_id, config):
        return False
    step = epoch_step(result)
    if step is None:  # not an epoch's report: nothing to log at a step
        return True
    now = int(time.time() * 1000)
    items = [Metric(k, v, now, step) for k, v in epoch_metrics(result).items()]
    return tracker.log_step(
        trial_id,
        step,
        f"logging epoch metrics of {trial_id}",
        lambda run_id: tracker.client.log_batch(run_id, metrics=items),
    )


def final_name(tracker: Tracker, row: dict[str, Any], config: dict[str, Any] | None) -> str | None:
    """The run's name once the trial ended: an early-stopped trial's says so first
    (``stopped@6 · ssr op=32 ... #08``, :func:`~sweeps.tracking.names.stopped_label`), where the
    runs table shows it without an extra column; None: the name stays."""
    if row.get("status") != EARLY_STOPPED or not config:
        return None
    epoch = tracker.last_step(row["trial_id"]) or int(row.get("iterations") or 0)
    return stopped_label(tracker.run_name(row["trial_id"], config), epoch)


def final_metrics(row: dict[str, Any]) -> dict[str, float]:
    """The numeric record columns of a results row (and a few run facts), finite values only."""
    numeric = [c for c, dtype in COLUMNS.items() if dtype in ("Float64", "Int64")]
    return {k: float(row[k]) for k in (*numeric, *EXTRA_METRICS) if is_finite_number(row.get(k))}


def final_tags(row: dict[str, Any]) -> dict[str, str]:
    """The text record columns of a results row as ``ssr.<column>`` tags."""
    tags: dict[str, str] = {}
    for k, dtype in COLUMNS.items():
        v = row.get(k)
        if v is None or v == "" or k in ("genotype", "error"):
            continue
        if dtype == "string":
            tags[f"ssr.{k}"] = str(v)[:5000]
        elif dtype == "boolean":
            tags[f"ssr.{k}"] = str(bool(v)).lower()
    geno = genotype_json(row)
    if geno:
        tags["ssr.genotype"] = geno[:7500]
    if row.get("status") == FAILED and row.get("error"):
        lines = [ln for ln in str(row["error"]).splitlines() if ln.strip()]
        tags["ssr.error"] = (lines[0] if lines else "failed")[:500]
    return tags


def log_final(
    tracker: Tracker, row: dict[str, Any], config: dict[str, Any] | None, checkpoint: Any
) -> bool:
    """The final record (metrics, ``ssr.*`` tags), artifacts, the logged model, and the run's
    end status."""
    from mlflow.entities import Metric, RunTag

    trial_id = row["trial_id"]
    if tracker.book.is_final(trial_id):  # a resumed sweep's callbacks see it end again
        return True
    run_id = tracker.child(trial_id, config)
    last = tracker.last_step(trial_id) if run_id else None
    if not run_id or last is None:
        return False
    step = max(int(row.get("iterations") or 0), last)
    tags = [RunTag(k, v) for k, v in final_tags(row).items()]

    def batch(model: Any) -> None:
        model_id = model.model_id if model is not None else None
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, v, now, step, model_id=model_id) for k, v in final_metrics(row).items()
        ]
        if model is not None and model.metrics:  # a cut-off attempt's metrics are in: not twice
            metrics = []
        tracker.client.log_batch(run_id, metrics=metrics, tags=tags)

    def record() -> None:
        if checkpoint is None or row.get("status") != COMPLETE:
            batch(None)
            if row.get("status") == FAILED and row.get("error"):
                tracker.client.log_text(run_id, str(row["error"]), "error.txt")
            return
        with checkpoint.as_directory() as d:
            src = Path(d)
            model = None
            if (src / "model.onnx").is_file():
                params = (
                    defining_params(flat_params(config), tracker.varied_keys(config))
                    if config
                    else {}
                )
                model = prepare_model(tracker, run_id, row, params)
            batch(model)
            if model is not None and not _save_model(tracker, model, run_id, src, step):
                model = None
            _upload_files(tracker, run_id, row, src, skip_model=model is not None)

    if not tracker.store.call(f"logging the record of {trial_id}", record):
        tracker.book.unsure(trial_id)  # part of it may be in: read the run's last step back
        return False
    # later values (the re-measurement) go to the final step
    return tracker.end_child(trial_id, row["status"], step, final_name(tracker, row, config))


def _save_model(tracker: Tracker, model: Any, run_id: str, src: Path, step: int) -> bool:
    """The ONNX flavour of the trial's model; False (and a warning) when it cannot be written,
    in which case the model is FAILED and ``model.onnx`` is logged as a plain file instead.

    A store failure is raised, not a FAILED model: the record is logged again later (the sync),
    and that attempt completes the model the cut-off one left PENDING (READY, one model).
    """
    if is_ready(model):
        return True
    try:
        save_model(tracker, model, run_id, src / "model.onnx", step)
        return True
    except ExportError as exc:  # an export problem must not cost the trial's record
        log.warning(
            "could not log the model of trial %s as an MLflow ONNX model (%s); its model.onnx is "
            "logged as a file instead",
            model.tags.get("ssr.trial_id"),
            exc,
        )
        tracker.client.finalize_logged_model(model.model_id, "FAILED")
        return False


def _upload_files(
    tracker: Tracker, run_id: str, row: dict[str, Any], src: Path, skip_model: bool
) -> None:
    """The files of the trial's final checkpoint and a drawing of its architecture."""
    for name in FINAL_ARTIFACTS:
        if skip_model and name in _MODEL_FILES:
            continue
        if (src / name).is_file():
            tracker.client.log_artifact(run_id, str(src / name))
    from sweeps.record.archplot import DRAWING, draw_genotype, trial_title

    geno = src / "genotype.json"
    if (src / DRAWING).is_file():  # drawn by the trial (sweeps.trial)
        tracker.client.log_artifact(run_id, str(src / DRAWING))
    elif geno.is_file():  # a checkpoint of a trial that did not draw it
        with tempfile.TemporaryDirectory() as tmp:
            title = trial_title(row.get("trial_id"), row.get("genotype_id", ""))
            png = draw_genotype(geno, Path(tmp) / DRAWING, title=title)
            tracker.client.log_artifact(run_id, str(png))


def log_values(
    tracker: Tracker, trial_id: str, values: dict[str, Any], tags: dict[str, str]
) -> bool:
    """Extra metrics and tags on a child run (the exclusive re-measurement), linked to the
    trial's logged model when it has one."""
    from mlflow.entities import Metric, RunTag

    run_id = tracker.book.run_id(trial_id)
    step = tracker.last_step(trial_id) if run_id else None
    if not run_id or step is None:
        return False
    model_id = model_of(tracker, trial_id)
    now = int(time.time() * 1000)
    metrics = [
        Metric(k, float(v), now, step, model_id=model_id)
        for k, v in values.items()
        if is_finite_number(v)
    ]
    rtags = [RunTag(k, str(v)) for k, v in tags.items()]
    return tracker.store.call(
        f"logging exclusive measurements of {trial_id}",
        lambda: tracker.client.log_batch(run_id, metrics=metrics, tags=rtags),
    )
