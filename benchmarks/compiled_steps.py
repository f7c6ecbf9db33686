"""Eager against compiled steps (ssr/train/compiled.py): time per step, compile time, recompiles.

Step scenarios, each in its own process, the variants built from the same seed and alternated
one iteration at a time (eager, compiled, eager, ...), so that both see the same load:

- ``start``: one search iteration (:class:`ssr.method.search_step.SearchStep`, weight +
  architecture step) over the paper's whole space (ssr/configs/search_cityscapes.yaml), batch
  2x3x256x512;
- ``discrete``: the weight step a discrete search runs (the supernet restricted to the paper
  genotype, ``skip_arch_when_discrete``), same batch;
- ``retrain``: one retraining step of the paper network (:class:`ssr.run.retrain.TrainStep`).

Per variant: the median over the timed rounds (and the range of the per-pass medians), CPU
time per step (``time.process_time``: at one thread the work, not the time other processes
held the core), the first call (which compiles), the compile seconds and graph count that
:class:`ssr.train.compiled.CompiledForward` recorded, conv GMAC/s against the fp32 probe of
:mod:`ssr.measure.roofline`, and the load average before and after. ``--memory`` adds each
variant's peak RSS, alone in a process of its own.

Run scenarios, eager then compiled, each run in its own process:

- ``sweep_search``: the default sweep's search (sweeps/configs/default.yaml: its base, the
  budget's 16 epochs, the middle of its space, at 64x128), ``run_search`` end to end;
- ``sweep_retrain``: 30 epochs of retraining of the paper network on the sweep's data.

Their rows give the wall and CPU time of the whole run, the compile seconds, graphs and replans,
and the median epoch: time saved per epoch x epochs against the compile time is the verdict.

    python benchmarks/compiled_steps.py --scenarios start,discrete,retrain --threads 1 --json
    python benchmarks/compiled_steps.py --scenarios sweep_search,sweep_retrain --threads 1
    python benchmarks/compiled_steps.py --scenarios start --variants eager,eager_cl --profile

Variants: ``eager``, ``compiled``, ``eager_cl`` and ``compiled_cl`` (channels-last), and each
with ``_loop_adam`` (PyTorch's per-parameter Adam loop instead of the fused Adam a CPU run takes):
``--variants eager_cl,eager_cl_loop_adam`` times what fusing the optimiser saves per step.
``--precision bf16`` runs every scenario under bf16 autocast (ssr/train/precision.py;
channels-last variants only where this CPU's bf16 channels-last kernels are sound,
ssr/config/kernels.py).
``--profile`` adds ``torch.profiler``'s self CPU time by operator group per variant
(:func:`benchmarks.search_step.profile_summary`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STEPS = ("start", "discrete", "retrain")
RUNS = ("sweep_search", "sweep_retrain")
VARIANTS = {  # name: (compile, channels_last)
    "eager": (False, False),
    "compiled": (True, False),
    "eager_cl": (False, True),
    "compiled_cl": (True, True),
}
#: ``<variant>_loop_adam``: the same with PyTorch's per-parameter Adam loop (``foreach=False``)
#: in place of the fused Adam a CPU run takes (ssr/train/optim.py), to time what fusing saves.
LOOP_ADAM = "_loop_adam"
SEARCH_CONFIG = REPO / "ssr" / "configs" / "search_cityscapes.yaml"
SWEEP = REPO / "sweeps" / "configs" / "default.yaml"
#: The middle of the default sweep's space (its ``space:`` block), for a representative search.
SWEEP_POINT = {
    "ssr.op": 17.0, "ssr.out": 15.0, "ssr.mid": 15.0, "ssr.depth": 15.0,
    "shrink.threshold": 0.2, "shrink.every": 1, "shrink.warmup": 2, "flops.weight": 100.0,
    "flops.target": 0.5, "arch_optim.lr": 0.05, "baseline": "ssr", "seed": 0,
}  # fmt: skip


def loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split(" ")[0]
    except OSError:
        return "?"


# --------------------------------------------------------------------------------------------
# Step scenarios


def build_step(
    name: str, variant: str, batch: int, hw: tuple[int, int], precision: str = "fp32"
) -> Any:
    """``(step, call)``: a fresh step of ``name`` for ``variant`` (seed 0, ``precision``) and a
    callable that runs one iteration of it on a fixed batch."""
    import torch

    from ssr.config import RetrainConfig, SearchConfig, load_config
    from ssr.data.cityscapes import ERFNET_WEIGHTS
    from ssr.method.genotype import Genotype
    from ssr.train.precision import memory_format

    compile_, cl = VARIANTS[variant.removesuffix(LOOP_ADAM)]
    sets = ["device=cpu", f"compile={str(compile_).lower()}", f"channels_last={str(cl).lower()}"]
    sets.append(f"precision={precision}")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, *hw, generator=g)
    y = torch.randint(0, 19, (batch, *hw), generator=g)
    weights = torch.tensor(ERFNET_WEIGHTS)
    torch.manual_seed(0)
    if name == "retrain":
        from ssr.method.network import DerivedNet
        from ssr.run.retrain import TrainStep

        model = DerivedNet(Genotype.load("ssr_cityscapes"), 19).to(memory_format=memory_format(cl))
        step = TrainStep(model, load_config(RetrainConfig, None, sets), torch.device("cpu"))
        step.weights = weights
        step.checks.start(1)
        if variant.endswith(LOOP_ADAM):
            step.stepper.optimizer = step.optimizer = _loop_adam(step.optimizer)
        return step, lambda: step((x, y))
    from ssr.method.derive import restrict_to
    from ssr.method.search_step import SearchStep
    from ssr.method.supernet import Supernet

    cfg = load_config(SearchConfig, SEARCH_CONFIG, sets)
    net = Supernet(cfg.space, 19)
    if name == "discrete":
        restrict_to(net, Genotype.load("ssr_cityscapes"))
    net = net.to(memory_format=memory_format(cl))
    step = SearchStep(net, cfg, weights, torch.device("cpu"))
    step.start_epoch(0)
    if variant.endswith(LOOP_ADAM):
        for stepper in (step.w, step.a):
            stepper.optimizer = _loop_adam(stepper.optimizer)
    arch = name == "start"
    return step, lambda: step(((x, y), (x, y)), arch)


def _loop_adam(opt: Any) -> Any:
    """``opt``'s parameters and settings in PyTorch's per-parameter Adam loop."""
    import torch

    params = [p for g in opt.param_groups for p in g["params"]]
    keep = ("lr", "betas", "eps", "weight_decay")
    return torch.optim.Adam(params, foreach=False, **{k: opt.defaults[k] for k in keep})


def _stats(values: list[float], per_pass: int) -> dict[str, Any]:
    passes = [values[i : i + per_pass] for i in range(0, len(values), per_pass)]
    medians = [statistics.median(p) for p in passes if p]
    vals = sorted(values)
    return {
        "median_s": round(statistics.median(vals), 4),
        "pass_range_s": [round(min(medians), 4), round(max(medians), 4)],
        "p10_s": round(vals[int(0.1 * (len(vals) - 1))], 4),
        "p90_s": round(vals[round(0.9 * (len(vals) - 1))], 4),
    }


def conv_gmacs(call: Any) -> float:
    """Conv MACs (forward and backward, as they ran) of one call, in G."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as fc:
        call()
    flops = fc.get_flop_counts()["Global"]
    return sum(v for k, v in flops.items() if "convolution" in str(k)) / 2e9


