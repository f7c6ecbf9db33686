"""The sweep planner: what one trial and the whole sweep cost, before paying for a cluster.

``python sweeps/run.py --config F --plan [--device D] [--gpus N]`` (no Ray, no tracking store)
builds each phase of one trial of the sweep's base configuration at its real size and runs a few
steps of it on device ``D`` (default: the sweep's search device) with
:func:`ssr.run.trialcost.probe_trial`, then prints:

- per phase: seconds per step at the real batch (measured, or extrapolated linearly from a
  smaller batch that fitted, and then marked so) and peak memory (measured on CUDA, estimated on
  CPU: the line says which);
- steps per epoch (from the dataset's size and the batch), seconds per search and retraining
  epoch, and the trial's estimated hours;
- how many trials fit on one GPU by memory (CUDA only), next to how many Ray packs there
  (``1 / resources.gpus_per_trial``);
- the sweep's GPU-hours (CPU-hours without GPUs) and its wall time on ``N`` GPUs running
  ``min(max_concurrent, N / gpus_per_trial)`` trials at once.

These are upper bounds: every trial is taken to run its whole budget (ASHA and MO-ASHA stop
most trials early), every search epoch to cost the first (shrinking makes later ones cheaper),
and retraining to train the largest network the space can derive. Trials that share a GPU
(``gpus_per_trial < 1``) also slow each other down, which a probe that runs alone does not
see. Sampled parameters are not varied: the base configuration is planned.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ssr.config import ConfigError, PipelineConfig
from ssr.config.errors import EXIT_OK, EXIT_USAGE

__all__ = ["SweepPlan", "format_plan", "run_plan", "sweep_totals", "trial_seconds"]
GIB = 2**30


def trial_seconds(cost: Any, cfg: PipelineConfig) -> dict[str, float]:
    """Seconds per epoch and per phase of one trial from a :class:`ssr.run.trialcost.TrialCost`.

    Search epoch: its steps (training images // batch, halved with ``arch_split``), each a
    weight and an architecture step plus reading two batches, the supernet's evaluation of the
    val batches and a checkpoint; then at the end 2 + ``len(gap_epochs)`` derived-network
    evaluations (deriving the network, BN recalibration, the val batches), the bootstrap
    interval and counting the derived network's MACs. Retraining epoch: its steps,
    a checkpoint, and every ``eval_every`` epochs an evaluation and a best checkpoint. Bench:
    ``warmup + iters * repeats`` forward passes and the ONNX export. Setup (datasets, class
    weights) is counted for the search and again for retraining.
    """
    from ssr.run.pipeline import retrain_config

    s, r, b = cfg.search, retrain_config(cfg), cfg.bench
    p, once = cost.phases, cost.once
    n_train, n_val = cost.sizes["train_images"], cost.sizes["val_images"]
    read = cost.sizes["read_seconds_per_image"] or 0.0

    def with_data(compute: float, images: int, workers: int) -> float:
        data = images * read
        return compute + data if workers == 0 else max(compute, data / workers)

    n_w = n_train // 2 if s.arch_split else n_train
    steps = n_w // s.data.batch_size
    val_batches = math.ceil(n_val / s.data.batch_size)
    step = with_data(p["search_step"].seconds, 2 * s.data.batch_size, s.data.num_workers)
    epoch = steps * step + val_batches * p["search_eval"].seconds
    epoch += once["search_checkpoint"] / s.checkpoint_every
    evals = 2 + len(s.gap_epochs)  # at the end, at discretization, at each gap epoch
    per_eval = (
        once["derive"] + (s.bn_recalibration_batches + val_batches) * p["search_eval"].seconds
    )
    finish = evals * per_eval + once["search_macs"]
    out = {
        "setup": once["setup"],
        "search_steps_per_epoch": float(steps),
        "search_epoch": epoch,
        "search": once["setup"] + s.epochs * epoch + finish + once["bootstrap"],
        "retrain": 0.0,
    }
    if r.epochs > 0:
        steps = n_train // r.data.batch_size
        val_batches = math.ceil(n_val / r.data.batch_size)
        step = with_data(p["retrain_step"].seconds, r.data.batch_size, r.data.num_workers)
        ckpt = once["retrain_checkpoint"]
        epoch = steps * step + ckpt / r.checkpoint_every
        epoch += (val_batches * p["retrain_eval"].seconds + ckpt) / r.eval_every
        out.update(retrain_steps_per_epoch=float(steps), retrain_epoch=epoch)
        out["retrain"] = once["setup"] + r.epochs * epoch + once["retrain_macs"]
    out["bench"] = (b.warmup + b.iters * b.repeats) * once["bench_forward"] + once.get("export", 0)
    out["trial"] = out["search"] + out["retrain"] + out["bench"]
    return out


@dataclass(frozen=True)
class SweepPlan:
    """The sweep's totals for a cluster of ``gpus`` GPUs (upper bounds, see the module text)."""

    trial_hours: float
    concurrent: int
    waves: int
    wall_hours: float
    device_hours: float  # GPU-hours, or CPU-hours (cores x hours) without GPUs
    unit: str


def sweep_totals(trial_s: float, spec: Any, gpus: int) -> SweepPlan:
    """Totals of ``spec.num_samples`` trials of ``trial_s`` seconds each on ``gpus`` GPUs.

    With ``gpus_per_trial = g > 0``: ``min(max_concurrent, floor(gpus / g))`` trials at once,
    ``num_samples * hours * g`` GPU-hours. Without GPUs: ``max_concurrent`` at once and
    ``num_samples * hours * cpus_per_trial`` CPU-hours.
    """
    r, n = spec.resources, spec.num_samples
    hours = trial_s / 3600
    if r.gpus_per_trial > 0:
        slots = math.floor(gpus / r.gpus_per_trial + 1e-9)
        if slots < 1:
            raise ConfigError(
                f"--gpus {gpus}: a trial needs {r.gpus_per_trial} GPU (resources.gpus_per_trial)"
            )
        share, unit = r.gpus_per_trial, "GPU-hours"
    else:
        slots, share, unit = spec.max_concurrent, r.cpus_per_trial, "CPU-hours"
    concurrent = max(1, min(spec.max_concurrent, slots, n))
    waves = math.ceil(n / concurrent)
    return SweepPlan(hours, concurrent, waves, waves * hours, n * hours * share, unit)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / GIB:.2f} GiB"


