"""Does a sweep's front answer its question? Cost spread, speed repeatability, accuracy noise.

A front is only worth reading when its points differ by more than the measurement noise. For
one finished sweep (a run folder with ``results.parquet``, ``sweep.yaml`` and the trials'
``params.json``) this benchmark measures:

1. **cost spread**: conv GMACs of every unique derived network at the sweep's bench input, and
   their max/min ratio (target >= 3);
2. **speed**: ``--remeasures`` independent exclusive re-measurements of all unique networks,
   each a fresh ``python`` process (:func:`remeasure_in_processes`: the networks are built again
   from their genotypes and exported again, so nothing carries over from one measurement to the
   next but the machine), each in ``--passes`` interleaved rounds
   (:func:`ssr.measure.interleave.measure_interleaved`, the deploy form); the Spearman rank
   correlation of every pair of re-measurements (target >= 0.9), the max/min latency ratio
   (target >= 2) and the number of pairs whose pass ranges overlap (tied);
3. **the FLOPs term**: ``flops.weight`` and ``flops.target`` of each complete trial against its
   derived GMACs (:func:`flops_term`): the rank correlation of target and GMACs over all
   complete trials, per baseline, and given the weight (:func:`partial_spearman`), with n for
   each. The complete trials are the ones the sweep's scheduler let finish (MO-ASHA ranks each
   rung by validation mIoU and expected GMACs), so they are selected partly by cost;
4. **accuracy noise**: ``--configs`` front configurations (the most accurate, the cheapest and
   ones between) each searched again with ``--seeds`` fresh seeds (search and derivation only,
   seeds other than the trial's own): each configuration's standard deviation of derived mIoU
   and the pooled standard deviation against the front's mIoU span (target: sd <= span / 3).

Prints JSON and a table::

    python benchmarks/front_quality.py --run runs/default-20261130-080000 --out front.json

``python benchmarks/front_quality.py measure SPEC OUT`` is one re-measurement (the child
process of section 2): the networks of the JSON ``SPEC`` timed, the spreads written to ``OUT``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from analysis.front import analyze_front
from analysis.load import from_parquet
from analysis.objectives import recorded_objectives
from ssr.config import BenchConfig, PipelineConfig, from_dict, to_dict
from ssr.data import dataset_info
from ssr.measure.host import cpu_info
from ssr.measure.interleave import Spread, measure_interleaved
from ssr.method.complexity import count_macs
from ssr.method.genotype import Genotype
from ssr.method.network import DerivedNet
from ssr.run.pipeline import run_pipeline
from sweeps.contract.params import trial_pipeline

ROOT = Path(__file__).resolve().parents[1]


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
    """Spearman's rank correlation (Pearson correlation of average ranks); NaN below 3 points
    or when one side is constant."""
    if len(a) < 3:
        return float("nan")
    ra, rb = _rank(a), _rank(b)
    if len(set(ra)) < 2 or len(set(rb)) < 2:
        return float("nan")
    return statistics.correlation(ra, rb)


def partial_spearman(x: list[float], y: list[float], z: list[float]) -> float:
    """Partial Spearman correlation of ``x`` and ``y`` given ``z``: the correlation of the
    ranks of ``x`` and ``y`` once the part of each that follows the ranks of ``z`` linearly is
    taken out, ``(r_xy - r_xz r_yz) / sqrt((1 - r_xz^2)(1 - r_yz^2))`` over Spearman
    coefficients. It answers "do x and y still move together among trials of like z", using
    every trial at once, where strata of z would leave one or two trials each. NaN below 4
    points (no degree of freedom left) or when z orders x or y perfectly."""
    if len(x) < 4:
        return float("nan")
    rxy, rxz, ryz = spearman(x, y), spearman(x, z), spearman(y, z)
    den = math.sqrt(max(0.0, (1 - rxz**2) * (1 - ryz**2)))
    if not all(math.isfinite(v) for v in (rxy, rxz, ryz)) or den < 1e-12:
        return float("nan")
    return (rxy - rxz * ryz) / den


def _r(v: float) -> float | None:
    """Rounded for JSON; None for NaN (JSON has no NaN)."""
    return round(v, 4) if math.isfinite(v) else None


def trial_config(run: Path, trial_id: str) -> PipelineConfig:
    """The PipelineConfig a trial ran, from Tune's ``params.json`` in its folder."""
    params = run / f"trial_{trial_id}" / "params.json"
    if not params.is_file():
        raise SystemExit(f"error: {params} not found: is {run} a sweep run folder?")
    return trial_pipeline(json.loads(params.read_text()))


