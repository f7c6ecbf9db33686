"""The Ray Tune trainable: one trial = one :func:`ssr.run.pipeline.run_pipeline` (docs/architecture.md §3).

``run_trial(config)`` resolves the Tune trial config (see :meth:`sweeps.define.definition.Sweep.param_space`)
once into a :class:`sweeps.contract.params.ResolvedTrial` (its validated :class:`ssr.config.PipelineConfig`,
baseline and params), runs search -> derive -> retrain -> measure
in the trial's own folder and talks to Tune only through ``ray.tune``:

- every search/retrain epoch is reported with :func:`ray.tune.report` (``step`` = the pipeline's
  global epoch step, the time axis of ASHA; ``val_miou`` = the current phase's validation mIoU);
  the record's objective columns are NaN there, so no low-fidelity value can pass for a final
  one, and a per-epoch value of the same name is kept as ``<name>_epoch``;
- every report says where the trial ran (``node``, ``node_id``) and, from the pipeline folder's
  ``placement.json``, on which nodes its runs ran and how often it resumed (``nodes``,
  ``resumes``: :func:`sweeps.runtime.preemption.placement`);
- every ``checkpoint_every`` epochs the pipeline's folder goes to Tune as a checkpoint
  (``tune.Checkpoint.from_directory``); a restored trial gets it back with
  :func:`ray.tune.get_checkpoint` and continues with ``run_pipeline(resume=True)``;
- the last report carries the final record (``final_record = 1``) and a checkpoint holding the
  artifacts (genotype, history, prune events, summary, resolved config, record, ONNX), which the
  driver logs to MLflow: no side channels, so workers need no route to the tracking server.
The names both sides use are in :mod:`sweeps.contract.protocol`.

Every record's FPS is marked as measured on a shared device. torch threads = CPUs of the trial.
:func:`measure_exclusive` is the post-sweep benchmark task (one genotype, alone on a device).
"""

from __future__ import annotations

import logging
import math
import shutil
import socket
from pathlib import Path
from typing import Any

from ssr.files.atomic import write_json
from sweeps.contract.params import resolve_trial
from sweeps.contract.protocol import (
    FINAL_ARTIFACTS,
    FINAL_KEY,
    REPORT_TEXT_FIELDS,
    is_finite_number,
)
from sweeps.runtime.preemption import placement


def epoch_result(
    metrics: dict[str, Any], step: int, objectives: list[str], sched_metric: str, node: str
) -> dict[str, Any]:
    """One per-epoch report: numeric metrics, objective placeholders, step and node."""
    res: dict[str, Any] = {k: float(v) for k, v in metrics.items() if is_finite_number(v)}
    for m in objectives:
        if m in res:
            res[f"{m}_epoch"] = res[m]
        res[m] = math.nan
    res.setdefault(sched_metric, math.nan)
    res.update(step=float(step), node=node, **{FINAL_KEY: 0.0})
    return res


def final_result(
    record: dict[str, Any],
    step: int,
    objectives: list[str],
    sched_metric: str,
    sched_value: float,
    node: str,
) -> dict[str, Any]:
    """The last report: the record's numbers and text, its objectives, ``final_record = 1``."""
    res: dict[str, Any] = {}
    for k, v in record.items():
        if k in REPORT_TEXT_FIELDS and isinstance(v, str):
            res[k] = v
        elif is_finite_number(v):
            res[k] = float(v)
    for m in objectives:
        res.setdefault(m, math.nan)
    res.setdefault(sched_metric, sched_value)
    res.update(step=float(step), node=node, fps_shared_device=1.0, **{FINAL_KEY: 1.0})
    return res