def _hours(h: float) -> str:
    return f"{h:.1f} h" if h >= 1 else f"{h * 60:.1f} min"


def format_plan(sweep: Any, cost: Any, secs: dict[str, float], plan: SweepPlan, gpus: int) -> str:
    """The planner's report as text lines."""
    spec = sweep.spec
    lines = [
        f"plan of sweep {spec.name!r} on {cost.device} ({cost.threads} threads): one trial of "
        f"the base configuration, {cost.sizes['train_images']} training / "
        f"{cost.sizes['val_images']} val images",
        f"memory: {cost.memory_method}",
        f"{'phase':<13} {'batch':>5} {'s/step':>9} {'peak':>11} {'reserved':>11}  measured at",
    ]
    for name, ph in cost.phases.items():
        how = "x".join(map(str, ph.measured_batches))
        how += f" (extrapolated to {ph.batch})" if ph.extrapolated else ""
        lines.append(
            f"{name:<13} {ph.batch:>5} {ph.seconds:>9.4f} {_gib(ph.peak_bytes):>11} "
            f"{_gib(ph.reserved_bytes):>11}  batch {how}"
        )
    peaks = [p.reserved_bytes or p.peak_bytes for p in cost.phases.values()]
    peak = max((p for p in peaks if p is not None), default=None)
    lines += [
        f"search: {secs['search_steps_per_epoch']:.0f} steps/epoch, "
        f"{secs['search_epoch']:.1f} s/epoch x {sweep.base_config.search.epochs} epochs "
        f"(upper bound: every epoch as the first)",
    ]
    if "retrain_epoch" in secs:
        lines.append(
            f"retrain: {secs['retrain_steps_per_epoch']:.0f} steps/epoch, "
            f"{secs['retrain_epoch']:.1f} s/epoch x {sweep.base_config.retrain.epochs} epochs "
            "(the largest derivable network)"
        )
    lines += [
        f"bench + export: {secs['bench']:.1f} s; setup: {secs['setup']:.1f} s per phase",
        f"one trial: {secs['trial']:.0f} s = {_hours(plan.trial_hours)}; peak memory {_gib(peak)}",
    ]
    if cost.device.startswith("cuda") and peak:
        import torch

        total = torch.cuda.get_device_properties(torch.device(cost.device)).total_memory
        fit = int(total // peak)
        packs = (1 / spec.resources.gpus_per_trial) if spec.resources.gpus_per_trial else 0
        lines.append(f"trials that fit on one GPU by memory: {fit} (of {_gib(total)}); Ray "
                     f"packs {packs:g} (1 / resources.gpus_per_trial)")  # fmt: skip
        if packs > fit:
            lines.append("warning: gpus_per_trial packs more trials on a GPU than fit in memory")
    else:
        lines.append("trials per GPU by memory: plan with --device cuda on a GPU node to know")
    g = spec.resources.gpus_per_trial
    where = f"on {gpus} GPU(s) (gpus_per_trial {g:g}" if g > 0 else "on CPUs (no GPU per trial"
    lines += [
        f"sweep: {spec.num_samples} trials, {plan.concurrent} at once {where}, max_concurrent "
        f"{spec.max_concurrent}): {plan.waves} wave(s), wall {_hours(plan.wall_hours)}, "
        f"{plan.device_hours:.2f} {plan.unit}",
        "upper bounds: every trial runs its whole budget (ASHA/MO-ASHA early stopping ignored), "
        "trials sharing a GPU slow each other down (not measured)",
    ]
    lines += [f"note: {n}" for n in cost.notes]
    return "\n".join(lines)


def run_plan(args: argparse.Namespace, load_definition: Callable[[argparse.Namespace], Any]) -> int:
    """``--plan``: probe one trial on ``args.device`` and print the plan; exit status."""
    import torch

    from ssr.run.trialcost import probe_trial
    from ssr.train.device import resolve_device

    try:
        sweep = load_definition(args)
        cfg = sweep.base_config
        device = resolve_device(args.device or cfg.search.device)
        gpus = args.gpus if args.gpus is not None else 1
        if gpus < 1:
            raise ConfigError(f"--gpus must be >= 1, got {gpus}")
        if device.type == "cpu":  # as the trial: torch threads = CPUs of the trial
            torch.set_num_threads(max(1, int(sweep.spec.resources.cpus_per_trial)))
        cost = probe_trial(cfg, device)
        secs = trial_seconds(cost, cfg)
        plan = sweep_totals(secs["trial"], sweep.spec, gpus)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(format_plan(sweep, cost, secs, plan, gpus))
    return EXIT_OK