def step_child(args: argparse.Namespace) -> dict[str, Any]:
    """One step scenario, its variants alternated; see the module docstring."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    load0 = loadavg()
    steps, first = {}, {}
    for v in variants:  # build and run the first call (compiles) of each variant
        steps[v] = build_step(args.child, v, args.batch, _hw(args.input), args.precision)
        t0 = time.perf_counter()
        steps[v][1]()
        first[v] = time.perf_counter() - t0
    for _ in range(args.warmup):
        for v in variants:
            steps[v][1]()
    wall: dict[str, list[float]] = {v: [] for v in variants}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    profiles = {}
    for _ in range(args.passes * args.iters):
        for v in variants:
            t0, c0 = time.perf_counter(), time.process_time()
            steps[v][1]()
            wall[v].append(time.perf_counter() - t0)
            cpu[v].append(time.process_time() - c0)
    if args.profile:
        for v in variants:
            profiles[v] = _profile(steps[v][1], args.iters)
    macs = conv_gmacs(steps[variants[0]][1])  # the same work for every variant
    out: dict[str, Any] = {"scenario": args.child, "threads": args.threads, "conv_gmacs": round(macs, 2),
                           "batch": f"{args.batch}x3x{args.input}", "load_before": load0,
                           "load_after": loadavg(), "variants": {}}  # fmt: skip
    for v in variants:
        fwd = steps[v][0].forward
        med = statistics.median(wall[v])
        out["variants"][v] = {
            **_stats(wall[v], args.iters), "cpu_s_median": round(statistics.median(cpu[v]), 4),
            "first_call_s": round(first[v], 2), "first_call_minus_median_s": round(first[v] - med, 2),
            "gmacs_per_s": round(macs / med, 1), "cpu_gmacs_per_s": round(macs / statistics.median(cpu[v]), 1),
            **fwd.stats(), **({"profile": profiles[v]} if v in profiles else {}),
        }  # fmt: skip
    if len(variants) > 1:
        base = variants[0]
        for v in variants[1:]:
            paired = [a / b for a, b in zip(wall[base], wall[v])]
            out["variants"][v]["speedup_vs_" + base] = {
                "median_paired": round(statistics.median(paired), 3),
                "cpu": round(statistics.median(cpu[base]) / statistics.median(cpu[v]), 3),
            }
    out["peak_rss_gib_all_variants"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2
    )
    return out


def _profile(call: Any, n: int) -> dict[str, Any]:
    from torch.profiler import ProfilerActivity, profile

    sys.path.insert(0, str(REPO / "benchmarks"))
    from search_step import profile_summary

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            call()
    return profile_summary(prof, n, conv_macs=conv_gmacs(call) * 1e9)


def memory_child(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one variant alone: build, warm up, two steps."""
    import resource

    import torch

    torch.set_num_threads(args.threads)
    _, call = build_step(args.child, args.variants, args.batch, _hw(args.input), args.precision)
    for _ in range(3):
        call()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return {"scenario": args.child, "variant": args.variants, "peak_rss_gib": round(peak, 2)}


