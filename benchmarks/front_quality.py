"""Does a sweep's front answer its question? Cost spread, speed repeatability, accuracy noise.

A front is only worth reading when its points differ by more than the measurement noise. For
one finished sweep (a run folder with ``results.parquet``, ``sweep.yaml`` and the trials'
``params.json``) this benchmark measures:

1. **cost spread**: conv GMACs of every unique derived network at the sweep's bench input, and
   their max/min ratio (target >= 3);
2. **speed**: two independent exclusive re-measurements of all unique networks, each in
   ``--passes`` interleaved rounds (:func:`ssr.measure.interleave.measure_interleaved`), their Spearman
   rank correlation (target >= 0.9), the max/min latency ratio (target >= 2) and the number of
   pairs whose pass ranges overlap (tied);
3. **the FLOPs term**: ``flops.weight`` and ``flops.target`` of each trial against its derived
   GMACs, and the rank correlation of target and GMACs;
4. **accuracy noise**: one trial's configuration (the most accurate front point unless
   ``--trial``) searched again with ``--seeds`` seeds (search and derivation only): the standard
   deviation of derived mIoU against the front's mIoU span (target: sd <= span / 3).

Prints JSON and a table::

    python benchmarks/front_quality.py --run runs/default-20261130-080000 --out front.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from analysis.front import analyze_front
from analysis.load import from_parquet
from analysis.objectives import recorded_objectives
from ssr.config import BenchConfig, PipelineConfig, to_dict
from ssr.data import dataset_info
from ssr.measure.host import cpu_name
from ssr.measure.interleave import measure_interleaved
from ssr.method.complexity import count_macs
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet
from ssr.run.pipeline import run_pipeline
from sweeps.contract.params import trial_pipeline


def _rank(values: list[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):  # average ranks over ties
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation (Pearson correlation of average ranks)."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _rank(a), _rank(b)
    return statistics.correlation(ra, rb)


def trial_config(run: Path, trial_id: str) -> PipelineConfig:
    """The PipelineConfig a trial ran, from Tune's ``params.json`` in its folder."""
    params = run / f"trial_{trial_id}" / "params.json"
    if not params.is_file():
        raise SystemExit(f"error: {params} not found: is {run} a sweep run folder?")
    return trial_pipeline(json.loads(params.read_text()))


