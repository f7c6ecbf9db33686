"""FPS of the paper network on this machine, per backend and inference form (docs/architecture.md §5).

    python benchmarks/fps.py                       # table: 512x1024 and 256x512, all variants
    python benchmarks/fps.py --json                # one JSON object
    python benchmarks/fps.py --repeatability       # 5 measurements of one variant and their CV
    python benchmarks/fps.py --cpu-time            # 1-thread CPU time: compares variants on a
                                                   # busy machine (a diagnostic, not a latency)
    python benchmarks/roofline.py --profile        # where ONNX Runtime's time goes, vs the probe

Variants (each measured in its own loop, one after the other, through ``ssr.measure.bench.measure``):

- ``torch``: eager PyTorch, the network as defined (the official protocol, docs/method.md §8.3);
- ``torch-opt``: eager PyTorch, BN folded, channels-last memory (``measure(optimize=True)``);
- ``onnxruntime``: the network exported as is (``ssr.deploy.onnx_export.export_onnx``), ORT CPU provider;
- ``onnxruntime-opt``: the exact inference form ``ssr.deploy.deploy`` exported, ORT;
- ``onnxruntime-int8``: the int8 QDQ form of ``ssr.deploy.quantize`` (calibrated on
  ``--calibration-images`` synthetic training images; the weights are random, so this row is
  about speed only: ``benchmarks/int8.py`` measures accuracy on trained weights).

Every time comes with the conv GMAC/s it achieved (the network's MACs, ``ssr.method.complexity``) and
its share of this machine's probe at the same thread count (``ssr.measure.roofline``: fp32 rows against
the fp32 probe, the int8 row against the int8 conv probe), and the header names the CPU and its
SIMD flags (``ssr.measure.host.cpu_info``): figures from CPUs with other flags are not comparable.

Every figure carries ``other_load``: the share of the machine's CPU that other processes used
while it was measured. ``--wait-idle S`` waits up to S seconds for the machine to be quiet
before each measurement and re-measures while other processes loaded the machine (a shared
2-core machine otherwise swings by 2-10x); rows say whether they were ``quiet``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VARIANTS = ("torch", "torch-opt", "onnxruntime", "onnxruntime-opt", "onnxruntime-int8")


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def machine(threads: int) -> dict[str, Any]:
    """CPU model and flags, cores, threads, the probe and library versions: every figure's
    context."""
    import onnxruntime
    import torch

    from ssr.measure.host import cpu_info
    from ssr.measure.roofline import probe

    info = cpu_info()
    return {
        "cpu": info["model"],
        "cpu_family_model": f"{info['family']}/{info['model_number']}",
        "simd": info["simd"],
        "probe": probe(threads).to_dict(),
        "cores": os.cpu_count(),
        "threads": threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "python": platform.python_version(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def other_load(seconds: float = 1.0) -> float | None:
    """Share of the machine's CPU other processes use right now (sampled over ``seconds``)."""
    from ssr.measure.host import OtherLoad

    with OtherLoad() as load:
        time.sleep(seconds)
    return load.value


def wait_idle(limit: float, threshold: float = 0.05) -> float | None:
    """Wait up to ``limit`` seconds for other processes to use less than ``threshold``."""
    deadline = time.monotonic() + limit
    load = other_load()
    while load is not None and load > threshold and time.monotonic() < deadline:
        load = other_load(2.0)
    return load


