"""Does the latency term land searches on their target latency, better than the FLOPs term?

    python benchmarks/latency_search.py [--config sweeps/configs/latency.yaml]
        [--targets 16,21,26] [--seeds 0,1,2] [--jobs 2] [--out benchmarks/results/latency_search]

The setting is a sweep file's (default ``sweeps/configs/latency.yaml``): its base search (space,
data, budget of ``budget.search_epochs``), its latency table and its benchmark. For every target
latency ``T`` and seed, two searches with the same budget (docs/method.md §4.4):

- ``latency``: the FLOPs term off, the latency term on (``latency.weight``, target ``T``);
- ``flops``: the latency term off, the FLOPs term on at the **matched target**: the FLOPs
  fraction (expected conv MACs over the space's largest sub-network, docs/method.md §4.3) that
  random networks of the space with a predicted latency of ``T`` have, from a least-squares line
  over 400 of them. The table still logs its expected latency.

The latency arm derives its network by ``--derive`` (``auto``: target-aware derivation,
docs/method.md §4.4: the groups still undecided when the budget ends are decided so that the
predicted latency lands within ``latency.derive_tolerance`` of ``T``); the FLOPs arm by argmax,
the paper's rule. Each search records the argmax network's prediction beside the derived one's.

Every derived network is measured alone in the deploy form after the searches, all of them in
interleaved passes (:func:`ssr.measure.latency.measure_networks`, as the table's blocks were
timed), with the table's reference networks in the same passes
(:func:`ssr.measure.drift.measure_against_table`, ``--references``): the median of their
measured-now / measured-at-build ratios is the machine's drift since the table was built, and a
network's adjusted latency is its raw one over the drift. Reported per arm: the share of
searches whose measured latency lands within +-10 % of ``T``, raw and drift-adjusted (target:
>= 80 % for the latency term), the same share of the derived and of the argmax networks'
predictions, the spread of measured / ``T``, and per seed the hypervolume of the arm's front
(derived mIoU with inherited weights vs measured FPS; one reference point for all,
:func:`analysis.pareto.default_reference`) at equal compute (the same number of searches of
the same budget). Each network's expected (the search's last epoch), argmax-predicted,
predicted, measured and adjusted latency is in the JSON and the Markdown table, the drift and
its reference networks in the summary.

Every search writes its result as it finishes (``<out>/runs/<arm>_T<target>_s<seed>.json``); a
rerun skips what is done.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from analysis.pareto import default_reference, hypervolume  # noqa: E402


def load_setting(config: Path, overrides: list[str]) -> Any:
    """The sweep file's base PipelineConfig (its table checked against its benchmark)."""
    from sweeps.define.spec import load_sweep

    return load_sweep(config, overrides).base_config


def matched_flops_target(cfg: Any, target_ms: float, n: int = 400) -> float:
    """The FLOPs fraction random networks of the space have at a predicted latency of
    ``target_ms`` (least-squares line of fraction on predicted latency)."""
    import random

    from ssr.data import dataset_info
    from ssr.method.complexity import count_macs
    from ssr.method.derive import sample_genotype
    from ssr.method.latency_table import LatencyTable, predict_ms
    from ssr.method.network import DerivedNet
    from ssr.method.supernet import Supernet

    s = cfg.search
    classes = dataset_info(s.data.name).num_classes
    table = LatencyTable.load(s.latency.table)
    top = Supernet(s.space, classes).max_macs(s.flops.height, s.flops.width)
    rng, xs, ys = random.Random(0), [], []
    for _ in range(n):
        g = sample_genotype(s.space, rng, s.reduction_width)
        xs.append(predict_ms(table, g.with_head(table.head)))
        net = DerivedNet(g.with_head("search"), classes)  # what the FLOPs term counts
        ys.append(count_macs(net, (1, 3, s.flops.height, s.flops.width)) / top)
    a, b = np.polyfit(xs, ys, 1)
    return float(np.clip(a * target_ms + b, 0.02, 1.5))


