"""Do searched networks beat random networks of the same cost? (BENCHMARKS.md, "CamVid").

The standard NAS sanity check (Li & Talwalkar 2019, "Random search and reproducibility for
NAS"; Yang et al. 2020, "NAS evaluation is frustratingly hard"): a search is worth running only
if its networks beat networks drawn at random from the same space, trained the same way.

From a finished sweep that retrained every derived network (``sweeps/configs/camvid.yaml``):

1. the searched front (retrained mIoU vs exclusive FPS), up to ``--points`` networks spread over
   it (most accurate, knee, fastest);
2. for each front network and each seed, a random genotype drawn uniformly from the same space
   (every group of every dimension picks one candidate, decoded by the sweep's own rule) and
   kept only if its conv GMACs (the record's ``gmacs``: at the search's FLOPs input size) is
   within ``--match`` (10 %) of the front network's;
3. every searched, random and reference network retrained from scratch with the sweep's own
   retraining config (same data, size, epochs, optimiser), once per seed; the paper's released
   network (``ssr_cityscapes``, with this dataset's classes) as a hand-made reference;
4. all of them timed together, alone, in interleaved passes at the sweep's benchmark size and
   backend (:func:`ssr.measure.interleave.measure_interleaved`).

Compared per seed: the hypervolume of the searched networks against that of the random ones,
with ONE reference point for all (:func:`analysis.pareto.default_reference` over every network
measured), and the mIoU difference of each searched network against its GMACs-matched random
twin (with both FPS, since matched GMACs is not matched speed). The summary gives means, the
spread over seeds and a paired bootstrap interval, and says who wins and whether the difference
is larger than the noise.

Usage::

    python benchmarks/search_vs_random.py --run runs/<camvid sweep> [--seeds 0,1,2]
        [--points 3] [--jobs 2] [--paper-seeds 0] [--out benchmarks/results]

Every retraining writes its result as it finishes (``<out>/search_vs_random/<name>.json``); a
rerun skips what is done, so an interrupted benchmark loses nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from analysis.pareto import default_reference, hypervolume, knee_index, pareto_mask  # noqa: E402


def sample_genotype(space: Any, rng: np.random.Generator, reduction: str, head: str) -> Any:
    """One genotype drawn uniformly from ``space``: each group of each dimension (depth per stage,
    op, output and mid width per layer) picks one candidate, decoded as the search decodes."""
    import torch

    from ssr.method.derive import genotype_from_supernet
    from ssr.method.supernet import DIMENSIONS, Supernet

    net = Supernet(space, num_classes=2)
    with torch.no_grad():
        for dim in DIMENSIONS:
            start = net.alive(dim)  # the space: candidates a search may choose (min_depth etc.)
            groups = start.reshape(-1, start.shape[-1])
            alive = torch.zeros_like(groups)
            for i, row in enumerate(groups):
                options = torch.nonzero(row).flatten()
                alive[i, options[int(rng.integers(0, len(options)))]] = True
            start.copy_(alive.view_as(start))
        net.refresh_alive()
    return genotype_from_supernet(net, head=head, reduction=reduction)


def gmacs_of(genotype: Any, num_classes: int, height: int, width: int) -> float:
    """Conv GMACs of the derived network at ``height x width`` (the record's ``gmacs``)."""
    from ssr.method.complexity import count_macs
    from ssr.method.network import DerivedNet

    return count_macs(DerivedNet(genotype, num_classes), (1, 3, height, width)) / 1e9


def matched_random(
    target_gmacs: float, draw: Any, cost: Any, match: float = 0.1, tries: int = 5000
) -> tuple[Any, float, int]:
    """The first ``draw()`` whose ``cost`` is within ``match`` of ``target_gmacs``: (genotype,
    its GMACs, draws used). Raises RuntimeError when ``tries`` draws find none."""
    for n in range(1, tries + 1):
        g = draw()
        c = cost(g)
        if abs(c / target_gmacs - 1) <= match:
            return g, c, n
    raise RuntimeError(f"no random genotype within {match:.0%} of {target_gmacs:.4f} GMACs")


def front_points(rows: list[dict[str, Any]], k: int) -> list[dict[str, Any]]:
    """Up to ``k`` front rows spread over the front: most accurate, knee, fastest, then others."""
    v = np.array([[r["retrained_miou"], r["fps"]] for r in rows], dtype=float)
    front = [rows[i] for i in np.flatnonzero(pareto_mask(v, [True, True]))]
    front.sort(key=lambda r: -r["retrained_miou"])
    fv = np.array([[r["retrained_miou"], r["fps"]] for r in front], dtype=float)
    knee = knee_index(fv, [True, True]) if len(front) > 2 else None
    order = [0, len(front) - 1] + ([knee] if knee is not None else [])
    order += [i for i in range(len(front)) if i not in order]
    picked = list(dict.fromkeys(order))[:k]
    return [front[i] for i in sorted(picked)]


def compare(results: list[dict[str, Any]], seeds: list[int], level: float = 0.9) -> dict:
    """Per seed hypervolumes (one reference for all; mIoU in % and FPS, the axes' units) and
    paired mIoU differences, summarised."""
    all_v = np.array([[100 * r["miou"], r["fps"]] for r in results], dtype=float)
    ref = default_reference(all_v, [True, True])
    per_seed, diffs = [], []
    for s in seeds:
        arms = {}
        for arm in ("searched", "random"):
            pts = [[100 * r["miou"], r["fps"]] for r in results
                   if r["arm"] == arm and r["seed"] == s]  # fmt: skip
            arms[arm] = hypervolume(np.array(pts, dtype=float), [True, True], ref) if pts else 0.0
        per_seed.append({"seed": s, "hv_searched": arms["searched"], "hv_random": arms["random"]})
        for r in results:
            if r["arm"] == "searched" and r["seed"] == s:
                twin = next(
                    x for x in results
                    if x["arm"] == "random" and x["seed"] == s and x["point"] == r["point"]
                )  # fmt: skip
                diffs.append({
                    "seed": s, "point": r["point"], "miou_diff_pts": 100 * (r["miou"] - twin["miou"]),
                    "fps_searched": r["fps"], "fps_random": twin["fps"],
                    "gmacs_searched": r["gmacs"], "gmacs_random": twin["gmacs"],
                })  # fmt: skip
    d = np.array([x["miou_diff_pts"] for x in diffs], dtype=float)
    hv = np.array([x["hv_searched"] - x["hv_random"] for x in per_seed], dtype=float)
    rng = np.random.default_rng(0)
    boot = [d[rng.integers(0, len(d), len(d))].mean() for _ in range(4000)] if len(d) else [np.nan]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    lo, hi = np.percentile(boot, q)
    return {
        "reference": [float(x) for x in ref],
        "per_seed": per_seed,
        "pairs": diffs,
        "miou_diff_pts_mean": float(d.mean()) if len(d) else None,
        "miou_diff_pts_interval": [float(lo), float(hi)],
        "searched_wins_pairs": int((d > 0).sum()),
        "pairs_total": len(d),
        "hv_diff_mean": float(hv.mean()) if len(hv) else None,
        "hv_diff_range": [float(hv.min()), float(hv.max())] if len(hv) else None,
        "hv_searched_wins_seeds": int((hv > 0).sum()),
        "verdict": _verdict(float(lo), float(hi), float(d.mean()) if len(d) else np.nan),
    }


def _verdict(lo: float, hi: float, mean: float) -> str:
    if not np.isfinite(mean):
        return "no pairs: nothing to say"
    if lo > 0:
        return (
            f"searched beats random by {mean:.1f} pts of mIoU at matched GMACs (interval above 0)"
        )
    if hi < 0:
        return (
            f"random beats searched by {-mean:.1f} pts of mIoU at matched GMACs (interval below 0)"
        )
    return f"no difference the noise can resolve ({mean:+.1f} pts, interval [{lo:.1f}, {hi:.1f}])"


def _retrain_job(job: dict[str, Any]) -> dict[str, Any]:
    """One retraining in a worker process (1 torch thread); writes and returns its result."""
    import dataclasses

    import torch

    from ssr.config import RetrainConfig, from_dict
    from ssr.method.genotype import Genotype
    from ssr.run.retrain import run_retrain

    torch.set_num_threads(1)
    cfg = dataclasses.replace(from_dict(RetrainConfig, job["retrain"], "retrain"), seed=job["seed"])
    t0 = time.perf_counter()
    res = run_retrain(cfg, Genotype.from_json(job["genotype"]), job["dir"], progress=False)
    out = {**{k: job[k] for k in ("name", "arm", "point", "seed", "gmacs", "genotype_id")},
           "miou": res.miou, "miou_lo": res.miou_lo, "miou_hi": res.miou_hi,
           "seconds": time.perf_counter() - t0}  # fmt: skip
    Path(job["result"]).write_text(json.dumps(out))
    return out


def _sweep_rows(run: Path) -> tuple[list[dict[str, Any]], Any]:
    """The run's complete, retrained trials (one per genotype) and one trial's pipeline config."""
    from analysis.load import from_parquet
    from ssr.config import PipelineConfig, load_config

    df = from_parquet(run)
    df = df[df["usable"] & df["retrained_miou"].notna()]
    if df.empty:
        raise SystemExit(f"error: {run}: no complete trial with retrained_miou")
    fps = (
        "fps_exclusive"
        if "fps_exclusive" in df and df["fps_exclusive"].notna().all()
        else "fps_shared"
    )
    df = df.sort_values("retrained_miou", ascending=False).drop_duplicates("genotype_id")
    rows = [
        {"trial_id": r.trial_id, "genotype": r.genotype, "genotype_id": r.genotype_id,
         "gmacs": float(r.gmacs), "retrained_miou": float(r.retrained_miou), "fps": float(getattr(r, fps))}
        for r in df.itertuples()
    ]  # fmt: skip
    trial = rows[0]["trial_id"]
    resolved = next(iter(sorted(run.glob(f"*{trial}*/**/config.resolved.yaml"))), None)
    if resolved is None:
        raise SystemExit(f"error: {run}: trial {trial} has no config.resolved.yaml")
    return rows, load_config(PipelineConfig, resolved)


def _jobs(args: argparse.Namespace, rows: list[dict], cfg: Any, work: Path) -> list[dict]:
    """Every retraining to run: searched front networks, matched random twins, the paper's."""
    from ssr.config import to_dict
    from ssr.data import dataset_info
    from ssr.method.genotype import Genotype

    ncls = dataset_info(cfg.search.data.name).num_classes
    fh, fw = cfg.search.flops.height, cfg.search.flops.width
    retrain = to_dict(cfg.resolved_retrain)
    points = front_points(rows, args.points)
    jobs = []

    def job(name: str, arm: str, point: int, seed: int, g: Any, gmacs: float) -> dict:
        return {"name": name, "arm": arm, "point": point, "seed": seed, "gmacs": gmacs,
                "genotype": g.to_json(indent=None), "genotype_id": g.id, "retrain": retrain,
                "dir": str(work / name), "result": str(work / f"{name}.json")}  # fmt: skip

    for p, row in enumerate(points):
        g = Genotype.from_json(row["genotype"])
        recount = gmacs_of(g, ncls, fh, fw)
        if abs(recount - row["gmacs"]) > 1e-6 * max(1.0, row["gmacs"]):
            raise SystemExit(f"error: GMACs recount {recount} != record {row['gmacs']}")
        for s in args.seeds:
            jobs.append(job(f"searched_p{p}_s{s}", "searched", p, s, g, row["gmacs"]))
            rng = np.random.default_rng([s, p, 17])
            twin, gm, draws = matched_random(
                row["gmacs"],
                lambda rng=rng, head=g.head: sample_genotype(
                    cfg.search.space, rng, cfg.search.reduction_width, head
                ),
                lambda x: gmacs_of(x, ncls, fh, fw),
                args.match,
            )
            jobs.append({**job(f"random_p{p}_s{s}", "random", p, s, twin, gm), "draws": draws})
    paper = Genotype.load("ssr_cityscapes")
    for s in args.paper_seeds:
        jobs.append(job(f"paper_s{s}", "paper", -1, s, paper, gmacs_of(paper, ncls, fh, fw)))
    return jobs


def _measure_fps(results: list[dict], cfg: Any, passes: int) -> dict[str, Any]:
    """All networks alone, interleaved, at the sweep's benchmark size and backend: FPS written into
    ``results`` in place; returns what the measurement ran on."""
    from ssr.data import dataset_info
    from ssr.measure.interleave import measure_interleaved
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    ncls = dataset_info(cfg.search.data.name).num_classes
    nets = {g: DerivedNet(Genotype.from_json(r["genotype"]), ncls).eval()
            for r in results for g in [r["genotype_id"]]}  # fmt: skip
    spreads, record = measure_interleaved(
        nets, (3, cfg.bench.height, cfg.bench.width), cfg.bench, passes, optimize=True
    )
    for r in results:
        sp = spreads[r["genotype_id"]]
        r.update(fps=sp.fps, fps_lo=sp.fps_lo, fps_hi=sp.fps_hi)
    return record


def _table(summary: dict, results: list[dict]) -> str:
    lines = ["| network | arm | seed | GMACs | retrained mIoU (%) [90 %] | FPS [slowest, fastest pass] |",
             "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for r in sorted(results, key=lambda r: (r["point"], r["arm"], r["seed"])):
        lines.append(
            f"| {r['name']} | {r['arm']} | {r['seed']} | {r['gmacs']:.4f} | {100 * r['miou']:.2f} "
            f"[{100 * r['miou_lo']:.2f}, {100 * r['miou_hi']:.2f}] | {r['fps']:.1f} "
            f"[{r['fps_lo']:.1f}, {r['fps_hi']:.1f}] |"
        )
    lines += ["", "| seed | hypervolume searched | hypervolume random |", "| --- | --- | --- |"]
    for x in summary["per_seed"]:
        lines.append(f"| {x['seed']} | {x['hv_searched']:.2f} | {x['hv_random']:.2f} |")
    lo, hi = summary["miou_diff_pts_interval"]
    lines += [
        "",
        f"Hypervolume in % x FPS, reference (mIoU %, FPS) "
        f"({summary['reference'][0]:.2f}, {summary['reference'][1]:.2f}). Searched minus random at "
        f"matched GMACs: {summary['miou_diff_pts_mean']:+.2f} pts of mIoU, 90 % bootstrap "
        f"interval [{lo:.2f}, {hi:.2f}] over {summary['pairs_total']} pairs; searched wins "
        f"{summary['searched_wins_pairs']} of {summary['pairs_total']} pairs and "
        f"{summary['hv_searched_wins_seeds']} of {len(summary['per_seed'])} seeds by hypervolume.",
        f"Verdict: {summary['verdict']}.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a sweep run that retrained")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--paper-seeds", default="0", help="seeds for ssr_cityscapes ('' for none)")
    ap.add_argument("--points", type=int, default=3, help="front networks compared")
    ap.add_argument("--match", type=float, default=0.1, help="GMACs tolerance of a random twin")
    ap.add_argument("--jobs", type=int, default=2, help="retrainings at once (1 thread each)")
    ap.add_argument("--passes", type=int, default=5, help="interleaved FPS passes")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = ap.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.paper_seeds = [int(s) for s in args.paper_seeds.split(",") if s.strip()]
    if not (args.run / "results.parquet").is_file():
        ap.error(f"{args.run} holds no results.parquet (a sweep run folder)")
    rows, cfg = _sweep_rows(args.run)
    work = args.out / "search_vs_random"
    work.mkdir(parents=True, exist_ok=True)
    jobs = _jobs(args, rows, cfg, work)
    todo = [j for j in jobs if not Path(j["result"]).is_file()]
    print(f"{len(jobs)} retrainings ({len(jobs) - len(todo)} done before), {args.jobs} at once",
          flush=True)  # fmt: skip
    t0 = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for r in pool.map(_retrain_job, todo):
            print(f"  {r['name']}: mIoU {100 * r['miou']:.2f} in {r['seconds']:.0f} s", flush=True)
    results = [
        {**json.loads(Path(j["result"]).read_text()), "genotype": j["genotype"]} for j in jobs
    ]
    measure = _measure_fps(results, cfg, args.passes)
    summary = compare([r for r in results if r["arm"] != "paper"], args.seeds)
    out = {
        "run": str(args.run), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "load_avg": os.getloadavg(),
        "retrain": {"epochs": cfg.resolved_retrain.epochs, "size": [cfg.resolved_retrain.data.height,
                    cfg.resolved_retrain.data.width]},
        "retrain_wall_s": time.perf_counter() - t0, "fps_measurement": measure,
        "summary": summary,
        "results": [{k: v for k, v in r.items() if k != "genotype"} for r in results],
    }  # fmt: skip
    text = _table(summary, results)
    print(text)
    (args.out / "search_vs_random.json").write_text(json.dumps(out, indent=2, default=str) + "\n")
    (args.out / "search_vs_random.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