class Runner:
    """Builds each variant once per input size and measures it with the one procedure."""

    def __init__(self, args: argparse.Namespace, tmp: Path) -> None:
        import torch

        from ssr.config import BenchConfig
        from ssr.method.genotype import Genotype
        from ssr.method.network import DerivedNet

        torch.manual_seed(0)
        self.net = DerivedNet(Genotype.load(args.genotype), 19).eval()
        self.tmp = tmp
        self.args = args
        self.cfg = BenchConfig(
            warmup=args.warmup,
            iters=args.iters,
            repeats=args.repeats,
            threads=args.threads,
            device=args.device,
        )
        self.sessions: dict[tuple[str, tuple[int, int]], Any] = {}
        self.exports: dict[str, dict[str, Any]] = {}

    def path(self, variant: str, size: tuple[int, int]) -> Path:
        """The ONNX file of an onnxruntime variant (exported, or quantized, on first use)."""
        from ssr.config import DataConfig
        from ssr.deploy import deploy
        from ssr.deploy.onnx_export import export_onnx
        from ssr.deploy.quantize import quantize_model

        path = self.tmp / f"{variant}-{size[0]}x{size[1]}.onnx"
        name = f"{variant} {size[0]}x{size[1]}"
        if name in self.exports:
            return path
        if variant.endswith("-int8"):
            q = quantize_model(
                self.net, (1, 3, *size), path, DataConfig(), n_images=self.args.calibration_images
            )
            self.exports[name] = {"nodes": q.nodes, "export_s": q.seconds, "max_abs_diff": None,
                                  "exporter": f"QDQ, {q.calibration}"}  # fmt: skip
            return path
        model = deploy(self.net) if variant.endswith("-opt") else self.net
        res = export_onnx(model, (1, 3, *size), path)
        self.exports[name] = {
            "nodes": res.nodes,
            "export_s": res.seconds,
            "max_abs_diff": res.max_abs_diff,
            "exporter": res.exporter,
        }
        return path

    def session(self, variant: str, size: tuple[int, int]) -> Any:
        from ssr.deploy.onnx_export import ort_session

        key = (variant, size)
        if key not in self.sessions:
            path = self.path(variant, size)
            self.sessions[key] = ort_session(
                path, self.cfg.threads, self.cfg.device, spinning=self.args.spinning
            )
        return self.sessions[key]

    def measure(self, variant: str, size: tuple[int, int]) -> dict[str, Any]:
        """One measurement; with ``--wait-idle`` retried until other processes stayed under
        ``--max-other-load`` while it ran (or the wait budget is spent; the last one is kept).
        """
        deadline = time.monotonic() + self.args.wait_idle
        attempts = 0
        while True:
            attempts += 1
            if self.args.wait_idle:
                wait_idle(max(deadline - time.monotonic(), 0.0), self.args.max_other_load)
            row = self._measure_once(variant, size)
            load = row["other_load"]
            quiet = load is not None and load <= self.args.max_other_load
            if quiet or not self.args.wait_idle or time.monotonic() >= deadline:
                return {**row, "attempts": attempts, "quiet": quiet}

    def _measure_once(self, variant: str, size: tuple[int, int]) -> dict[str, Any]:
        import dataclasses

        from ssr.measure.bench import measure
        from ssr.measure.roofline import achieved
        from ssr.method.complexity import count_macs

        shape = (1, 3, *size)
        if variant.startswith("onnxruntime"):
            int8 = variant.endswith("-int8")
            cfg = dataclasses.replace(
                self.cfg, backend="onnxruntime", precision="int8" if int8 else "fp32"
            )
            res = measure(self.session(variant, size), shape, cfg)
            res.form = "deploy" if variant.endswith("-opt") else "int8 QDQ" if int8 else "as given"
        else:
            cfg = dataclasses.replace(self.cfg, backend="torch")
            res = measure(self.net, shape, cfg, optimize=variant.endswith("-opt"))
        macs = count_macs(self.net, (3, *size))
        rate = achieved(macs, res.latency_ms_median / 1e3, res.threads, res.precision)
        return {"variant": variant, **res.to_dict(), "gmacs": round(macs / 1e9, 3), **rate}


def run_table(args: argparse.Namespace, runner: Runner) -> dict[str, Any]:
    rows = []
    for size in args.inputs:
        for variant in args.variants:  # NOTE: one variant at a time, never interleaved
            rows.append(runner.measure(variant, size))
            if not args.json:
                print_row(rows[-1], header=len(rows) == 1)
    return {"machine": machine(args.threads), "results": rows, "exports": runner.exports}