#: What each search records of its summary: the latency it ended at (expected), the derived
#: network's prediction, and how the undecided groups were decided (ssr.method.derive_target).
SUMMARY_FIELDS = (
    "expected_latency_ms",
    "predicted_latency_ms",
    "derive_rule",
    "argmax_predicted_latency_ms",
    "derive_changed_groups",
    "derive_log_prob_given_up",
    "derive_steps",
)


def _search_job(job: dict[str, Any]) -> dict[str, Any]:
    """One search in a worker process (1 torch thread); writes and returns its result."""
    import torch

    from ssr.config import PipelineConfig, from_dict
    from ssr.method.search import run_search

    torch.set_num_threads(1)
    cfg = from_dict(PipelineConfig, job["config"], "config")
    t0 = time.perf_counter()
    res = run_search(cfg.search, job["dir"], progress=False)
    out = {
        **{k: job[k] for k in ("name", "arm", "target_ms", "seed", "flops_target")},
        "genotype": res.genotype.to_json(indent=None), "genotype_id": res.genotype.id,
        "derived_miou": res.summary["derived_miou"], "gmacs": res.summary["gmacs"],
        "discrete_at_epoch": res.summary["discrete_at_epoch"],
        "fallback_prunes": res.summary["fallback_prunes"],
        **{k: res.summary.get(k) for k in SUMMARY_FIELDS},
        "seconds": time.perf_counter() - t0,
    }  # fmt: skip
    Path(job["result"]).write_text(json.dumps(out))
    return out


def measure_all(results: list[dict[str, Any]], cfg: Any, references: int | None) -> dict[str, Any]:
    """Every derived network measured alone, after the searches, in interleaved passes
    (:func:`ssr.measure.latency.measure_networks`), as the table's blocks were timed, with the
    table's reference networks in the same passes (:func:`ssr.measure.drift.measure_against_table`):
    each result gets its raw ``measured_ms``, the ``drift`` and ``measured_adjusted_ms`` (raw /
    drift, comparable with the table's predictions). Returns the drift's summary (drift None
    for a table without reference genotypes: the message says why)."""
    from ssr.config import ConfigError
    from ssr.measure.drift import measure_against_table
    from ssr.method.genotype import Genotype
    from ssr.method.latency_table import LatencyTable

    table = LatencyTable.load(cfg.search.latency.table)
    nets = [Genotype.from_json(r["genotype"]) for r in results]
    try:
        res = measure_against_table(nets, table, references)
    except ConfigError as exc:  # a table without references: raw figures only
        print(f"no drift reference: {exc}", file=sys.stderr)
        res = measure_against_table(nets, table, 0)
    for i, r in enumerate(results):
        r["measured_ms"] = res.raw_ms[i]
        r["drift"] = res.drift
        r["measured_adjusted_ms"] = None if res.adjusted_ms is None else res.adjusted_ms[i]
    return {**res.summary(), "reference_networks": res.references}


def jobs_for(cfg: Any, args: argparse.Namespace, out: Path) -> list[dict[str, Any]]:
    from ssr.config import to_dict

    jobs = []
    for target in args.targets:
        flops_target = matched_flops_target(cfg, target)
        for seed in args.seeds:
            for arm in ("latency", "flops"):
                d = to_dict(cfg)
                s = d["search"]
                s["seed"] = seed
                s["latency"]["target_ms"] = target
                if arm == "latency":
                    s["flops"]["weight"], s["latency"]["weight"] = 0.0, args.latency_weight
                    s["latency"]["derive"] = args.derive
                else:
                    s["flops"]["weight"], s["latency"]["weight"] = args.flops_weight, 0.0
                    s["flops"]["target"] = flops_target
                    s["latency"]["derive"] = "argmax"  # the paper's rule: the FLOPs term's arm
                name = f"{arm}_T{target:g}_s{seed}"
                jobs.append({"name": name, "arm": arm, "target_ms": target, "seed": seed,
                             "flops_target": flops_target, "config": d,
                             "dir": str(out / "runs" / name),
                             "result": str(out / "runs" / f"{name}.json")})  # fmt: skip
    return jobs