def cost_and_speed(
    rows: Any, bench: BenchConfig, passes: int, classes: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sections 1 and 2: GMACs at the bench input and two interleaved re-measurements."""
    genos = {r.genotype_id: r.genotype for r in rows.itertuples()}
    models = {g: DerivedNet(Genotype.from_json(js), classes).eval() for g, js in genos.items()}
    shape = (bench.batch, 3, bench.height, bench.width)
    gmacs = {g: count_macs(m, shape) / 1e9 for g, m in models.items()}
    # the deployment form, as the sweep's exclusive re-measurement (sweeps/trial.py)
    first, record = measure_interleaved(models, shape, bench, passes, optimize=True)
    second, _ = measure_interleaved(models, shape, bench, passes, optimize=True)
    ids = sorted(models, key=lambda g: gmacs[g])
    lat1 = [first[g].latency_ms_median for g in ids]
    lat2 = [second[g].latency_ms_median for g in ids]
    ties = sum(1 for i, a in enumerate(ids) for b in ids[i + 1 :] if first[a].overlaps(first[b]))
    summary = {
        "unique_genotypes": len(ids),
        "bench": record,
        "gmacs_min": round(min(gmacs.values()), 4),
        "gmacs_max": round(max(gmacs.values()), 4),
        "gmacs_ratio": round(max(gmacs.values()) / min(gmacs.values()), 3),
        "latency_ratio": round(max(lat1) / min(lat1), 3),
        "spearman_two_measurements": round(spearman(lat1, lat2), 4),
        "spearman_gmacs_latency": round(spearman([gmacs[g] for g in ids], lat1), 4),
        "tied_pairs": ties,
        "pairs": len(ids) * (len(ids) - 1) // 2,
    }
    table = [
        {
            "genotype_id": g,
            "gmacs": round(gmacs[g], 4),
            "latency_ms_1": round(first[g].latency_ms_median, 3),
            "range_1": [round(first[g].latency_ms_lo, 3), round(first[g].latency_ms_hi, 3)],
            "latency_ms_2": round(second[g].latency_ms_median, 3),
        }
        for g in ids
    ]
    return summary, table


def flops_term(complete: Any, gmacs_col: str = "gmacs") -> dict[str, Any]:
    """Section 3: the FLOPs weight and target of each complete trial against its GMACs."""
    cols = ["trial_id", "baseline", "cfg.flops.weight", "cfg.flops.target", gmacs_col]
    t = complete[[c for c in cols if c in complete.columns]].sort_values("cfg.flops.target")
    rows = [
        {k: (v if isinstance(v, str) else round(float(v), 4)) for k, v in r.items()}
        for r in t.astype(object).to_dict("records")
    ]
    rho = spearman([float(x) for x in t["cfg.flops.target"]], [float(x) for x in t[gmacs_col]])
    return {"rows": rows, "spearman_target_gmacs": round(rho, 4)}


def seed_noise(run: Path, trial_id: str, seeds: int, out: Path) -> dict[str, Any]:
    """Section 4: one trial's search repeated with other seeds (search + derivation only)."""
    cfg = trial_config(run, trial_id)
    values = []
    for seed in range(seeds):
        c = dataclasses.replace(
            cfg,
            search=dataclasses.replace(cfg.search, seed=seed),
            retrain=dataclasses.replace(cfg.retrain, epochs=0),
            bench=dataclasses.replace(cfg.bench, height=32, width=64, warmup=0, iters=1),
            export_onnx=False,
        )
        t0 = time.perf_counter()
        rec = run_pipeline(c, out / f"seed{seed}", progress=False)
        values.append(
            {
                "seed": seed,
                "derived_miou": rec["derived_miou"],
                "derived_miou_lo": rec.get("derived_miou_lo"),
                "derived_miou_hi": rec.get("derived_miou_hi"),
                "genotype_id": rec["genotype_id"],
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    mious = [v["derived_miou"] for v in values]
    return {"trial": trial_id, "runs": values, "sd": statistics.stdev(mious)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished sweep's run folder")
    p.add_argument("--passes", type=int, default=5, help="interleaved passes per measurement")
    p.add_argument("--seeds", type=int, default=3, help="seeds for the accuracy noise (0: skip)")
    p.add_argument("--trial", help="trial id for the accuracy noise (default: most accurate)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/ssr-front-quality"))
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    df = from_parquet(args.run / "results.parquet")
    complete = df[df["status"] == "complete"]
    if complete.empty:
        print(f"error: no complete trial in {args.run}", file=sys.stderr)
        return 2
    sweep_cfg = trial_config(args.run, str(complete["trial_id"].iloc[0]))
    bench = dataclasses.replace(sweep_cfg.bench, threads=args.threads)
    classes = dataset_info(sweep_cfg.search.data.name).num_classes
    unique = complete.drop_duplicates("genotype_id")
    speed, table = cost_and_speed(unique, bench, args.passes, classes)

    objectives = recorded_objectives(df) or [("derived_miou", True), ("fps_exclusive", True)]
    front = analyze_front(df, objectives)
    miou_col = objectives[0][0]
    on_front = front.front[miou_col].astype(float)
    span = float(on_front.max() - on_front.min()) if len(on_front) > 1 else 0.0
    result: dict[str, Any] = {
        "run": str(args.run),
        "machine": cpu_name(),
        "threads": args.threads,
        "bench_config": to_dict(bench),
        "speed": speed,
        "networks": table,
        "flops_term": flops_term(complete),
        "front": {"points": len(on_front), "miou_column": miou_col, "miou_span": span},
    }
    if args.seeds >= 2:
        trial = args.trial or str(complete.sort_values(miou_col)["trial_id"].iloc[-1])
        noise = seed_noise(args.run, trial, args.seeds, args.work)
        noise["sd_over_span"] = noise["sd"] / span if span > 0 else float("inf")
        result["accuracy_noise"] = noise
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    s = result["speed"]
    print(f"\n{'figure':<44} {'value':>12} target")
    print(f"{'unique genotypes':<44} {s['unique_genotypes']:>12}")
    print(f"{'conv GMACs max/min (bench input)':<44} {s['gmacs_ratio']:>12} >= 3")
    print(f"{'exclusive latency max/min':<44} {s['latency_ratio']:>12} >= 2")
    print(
        f"{'Spearman, two exclusive re-measurements':<44} {s['spearman_two_measurements']:>12} >= 0.9"
    )
    print(f"{'tied pairs (overlapping pass ranges)':<44} {s['tied_pairs']:>8}/{s['pairs']:<3}")
    print(
        f"{'Spearman, flops.target vs GMACs':<44} {result['flops_term']['spearman_target_gmacs']:>12}"
    )
    print(f"{'front points / mIoU span':<44} {len(on_front):>5} / {span:.4f}")
    if "accuracy_noise" in result:
        n = result["accuracy_noise"]
        print(
            f"{'derived mIoU sd over seeds / span':<44} {n['sd']:.4f} / {span:.4f} = {n['sd_over_span']:.2f} <= 0.33"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