def run_cpu_time(args: argparse.Namespace, runner: Runner) -> dict[str, Any]:
    """Single-thread CPU time per inference (``time.thread_time``): a diagnostic, not a latency.

    With one intra-op thread both runtimes compute on the calling thread, so its CPU time
    counts the work and not the time other processes held the cores: variants can be compared
    on a busy machine where wall-clock figures swing by 2-10x (cache sharing still adds noise).
    """
    import numpy as np
    import torch

    from ssr.deploy import fold_bn
    from ssr.deploy.onnx_export import ort_session

    rows = []
    with _threads(1), torch.inference_mode():
        for size in args.inputs:
            for variant in args.variants:
                if variant.startswith("onnxruntime"):
                    sess = ort_session(runner.path(variant, size), threads=1)
                    x = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
                    feed = {sess.get_inputs()[0].name: x}
                    step = lambda s=sess, f=feed: s.run(None, f)  # noqa: E731
                else:
                    fmt = (
                        torch.channels_last if variant.endswith("-opt") else torch.contiguous_format
                    )
                    net = fold_bn(runner.net) if variant.endswith("-opt") else runner.net
                    net = net.to(memory_format=fmt)
                    xt = torch.randn(1, 3, *size).contiguous(memory_format=fmt)
                    step = lambda n=net, t=xt: n(t)  # noqa: E731
                for _ in range(args.warmup):
                    step()
                times = []
                for _ in range(args.iters * args.repeats):
                    t0 = time.thread_time()
                    step()
                    times.append((time.thread_time() - t0) * 1e3)
                row = {
                    "variant": variant,
                    "input": f"{size[0]}x{size[1]}",
                    "cpu_ms_median": round(statistics.median(times), 1),
                    "cpu_ms_min": round(min(times), 1),
                    "iters": len(times),
                    "other_load": other_load(0.5),
                }
                rows.append(row)
                if not args.json:
                    print(
                        f"{row['input']:>9} {variant:>16}  1-thread CPU ms: median "
                        f"{row['cpu_ms_median']:7.1f}  min {row['cpu_ms_min']:7.1f}",
                        flush=True,
                    )
    runner.net.to(memory_format=torch.contiguous_format)
    return {"machine": machine(1), "cpu_time": rows}


def run_repeatability(args: argparse.Namespace, runner: Runner) -> dict[str, Any]:
    """``--runs`` independent measurements of one variant and the CV of each statistic across
    them (the target: 3 %): median, p10, best pass median and minimum."""
    size, variant = args.inputs[0], args.variants[0]
    runner.measure(variant, size)  # build/export and warm the process once, not counted
    rows = []
    for i in range(args.runs):
        rows.append(runner.measure(variant, size))
        if not args.json:
            print_row(rows[-1], header=i == 0)
    stats = ("latency_ms_median", "latency_ms_p10", "latency_ms_best_pass", "latency_ms_min")
    cvs = {}
    for key in stats:
        vals = [r[key] for r in rows]
        cv = statistics.stdev(vals) / statistics.mean(vals) if len(vals) > 1 else 0.0
        cvs[key] = {"values": vals, "cv": round(cv, 4), "median": statistics.median(vals)}
    summary = {
        "variant": variant,
        "input": f"{size[0]}x{size[1]}",
        "runs": len(rows),
        "cv_by_statistic": cvs,
        "max_other_load": max((r["other_load"] or 0.0) for r in rows),
    }
    if not args.json:
        print(f"\n{variant} {summary['input']}, {len(rows)} measurements (target CV <= 3 %):")
        for key, c in cvs.items():
            vals = " ".join(f"{v:.1f}" for v in c["values"])
            print(f"  {key:>22}: CV {100 * c['cv']:5.2f} %  median {c['median']:.1f} ms  [{vals}]")
        print(f"  max other load {summary['max_other_load']:.2f}")
    return {"machine": machine(args.threads), "repeatability": summary, "results": rows}


