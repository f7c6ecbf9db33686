"""The discretization gap with and without SSR on the small synthetic search.

Runs ``ssr/configs/search_synthetic.yaml`` with its SSR weights and with every SSR weight set
to 0 (the DARTS-with-pruning baseline), same seeds and budget, and prints per run the
supernet mIoU, the derived network's mIoU (inherited weights, BN recalibrated), their
difference (the gap), the epoch the search became discrete (or how many candidates the argmax
fallback had to drop) and the wall time.

Usage::

    python benchmarks/discretization_gap.py [--seeds 0,1,2] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

CONFIG = Path(__file__).resolve().parents[1] / "ssr" / "configs" / "search_synthetic.yaml"
SSR_OFF = ["ssr.op=0", "ssr.out=0", "ssr.mid=0", "ssr.depth=0"]


def run(seed: int, ssr_on: bool, extra: list[str]) -> dict:
    from ssr.config import SearchConfig, load_config
    from ssr.search import run_search

    overrides = [f"seed={seed}", f"data.seed={seed}", *([] if ssr_on else SSR_OFF), *extra]
    cfg = load_config(SearchConfig, CONFIG, overrides)
    t0 = time.perf_counter()
    res = run_search(cfg, None, progress=False)
    s = res.summary
    return {
        "seed": seed,
        "ssr": "on" if ssr_on else "off",
        "supernet_miou": s["supernet_miou"],
        "derived_miou": s["derived_miou"],
        "gap": s["discretization_gap"],
        "discrete_at_epoch": s["discrete_at_epoch"],
        "argmax_fallback_prunes": s["argmax_fallback_prunes"],
        "epochs": s["epochs"],
        "genotype_id": s["genotype_id"],
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    rows = [
        run(int(seed), on, args.extra) for seed in args.seeds.split(",") for on in (True, False)
    ]
    summary = {}
    for mode in ("on", "off"):
        sel = [r for r in rows if r["ssr"] == mode]
        summary[mode] = {
            "mean_gap": statistics.mean(abs(r["gap"]) for r in sel),
            "mean_derived_miou": statistics.mean(r["derived_miou"] for r in sel),
            "discrete_runs": sum(r["discrete_at_epoch"] is not None for r in sel),
            "runs": len(sel),
        }
    if args.json:
        print(json.dumps({"config": str(CONFIG), "rows": rows, "summary": summary}, indent=2))
        return
    print(f"config: {CONFIG.name} {' '.join(args.extra)}")
    print(
        f"{'seed':>4} {'SSR':>4} {'supernet':>9} {'derived':>8} {'gap':>7} {'discrete@':>9} {'fallback':>8} {'s':>6}"
    )
    for r in rows:
        d = r["discrete_at_epoch"] if r["discrete_at_epoch"] is not None else "-"
        print(f"{r['seed']:>4} {r['ssr']:>4} {r['supernet_miou']:>9.3f} {r['derived_miou']:>8.3f} "
              f"{r['gap']:>7.3f} {d!s:>9} {r['argmax_fallback_prunes']:>8} {r['seconds']:>6.0f}")  # fmt: skip
    for mode, s in summary.items():
        print(f"SSR {mode}: mean |gap| {s['mean_gap']:.3f}, mean derived mIoU "
              f"{s['mean_derived_miou']:.3f}, discrete {s['discrete_runs']}/{s['runs']}")  # fmt: skip


if __name__ == "__main__":
    main()
