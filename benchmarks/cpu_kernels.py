"""Two CPU kernels of PyTorch against ours, alternated call by call: max pooling without a
gradient and channels-last BatchNorm in training.

    python benchmarks/cpu_kernels.py                          # both, 1 and 2 threads, a table
    python benchmarks/cpu_kernels.py --only batch_norm --threads 2 --json

- ``pool``: :func:`ssr.method.ops.max_pool` (maxima of four strided views per 2x2 step) against
  ``F.max_pool2d``, no gradient (the input image in training, every pool in evaluation), on the
  search's input image (2x3x256x512), a CamVid one (1x3x360x480) and a Downsampler's input at 16
  and 64 channels, NCHW and channels-last.
- ``batch_norm``: forward + backward of a training BatchNorm, PyTorch's kernel against the row
  path of :mod:`ssr.method.batch_norm` (forced at every size), at the discrete search network's
  shapes (batch 2 at 256x512: widths of the paper genotype at 1/4 and 1/8). ``default`` says
  which one :func:`ssr.method.batch_norm.row_groups` takes.

Each row times both on the same tensors in one process, alternated call by call after 3 untimed
rounds (so both see the same load): median and 10-90 % range in ms, and the ratio of medians.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POOL_SHAPES = [(2, 3, 256, 512), (1, 3, 360, 480), (2, 16, 128, 256), (2, 64, 64, 128)]
#: (channels, height, width) at batch 2: widths of the paper genotype at 1/4 and 1/8.
BN_SHAPES = [(44, 64, 128), (60, 64, 128), (64, 64, 128), (100, 32, 64), (124, 32, 64)]


def alternate(fns: dict[str, Callable[[], Any]], iters: int) -> dict[str, list[float]]:
    """(p10, median, p90) in ms of each callable, called in turn ``iters`` times after 3."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(iters + 3):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            if i >= 3:
                times[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, ms in times.items():
        q = statistics.quantiles(ms, n=10)
        out[name] = [round(q[0], 3), round(statistics.median(ms), 3), round(q[-1], 3)]
    return out


def pool_rows(threads: int, iters: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    from ssr.method.ops import max_pool

    rows = []
    for shape in POOL_SHAPES:
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
                with torch.no_grad():
                    t = alternate(fns, iters)
                rows.append({"kernel": "pool", "shape": "x".join(map(str, shape)),
                             "layout": layout, "dtype": str(dtype).removeprefix("torch."),
                             "threads": threads, **_ms(t)})  # fmt: skip
    return rows


def batch_norm_rows(threads: int, iters: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F
    from torch import nn

    import ssr.method.batch_norm as bnm

    rows = []
    for c, h, w in BN_SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            bn = nn.BatchNorm2d(c)
            x = torch.randn(2, c, h, w, generator=torch.Generator().manual_seed(0)).to(dtype)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_(True)
            g = torch.randn_like(x)
            default = "ours" if bnm.row_groups(x, True) else "pytorch"

            def pytorch(x=x, g=g, bn=bn) -> None:
                stats = (bn.running_mean, bn.running_var, bn.weight, bn.bias)
                F.batch_norm(x, *stats, True, 0.1, 1e-3).backward(g)

            def ours(x=x, g=g, bn=bn) -> None:
                saved, bnm.MIN_ROWS = bnm.MIN_ROWS, 0  # the row path at every size
                try:
                    bnm.batch_norm(bn, x, None, x.shape[1]).backward(g)
                finally:
                    bnm.MIN_ROWS = saved

            t = alternate({"pytorch": pytorch, "ours": ours}, iters)
            rows.append({"kernel": "batch_norm", "shape": f"2x{c}x{h}x{w}",
                         "layout": "channels_last", "dtype": str(dtype).removeprefix("torch."),
                         "threads": threads, **_ms(t), "default": default})  # fmt: skip
    return rows


def _ms(t: dict[str, list[float]]) -> dict[str, Any]:
    return {"pytorch_ms": t["pytorch"], "ours_ms": t["ours"],
            "ratio": round(t["pytorch"][1] / t["ours"][1], 2)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("pool", "batch_norm"), help="one kernel (default both)")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts")
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    import torch

    from ssr.measure.host import cpu_info

    kinds = {"pool": pool_rows, "batch_norm": batch_norm_rows}
    report: dict[str, Any] = {"cpu": cpu_info(), "load_before": os.getloadavg()[0], "rows": []}
    for t in map(int, args.threads.split(",")):
        torch.set_num_threads(t)
        for name, fn in kinds.items():
            if args.only in (None, name):
                report["rows"].extend(fn(t, args.iters))
    report["load_after"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    cpu = report["cpu"]
    print(f"{cpu['model']} ({', '.join(cpu['simd'])}), {cpu['cores']} cores, "
          f"load {report['load_before']:.2f} -> {report['load_after']:.2f}")  # fmt: skip
    print(f"{'kernel':10s} {'shape':14s} {'layout':13s} {'dtype':8s} thr  "
          "pytorch ms (p10-p90)     ours ms (p10-p90)  ratio  default")  # fmt: skip
    for r in report["rows"]:
        p, o = r["pytorch_ms"], r["ours_ms"]
        print(f"{r['kernel']:10s} {r['shape']:14s} {r['layout']:13s} {r['dtype']:8s} "
              f"{r['threads']:3d}  {p[1]:6.3f} ({p[0]:.3f}-{p[2]:.3f})  "
              f"{o[1]:6.3f} ({o[0]:.3f}-{o[2]:.3f})  {r['ratio']:5.2f}x  "
              f"{r.get('default', '')}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
