#!/usr/bin/env python
"""Hypervolume at equal compute: FIFO, ASHA (mIoU), MO-ASHA (mIoU, expected GMACs), NSGA-II.

Whether early stopping on two objectives buys a better front for the same compute (BENCHMARKS.md).
Every trial is a real SSR search through :func:`ssr.run.pipeline.run_pipeline` at
a tiny size (synthetic 64x128 scenes, a two-stage space, no retraining, no ONNX), run by Ray
Tune two at a time, with the same per-epoch reports as a sweep trial (``step``, ``val_miou``,
``expected_gmacs``) and a final report carrying the derived network's mIoU (inherited weights,
BN recalibrated) and conv GMACs (the record's ``derived_miou`` and ``gmacs``). The knobs
(:data:`KNOBS`) are the space's widths (three presets, the main lever on cost at this size),
the FLOPs-term weight and target, the SSR op weight, the shrinking threshold, the architecture
learning rate and the search seed.

The four arms:

- ``fifo``, ``asha``, ``moasha``: for one sweep seed, the same trial configurations drawn from
  :data:`KNOBS` in the same order, so these three differ only in which trials they stop;
- ``nsga2``: no early stopping (FIFO), trials proposed by Optuna's NSGA-II (Ray Tune's
  ``OptunaSearch`` with ``optuna.samplers.NSGAIISampler``, multi-objective: derived mIoU max,
  GMACs min) over the same knobs, as many trials as FIFO runs: a model-based search against
  early stopping.

Equal compute is measured two ways, per sweep seed:

- **epochs**: one ``val_miou`` report = one search epoch, counted in the order the Tune driver
  processes results. ASHA and MO-ASHA run ``--trials`` trials; FIFO and NSGA-II run as many
  trials as it takes to spend at least as many epochs as the larger of the two. Each arm's
  front at budget ``B`` is made of the trials whose final record arrived before its ``B + 1``-th
  epoch; ``B`` = the smallest total of the arms.
- **wall time**: each arm's front at ``W`` seconds is made of the final records that arrived
  (in the driver, counted from the start of ``Tuner.fit``) within ``W``; ``W`` = the smallest
  total wall time of the arms. On a shared machine wall time also measures the other tenants;
  the load average is recorded before and after each arm.

Trials stopped early have no final record and add nothing but their epochs. Hypervolume is
:func:`analysis.pareto.hypervolume` over (derived mIoU max, derived conv GMACs min) with the
fixed reference point (mIoU 0, GMACs of the space's largest sub-network), printed with the
results. Per arm: mean, sample standard deviation and min-max over the sweep seeds; paired:
the per-seed difference MO-ASHA minus each other arm, its mean, sd, range and the number of
seeds MO-ASHA wins, which says whether a lead is larger than the seed-to-seed noise.

    python benchmarks/moasha_hypervolume.py --seeds 0 1 2 3 4 --out moasha_hv.json
    python benchmarks/moasha_hypervolume.py --tiny          # smoke check, a few minutes

Defaults take about half an hour on 2 shared cores (20 sweeps: 29 min at load 5-12).
Scheduler settings: ``time_attr="step"``, ``max_t = epochs + 1`` (the final record's step, as
in sweeps/trial.py), ``--grace`` and ``--rf`` for both ASHA and MO-ASHA; ``--population``
for NSGA-II.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _k, _v in {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # NOTE: no TensorBoard/CSV writers per trial
    "OMP_NUM_THREADS": "1",
    "RAY_AIR_NEW_OUTPUT": "0",  # NOTE: the new output prints a table per sweep even at verbose=0
    # NOTE: NSGA-II's objectives are in the final record only, not in the per-epoch reports
    "TUNE_DISABLE_STRICT_METRIC_CHECKING": "1",
    # NOTE: Ray starts its workers at nice 15; the trials then get only what other tenants leave
    # of a shared machine, and the wall-clock budget measures them, so run them at the driver's
    "RAY_worker_niceness": "0",
}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ARMS = ("fifo", "asha", "moasha", "nsga2")
MAXIMIZE = (True, False)  # derived_miou, gmacs


def pipeline_base(tiny: bool, epochs: int) -> dict[str, Any]:
    """The fixed part of every trial's PipelineConfig (a dict for ssr.config.from_dict)."""
    h, w, n_train, n_val = (32, 64, 8, 4) if tiny else (64, 128, 32, 16)
    return {
        "search": {
            "space": {
                "dilations": [1, 2],
                "pools": [1, 2],
                "channel_remove": [12, 8, 0],
            },
            "data": dict(
                name="synthetic",
                height=h,
                width=w,
                train_size=n_train,
                val_size=n_val,
                batch_size=8,
            ),
            "flops": {"height": h, "width": w},
            "shrink": {"every": 1, "warmup": 1},
            "arch_optim": {"weight_decay": 0.02, "poly_power": 0.0, "grad_clip": 5.0},
            "weight_optim": {"lr": 2e-3},
            "epochs": epochs,
            "bn_recalibration_batches": 1,
            "checkpoint_every": epochs,
        },
        "retrain": {"epochs": 0},
        "bench": {"height": h, "width": w, "warmup": 1, "iters": 2, "repeats": 1},
        "export_onnx": False,
    }


