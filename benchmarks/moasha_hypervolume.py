#!/usr/bin/env python
"""Hypervolume at equal compute: FIFO vs ASHA (mIoU) vs MO-ASHA (mIoU, expected GMACs).

Whether early stopping on two objectives buys a better front for the same compute (BENCHMARKS.md).
Every trial is a real SSR search through :func:`ssr.run.pipeline.run_pipeline` at
a tiny size (synthetic 64x128 scenes, a two-stage space, no retraining, no ONNX), run by Ray
Tune two at a time, with the same per-epoch reports as a sweep trial (``step``, ``val_miou``,
``expected_gmacs``) and a final report carrying the derived network's mIoU (inherited weights,
BN recalibrated) and conv GMACs (the record's ``derived_miou`` and ``gmacs``). The knobs are
sampled per sweep seed: the space's widths (three presets, the main lever on cost at this
size), the FLOPs-term weight and target, the SSR op weight, the shrinking threshold, the
architecture learning rate and the search seed. For one sweep seed all three schedulers see the
same trial configurations in the same order, so they differ only in which trials they stop.

Equal compute: compute is counted in epochs (one ``val_miou`` report = one search epoch), in
the order the Tune driver processes results. ASHA and MO-ASHA run ``--trials`` trials; FIFO
runs as many of the same configurations as it takes to spend at least as many epochs as the
larger of the two. Each scheduler's front at budget ``B`` is made of the trials whose final
record arrived before its ``B + 1``-th epoch; the table compares the three at ``B`` = the
smallest total of the three (per sweep seed), and lists each one's total too. Trials stopped
early have no final record and add nothing but their epochs. Hypervolume is
:func:`analysis.pareto.hypervolume` over (derived mIoU max, derived conv GMACs min) with the
fixed reference point (mIoU 0, GMACs of the space's largest sub-network), printed with the
results. Mean and sample standard deviation over the sweep seeds, plus min-max.

    python benchmarks/moasha_hypervolume.py --seeds 0 1 2 --trials 16 --out moasha_hv.json
    python benchmarks/moasha_hypervolume.py --tiny          # smoke check, about a minute

Defaults are sized for about 10-15 minutes on 2 cores (9 sweeps; a search epoch is ~0.3 s).
Scheduler settings: ``time_attr="step"``, ``max_t = epochs + 1`` (the final record's step, as
in sweeps/trial.py), ``--grace`` and ``--rf`` for both ASHA and MO-ASHA.
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
}.items():
    os.environ.setdefault(_k, _v)
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCHEDULERS = ("fifo", "asha", "moasha")
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


def sample_knobs(seed: int, n: int) -> list[dict[str, Any]]:
    """``n`` trial configurations for a sweep seed: a ``space`` width preset (:data:`WIDTHS`) and
    dotted PipelineConfig keys under ``search.``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    return [
        {
            "space": str(rng.choice(list(WIDTHS))),
            "flops.weight": float(rng.choice([0.0, 4.0, 16.0, 64.0])),
            "flops.target": float(rng.uniform(0.05, 0.5)),
            "ssr.op": float(np.exp(rng.uniform(np.log(3.0), np.log(60.0)))),
            "shrink.threshold": float(rng.uniform(0.1, 0.3)),
            "arch_optim.lr": float(np.exp(rng.uniform(np.log(0.05), np.log(0.3)))),
            "seed": int(rng.integers(0, 1000)),
        }
        for _ in range(n)
    ]


def pipeline_dict(base: dict[str, Any], knobs: dict[str, Any]) -> dict[str, Any]:
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


def make_trainable(configs: list[dict[str, Any]]):
    """Tune function trainable: trial ``index`` runs ``configs[index]`` through run_pipeline."""

    def trainable(config: dict[str, Any]) -> None:
        import torch
        from ray import tune

        from ssr.config import PipelineConfig, from_dict
        from ssr.run.pipeline import run_pipeline

        torch.set_num_threads(1)
        cfg = from_dict(PipelineConfig, configs[config["index"]])
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