def _configure_logging() -> None:
    """The trial is the entry point of its worker process, so it configures logging there.

    Per-epoch lines go to Tune and MLflow, not to the console: ``ssr``, ``ray.train`` and
    ``ray.tune`` log warnings only, and ``ssr``'s get one handler of their own (once: a reused
    actor runs several trials).
    """
    for name in ("ssr", "ray.train", "ray.tune"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logger = logging.getLogger("ssr")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(name)s: %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False


def _draw(final_dir: Path, trial_id: str, genotype_id: Any) -> None:
    """The architecture's drawing among the final files: drawn here, by each trial, rather than
    by the sweep's one driver (:func:`sweeps.record.archplot.draw_final`)."""
    from sweeps.record.archplot import DRAWING, draw_final

    try:
        draw_final(final_dir, trial_id, genotype_id)
    except Exception as exc:  # a picture is not a result: the driver draws it instead
        (final_dir / DRAWING).unlink(missing_ok=True)
        logging.getLogger(__name__).warning("could not draw the architecture: %s", exc)


def run_trial(config: dict[str, Any]) -> None:
    """Ray Tune function trainable for one SSR pipeline run (see the module docstring)."""
    import ray
    import torch
    from ray import tune

    from ssr.run.pipeline import run_pipeline

    _configure_logging()
    trial = resolve_trial(config)
    cfg = trial.pipeline
    run = config["run"]
    torch.set_num_threads(max(1, int(run["cpus"])))
    objectives: list[str] = list(run["objectives"])
    sched_metric: str = run["scheduler_metric"]
    every = int(run.get("checkpoint_every", 1))
    node = ray.util.get_node_ip_address()

    trial_dir = Path(tune.get_context().get_trial_dir())
    out_dir, final_dir = trial_dir / "pipeline", trial_dir / "final"
    resume = False
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # restored: continue from what Tune holds, not from local leftovers
        shutil.rmtree(out_dir, ignore_errors=True)
        checkpoint.to_directory(str(out_dir))
        resume = True
    out_dir.mkdir(parents=True, exist_ok=True)
    here = {
        "host": socket.gethostname(),
        "ip": node,
        "node_id": ray.get_runtime_context().get_node_id(),
    }
    where = placement(out_dir, here, resumed=resume)  # resumes and nodes, in every report

    state = {"reports": 0, "sched": math.nan}

    def reporter(metrics: dict[str, float], step: int) -> None:
        res = {**epoch_result(metrics, step, objectives, sched_metric, node), **where}
        state["reports"] += 1
        state["sched"] = res[sched_metric]
        ckpt = None
        if state["reports"] % every == 0:
            ckpt = tune.Checkpoint.from_directory(str(out_dir))
        tune.report(res, checkpoint=ckpt)

    record = run_pipeline(cfg, out_dir, reporter=reporter, resume=resume, progress=False)

    shutil.rmtree(final_dir, ignore_errors=True)
    final_dir.mkdir(parents=True)
    for name in FINAL_ARTIFACTS:
        if (out_dir / name).is_file():
            shutil.copy2(out_dir / name, final_dir / name)
    _draw(final_dir, tune.get_context().get_trial_id(), record.get("genotype_id", ""))
    # the retrained network at its training size and the retraining's config, so that
    # `python -m ssr evaluate --weights retrained.pt --config retrain.yaml` scores it on any split
    # (model.onnx is fixed at the benchmark's input size)
    for src, name in (("best.pt", "retrained.pt"), ("config.resolved.yaml", "retrain.yaml")):
        if (out_dir / "retrain" / src).is_file():
            shutil.copy2(out_dir / "retrain" / src, final_dir / name)
    record = {
        **record,
        "fps_shared_device": True,
        "baseline": trial.baseline,
        "search_input_size": f"{cfg.search.data.height}x{cfg.search.data.width}",
        "retrain_epochs": cfg.retrain.epochs,
    }
    if not (final_dir / "record.json").is_file():
        write_json(final_dir / "record.json", record)
    search_epochs = int(record.get("search_epochs") or cfg.search.epochs)
    step = search_epochs + max(0, cfg.retrain.epochs) + 1
    res = {**final_result(record, step, objectives, sched_metric, state["sched"], node), **where}
    tune.report(res, checkpoint=tune.Checkpoint.from_directory(str(final_dir)))


def measure_exclusive(
    genotypes: dict[str, str], dataset: str, bench: dict[str, Any], threads: int, passes: int
) -> dict[str, dict[str, Any]]:
    """Exclusive FPS of every genotype, timed alone on one device in interleaved passes.

    Runs as one Ray task after the sweep (docs/architecture.md §5): each genotype's DerivedNet at the
    sweep's bench input is timed once in each of ``passes`` rotated rounds
    (:func:`ssr.measure.interleave.measure_interleaved`), so that a change in the machine's load hits
    every network alike; each keeps its spread (``fps_exclusive_lo``/``_hi``: slowest and
    fastest pass). Each network is timed in its deployment form (``measure(optimize=True)``).
    ``threads`` applies when the bench config leaves threads at 0.
    """
    import dataclasses

    import ray

    from ssr.config import BenchConfig, from_dict
    from ssr.data import dataset_info
    from ssr.measure.interleave import measure_interleaved
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    cfg = from_dict(BenchConfig, bench)
    if cfg.threads == 0:
        cfg = dataclasses.replace(cfg, threads=max(1, int(threads)))
    classes = dataset_info(dataset).num_classes
    models = {g: DerivedNet(Genotype.from_json(js), classes).eval() for g, js in genotypes.items()}
    shape = (cfg.batch, 3, cfg.height, cfg.width)
    # NOTE: the deployment form (BN folded; for ONNX Runtime the deploy graph): eager overhead
    # at batch 1 would otherwise hide the architectures' differences (BENCHMARKS.md)
    spreads, rec = measure_interleaved(models, shape, cfg, passes, optimize=True)
    where = {
        "exclusive_device": rec["device"],
        "exclusive_threads": rec["threads"],
        "exclusive_backend": f"{rec['backend']} ({rec['form']})",
        "exclusive_passes": passes,
        "exclusive_node": ray.util.get_node_ip_address(),
        "exclusive_node_id": ray.get_runtime_context().get_node_id(),
    }
    out: dict[str, dict[str, Any]] = {}
    for g, sp in spreads.items():
        out[g] = {
            "fps_exclusive": round(sp.fps, 3),
            "fps_exclusive_lo": round(sp.fps_lo, 3),
            "fps_exclusive_hi": round(sp.fps_hi, 3),
            "latency_exclusive_ms_median": round(sp.latency_ms_median, 4),
            "latency_exclusive_ms_p90": round(sp.latency_ms_p90, 4),
            "pass_medians_ms": [round(m, 4) for m in sp.pass_medians_ms],
            **where,
        }
    return out
