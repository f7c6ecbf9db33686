"""This machine's limit, and where ONNX Runtime's time goes against it (docs/architecture.md §5).

    python benchmarks/roofline.py                      # the probe at 1 and 2 threads
    python benchmarks/roofline.py --profile            # per-op profile of the ORT variants
    python benchmarks/roofline.py --profile --json     # one JSON object
    python benchmarks/roofline.py --kernels            # the search's conv kernels, alone

The probe (:func:`ssr.measure.roofline.probe`) measures the best achievable conv GMAC/s at each thread
count: a 3x3 conv of 64 -> 64 channels on 1x64x128x256 in torch (oneDNN, channels-last) and in
ONNX Runtime (fp32, and as an int8 ``QLinearConv``), and a 1024^3 fp32 GEMM. The CPU model and
its SIMD flags (``ssr.measure.host.cpu_info``) come with it: a probe is a property of one CPU.

``--profile`` runs ONNX Runtime's profiler on the paper network's ONNX variants
(``benchmarks/fps.py``: as exported, the deploy form, the int8 form) and splits the time in
kernels by operator. The conv rate is the network's conv MACs (``ssr.method.complexity``; the deploy
form's zero-padded channels included, since it computes them) over the time in convolution
kernels (``Conv``, ``FusedConv``, ``QLinearConv``), set against the probe; the rest is the time
in everything else. The profiler adds 10-25 % to the kernels it times.

``--kernels`` times the search supernet's convolutions alone (:data:`KERNEL_SHAPES`: 3x1 filters
of 64 and 128 channels at the stages' resolutions for a 2x3x256x512 batch) at one thread, in
thread CPU time (holds on a busy machine): forward, input gradient and weight gradient, in fp32
NCHW, fp32 channels-last and bf16 channels-last. It tells what the search's kernels can reach at
these shapes, against the probe's 3x3 forward conv.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

CONV_OPS = ("Conv", "FusedConv", "QLinearConv", "NhwcFusedConv")
#: (channels, height, width, dilation) of 3x1 convs of the search at batch 2x3x256x512
KERNEL_SHAPES = ((64, 64, 128, 1), (64, 64, 128, 8), (64, 32, 64, 2), (128, 32, 64, 2),
                 (128, 32, 64, 16), (128, 16, 32, 4))  # fmt: skip


def _cpu_seconds(fn: Any, n: int = 8) -> float:
    """Median thread CPU time of ``fn`` over ``n`` runs after two warm-up runs."""
    import time

    for _ in range(2):
        fn()
    times = []
    for _ in range(n):
        t0 = time.thread_time()
        fn()
        times.append(time.thread_time() - t0)
    return sorted(times)[n // 2]


def kernel_table() -> list[dict[str, Any]]:
    """GMAC/s of forward, input-gradient and weight-gradient 3x1 convs, one thread, CPU time."""
    import torch
    import torch.nn.functional as F

    formats = (
        ("fp32 NCHW", torch.float32, torch.contiguous_format),
        ("fp32 channels-last", torch.float32, torch.channels_last),
        ("bf16 channels-last", torch.bfloat16, torch.channels_last),
    )
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = []
    try:
        for name, dtype, fmt in formats:
            for c, h, w, d in KERNEL_SHAPES:
                x = torch.randn(2, c, h, w, dtype=dtype).contiguous(memory_format=fmt)
                wt = torch.randn(c, c, 3, 1, dtype=dtype).contiguous(memory_format=fmt)
                x.requires_grad_()
                wt.requires_grad_()

                def conv(x: Any = x, wt: Any = wt, d: int = d) -> Any:
                    return F.conv2d(x, wt, padding=(d, 0), dilation=(d, 1))

                y = conv()
                g = torch.randn_like(y)
                seconds = {
                    "forward": _cpu_seconds(conv),
                    "input_grad": _cpu_seconds(
                        lambda y=y, x=x, g=g: torch.autograd.grad(y, x, g, retain_graph=True)
                    ),
                    "weight_grad": _cpu_seconds(
                        lambda y=y, wt=wt, g=g: torch.autograd.grad(y, wt, g, retain_graph=True)
                    ),
                }
                macs = 2 * c * c * 3 * h * w
                row = {"format": name, "shape": f"{c}ch {h}x{w} d{d}"}
                rows.append(row | {k: round(macs / t / 1e9, 1) for k, t in seconds.items()})
    finally:
        torch.set_num_threads(old)
    return rows


def probe_table(threads: list[int]) -> dict[str, Any]:
    from ssr.measure.host import cpu_info
    from ssr.measure.roofline import probe

    rows = [probe(t, iters=20).to_dict() for t in threads]
    return {"cpu": cpu_info(), "probes": rows}


def profile_variant(path: Path, macs: int, threads: int, warmup: int, iters: int) -> dict[str, Any]:
    """ORT's per-op kernel time (ms per run, warm-up runs dropped) of one ONNX file."""
    import numpy as np

    from ssr.deploy.onnx_export import ort_session

    sess = ort_session(path, threads, profile=True)
    inp = sess.get_inputs()[0]
    x = np.random.default_rng(0).standard_normal(inp.shape, dtype=np.float32)
    feed = {inp.name: x}
    for _ in range(warmup + iters):
        sess.run(None, feed)
    events = json.loads(Path(sess.end_profiling()).read_text())
    ends = sorted(e["ts"] + e["dur"] for e in events if e.get("name") == "model_run")
    cutoff = ends[warmup - 1] if warmup else -1
    runs = sum(1 for end in ends if end > cutoff)
    by_op: collections.Counter[str] = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] > cutoff:
            by_op[e["args"]["op_name"]] += e["dur"]
    ms = {k: round(v / runs / 1e3, 2) for k, v in by_op.most_common()}
    conv_ms = sum(v for k, v in ms.items() if k in CONV_OPS)
    return {
        "ms_by_op": ms,
        "total_kernel_ms": round(sum(ms.values()), 1),
        "conv_ms": round(conv_ms, 1),
        "conv_gmacs_per_s": round(macs / 1e6 / conv_ms, 1) if conv_ms else None,
    }


