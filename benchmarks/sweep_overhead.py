#!/usr/bin/env python
"""Overhead of running SSR searches through the sweep (Ray Tune + Optuna + MLflow) vs a loop.

The same set of trials (one search + derive + retrain + measure + ONNX per seed, identical
configs) runs twice, one trial at a time with every CPU:

1. **plain**: a Python process that calls :func:`ssr.run.pipeline.run_pipeline` in a loop;
2. **sweep**: ``python sweeps/run.py`` with a grid over the seeds (Ray local instance, SQLite
   MLflow store, per-epoch reports and checkpoints, results.parquet, report).

Both are timed end to end as processes (interpreter start to exit). Reported: the end-to-end
overhead ``sweep / plain - 1``, the per-trial overhead (Tune's trial time vs the plain trial
time) and the fixed cost (Ray start, MLflow, report). The target is <= 5 % for trials of
2 minutes or more: raise ``--search-epochs`` (and ``--train-size``) until a plain trial takes
that long, e.g. ``--trials 3 --search-epochs 60 --train-size 64``.

    python benchmarks/sweep_overhead.py --trials 3 --search-epochs 4 --repeats 2 --json o.json

Both modes run with the same threads (``--cpus``, default 1: on a small shared machine two
OpenMP threads next to another busy process can be many times slower, which would swamp the
comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}

PLAIN = r"""
import json, sys, time
t0 = time.perf_counter()
import torch
from pathlib import Path
from ssr.run.pipeline import run_pipeline
from sweeps.contract.params import build_pipeline
from sweeps.define.spec import load_sweep
sweep = load_sweep(sys.argv[1])
out = Path(sys.argv[2])
torch.set_num_threads(max(1, int(sweep.spec.resources.cpus_per_trial)))
trials = []
for seed in sweep.params[0].args:
    t = time.perf_counter()
    run_pipeline(build_pipeline(sweep.base, {"seed": seed}), out / f"seed{seed}", progress=False)
    trials.append(time.perf_counter() - t)
print(json.dumps({"trials": trials, "startup_s": t0}))
"""


def sweep_file(args: argparse.Namespace, path: Path) -> Path:
    """A grid sweep over seeds with the default sweep's space fixed at its base values."""
    base = yaml.safe_load((REPO / "sweeps" / "configs" / "default.yaml").read_text())
    spec = {
        "name": "overhead",
        "experiment": "ssr-overhead",
        "num_samples": 1,
        "max_concurrent": 1,
        "objectives": base["objectives"],
        "searcher": {"kind": "grid", "seed": 0},
        "scheduler": {"kind": "none"},
        "budget": {
            "search_epochs": args.search_epochs,
            "retrain_epochs": args.retrain_epochs,
            "checkpoint_every": args.checkpoint_every,
        },
        "resources": {"cpus_per_trial": args.cpus, "gpus_per_trial": 0},
        "remeasure": False,
        "dataset": {**base["dataset"], "train_size": args.train_size},
        "space": {"seed": {"grid": list(range(args.trials))}},
        "base": base["base"],
    }
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_plain(spec: Path, tmp: Path, cpus: float) -> dict[str, Any]:
    env = {**ENV, "OMP_NUM_THREADS": str(max(1, int(cpus)))}  # as Ray sets it for a trial
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", PLAIN, str(spec), str(tmp)],
        capture_output=True, text=True, env=env, cwd=REPO, check=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_s": wall, "trial_s": data["trials"]}


def run_sweep(spec: Path, tmp: Path) -> dict[str, Any]:
    import pandas as pd

    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "sweeps" / "run.py"), "--config", str(spec),
         "--storage", str(tmp), "--name", "overhead", "--quiet"],
        capture_output=True, text=True, env=ENV, cwd=REPO, start_new_session=True,
    )  # fmt: skip
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(
            f"sweep failed ({proc.returncode}):\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    df = pd.read_parquet(tmp / "overhead" / "results.parquet")
    return {
        "wall_s": wall,
        "trial_s": [float(v) for v in df.sort_values("completion_order")["wall_s"]],
    }


def _median(xs: list[float]) -> float:
    return statistics.median(xs)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=3, help="trials (seeds) per mode")
    p.add_argument("--search-epochs", type=int, default=4, help="search epochs per trial")
    p.add_argument("--retrain-epochs", type=int, default=1, help="retrain epochs per trial")
    p.add_argument("--train-size", type=int, default=32, help="synthetic training images")
    p.add_argument("--cpus", type=float, default=1.0, help="CPUs (torch threads) per trial")
    p.add_argument(
        "--checkpoint-every", type=int, default=5, help="epochs between Tune checkpoints (sweep)"
    )
    p.add_argument("--repeats", type=int, default=1, help="alternate plain/sweep this many times")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    plains, sweeps = [], []
    with tempfile.TemporaryDirectory(prefix="ssr-overhead-") as d:
        tmp = Path(d)
        spec = sweep_file(args, tmp / "overhead.yaml")
        for i in range(args.repeats):  # NOTE: alternating order evens out drifting machine load
            order = ("plain", "sweep") if i % 2 == 0 else ("sweep", "plain")
            for mode in order:
                out = tmp / f"{mode}{i}"
                if mode == "plain":
                    plains.append(run_plain(spec, out, args.cpus))
                else:
                    sweeps.append(run_sweep(spec, out))
    p_wall = _median([r["wall_s"] for r in plains])
    s_wall = _median([r["wall_s"] for r in sweeps])
    p_trial = _median([sum(r["trial_s"]) for r in plains])
    s_trial = _median([sum(r["trial_s"]) for r in sweeps])
    n = args.trials
    result = {
        "trials": n,
        "search_epochs": args.search_epochs,
        "retrain_epochs": args.retrain_epochs,
        "train_size": args.train_size,
        "cpus": args.cpus,
        "checkpoint_every": args.checkpoint_every,
        "repeats": args.repeats,
        "plain_wall_s": round(p_wall, 2),
        "sweep_wall_s": round(s_wall, 2),
        "plain_trial_mean_s": round(p_trial / n, 2),
        "sweep_trial_mean_s": round(s_trial / n, 2),
        "overhead_end_to_end": round(s_wall / p_wall - 1, 4),
        "overhead_per_trial": round(s_trial / p_trial - 1, 4),
        "sweep_fixed_s": round(s_wall - s_trial, 2),
        "plain_fixed_s": round(p_wall - p_trial, 2),
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs, Python {platform.python_version()}",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "plain_runs": [[round(t, 2) for t in r["trial_s"]] for r in plains],
        "sweep_runs": [[round(t, 2) for t in r["trial_s"]] for r in sweeps],
    }
    rows = [
        ("mode", "wall (s)", "trial mean (s)", "fixed (s)"),
        (
            "plain loop",
            result["plain_wall_s"],
            result["plain_trial_mean_s"],
            result["plain_fixed_s"],
        ),
        ("sweep", result["sweep_wall_s"], result["sweep_trial_mean_s"], result["sweep_fixed_s"]),
    ]
    for r in rows:
        print(f"{r[0]:<12}{r[1]!s:>12}{r[2]!s:>18}{r[3]!s:>12}")
    print(
        f"overhead: end to end {result['overhead_end_to_end']:+.1%}, per trial "
        f"{result['overhead_per_trial']:+.1%} ({n} trials of {args.search_epochs}+"
        f"{args.retrain_epochs} epochs, {args.cpus:g} CPU, medians of {args.repeats}, "
        f"load {result['load_average_1min']})"
    )
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