def _within(ms: float | None, target: float) -> bool | None:
    """Whether ``ms`` lands within +-10 % of ``target`` (None: no figure)."""
    return None if ms is None else abs(ms / target - 1) <= 0.1


def _share(rs: list[dict[str, Any]], key: str) -> float | None:
    """The share of ``rs`` whose ``key`` is true (None when none has the figure)."""
    known = [r[key] for r in rs if r.get(key) is not None]
    return round(sum(known) / len(known), 3) if known else None


def summarise(results: list[dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """Landing share and spread per arm, hypervolume per seed under one reference.

    Landing (within +-10 % of the target) is counted for the derived network measured (raw,
    and drift-adjusted: raw / the drift of the table's reference networks measured in the same
    passes) and, from the table, for its prediction and for the prediction of the argmax
    network the search would have derived without target-aware derivation (docs/method.md
    §4.4). The hypervolume uses the raw measurements."""
    for r in results:
        t = r["target_ms"]
        r["ratio"] = r["measured_ms"] / t
        r["landed"] = _within(r["measured_ms"], t)
        r["landed_adjusted"] = _within(r.get("measured_adjusted_ms"), t)
        r["landed_predicted"] = _within(r.get("predicted_latency_ms"), t)
        r["landed_argmax_predicted"] = _within(r.get("argmax_predicted_latency_ms"), t)
        r["fps"] = 1e3 / r["measured_ms"]
    pts = np.array([[100 * r["derived_miou"], r["fps"]] for r in results], dtype=float)
    ref = default_reference(pts, [True, True])
    arms: dict[str, Any] = {}
    for arm in ("latency", "flops"):
        rs = [r for r in results if r["arm"] == arm]
        ratios = [r["ratio"] for r in rs]
        adjusted = [r["measured_adjusted_ms"] / r["target_ms"] for r in rs
                    if r.get("measured_adjusted_ms") is not None]  # fmt: skip
        per_seed = []
        for s in seeds:
            v = np.array([[100 * r["derived_miou"], r["fps"]] for r in rs if r["seed"] == s])
            per_seed.append(float(hypervolume(v, [True, True], ref)) if len(v) else 0.0)
        arms[arm] = {
            "searches": len(rs),
            "landed_within_10pct": _share(rs, "landed"),
            "adjusted_within_10pct": _share(rs, "landed_adjusted"),
            "predicted_within_10pct": _share(rs, "landed_predicted"),
            "argmax_predicted_within_10pct": _share(rs, "landed_argmax_predicted"),
            "ratio_mean": round(statistics.mean(ratios), 3) if ratios else None,
            "ratio_sd": round(statistics.stdev(ratios), 3) if len(ratios) > 1 else None,
            "abs_error_pct_mean": round(100 * statistics.mean(abs(x - 1) for x in ratios), 1)
            if ratios else None,
            "adjusted_ratio_mean": round(statistics.mean(adjusted), 3) if adjusted else None,
            "adjusted_ratio_sd": round(statistics.stdev(adjusted), 3)
            if len(adjusted) > 1 else None,
            "hypervolume_per_seed": [round(h, 3) for h in per_seed],
            "hypervolume_mean": round(statistics.mean(per_seed), 3) if per_seed else None,
        }  # fmt: skip
    return {"reference": [float(x) for x in ref], "arms": arms}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.0f} %"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"


def markdown(res: dict[str, Any]) -> str:
    d = res["summary"]["drift"]
    head = ("drift: none (no reference networks measured)" if d["drift"] is None else
            f"drift: {d['drift']:.3f} (median of {d['references']} reference networks, measured "
            f"now / at the table's build, {d['drift_min']:.3f}-{d['drift_max']:.3f}); "
            "adjusted = measured / drift")  # fmt: skip
    lines = [head, "",
             "| arm | searches | measured within +-10 % (adjusted) | predicted within +-10 % "
             "(argmax's) | measured / target (mean, sd) | hypervolume per seed (mean) |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for arm, a in res["summary"]["arms"].items():
        lines.append(f"| {arm} | {a['searches']} | {_pct(a['landed_within_10pct'])} "
                     f"({_pct(a['adjusted_within_10pct'])}) | "
                     f"{_pct(a['predicted_within_10pct'])} "
                     f"({_pct(a['argmax_predicted_within_10pct'])}) | "
                     f"{a['ratio_mean']}, {a['ratio_sd']} | {a['hypervolume_per_seed']} "
                     f"({a['hypervolume_mean']}) |")  # fmt: skip
    lines += ["", "| network | target ms | expected ms | argmax predicted ms | predicted ms | "
              "groups changed | measured ms | adjusted ms | derived mIoU |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(res["results"], key=lambda r: (r["arm"], r["target_ms"], r["seed"])):
        changed = r.get("derive_changed_groups")
        lines.append(f"| {r['name']} | {r['target_ms']:g} | {_ms(r['expected_latency_ms'])} | "
                     f"{_ms(r.get('argmax_predicted_latency_ms'))} | "
                     f"{_ms(r['predicted_latency_ms'])} | {'-' if changed is None else changed} | "
                     f"{r['measured_ms']:.1f} | {_ms(r.get('measured_adjusted_ms'))} | "
                     f"{100 * r['derived_miou']:.1f} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", type=Path, default=ROOT / "sweeps" / "configs" / "latency.yaml")
    p.add_argument("--set", action="append", default=[], help="sweep overrides, as sweeps/run.py")
    p.add_argument("--targets", type=lambda t: [float(x) for x in t.split(",")],
                   default=[16.0, 21.0, 26.0])  # fmt: skip
    p.add_argument("--seeds", type=lambda t: [int(x) for x in t.split(",")], default=[0, 1, 2])
    p.add_argument("--latency-weight", type=float, default=100.0)
    p.add_argument("--flops-weight", type=float, default=100.0)
    p.add_argument("--derive", choices=("auto", "argmax", "target"), default="auto",
                   help="latency.derive of the latency arm (auto: target; the FLOPs arm: argmax)")  # fmt: skip
    p.add_argument("--references", type=int, default=None,
                   help="the table's reference networks measured beside (default all; 0: none)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "latency_search")
    args = p.parse_args(argv)
    cfg = load_setting(args.config, args.set)
    (args.out / "runs").mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(cfg, args, args.out)
    done = [json.loads(Path(j["result"]).read_text()) for j in jobs if Path(j["result"]).is_file()]
    todo = [j for j in jobs if not Path(j["result"]).is_file()]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        for r in pool.map(_search_job, todo):
            print(f"{r['name']}: predicted {r['predicted_latency_ms']:.1f} ms "
                  f"(target {r['target_ms']:g})", file=sys.stderr)  # fmt: skip
            done.append(r)
    print(f"measuring {len(done)} networks alone, with the table's reference networks",
          file=sys.stderr)  # fmt: skip
    drift = measure_all(done, cfg, args.references)
    print(f"drift {drift['drift']} ({drift['references']} reference networks, "
          f"{drift['drift_min']}-{drift['drift_max']})", file=sys.stderr)  # fmt: skip
    res = {"summary": {**summarise(done, args.seeds), "drift": drift}, "results": done,
           "settings": {"config": str(args.config), "set": args.set, "targets": args.targets,
                        "seeds": args.seeds, "latency_weight": args.latency_weight,
                        "flops_weight": args.flops_weight, "derive": args.derive,
                        "references": args.references,
                        "search_epochs": cfg.search.epochs, "table": cfg.search.latency.table},
           "seconds": round(time.perf_counter() - t0, 1), "command": " ".join(sys.argv)}  # fmt: skip
    text = markdown(res)
    args.out.with_suffix(".json").write_text(json.dumps(res, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text + "\n")
    print(json.dumps(res["summary"], indent=2))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