#: Space widths (stem, stage 1, stage 2) a trial searches in. NOTE: at 64x128 the derived net's
#: fixed-width aggregation head costs ~0.025 GMACs, about what the widest encoder costs, and 12
#: epochs of the FLOPs term move the encoder little; the width is what spreads the cost here.
WIDTHS = {"narrow": (8, 16, 32), "medium": (16, 24, 48), "wide": (16, 32, 64)}


#: The sampled knobs: dotted PipelineConfig keys under ``search.`` (and ``space``, a
#: :data:`WIDTHS` preset) with their distributions: ``choice`` of values, ``uniform`` or
#: ``loguniform`` between two bounds, ``randint`` in ``[low, high)``. One definition for the
#: fixed draws of FIFO/ASHA/MO-ASHA (:func:`sample_knobs`) and NSGA-II's space (:func:`knob_space`).
KNOBS: dict[str, tuple[str, tuple[Any, ...]]] = {
    "space": ("choice", tuple(WIDTHS)),
    "flops.weight": ("choice", (0.0, 4.0, 16.0, 64.0)),
    "flops.target": ("uniform", (0.05, 0.5)),
    "ssr.op": ("loguniform", (3.0, 60.0)),
    "shrink.threshold": ("uniform", (0.1, 0.3)),
    "arch_optim.lr": ("loguniform", (0.05, 0.3)),
    "seed": ("randint", (0, 1000)),
}