def run_profile(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from fps import Runner

    from ssr.deploy import deploy
    from ssr.measure.roofline import probe
    from ssr.method.complexity import count_macs

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = args.threads or torch.get_num_threads()
    pr = probe(threads, iters=20)
    out: dict[str, Any] = {"probe": pr.to_dict(), "profiles": []}
    with tempfile.TemporaryDirectory(prefix="ssr-roofline-") as tmp:
        ns = argparse.Namespace(
            genotype=args.genotype, warmup=1, iters=1, repeats=1, threads=threads,
            device="cpu", spinning=False, calibration_images=args.calibration_images,
        )  # fmt: skip
        runner = Runner(ns, Path(tmp))
        for text in args.inputs.split(","):
            size = tuple(int(v) for v in text.lower().split("x"))
            for variant in args.variants.split(","):
                model = deploy(runner.net) if variant.endswith("-opt") else runner.net
                macs = count_macs(model, (3, *size))
                path = runner.path(variant, size)
                prof = profile_variant(path, macs, threads, args.warmup, args.iters)
                precision = "int8" if variant.endswith("-int8") else "fp32"
                ref = pr.reference(precision)
                conv_rate = prof["conv_gmacs_per_s"]
                row = {
                    "variant": variant,
                    "input": text,
                    "gmacs": round(macs / 1e9, 3),
                    **prof,
                    "conv_pct_of_probe": round(100 * conv_rate / ref, 1) if conv_rate else None,
                    "probe_gmacs_per_s": ref,
                    "floor_ms_at_probe": round(macs / 1e6 / ref, 1),
                }
                out["profiles"].append(row)
                if not args.json:
                    top = ", ".join(f"{k} {v}" for k, v in list(prof["ms_by_op"].items())[:9])
                    print(
                        f"{text} {variant}: {row['total_kernel_ms']} ms in kernels, conv "
                        f"{row['conv_ms']} ms = {conv_rate} GMAC/s "
                        f"({row['conv_pct_of_probe']} % of {ref:.0f}); "
                        f"floor {row['floor_ms_at_probe']} ms\n    {top}",
                        flush=True,
                    )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--threads", default="1,2", help="probe: comma-separated thread counts")
    p.add_argument("--profile", action="store_true", help="ORT per-op profile of the variants")
    p.add_argument("--kernels", action="store_true", help="the search's conv kernels, alone")
    p.add_argument("--genotype", default="ssr_cityscapes")
    p.add_argument("--inputs", default="512x1024")
    p.add_argument("--variants", default="onnxruntime,onnxruntime-opt,onnxruntime-int8")
    p.add_argument("--calibration-images", type=int, default=8)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    if args.kernels:
        out = {"kernels_gmacs_per_s_1thread": kernel_table()}
        if not args.json:
            print(f"{'format':<20}{'shape':<18}{'forward':>9}{'grad in':>9}{'grad w':>9}  GMAC/s")
            for r in out["kernels_gmacs_per_s_1thread"]:
                print(f"{r['format']:<20}{r['shape']:<18}{r['forward']:>9}{r['input_grad']:>9}"
                      f"{r['weight_grad']:>9}")  # fmt: skip
    elif args.profile:
        args.threads = threads[-1]
        out = run_profile(args)
    else:
        out = probe_table(threads)
        if not args.json:
            c = out["cpu"]
            print(f"{c['model']} (family/model {c['family']}/{c['model_number']}), "
                  f"{c['cores']} cores; {' '.join(c['simd'])}")  # fmt: skip
            print(f"{'threads':>7} {'conv3x3':>9} {'gemm':>8} {'ORT conv':>9} {'ORT int8':>9} "
                  f"{'fp32 ref':>9} {'other load':>10}   (GMAC/s)")  # fmt: skip
            for r in out["probes"]:
                print(f"{r['threads']:>7} {r['conv_gmacs_per_s']:>9.1f} "
                      f"{r['gemm_gmacs_per_s']:>8.1f} {r['ort_conv_gmacs_per_s']:>9.1f} "
                      f"{r['ort_int8_conv_gmacs_per_s']:>9.1f} {r['fp32_gmacs_per_s']:>9.1f} "
                      f"{r['other_load']!s:>10}")  # fmt: skip
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
