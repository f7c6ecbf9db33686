"""The trial <-> driver protocol, as constants: report keys, the record fields a results row and
an MLflow run keep, the final checkpoint's files, trial statuses and trial folder names.

A trial (:mod:`sweeps.trial`) talks to the driver only through Tune reports and checkpoints
(docs/architecture.md §4); these constants are that protocol: which report carries the final record,
which record fields a row and a run take, which files the final checkpoint holds, the statuses a
finished trial can have and the name of a trial's folder. A leaf module: it imports nothing of
the project, so every other module of :mod:`sweeps` may import it without a cycle.
"""

from __future__ import annotations

import math
from typing import Any

#: Key of a trial report: 1.0 on the last report (it carries the final record), 0.0 on an epoch.
FINAL_KEY = "final_record"

#: Key of the Tune trial config holding the sampled values of the sweep's parameters.
#: NOTE: named before the parameters were (they were "dimensions"); a saved experiment holds
#: this key, so renaming it would break ``--resume`` of existing runs.
SAMPLED_KEY = "dims"

#: Text fields of the record that the trial's final report carries.
REPORT_TEXT_FIELDS = (
    "genotype_id",
    "genotype",
    "device",
    "precision",
    "input_size",
    "dataset",
    "backend",
    "baseline",
    "search_input_size",
    "exported_weights",
)
#: Text fields of a final report that a results row keeps (``node``: where the trial ran last;
#: ``nodes``: JSON, the nodes of its runs in order, :mod:`sweeps.runtime.preemption`).
#: ``input_size`` is the bench (deployment) input, ``search_input_size`` the search's.
TEXT_FIELDS = (
    "genotype_id",
    "genotype",
    "device",
    "precision",
    "input_size",
    "node",
    "nodes",
    "baseline",
    "search_input_size",
    "exported_weights",
)
#: Numeric record fields of a final report that a results row keeps (``resumes``: runs of the
#: trial that continued from a checkpoint).
NUMERIC_FIELDS = (
    "resumes",
    "supernet_miou",
    "derived_miou",
    "derived_miou_lo",
    "derived_miou_hi",
    "retrained_miou",
    "retrained_miou_lo",
    "retrained_miou_hi",
    "discretization_gap",
    "gap_at_discrete",
    "discrete_at_epoch",
    "fallback_prunes",
    "retrain_epochs",
    "params_m",
    "gmacs",
    "fps_shared",
    "latency_ms_median",
    "latency_ms_p90",
    "threads",
    "batch",
    "space_log10_size",
    # the latency term's (docs/method.md §4.4): None without a latency table
    "expected_latency_ms",
    "predicted_latency_ms",
    "latency_target_ms",
)
#: Fields of the exclusive re-measurement after the sweep (docs/architecture.md §5).
#: ``fps_exclusive`` is the median over interleaved passes, ``_lo``/``_hi`` the slowest and the
#: fastest pass (:mod:`ssr.measure.interleave`): points whose ranges overlap are tied, not ranked.
EXCLUSIVE_FIELDS = (
    "fps_exclusive",
    "fps_exclusive_lo",
    "fps_exclusive_hi",
    "latency_exclusive_ms_median",
    "latency_exclusive_ms_p90",
    "exclusive_threads",
)
#: Text fields of the exclusive re-measurement (a row column and a run tag each).
EXCLUSIVE_TEXT_FIELDS = ("exclusive_device", "exclusive_backend")

#: Per-epoch metrics a trial reports in both phases (search, then retraining): what ASHA and
#: MO-ASHA may rank on. ``val_miou`` is the current phase's validation mIoU.
EPOCH_METRICS = ("val_miou", "train_loss")
#: Per-epoch cost metrics of the search phase only (MO-ASHA carries the last value forward):
#: ``expected_gmacs`` is the supernet's expected conv GMACs under its architecture distribution,
#: ``expected_latency_ms`` its expected latency from a latency table (searches with one only).
EPOCH_COST_METRICS = ("expected_gmacs", "expected_latency_ms")

#: Files of the pipeline's output folder that the trial's final checkpoint carries.
FINAL_ARTIFACTS = (
    "genotype.json",
    "history.jsonl",
    "prune_events.jsonl",
    "summary.json",
    "record.json",
    "config.resolved.yaml",
    "model.onnx",
    "model.onnx.data",
)

#: Status of a finished trial: its final record was reported.
COMPLETE = "complete"
#: Status of a trial the scheduler (ASHA) stopped: its values are low-fidelity.
EARLY_STOPPED = "early_stopped"
#: Status of a trial that raised.
FAILED = "failed"
STATUSES = (COMPLETE, EARLY_STOPPED, FAILED)

#: A trial's folder is ``<experiment>/trial_<trial id>``.
TRIAL_DIR_PREFIX = "trial_"


def trial_dirname(trial: Any) -> str:
    """Short trial folder names (Tune's default embeds the whole config)."""
    return f"{TRIAL_DIR_PREFIX}{trial.trial_id}"


def is_finite_number(v: Any) -> bool:
    """True for an int or float (not a bool) that is finite: what may be reported as a metric."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