def sample_knobs(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` trial configurations for a sweep seed, drawn from :data:`KNOBS` with numpy."""
    import numpy as np

    rng = np.random.default_rng(seed)

    def draw(kind: str, args: tuple[Any, ...]) -> Any:
        if kind == "choice":
            value = rng.choice(list(args))
            return str(value) if isinstance(args[0], str) else float(value)
        if kind == "uniform":
            return float(rng.uniform(*args))
        if kind == "loguniform":
            return float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
        return int(rng.integers(*args))

    return [{k: draw(kind, args) for k, (kind, args) in KNOBS.items()} for _ in range(n)]


def knob_space() -> dict[str, Any]:
    """:data:`KNOBS` as a Ray Tune search space (what Optuna's NSGA-II samples from)."""
    from ray import tune

    make = {
        "choice": lambda args: tune.choice(list(args)),
        "uniform": lambda args: tune.uniform(*args),
        "loguniform": lambda args: tune.loguniform(*args),
        "randint": lambda args: tune.randint(*args),
    }
    return {k: make[kind](args) for k, (kind, args) in KNOBS.items()}


def pipeline_dict(base: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
    """``base`` with one trial's knobs: the width preset's space and the dotted search keys."""
    from ssr.config import deep_merge, set_dotted

    stem, w1, w2 = WIDTHS[knobs["space"]]
    stages = [
        {"width": w1, "max_depth": 2, "min_depth": 1, "dropout": 0.0},
        {"width": w2, "max_depth": 3, "min_depth": 1, "dropout": 0.0},
    ]
    over: dict[str, Any] = {"search": {"space": {"stem_width": stem, "stages": stages}}}
    for key, value in knobs.items():
        if key != "space":
            set_dotted(over, f"search.{key}", value)
    return deep_merge(base, over)


def reference_gmacs(base: dict[str, Any]) -> float:
    """Conv GMACs of the largest sub-network of ``base``'s space at the search size."""
    import torch

    from ssr.config import PipelineConfig, from_dict
    from ssr.data import dataset_info
    from ssr.method.complexity import count_macs
    from ssr.method.derive import genotype_from_supernet
    from ssr.method.network import DerivedNet
    from ssr.method.supernet import Supernet

    cfg = from_dict(PipelineConfig, base).search
    classes = dataset_info(cfg.data.name).num_classes
    net = Supernet(cfg.space, classes)
    with torch.no_grad():
        for dim, probs in net.max_probs().items():
            net.arch[dim].copy_(probs * 20.0 - 10.0)  # logits whose argmax is the largest choice
    full = DerivedNet(genotype_from_supernet(net), classes)
    return count_macs(full, (1, 3, cfg.data.height, cfg.data.width)) / 1e9


def make_trainable(configs: list[dict[str, Any]], base: dict[str, Any]):
    """Tune function trainable: a trial with ``index`` runs ``configs[index]``, a trial with
    sampled knobs (NSGA-II) runs ``pipeline_dict(base, knobs)``, through run_pipeline."""

    def trainable(config: dict[str, Any]) -> None:
        import torch
        from ray import tune

        from ssr.config import PipelineConfig, from_dict
        from ssr.run.pipeline import run_pipeline

        torch.set_num_threads(1)
        if "index" in config:
            cfg = from_dict(PipelineConfig, configs[config["index"]])
        else:
            cfg = from_dict(PipelineConfig, pipeline_dict(base, {k: config[k] for k in KNOBS}))
        out = Path(tune.get_context().get_trial_dir()) / "pipeline"

        last = {"val_miou": math.nan}  # NOTE: ASHA needs its metric in the final report too

        def reporter(metrics: dict[str, float], step: int) -> None:
            res = {"step": float(step), "final": 0.0, "val_miou": metrics["val_miou"]}
            last["val_miou"] = metrics["val_miou"]
            if "expected_gmacs" in metrics:
                res["expected_gmacs"] = metrics["expected_gmacs"]
            tune.report(res)

        rec = run_pipeline(cfg, out, reporter=reporter, progress=False)
        tune.report(
            {
                "step": float(cfg.search.epochs + 1), "final": 1.0, "val_miou": last["val_miou"],
                "derived_miou": float(rec["derived_miou"]), "gmacs": float(rec["gmacs"]),
            }
        )  # fmt: skip

    return trainable


def _scheduler(kind: str, args: argparse.Namespace) -> Any:
    """ASHA on mIoU, MO-ASHA on (mIoU, expected GMACs), or None (FIFO) for ``fifo``/``nsga2``."""
    from ray.tune.schedulers import ASHAScheduler

    from sweeps.schedule.moasha import MOASHAScheduler

    max_t = args.epochs + 1
    if kind == "asha":
        return ASHAScheduler(
            time_attr="step", metric="val_miou", mode="max", max_t=max_t,
            grace_period=args.grace, reduction_factor=args.rf,
        )  # fmt: skip
    if kind == "moasha":
        return MOASHAScheduler(
            time_attr="step", metrics=("val_miou", "expected_gmacs"), modes=("max", "min"),
            max_t=max_t, grace_period=args.grace, reduction_factor=args.rf,
        )  # fmt: skip
    return None


def nsga2_searcher(seed: int, population: int) -> Any:
    """Ray Tune's OptunaSearch with Optuna's NSGA-II sampler, told each trial's final record:
    multi-objective (derived mIoU max, GMACs min)."""
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    return OptunaSearch(metric=["derived_miou", "gmacs"], mode=["max", "min"], sampler=sampler)


def run_sweep(
    kind: str,
    configs: list[dict[str, Any]],
    args: argparse.Namespace,
    storage: Path,
    name: str,
    seed: int = 0,
) -> dict[str, Any]:
    """One sweep; returns its ledger: every result in the order the driver processed it, each
    with ``t``, its arrival in the driver in seconds from the start of ``Tuner.fit``.

    ``fifo``/``asha``/``moasha`` run ``configs`` in order; ``nsga2`` runs ``len(configs)``
    trials that NSGA-II (seeded with ``seed``) proposes from :func:`knob_space`.
    """
    from ray import tune

    ledger: list[dict[str, Any]] = []
    clock = {"t0": time.perf_counter()}

    class Ledger(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = {
                "trial": trial.trial_id,
                "step": result.get("step"),
                "final": result.get("final"),
                "t": round(time.perf_counter() - clock["t0"], 3),
            }
            if result.get("final") == 1.0:
                row.update(derived_miou=result["derived_miou"], gmacs=result["gmacs"])
            ledger.append(row)

    if kind == "nsga2":
        space, samples = knob_space(), len(configs)
        search = nsga2_searcher(seed, args.population)
    else:
        space, samples = {"index": tune.grid_search(list(range(len(configs))))}, 1
        search = None
    tuner = tune.Tuner(
        make_trainable(configs, args.base),
        param_space=space,
        tune_config=tune.TuneConfig(
            scheduler=_scheduler(kind, args),
            search_alg=search,
            num_samples=samples,
            max_concurrent_trials=args.concurrent,
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0, callbacks=[Ledger()]
        ),
    )
    load0 = os.getloadavg()
    clock["t0"] = time.perf_counter()
    grid = tuner.fit()
    wall = time.perf_counter() - clock["t0"]
    errors = [str(e).splitlines()[0] for e in grid.errors]
    loads = [round(x, 2) for x in (*load0, *os.getloadavg())]
    return {"ledger": ledger, "wall_s": wall, "errors": errors, "loadavg_before_after": loads}


def front_at(ledger: list[dict[str, Any]], budget: int | None) -> list[tuple[float, float]]:
    """Final (mIoU, GMACs) points recorded before the ``budget + 1``-th epoch (None: all)."""
    points, epochs = [], 0
    for row in ledger:
        if row["final"] == 1.0:
            points.append((row["derived_miou"], row["gmacs"]))
        else:
            epochs += 1
            if budget is not None and epochs > budget:
                break
    return points


def front_at_wall(ledger: list[dict[str, Any]], seconds: float) -> list[tuple[float, float]]:
    """Final (mIoU, GMACs) points whose record arrived within ``seconds`` of the sweep's start."""
    return [
        (row["derived_miou"], row["gmacs"])
        for row in ledger
        if row["final"] == 1.0 and row["t"] <= seconds
    ]


def normalised_hv(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Hypervolume over (mIoU, GMACs) under ``ref``, divided by the reference GMACs: the area in
    mIoU x (GMACs / reference GMACs), so 1 would be mIoU 1 at zero cost."""
    from analysis.pareto import hypervolume

    return hypervolume(points, MAXIMIZE, ref) / ref[1] if points else 0.0


def summarise(
    run: dict[str, Any], budget: int, wall_budget: float, ref: tuple[float, float]
) -> dict[str, Any]:
    """One arm of one seed: hypervolume at the epoch and wall budgets and at the end, with the
    hypervolume after each final record (against epochs and seconds) and the points."""
    ledger = run["ledger"]
    epochs = sum(1 for r in ledger if r["final"] != 1.0)
    curve, pts, seen = [], [], 0
    for row in ledger:
        if row["final"] == 1.0:
            pts.append((row["derived_miou"], row["gmacs"]))
            curve.append([seen, row["t"], normalised_hv(pts, ref)])
        else:
            seen += 1
    at_b, at_w = front_at(ledger, budget), front_at_wall(ledger, wall_budget)
    return {
        "epochs": epochs,
        "trials": len({r["trial"] for r in ledger}),
        "complete": len(pts),
        "hv_at_budget": normalised_hv(at_b, ref),
        "complete_at_budget": len(at_b),
        "hv_at_wall": normalised_hv(at_w, ref),
        "complete_at_wall": len(at_w),
        "hv_final": normalised_hv(pts, ref),
        "hv_vs_epochs_seconds": curve,
        "points": pts,
        "wall_s": round(run["wall_s"], 1),
        "loadavg_before_after": run["loadavg_before_after"],
        "errors": run["errors"],
    }


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": min(xs),
        "max": max(xs),
    }


HV_FIELDS = ("hv_at_budget", "hv_at_wall", "hv_final")


def paired(per_seed: list[dict[str, Any]], lead: str = "moasha") -> dict[str, Any]:
    """Per-seed differences ``lead`` minus each other arm, for each hypervolume field: the
    differences, their mean, sd, min-max and how many seeds ``lead`` is ahead (> 0)."""
    out: dict[str, Any] = {}
    for other in (a for a in ARMS if a != lead and all(a in s for s in per_seed)):
        for field in HV_FIELDS:
            d = [s[lead][field] - s[other][field] for s in per_seed]
            out[f"{lead}-{other}/{field}"] = {
                "diffs": d, **_stats(d), "ahead": sum(x > 0 for x in d), "seeds": len(d),
            }  # fmt: skip
    return out


def table(agg: dict[str, Any], pairs: dict[str, Any], ref: tuple[float, float]) -> str:
    """The printed summary: per arm, then the paired differences."""
    lines = [
        f"hypervolume of (derived mIoU max, conv GMACs min), reference (mIoU {ref[0]}, "
        f"GMACs {ref[1]}), divided by the reference GMACs; mean +- std [min, max] over seeds",
        f"{'arm':<8}{'HV @ equal epochs':>34}{'HV @ equal wall':>34}{'HV final':>34}"
        f"{'epochs':>8}{'wall s':>8}{'complete':>9}",
    ]
    cell = lambda h: f"{h['mean']:>12.4f} +- {h['std']:.4f} [{h['min']:.4f}, {h['max']:.4f}]"  # noqa: E731
    for kind, a in agg.items():
        lines.append(
            f"{kind:<8}" + "".join(cell(a[f]) for f in HV_FIELDS)
            + f"{a['epochs']['mean']:>8.1f}{a['wall_s']['mean']:>8.1f}{a['complete']['mean']:>9.1f}"
        )  # fmt: skip
    lines.append("paired, per seed: difference, mean [min, max], seeds ahead")
    for key, d in pairs.items():
        diffs = " ".join(f"{x:+.4f}" for x in d["diffs"])
        lines.append(
            f"{key:<28} {diffs}  mean {d['mean']:+.4f} [{d['min']:+.4f}, {d['max']:+.4f}]"
            f"  ahead {d['ahead']}/{d['seeds']}"
        )
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, with the ``--tiny`` or full defaults filled in and checked."""
    p = _Parser(prog="moasha_hypervolume", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="sweep seeds (0 1 2 3 4)")
    p.add_argument("--trials", type=int, default=None, help="trials of ASHA/MO-ASHA (16)")
    p.add_argument("--epochs", type=int, default=None, help="search epochs per trial (12)")
    p.add_argument("--grace", type=int, default=None, help="first rung, in epochs (2)")
    p.add_argument("--rf", type=float, default=2.0, help="reduction factor (2)")
    p.add_argument("--population", type=int, default=None, help="NSGA-II population (4)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at a time (2)")
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS), help="arms to run")
    p.add_argument("--out", type=Path, help="write everything (curves, points) to this JSON")
    p.add_argument("--tiny", action="store_true", help="seconds-sized smoke check")
    args = p.parse_args(argv)
    tiny = {"seeds": [0], "trials": 4, "epochs": 4, "grace": 1, "population": 2}
    full = {"seeds": [0, 1, 2, 3, 4], "trials": 16, "epochs": 12, "grace": 2, "population": 4}
    for k, v in (tiny if args.tiny else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.trials < 2 or args.epochs < 1 or args.concurrent < 1 or min(args.seeds) < 0:
        p.error("need --trials >= 2, --epochs >= 1, --concurrent >= 1 and seeds >= 0")
    if not 1 <= args.grace <= args.epochs or not args.rf > 1 or args.population < 2:
        p.error("need 1 <= --grace <= --epochs, --rf > 1 and --population >= 2")
    if args.out is not None and not args.out.parent.is_dir():
        p.error(f"--out: folder {args.out.parent} does not exist")
    args.arms = [a for a in ARMS if a in args.arms]
    return args


def run_seed(seed: int, args: argparse.Namespace, tmp: Path, ref: tuple[float, float]) -> dict:
    """Every arm for one sweep seed, then each arm summarised at the shared epoch and wall
    budgets (the smallest totals among the arms)."""
    configs = [pipeline_dict(args.base, k) for k in sample_knobs(seed, args.trials)]
    runs: dict[str, dict[str, Any]] = {}
    for kind in ("asha", "moasha"):
        if kind in args.arms:
            runs[kind] = run_sweep(kind, configs, args, tmp, f"{kind}_{seed}", seed)
    spent = [sum(r["final"] != 1.0 for r in run["ledger"]) for run in runs.values()]
    top = max(spent, default=args.trials * args.epochs)
    n_fifo = min(args.trials, max(1, math.ceil(top / args.epochs)))
    for kind in ("fifo", "nsga2"):
        if kind in args.arms:
            runs[kind] = run_sweep(kind, configs[:n_fifo], args, tmp, f"{kind}_{seed}", seed)
    budget = min(sum(r["final"] != 1.0 for r in run["ledger"]) for run in runs.values())
    wall_budget = min(run["wall_s"] for run in runs.values())
    out = {"seed": seed, "budget_epochs": budget, "budget_wall_s": round(wall_budget, 1)}
    out.update({k: summarise(runs[k], budget, wall_budget, ref) for k in args.arms})
    print(
        f"seed {seed}: budget {budget} epochs / {wall_budget:.0f} s, "
        + ", ".join(
            f"{k} HV {out[k]['hv_at_budget']:.5f} / {out[k]['hv_at_wall']:.5f}" for k in args.arms
        ),
        flush=True,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import logging

    import ray

    from ssr.measure.host import cpu_info

    args.base = pipeline_base(args.tiny, args.epochs)
    ref = (0.0, round(reference_gmacs(pipeline_dict(args.base, {"space": "wide"})), 6))
    ray.init(
        address="local", num_cpus=max(args.concurrent, 1), include_dashboard=False,
        logging_level=logging.ERROR, log_to_driver=False,
    )  # fmt: skip
    t0, load0 = time.perf_counter(), os.getloadavg()
    try:
        with tempfile.TemporaryDirectory(prefix="moasha_hv_") as tmp:
            per_seed = [run_seed(seed, args, Path(tmp), ref) for seed in args.seeds]
    finally:
        ray.shutdown()
    fields = (*HV_FIELDS, "epochs", "complete", "wall_s")
    agg = {k: {f: _stats([float(s[k][f]) for s in per_seed]) for f in fields} for k in args.arms}
    pairs = paired(per_seed) if "moasha" in args.arms else {}
    keys = ("seeds", "trials", "epochs", "grace", "rf", "population", "concurrent", "arms")
    result = {
        "benchmark": "moasha_hypervolume",
        "objectives": {"derived_miou": "max", "gmacs": "min"},
        "reference_point": {"derived_miou": ref[0], "gmacs": ref[1]},
        "hv_unit": "mIoU x (GMACs / reference GMACs)",
        "settings": {**{k: getattr(args, k) for k in keys}, "tiny": args.tiny,
                     "max_t": args.epochs + 1},
        "pipeline_base": args.base,
        "machine": {**cpu_info(), "python": platform.python_version()},
        "loadavg_start_end": [round(x, 2) for x in (*load0, *os.getloadavg())],
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "summary": agg,
        "paired": pairs,
        "per_seed": per_seed,
    }  # fmt: skip
    brief = {k: v for k, v in result.items() if k not in ("per_seed", "pipeline_base", "paired")}
    print(json.dumps(brief))
    print(table(agg, pairs, ref))
    if any(s[k]["errors"] for s in per_seed for k in args.arms):
        print("some trials failed: see per_seed[*][*].errors", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