class _threads:
    """Set torch's threads for a block (0 keeps the default)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self) -> None:
        import torch

        self.old = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.set_num_threads(self.old)


def print_row(r: dict[str, Any], header: bool) -> None:
    if header:
        print(
            f"{'input':>9} {'variant':>16} {'median ms':>10} {'p90 ms':>8} {'min ms':>8} "
            f"{'FPS':>7} {'GMAC/s':>7} {'% probe':>8} {'pass CV':>8} {'other':>6} {'tries':>5}"
        )
    load = "n/a" if r["other_load"] is None else f"{r['other_load']:.2f}"
    print(
        f"{r['input']:>9} {r['variant']:>16} {r['latency_ms_median']:>10.1f} "
        f"{r['latency_ms_p90']:>8.1f} {r['latency_ms_min']:>8.1f} {r['fps_median']:>7.2f} "
        f"{r['gmacs_per_s']:>7.1f} {r['pct_of_probe']:>7.1f}% "
        f"{100 * r['cv_between_passes']:>7.1f}% {load:>6} {r.get('attempts', 1):>5}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--genotype", default="ssr_cityscapes")
    p.add_argument("--inputs", default="512x1024,256x512", help="comma-separated HxW")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {VARIANTS}")
    p.add_argument("--threads", type=int, default=0, help="intra-op threads (0: default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--iters", type=int, default=20, help="timed iterations per pass")
    p.add_argument("--repeats", type=int, default=5, help="timing passes per measurement")
    p.add_argument(
        "--spinning", action="store_true", help="let ORT's idle threads spin (exclusive machine)"
    )
    p.add_argument("--repeatability", action="store_true", help="repeat one variant --runs times")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument(
        "--calibration-images", type=int, default=8, help="int8: synthetic calibration images"
    )
    p.add_argument(
        "--cpu-time", action="store_true", help="1-thread CPU time per inference (busy machines)"
    )
    p.add_argument(
        "--wait-idle",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds per figure for a quiet machine, re-measuring while others load it",
    )
    p.add_argument("--max-other-load", type=float, default=0.05, help="'quiet' threshold")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    args = p.parse_args(argv)
    args.inputs = [parse_size(s) for s in args.inputs.split(",")]
    args.variants = [v.strip() for v in args.variants.split(",")]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    with tempfile.TemporaryDirectory(prefix="ssr-fps-") as tmp:
        runner = Runner(args, Path(tmp))
        if not args.json:
            m = machine(args.threads)
            pr = m["probe"]
            print(
                f"{m['cpu']} (family/model {m['cpu_family_model']}; {' '.join(m['simd'])}), "
                f"{m['cores']} cores, {m['threads']} threads; torch {m['torch']}, "
                f"onnxruntime {m['onnxruntime']}; {m['date']}\n"
                f"probe at {pr['threads']} threads: fp32 {pr['fp32_gmacs_per_s']:.0f} GMAC/s, "
                f"int8 {pr['ort_int8_conv_gmacs_per_s']:.0f} GMAC/s "
                f"(other load {pr['other_load']})\n"
            )
        if args.repeatability:
            out = run_repeatability(args, runner)
        elif args.cpu_time:
            out = run_cpu_time(args, runner)
        else:
            out = run_table(args, runner)
    out["settings"] = {
        k: getattr(args, k)
        for k in ("genotype", "warmup", "iters", "repeats", "threads", "device", "spinning")
    }
    if args.json:
        print(json.dumps(out))
    else:
        for name, e in out.get("exports", {}).items():
            diff = "n/a" if e["max_abs_diff"] is None else f"{e['max_abs_diff']:.1e}"
            print(
                f"ONNX {name}: {e['nodes']} nodes, {e['export_s']:.1f} s, max diff {diff} "
                f"({e['exporter']})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