# --------------------------------------------------------------------------------------------
# Run scenarios


def sweep_search_config(compile_: bool) -> Any:
    """The default sweep's search at :data:`SWEEP_POINT` (its base, budget and dataset)."""
    import dataclasses

    from sweeps.contract.params import build_pipeline
    from sweeps.define.spec import load_sweep

    sweep = load_sweep(SWEEP)
    search = build_pipeline(sweep.base, SWEEP_POINT).search
    return dataclasses.replace(search, compile=compile_, device="cpu")


def run_child(args: argparse.Namespace) -> dict[str, Any]:
    """One run of ``sweep_search`` / ``sweep_retrain`` with ``--variants`` (one variant)."""
    import dataclasses

    import torch

    torch.set_num_threads(args.threads)
    compile_, cl = VARIANTS[args.variants]
    search = dataclasses.replace(
        sweep_search_config(compile_), channels_last=cl, precision=args.precision
    )
    t0, c0 = time.perf_counter(), time.process_time()
    if args.child == "sweep_search":
        from ssr.method.search import run_search

        res = run_search(search, None, progress=False)
        history, extra = res.history, {k: res.summary[k] for k in
                                       ("compiles", "compile_seconds", "replans", "genotype_id",
                                        "derived_miou", "supernet_miou")}  # fmt: skip
        extra["discrete_at_epoch"] = res.summary["discrete_at_epoch"]
    else:
        from ssr.config import RetrainConfig
        from ssr.method.genotype import Genotype
        from ssr.run.retrain import run_retrain

        cfg = RetrainConfig(epochs=30, eval_every=30).inherit(search)
        res = run_retrain(cfg, Genotype.load("ssr_cityscapes"), None, progress=False)
        history = res.history
        extra = {"compiles": res.compiles, "compile_seconds": res.compile_seconds,
                 "final_train_loss": history[-1]["train_loss"]}  # fmt: skip
    secs = [h["seconds"] for h in history]
    return {
        "scenario": args.child, "variant": args.variants, "precision": args.precision,
        "threads": args.threads,
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
        "epochs": len(history), "first_epoch_s": round(secs[0], 2),
        "median_epoch_s": round(statistics.median(secs), 3),
        "train_loss": [round(h["train_loss"], 5) for h in history], **extra,
        "load": loadavg(),
    }  # fmt: skip


