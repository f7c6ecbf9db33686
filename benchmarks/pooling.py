"""Max pooling without a gradient: PyTorch's kernel against :func:`ssr.method.ops.max_pool`.

    python benchmarks/pooling.py                  # 1 and 2 threads, a table
    python benchmarks/pooling.py --threads 2 --json

The Downsampler's pooled half and a pooled op's input are ``k x k`` max pools (ERFNet,
docs/method.md §2.1, §2.2). Where no gradient flows (the input image during training, every pool
in evaluation) :func:`ssr.method.ops.max_pool` runs them as maxima of four strided views per
2x2 step. Each row times both on the same tensor, alternated call by call in one process (so
both see the same load): median and the 10-90 % range of the per-call wall times, in ms, and
the ratio of the medians. Shapes: the search's input image (2x3x256x512) and a CamVid one
(1x3x360x480), and a Downsampler's input at 16 and 64 channels, each NCHW and channels-last.
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

SHAPES = [(2, 3, 256, 512), (1, 3, 360, 480), (2, 16, 128, 256), (2, 64, 64, 128)]


def _quantiles(ms: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(ms, n=10)
    return round(q[0], 3), round(statistics.median(ms), 3), round(q[-1], 3)


def run(threads: int, iters: int) -> list[dict[str, Any]]:
    """One row per (shape, layout, dtype) at ``threads`` intra-op threads."""
    import torch
    import torch.nn.functional as F

    from ssr.method.ops import max_pool

    torch.set_num_threads(threads)
    rows = []
    for shape in SHAPES:
        for layout in ("nchw", "channels_last"):
            for dtype in (torch.float32, torch.bfloat16):
                x = torch.rand(*shape, generator=torch.Generator().manual_seed(0)).to(dtype)
                if layout == "channels_last":
                    x = x.contiguous(memory_format=torch.channels_last)
                fns = {
                    "pytorch": lambda x=x: F.max_pool2d(x, 2, 2, ceil_mode=True),
                    "ours": lambda x=x: max_pool(x, 2),
                }
                assert torch.equal(fns["pytorch"](), fns["ours"]())
                times: dict[str, list[float]] = {k: [] for k in fns}
                with torch.no_grad():
                    for i in range(iters + 3):
                        for name, fn in fns.items():
                            t0 = time.perf_counter()
                            fn()
                            if i >= 3:  # warm-up calls untimed
                                times[name].append((time.perf_counter() - t0) * 1e3)
                p, o = _quantiles(times["pytorch"]), _quantiles(times["ours"])
                rows.append({
                    "shape": "x".join(map(str, shape)), "layout": layout,
                    "dtype": str(dtype).removeprefix("torch."), "threads": threads,
                    "pytorch_ms": p, "ours_ms": o, "ratio": round(p[1] / o[1], 2),
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
        f"{'shape':14s} {'layout':13s} {'dtype':8s} thr  pytorch ms (p10-p90)   ours ms (p10-p90)  ratio"
    )
    for r in report["rows"]:
        p, o = r["pytorch_ms"], r["ours_ms"]
        print(f"{r['shape']:14s} {r['layout']:13s} {r['dtype']:8s} {r['threads']:3d}  "
              f"{p[1]:6.3f} ({p[0]:.3f}-{p[2]:.3f})  {o[1]:6.3f} ({o[0]:.3f}-{o[2]:.3f})  "
              f"{r['ratio']:5.2f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