def run_sweep(
    kind: str, configs: list[dict[str, Any]], args: argparse.Namespace, storage: Path, name: str
) -> dict[str, Any]:
    """One sweep; returns its ledger: every result in the order the driver processed it."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    from sweeps.schedule.moasha import MOASHAScheduler

    ledger: list[dict[str, Any]] = []

    class Ledger(tune.Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            row = {
                "trial": trial.trial_id,
                "step": result.get("step"),
                "final": result.get("final"),
            }
            if result.get("final") == 1.0:
                row.update(derived_miou=result["derived_miou"], gmacs=result["gmacs"])
            ledger.append(row)

    max_t = args.epochs + 1
    sched: Any = None
    if kind == "asha":
        sched = ASHAScheduler(
            time_attr="step", metric="val_miou", mode="max", max_t=max_t,
            grace_period=args.grace, reduction_factor=args.rf,
        )  # fmt: skip
    elif kind == "moasha":
        sched = MOASHAScheduler(
            time_attr="step", metrics=("val_miou", "expected_gmacs"), modes=("max", "min"),
            max_t=max_t, grace_period=args.grace, reduction_factor=args.rf,
        )  # fmt: skip
    t0 = time.perf_counter()
    tuner = tune.Tuner(
        make_trainable(configs),
        param_space={"index": tune.grid_search(list(range(len(configs))))},
        tune_config=tune.TuneConfig(
            scheduler=sched, max_concurrent_trials=args.concurrent, reuse_actors=True
        ),
        run_config=tune.RunConfig(
            name=name, storage_path=str(storage), verbose=0, callbacks=[Ledger()]
        ),
    )
    grid = tuner.fit()
    errors = [str(e).splitlines()[0] for e in grid.errors]
    return {"ledger": ledger, "wall_s": time.perf_counter() - t0, "errors": errors}


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


def normalised_hv(points: list[tuple[float, float]], ref: tuple[float, float]) -> float:
    """Hypervolume over (mIoU, GMACs) under ``ref``, divided by the reference GMACs: the area in
    mIoU x (GMACs / reference GMACs), so 1 would be mIoU 1 at zero cost."""
    from analysis.pareto import hypervolume

    return hypervolume(points, MAXIMIZE, ref) / ref[1] if points else 0.0


def summarise(run: dict[str, Any], budget: int, ref: tuple[float, float]) -> dict[str, Any]:
    ledger = run["ledger"]
    epochs = sum(1 for r in ledger if r["final"] != 1.0)
    curve, pts, seen = [], [], 0
    for row in ledger:
        if row["final"] == 1.0:
            pts.append((row["derived_miou"], row["gmacs"]))
            curve.append([seen, normalised_hv(pts, ref)])
        else:
            seen += 1
    at_b = front_at(ledger, budget)
    return {
        "epochs": epochs,
        "trials": len({r["trial"] for r in ledger}),
        "complete": len(pts),
        "hv_at_budget": normalised_hv(at_b, ref),
        "complete_at_budget": len(at_b),
        "hv_final": normalised_hv(pts, ref),
        "hv_vs_epochs": curve,
        "points": pts,
        "wall_s": round(run["wall_s"], 1),
        "errors": run["errors"],
    }


def _stats(xs: list[float]) -> dict[str, float]:
    return {
        "mean": statistics.fmean(xs),
        "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        "min": min(xs),
        "max": max(xs),
    }


def table(agg: dict[str, dict[str, dict[str, float]]], ref: tuple[float, float]) -> str:
    lines = [
        f"hypervolume of (derived mIoU max, conv GMACs min), reference (mIoU {ref[0]}, "
        f"GMACs {ref[1]}), divided by the reference GMACs; mean +- std [min, max] over seeds",
        f"{'scheduler':<10}{'HV @ equal epochs':>34}{'HV final':>34}{'epochs':>9}{'complete':>10}",
    ]
    for kind, a in agg.items():
        hb, hf = a["hv_at_budget"], a["hv_final"]
        lines.append(
            f"{kind:<10}"
            f"{hb['mean']:>12.4f} +- {hb['std']:.4f} [{hb['min']:.4f}, {hb['max']:.4f}]"
            f"{hf['mean']:>12.4f} +- {hf['std']:.4f} [{hf['min']:.4f}, {hf['max']:.4f}]"
            f"{a['epochs']['mean']:>9.1f}{a['complete']['mean']:>10.1f}"
        )
    return "\n".join(lines)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv: list[str] | None = None) -> int:
    p = _Parser(prog="moasha_hypervolume", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="sweep seeds (0 1 2)")
    p.add_argument("--trials", type=int, default=None, help="trials of ASHA/MO-ASHA (16)")
    p.add_argument("--epochs", type=int, default=None, help="search epochs per trial (12)")
    p.add_argument("--grace", type=int, default=None, help="first rung, in epochs (2)")
    p.add_argument("--rf", type=float, default=2.0, help="reduction factor (2)")
    p.add_argument("--concurrent", type=int, default=2, help="trials at a time (2)")
    p.add_argument("--out", type=Path, help="write everything (curves, points) to this JSON")
    p.add_argument("--tiny", action="store_true", help="seconds-sized smoke check")
    args = p.parse_args(argv)
    tiny = {"seeds": [0], "trials": 4, "epochs": 4, "grace": 1}
    full = {"seeds": [0, 1, 2], "trials": 16, "epochs": 12, "grace": 2}
    for k, v in (tiny if args.tiny else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.trials < 2 or args.epochs < 1 or args.concurrent < 1 or min(args.seeds) < 0:
        p.error("need --trials >= 2, --epochs >= 1, --concurrent >= 1 and seeds >= 0")
    if not 1 <= args.grace <= args.epochs or not args.rf > 1:
        p.error("need 1 <= --grace <= --epochs and --rf > 1")
    if args.out is not None and not args.out.parent.is_dir():
        p.error(f"--out: folder {args.out.parent} does not exist")

    import logging

    import ray

    base = pipeline_base(args.tiny, args.epochs)
    ref = (0.0, round(reference_gmacs(pipeline_dict(base, {"space": "wide"})), 6))
    ray.init(
        address="local", num_cpus=max(args.concurrent, 1), include_dashboard=False,
        logging_level=logging.ERROR, log_to_driver=False,
    )  # fmt: skip
    per_seed: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="moasha_hv_") as tmp:
            for seed in args.seeds:
                configs = [pipeline_dict(base, k) for k in sample_knobs(seed, args.trials)]
                runs = {}
                for kind in ("asha", "moasha"):
                    runs[kind] = run_sweep(kind, configs, args, Path(tmp), f"{kind}_{seed}")
                top = max(sum(r["final"] != 1.0 for r in runs[k]["ledger"]) for k in runs)
                n_fifo = min(args.trials, max(1, math.ceil(top / args.epochs)))
                runs["fifo"] = run_sweep("fifo", configs[:n_fifo], args, Path(tmp), f"fifo_{seed}")
                budget = min(sum(r["final"] != 1.0 for r in run["ledger"]) for run in runs.values())
                per_seed.append(
                    {
                        "seed": seed,
                        "budget_epochs": budget,
                        **{k: summarise(runs[k], budget, ref) for k in SCHEDULERS},
                    }
                )
                print(f"seed {seed}: budget {budget} epochs, " + ", ".join(
                    f"{k} HV {per_seed[-1][k]['hv_at_budget']:.5f}" for k in SCHEDULERS
                ), flush=True)  # fmt: skip
    finally:
        ray.shutdown()

    agg = {
        k: {
            f: _stats([float(s[k][f]) for s in per_seed])
            for f in ("hv_at_budget", "hv_final", "epochs", "complete", "wall_s")
        }
        for k in SCHEDULERS
    }
    settings = {
        k: getattr(args, k) for k in ("seeds", "trials", "epochs", "grace", "rf", "concurrent")
    }
    result = {
        "benchmark": "moasha_hypervolume",
        "objectives": {"derived_miou": "max", "gmacs": "min"},
        "reference_point": {"derived_miou": ref[0], "gmacs": ref[1]},
        "hv_unit": "mIoU x (GMACs / reference GMACs)",
        "settings": {**settings, "tiny": args.tiny, "max_t": args.epochs + 1},
        "pipeline_base": base,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "summary": agg,
        "per_seed": per_seed,
    }
    brief = {k: v for k, v in result.items() if k not in ("per_seed", "pipeline_base")}
    print(json.dumps(brief))
    print(table(agg, ref))
    if any(s[k]["errors"] for s in per_seed for k in SCHEDULERS):
        print("some trials failed: see per_seed[*][*].errors", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