# --------------------------------------------------------------------------------------------
# Driver


def _hw(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.split("x"))
    return h, w


def _spawn(args: argparse.Namespace, scenario: str, variants: str, mode: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        scenario,
        "--mode",
        mode,
        "--variants",
        variants,
        "--threads",
        str(args.threads),
        "--warmup",
        str(args.warmup),
        "--iters",
        str(args.iters),
        "--passes",
        str(args.passes),
        "--batch",
        str(args.batch),
        "--input",
        args.input,
        "--precision",
        args.precision,
    ]
    cmd += ["--profile"] if args.profile else []
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode:
        sys.exit(f"{scenario} ({variants}) failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--scenarios", default="start,discrete,retrain")
    ap.add_argument("--variants", default="eager,compiled")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="untimed rounds after the first call")
    ap.add_argument("--iters", type=int, default=3, help="timed rounds per pass")
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1, help="runs per variant (run scenarios)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--input", default="256x512")
    ap.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    ap.add_argument("--memory", action="store_true", help="peak RSS of each variant alone")
    ap.add_argument("--profile", action="store_true", help="torch.profiler per variant")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--mode", default="step", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child = {"step": step_child, "memory": memory_child, "run": run_child}[args.mode]
        print(json.dumps(child(args)))
        return
    report = collect(args)
    print(json.dumps(report, indent=1) if args.json else table(report))


def collect(args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario's child processes, the probe and the machine, as one report."""
    from ssr.measure.host import cpu_info
    from ssr.measure.roofline import probe

    pr = probe(args.threads)
    ref = pr.fp32_gmacs_per_s
    report: dict[str, Any] = {"cpu": cpu_info(), "probe": pr.to_dict(), "threads": args.threads,
                              "steps": [], "runs": [], "memory": []}  # fmt: skip
    for name in args.scenarios.split(","):
        if name in STEPS:
            row = _spawn(args, name, args.variants, "step")
            for v in row["variants"].values():
                v["pct_of_probe"] = round(100 * v["gmacs_per_s"] / ref, 1)
            report["steps"].append(row)
            if args.memory:
                for v in args.variants.split(","):
                    report["memory"].append(_spawn(args, name, v, "memory"))
        elif name in RUNS:
            for _ in range(args.repeats):
                for v in args.variants.split(","):
                    report["runs"].append(_spawn(args, name, v, "run"))
        else:
            sys.exit(f"unknown scenario {name!r}; choose from {', '.join(STEPS + RUNS)}")
    return report


def table(report: dict[str, Any]) -> str:
    c = report["cpu"]
    lines = [f"{c['model']}, {report['threads']} threads, fp32 probe "
             f"{report['probe']['fp32_gmacs_per_s']:.0f} GMAC/s"]  # fmt: skip
    lines.append(f"{'scenario':<10}{'variant':<13}{'median s':>9}{'pass range':>15}{'CPU s':>8}"
                 f"{'% probe':>8}{'first s':>9}{'compile s':>10}{'graphs':>7}")  # fmt: skip
    for r in report["steps"]:
        for v, s in r["variants"].items():
            lo, hi = s["pass_range_s"]
            lines.append(f"{r['scenario']:<10}{v:<13}{s['median_s']:>9.3f}{f'{lo:.3f}-{hi:.3f}':>15}"
                         f"{s['cpu_s_median']:>8.3f}{s['pct_of_probe']:>7.1f}%{s['first_call_s']:>9.1f}"
                         f"{s['compile_seconds']:>10.1f}{s['compiles']:>7}")  # fmt: skip
        lines.append(f"  load {r['load_before']} -> {r['load_after']}")
    for r in report["runs"]:
        lines.append(f"{r['scenario']:<14}{r['variant']:<13}{r['precision']} wall {r['wall_s']} s, CPU {r['cpu_s']} s, "
                     f"median epoch {r['median_epoch_s']} s, compile {r['compile_seconds']} s, "
                     f"{r['compiles']} graphs, load {r['load']}")  # fmt: skip
    for r in report["memory"]:
        lines.append(f"peak RSS {r['scenario']} {r['variant']}: {r['peak_rss_gib']} GiB")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