def measure_child(spec_path: Path, out_path: Path) -> int:
    """One exclusive re-measurement in this process: build the spec's networks from their
    genotypes, time them with :func:`measure_interleaved` in the deploy form, write the spreads
    (pass medians per network), the procedure's record and this process's id to ``out_path``."""
    spec = json.loads(spec_path.read_text())
    bench = from_dict(BenchConfig, spec["bench"])
    torch.set_num_threads(max(1, bench.threads))
    classes = int(spec["classes"])
    models = {
        g: DerivedNet(Genotype.from_json(js), classes).eval() for g, js in spec["genotypes"].items()
    }
    shape = (bench.batch, 3, bench.height, bench.width)
    spreads, record = measure_interleaved(models, shape, bench, int(spec["passes"]), optimize=True)
    out = {
        "pid": os.getpid(),
        "record": record,
        "pass_medians_ms": {g: list(s.pass_medians_ms) for g, s in spreads.items()},
    }
    out_path.write_text(json.dumps(out))
    return 0


def remeasure_in_processes(
    genotypes: dict[str, str], classes: int, bench: BenchConfig, passes: int, count: int
) -> list[dict[str, Any]]:
    """``count`` exclusive re-measurements, one after the other, each in a fresh ``python``
    process running :func:`measure_child`: two measurements in one process share its warmed
    allocator, caches, ORT thread pools and JIT state and so agree more than two sweeps would.
    Returns each child's output with its ``spreads`` as :class:`Spread` objects."""
    results = []
    with tempfile.TemporaryDirectory(prefix="front-quality-") as tmp:
        spec = Path(tmp) / "spec.json"
        spec.write_text(
            json.dumps(
                {
                    "genotypes": genotypes,
                    "classes": classes,
                    "bench": to_dict(bench),
                    "passes": passes,
                }
            )
        )
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        }
        for k in range(count):
            out = Path(tmp) / f"measure{k}.json"
            cmd = [sys.executable, str(Path(__file__).resolve()), "measure", str(spec), str(out)]
            subprocess.run(cmd, check=True, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
            res = json.loads(out.read_text())
            res["spreads"] = {
                g: Spread(tuple(m), bench.batch) for g, m in res["pass_medians_ms"].items()
            }
            results.append(res)
    return results


def cost_and_speed(
    rows: Any, bench: BenchConfig, passes: int, classes: int, remeasures: int = 2
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Sections 1 and 2: GMACs at the bench input and ``remeasures`` re-measurements, each in
    its own process (:func:`remeasure_in_processes`)."""
    genos = {r.genotype_id: r.genotype for r in rows.itertuples()}
    shape = (bench.batch, 3, bench.height, bench.width)
    gmacs = {
        g: count_macs(DerivedNet(Genotype.from_json(js), classes).eval(), shape) / 1e9
        for g, js in genos.items()
    }
    runs = remeasure_in_processes(genos, classes, bench, passes, remeasures)
    ids = sorted(genos, key=lambda g: gmacs[g])
    lat = [[run["spreads"][g].latency_ms_median for g in ids] for run in runs]
    rhos = {
        f"{i + 1}-{j + 1}": _r(spearman(lat[i], lat[j]))
        for i, j in itertools.combinations(range(len(runs)), 2)
    }
    first = runs[0]["spreads"]
    ties = [
        sum(
            1
            for i, a in enumerate(ids)
            for b in ids[i + 1 :]
            if run["spreads"][a].overlaps(run["spreads"][b])
        )
        for run in runs
    ]
    finite = [v for v in rhos.values() if v is not None]
    summary = {
        "unique_genotypes": len(ids),
        "bench": runs[0]["record"],
        "remeasures": len(runs),
        "processes": [run["pid"] for run in runs],
        "parent_pid": os.getpid(),
        "gmacs_min": round(min(gmacs.values()), 4),
        "gmacs_max": round(max(gmacs.values()), 4),
        "gmacs_ratio": round(max(gmacs.values()) / min(gmacs.values()), 3),
        "latency_ratio_each": [round(max(x) / min(x), 3) for x in lat],
        "spearman_between_remeasures": rhos,
        "spearman_min": min(finite) if finite else None,
        "spearman_max": max(finite) if finite else None,
        "spearman_gmacs_latency_each": [_r(spearman([gmacs[g] for g in ids], x)) for x in lat],
        "tied_pairs_each": ties,
        "pairs": len(ids) * (len(ids) - 1) // 2,
    }
    table = [
        {
            "genotype_id": g,
            "gmacs": round(gmacs[g], 4),
            "latency_ms_each": [round(x[i], 3) for x in lat],
            "range_1": [round(first[g].latency_ms_lo, 3), round(first[g].latency_ms_hi, 3)],
        }
        for i, g in enumerate(ids)
    ]
    return summary, table


def correlations(t: Any, gmacs_col: str = "gmacs") -> dict[str, Any]:
    """Target-GMACs rank correlation of the trials in ``t``, raw and given the weight, with n."""
    target = [float(x) for x in t["cfg.flops.target"]]
    weight = [float(x) for x in t["cfg.flops.weight"]]
    gmacs = [float(x) for x in t[gmacs_col]]
    return {
        "n": len(t),
        "spearman_target_gmacs": _r(spearman(target, gmacs)),
        "partial_spearman_target_gmacs_given_weight": _r(partial_spearman(target, gmacs, weight)),
        "spearman_weight_target": _r(spearman(weight, target)),
        "spearman_weight_gmacs": _r(spearman(weight, gmacs)),
    }


def flops_term(complete: Any, gmacs_col: str = "gmacs", trials: Any = None) -> dict[str, Any]:
    """Section 3: the FLOPs weight and target of each complete trial against its GMACs.

    The target-GMACs rank correlation is given over all complete trials, per baseline (the
    baselines differ in how the search shrinks, so a pooled correlation can come from their mix)
    and given the weight (:func:`partial_spearman`: weight and target were anti-correlated among
    the survivors of a sweep, and a heavy weight alone makes a network cheap), each with its n.
    ``trials`` (all rows, stopped ones too) adds how the complete ones differ from the stopped
    ones in weight and target: the scheduler chose them.
    """
    cols = ["trial_id", "baseline", "cfg.flops.weight", "cfg.flops.target", gmacs_col]
    t = complete[[c for c in cols if c in complete.columns]].sort_values("cfg.flops.target")
    rows = [
        {k: (v if isinstance(v, str) else round(float(v), 4)) for k, v in r.items()}
        for r in t.astype(object).to_dict("records")
    ]
    out: dict[str, Any] = {"rows": rows, "all_complete": correlations(t, gmacs_col)}
    if "baseline" in t.columns:
        out["per_baseline"] = {
            str(b): correlations(g, gmacs_col) for b, g in t.groupby("baseline", sort=True)
        }
    if trials is not None and "status" in trials.columns:
        out["selection"] = {
            str(status): {
                "n": len(g),
                "median_weight": _r(float(g["cfg.flops.weight"].median())),
                "median_target": _r(float(g["cfg.flops.target"].median())),
            }
            for status, g in trials.groupby("status", sort=True)
        }
    return out


FRONT_COLUMNS = (
    "trial_id", "baseline", "genotype_id", "derived_miou", "derived_miou_lo", "derived_miou_hi",
    "fps_exclusive", "fps_exclusive_lo", "fps_exclusive_hi", "gmacs", "cfg.flops.weight",
    "cfg.flops.target",
)  # fmt: skip


def front_rows(front: Any) -> list[dict[str, Any]]:
    """The front's points as the sweep recorded them (:data:`FRONT_COLUMNS` that exist)."""
    cols = [c for c in FRONT_COLUMNS if c in front.columns]
    return [
        {k: (v if isinstance(v, str) else _r(float(v))) for k, v in r.items()}
        for r in front[cols].astype(object).to_dict("records")
    ]


def fresh_seeds(own: int, count: int) -> list[int]:
    """The first ``count`` seeds from 0 up, skipping the trial's own seed ``own``."""
    return [s for s in range(count + 1) if s != own][:count]


def seed_noise(run: Path, trial_id: str, seeds: int, out: Path) -> dict[str, Any]:
    """One trial's search repeated with fresh seeds (search and derivation only): the derived
    mIoU of each, and their standard deviation."""
    cfg = trial_config(run, trial_id)
    values = []
    for seed in fresh_seeds(cfg.search.seed, seeds):
        c = dataclasses.replace(
            cfg,
            search=dataclasses.replace(cfg.search, seed=seed),
            retrain=dataclasses.replace(cfg.retrain, epochs=0),
            bench=dataclasses.replace(cfg.bench, height=32, width=64, warmup=0, iters=1),
            export_onnx=False,
        )
        t0 = time.perf_counter()
        rec = run_pipeline(c, out / f"{trial_id}-seed{seed}", progress=False)
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
    sd = statistics.stdev(mious) if len(mious) > 1 else float("nan")
    return {"trial": trial_id, "own_seed": cfg.search.seed, "runs": values, "sd": sd}


def spread_configs(front: Any, miou_col: str, count: int) -> list[str]:
    """``count`` trial ids along a front: its ends (most accurate, least accurate = cheapest)
    and points evenly between them by mIoU rank."""
    ids = [str(x) for x in front.sort_values(miou_col, ascending=False)["trial_id"]]
    if len(ids) <= count:
        return ids
    picks = sorted({round(i * (len(ids) - 1) / (count - 1)) for i in range(count)})
    return [ids[i] for i in picks]


def pooled_sd(sds: list[float], n_each: list[int]) -> float:
    """Pooled standard deviation: sqrt(sum (n_i - 1) s_i^2 / sum (n_i - 1)) over groups."""
    dof = sum(n - 1 for n in n_each)
    if dof <= 0:
        return float("nan")
    return math.sqrt(sum((n - 1) * s * s for s, n in zip(sds, n_each, strict=True)) / dof)


def accuracy_noise(
    run: Path, trials: list[str], seeds: int, out: Path, span: float
) -> dict[str, Any]:
    """Section 4: each configuration's seed sd and the pooled sd, against the front's span."""
    per = [seed_noise(run, t, seeds, out) for t in trials]
    pooled = pooled_sd([p["sd"] for p in per], [len(p["runs"]) for p in per])
    for p in per:
        p["sd_over_span"] = _r(p["sd"] / span) if span > 0 else None
    return {
        "configs": per,
        "pooled_sd": pooled,
        "sd_over_span": _r(pooled / span) if span > 0 else None,
        "sd_range": [min(p["sd"] for p in per), max(p["sd"] for p in per)],
    }


def print_table(result: dict[str, Any]) -> None:
    """The headline figures against their targets."""
    s, f, span = result["speed"], result["flops_term"], result["front"]["miou_span"]
    rows = [
        ("unique genotypes", s["unique_genotypes"], ""),
        ("conv GMACs max/min (bench input)", s["gmacs_ratio"], ">= 3"),
        ("exclusive latency max/min, each", s["latency_ratio_each"], ">= 2"),
        (
            f"Spearman, {s['remeasures']} re-measurements (processes)",
            s["spearman_between_remeasures"],
            ">= 0.9",
        ),
        (f"tied pairs of {s['pairs']}, each", s["tied_pairs_each"], ""),
        ("flops.target vs GMACs, complete", f["all_complete"], ""),
        *((f"  baseline {b}", c, "") for b, c in f.get("per_baseline", {}).items()),
        ("front points / mIoU span", f"{result['front']['points']} / {span:.4f}", ""),
    ]
    if "accuracy_noise" in result:
        n = result["accuracy_noise"]
        for c in n["configs"]:
            rows.append((f"  seed sd, trial {c['trial']}", round(c["sd"], 4), ""))
        rows.append(
            (
                "pooled seed sd / span",
                f"{n['pooled_sd']:.4f} / {span:.4f} = {n['sd_over_span']}",
                "<= 0.33",
            )
        )
    for name, value, target in rows:
        print(f"{name:<44} {value} {target}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of the parent (the whole benchmark)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, required=True, help="a finished sweep's run folder")
    p.add_argument("--passes", type=int, default=5, help="interleaved passes per measurement")
    p.add_argument("--remeasures", type=int, default=3, help="re-measurements, one process each")
    p.add_argument("--configs", type=int, default=3, help="front configurations for the noise")
    p.add_argument("--seeds", type=int, default=3, help="fresh seeds per configuration (0: skip)")
    p.add_argument("--trial", nargs="+", help="trial ids for the accuracy noise (default: front)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=Path("/tmp/ssr-front-quality"))
    p.add_argument("--out", type=Path, help="also write the JSON here")
    args = p.parse_args(argv)
    if args.remeasures < 2 or args.passes < 2:
        p.error("need --remeasures >= 2 and --passes >= 2")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["measure"] and len(argv) == 3:
        return measure_child(Path(argv[1]), Path(argv[2]))
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    t0, load0 = time.perf_counter(), os.getloadavg()
    df = from_parquet(args.run / "results.parquet")
    complete = df[df["status"] == "complete"]
    if complete.empty:
        print(f"error: no complete trial in {args.run}", file=sys.stderr)
        return 2
    sweep_cfg = trial_config(args.run, str(complete["trial_id"].iloc[0]))
    bench = dataclasses.replace(sweep_cfg.bench, threads=args.threads)
    classes = dataset_info(sweep_cfg.search.data.name).num_classes
    unique = complete.drop_duplicates("genotype_id")
    speed, table = cost_and_speed(unique, bench, args.passes, classes, args.remeasures)
    load_speed = os.getloadavg()

    objectives = recorded_objectives(df) or [("derived_miou", True), ("fps_exclusive", True)]
    front = analyze_front(df, objectives).front
    miou_col = objectives[0][0]
    on_front = front[miou_col].astype(float)
    span = float(on_front.max() - on_front.min()) if len(on_front) > 1 else 0.0
    result: dict[str, Any] = {
        "run": str(args.run),
        "machine": cpu_info(),
        "threads": args.threads,
        "bench_config": to_dict(bench),
        "speed": speed,
        "networks": table,
        "flops_term": flops_term(complete, trials=df),
        "front": {
            "points": len(on_front),
            "miou_column": miou_col,
            "miou_span": span,
            "rows": front_rows(front),
        },
    }
    if args.seeds >= 2:
        trials = args.trial or spread_configs(front, miou_col, args.configs)
        result["accuracy_noise"] = accuracy_noise(args.run, trials, args.seeds, args.work, span)
    result["loadavg"] = {
        "start": list(load0),
        "after_speed": list(load_speed),
        "end": list(os.getloadavg()),
    }
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=2, default=str)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    print_table(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
