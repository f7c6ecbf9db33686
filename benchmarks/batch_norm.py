"""Channels-last BatchNorm in training: PyTorch's kernel against the row path of
:mod:`ssr.method.batch_norm`, forward + backward, at one and two threads.

    python benchmarks/batch_norm.py                 # a table
    python benchmarks/batch_norm.py --json

PyTorch's channels-last backward accumulates per-thread sums in adjacent rows of one buffer; at
channel counts that are not a multiple of 16 two threads share cache lines (the module docstring
of ssr/method/batch_norm.py). Each row times one layer of the discrete search network's shapes
(batch 2 at 256x512: 1/4 and 1/8 resolution), both ways on the same tensors, alternated call by
call in one process: median and 10-90 % range in ms, the ratio of the medians, and which path
:func:`ssr.method.batch_norm.row_groups` takes by default (``rows``: the row path; ``pytorch``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

#: (channels, height, width) at batch 2: widths of the paper genotype at 1/4 and 1/8.
SHAPES = [(44, 64, 128), (60, 64, 128), (64, 64, 128), (100, 32, 64), (124, 32, 64)]


def _quantiles(ms: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ms, n=10)
    return round(q[0], 3), round(statistics.median(ms), 3), round(q[-1], 3)


def run(threads: int, iters: int) -> list[dict[str, Any]]:
    """One row per (shape, dtype) at ``threads`` intra-op threads."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    import ssr.method.batch_norm as bnm

    torch.set_num_threads(threads)
    rows = []
    for c, h, w in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            bn = nn.BatchNorm2d(c)
            x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
            g = torch.randn_like(x)
            default = "rows" if bnm.row_groups(x, True) else "pytorch"
            stats = (bn.running_mean, bn.running_var, bn.weight, bn.bias)

            def pytorch(x=x, g=g, stats=stats) -> None:
                F.batch_norm(x, *stats[:2], *stats[2:], True, 0.1, 1e-3).backward(g)

            def row_path(x=x, g=g, bn=bn) -> None:
                saved, bnm.MIN_ROWS = bnm.MIN_ROWS, 0  # the row path at every size
                try:
                    bnm.batch_norm(bn, x, None, x.shape[1]).backward(g)
                finally:
                    bnm.MIN_ROWS = saved

            fns = {"pytorch": pytorch, "rows": row_path}
            times: dict[str, list[float]] = {k: [] for k in fns}
            for i in range(iters + 3):
                for name, fn in fns.items():
                    t0 = time.perf_counter()
                    fn()
                    if i >= 3:
                        times[name].append((time.perf_counter() - t0) * 1e3)
            p, r = _quantiles(times["pytorch"]), _quantiles(times["rows"])
            rows.append({
                "shape": f"2x{c}x{h}x{w}", "dtype": str(dtype).removeprefix("torch."),
                "threads": threads, "pytorch_ms": p, "rows_ms": r,
                "ratio": round(p[1] / r[1], 2), "default": default,
            })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from ssr.measure.host import cpu_info

    report = {
        "cpu": cpu_info(),
        "load_before": os.getloadavg()[0],
        "rows": [r for t in args.threads.split(",") for r in run(int(t), args.iters)],
        "load_after": os.getloadavg()[0],
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    cpu = report["cpu"]
    print(f"{cpu['model']} ({', '.join(cpu['simd'])}), {cpu['cores']} cores, "
          f"load {report['load_before']:.2f} -> {report['load_after']:.2f}")  # fmt: skip
    print(
        f"{'shape':14s} {'dtype':8s} thr  pytorch ms (p10-p90)    rows ms (p10-p90)  ratio  default"
    )
    for r in report["rows"]:
        p, o = r["pytorch_ms"], r["rows_ms"]
        print(f"{r['shape']:14s} {r['dtype']:8s} {r['threads']:3d}  "
              f"{p[1]:6.3f} ({p[0]:.3f}-{p[2]:.3f})  {o[1]:6.3f} ({o[0]:.3f}-{o[2]:.3f})  "
              f"{r['ratio']:5.2f}x  {r['default']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
