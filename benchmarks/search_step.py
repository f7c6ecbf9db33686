"""Time the search's own iteration, and a retraining step, against this machine's limit.

What is timed is the step that ``ssr.method.search.run_search`` itself runs: the benchmark calls
``run_search`` (the paper's search config, ``ssr/configs/search_cityscapes.yaml``, on synthetic
data) and wraps the ``run_epoch`` it calls, so every iteration is run_search's own
:class:`ssr.method.search_step.SearchStep`: the weight step (CE, backward into the weights, finiteness
checks, Adam) followed by the architecture step (CE x ``ce_scale`` + the SSR terms + the FLOPs
term, backward into the architecture parameters, checks, clipping, Adam), interleaved as in the
loop. The search stops after the timed iterations (nothing is evaluated or derived). The split
of an iteration into its weight and architecture parts is the return of
``SearchStep.weight_step``. Retraining steps are timed the same way through
``ssr.run.retrain.run_retrain``.

Scenarios (each in its own process, so peak memory is its own):

- ``start``: the whole space (depth 3-5 / 6-9, 10 ops, 9 x 9 widths), batch 2x3x256x512;
- ``shrunk``: the supernet restricted to the paper genotype (every layer decided, run at its
  own widths); the architecture step still runs, as in the epoch the net becomes discrete (its
  cross-entropy no longer depends on alpha, so it back-propagates into the SSR and FLOPs terms
  only). Its weight part is the weight step a discrete search runs alone
  (``skip_arch_when_discrete``);
- ``derived_max``: one retraining step of the largest derived network (aggregation head);
- ``derived_paper``: one retraining step of the paper network.

Each iteration is timed alone (``perf_counter`` around the step; data loading is outside and
reported as ``data_s_median``; ``cpu_s_median`` is the process's CPU time per iteration, which at one
thread counts the work and not the time other processes held the core, so variants can be
compared on a busy machine); the figures are the median over ``passes x iters`` iterations after
``warmup`` untimed ones, with the range of the per-pass medians and p10/p90. The work is
counted by ``torch.utils.flop_counter.FlopCounterMode`` on one warm-up iteration (conv forward
and backward MACs as they ran: the architecture step computes no weight gradients), and set
against the fp32 probe of ``ssr.measure.roofline`` at the same threads.

    python benchmarks/search_step.py [--threads 2] [--iters 3] [--passes 3] [--json]
    python benchmarks/search_step.py --scenarios start --profile     # where the time goes

``--profile`` runs ``torch.profiler`` over the timed iterations (which it slows by a few per
cent) and splits the self CPU time of the iteration into operator groups (:data:`GROUPS`); the
conv rate is the counted conv MACs over the time in convolution kernels, forward and backward.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SCENARIOS = ("start", "shrunk", "derived_max", "derived_paper")
CONFIG = Path(__file__).resolve().parents[1] / "ssr" / "configs" / "search_cityscapes.yaml"


#: Operator groups of ``--profile``, by substring of the aten op name (first match wins).
GROUPS = (
    ("conv backward", ("convolution_backward",)),
    ("conv forward", ("mkldnn_convolution", "conv2d_forward", "aten::_convolution")),
    ("batch norm", ("batch_norm",)),
    ("relu / threshold", ("relu", "threshold")),
    ("pool / upsample", ("pool", "upsample", "interpolate")),
    ("copies (copy_, cat, clone, pad)", ("copy", "cat", "clone", "pad", "contiguous")),
    ("elementwise (add, mul, fill, sum)", (
        "add", "mul", "fill", "zero", "sum", "div", "sub", "where", "sigmoid",
    )),
    ("optimizer (Adam, clipping, norms)", ("_foreach", "norm", "sqrt", "lerp", "Optimizer")),
    ("loss", ("nll", "log_softmax", "cross_entropy")),
)  # fmt: skip


class _Stop(Exception):
    """Raised by the timing wrapper once the timed iterations are done."""


class StepTimer:
    """Wraps a loop's ``step``: warm-up, timed iterations, then one counted iteration.

    The work is counted last, after the timing, so that the counting (a dispatch mode) cannot
    affect the timed steps.
    """

    def __init__(self, warmup: int, n: int, profile: bool = False) -> None:
        self.warmup, self.n = warmup, n
        self.profile = profile
        self.prof: Any = None
        self.calls = 0
        self.times: list[float] = []
        self.cpu: list[float] = []
        self.weight_part: list[float] = []
        self.data: list[float] = []
        self.flops: dict[str, int] = {}
        self._t0 = 0.0
        self._weight_done: float | None = None
        self._last_end: float | None = None

    def mark_weight_step(self) -> None:
        if self._weight_done is None:
            self._weight_done = time.perf_counter()

    def wrap(self, step: Any) -> Any:
        from torch.utils.flop_counter import FlopCounterMode

        def timed(batch: Any) -> Any:
            self.calls += 1
            if len(self.times) == self.n:  # count the work once, untimed, then stop
                with FlopCounterMode(display=False) as fc:
                    step(batch)
                self.flops = {str(k): int(v) for k, v in fc.get_flop_counts()["Global"].items()}
                raise _Stop
            start, cpu0 = time.perf_counter(), time.process_time()
            timed_call = self.calls > self.warmup
            if timed_call and self._last_end is not None:
                self.data.append(start - self._last_end)
            self._weight_done = None
            if timed_call and self.profile and self.prof is None:
                from torch.profiler import ProfilerActivity, profile

                self.prof = profile(activities=[ProfilerActivity.CPU])
                self.prof.__enter__()
            out = step(batch)
            end, cpu1 = time.perf_counter(), time.process_time()
            self._last_end = end
            if timed_call:
                self.times.append(end - start)
                self.cpu.append(cpu1 - cpu0)
                if self._weight_done is not None:
                    self.weight_part.append(self._weight_done - start)
                if len(self.times) == self.n and self.prof is not None:
                    self.prof.__exit__(None, None, None)
            return out

        return timed


def _patch_loop(module: Any, timer: StepTimer) -> None:
    original = module.run_epoch

    def run_epoch(batches: Any, step: Any, **kw: Any) -> Any:
        return original(batches, timer.wrap(step), **kw)

    module.run_epoch = run_epoch


def _data(batch: int, h: int, w: int, n_batches: int) -> list[str]:
    return [
        "data.name=synthetic", "data.root=null", f"data.height={h}", f"data.width={w}",
        f"data.batch_size={batch}", f"data.train_size={batch * (n_batches + 2)}",
        f"data.val_size={batch}", "data.num_workers=0", "device=cpu",
    ]  # fmt: skip


def run_search_scenario(
    name: str, timer: StepTimer, batch: int, h: int, w: int, overrides: list[str]
) -> None:
    import ssr.method.search as search
    from ssr.config import SearchConfig, load_config

    n = timer.warmup + timer.n + 1
    cfg = load_config(SearchConfig, CONFIG, [*_data(batch, h, w, n), "epochs=1", *overrides])
    _patch_loop(search, timer)
    from ssr.method.search_step import SearchStep

    weight_step = SearchStep.weight_step

    def timed_weight_step(self: Any, *a: Any, **kw: Any) -> Any:
        out = weight_step(self, *a, **kw)
        timer.mark_weight_step()
        return out

    SearchStep.weight_step = timed_weight_step  # type: ignore[method-assign]
    if name == "shrunk":
        from ssr.method.derive import restrict_to
        from ssr.method.genotype import Genotype

        base = search.Supernet

        class Shrunk(base):  # type: ignore[misc, valid-type]
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, **kw)
                restrict_to(self, Genotype.load("ssr_cityscapes"))

        search.Supernet = Shrunk
    try:
        search.run_search(cfg, out_dir=None, progress=False)
    except _Stop:
        return
    raise RuntimeError("the search ended before the timed iterations were done")


def run_retrain_scenario(
    name: str, timer: StepTimer, batch: int, h: int, w: int, overrides: list[str]
) -> None:
    import ssr.run.retrain as retrain
    from ssr.config import RetrainConfig, SearchConfig, load_config
    from ssr.method.genotype import Genotype

    geno = Genotype.load("ssr_cityscapes")
    if name == "derived_max":
        from ssr.method.derive import genotype_from_supernet
        from ssr.method.supernet import Supernet

        space = load_config(SearchConfig, CONFIG, ["device=cpu"]).space
        net = Supernet(space, 19)
        for d, p in net.max_probs().items():
            net.alive(d).copy_(p > 0)
        net.refresh_alive()
        geno = genotype_from_supernet(net)
    n = timer.warmup + timer.n + 1
    cfg = load_config(RetrainConfig, None, [*_data(batch, h, w, n), "epochs=1", *overrides])
    _patch_loop(retrain, timer)
    try:
        retrain.run_retrain(cfg, geno, None, progress=False)
    except _Stop:
        return
    raise RuntimeError("retraining ended before the timed iterations were done")


def _stats(values: list[float], iters: int) -> dict[str, Any]:
    passes = [values[i : i + iters] for i in range(0, len(values), iters)]
    medians = [statistics.median(p) for p in passes]
    vals = sorted(values)
    return {
        "median_s": round(statistics.median(vals), 4),
        "pass_medians_s": [round(m, 4) for m in medians],
        "spread_s": [round(min(medians), 4), round(max(medians), 4)],
        "p10_s": round(vals[int(0.1 * (len(vals) - 1))], 4),
        "p90_s": round(vals[round(0.9 * (len(vals) - 1))], 4),
    }


def profile_summary(prof: Any, n: int, conv_macs: float) -> dict[str, Any]:
    """Self CPU time per iteration by operator group (:data:`GROUPS`) and the top operators."""
    ops = [(e.key, e.self_cpu_time_total / 1e6 / n) for e in prof.key_averages()]
    ops = [(k, t) for k, t in ops if t > 0 and not k.startswith("enumerate(DataLoader)")]
    total = sum(t for _, t in ops)
    groups: dict[str, float] = {}
    for key, t in ops:
        group = next((g for g, subs in GROUPS if any(s in key for s in subs)), "other")
        groups[group] = groups.get(group, 0.0) + t
    conv_s = groups.get("conv forward", 0.0) + groups.get("conv backward", 0.0)
    return {
        "self_cpu_s_per_iteration": round(total, 3),
        "groups_s": {k: round(v, 3) for k, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        "top_ops_s": {k: round(t, 4) for k, t in sorted(ops, key=lambda kt: -kt[1])[:15]},
        "conv_gmacs_per_s_in_kernels": round(conv_macs / 1e9 / conv_s, 1) if conv_s else None,
    }


def child(args: argparse.Namespace, h: int, w: int) -> dict[str, Any]:
    import resource

    import torch

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    timer = StepTimer(args.warmup, args.iters * args.passes, args.profile)
    name = args.child
    if name in ("start", "shrunk"):
        run_search_scenario(name, timer, args.batch, h, w, args.set)
    else:
        run_retrain_scenario(name, timer, args.batch, h, w, args.set)
    conv_flops = sum(v for k, v in timer.flops.items() if "convolution" in k)
    total_flops = sum(timer.flops.values())
    it = _stats(timer.times, args.iters)
    out: dict[str, Any] = {
        "scenario": name,
        "threads": args.threads,
        "batch": f"{args.batch}x3x{h}x{w}",
        "iteration": it,
        "cpu_s_median": round(statistics.median(timer.cpu), 4),
        "data_s_median": round(statistics.median(timer.data), 4) if timer.data else None,
        "conv_gmacs": round(conv_flops / 2e9, 2),
        "all_gmacs": round(total_flops / 2e9, 2),
        "flops_by_op": timer.flops,
        "gmacs_per_s": round(conv_flops / 2e9 / it["median_s"], 2),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
    }
    if timer.prof is not None:
        out["profile"] = profile_summary(timer.prof, len(timer.times), conv_flops / 2)
    if timer.weight_part:
        arch = [t - wp for t, wp in zip(timer.times, timer.weight_part)]
        out["weight_part"] = _stats(timer.weight_part, args.iters)
        out["arch_part"] = _stats(arch, args.iters)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2, help="untimed iterations before the timed")
    ap.add_argument("--iters", type=int, default=3, help="timed iterations per pass")
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--input", default="256x512")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="config override for every scenario, e.g. --set precision=bf16 "
        "--set channels_last=true (SearchConfig / RetrainConfig keys)",
    )  # fmt: skip
    ap.add_argument("--profile", action="store_true", help="torch.profiler: time by op group")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w = (int(v) for v in args.input.split("x"))
    if args.child:
        print(json.dumps(child(args, h, w)))
        return
    from ssr.measure.host import cpu_info
    from ssr.measure.roofline import probe

    pr = probe(args.threads)  # once, before the scenarios: one reference for all of them
    ref = pr.fp32_gmacs_per_s
    results = []
    for name in args.scenarios.split(","):
        if name not in SCENARIOS:
            ap.error(f"unknown scenario {name!r}; choose from {', '.join(SCENARIOS)}")
        cmd = [sys.executable, __file__, "--child", name, "--threads", str(args.threads),
               "--warmup", str(args.warmup), "--iters", str(args.iters),
               "--passes", str(args.passes), "--batch", str(args.batch),
               "--input", args.input] + (["--profile"] if args.profile else [])  # fmt: skip
        cmd += [f"--set={item}" for item in args.set]
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            sys.exit(f"scenario {name} failed:\n{out.stderr[-2000:]}")
        row = json.loads(out.stdout.strip().splitlines()[-1])
        row["pct_of_probe"] = round(100 * row["gmacs_per_s"] / ref, 1)
        results.append(row)
    report = {
        "cpu": cpu_info(),
        "probe": pr.to_dict(),
        "threads": args.threads,
        "overrides": args.set,
        "results": results,
    }
    if args.json:
        print(json.dumps(report, indent=1))
        return
    c = report["cpu"]
    print(f"{c['model']} ({' '.join(c['simd'])}), {args.threads} threads, input "
          f"{args.batch}x3x{args.input}; fp32 probe {ref:.0f} GMAC/s "
          f"(other load {pr.other_load})")  # fmt: skip
    print(f"{'scenario':<14}{'part':<11}{'median s':>9}{'pass range s':>16}{'conv GMAC':>10}"
          f"{'GMAC/s':>8}{'% probe':>8}{'peak GiB':>9}{'CPU s':>8}")  # fmt: skip
    for r in results:
        it = r["iteration"]
        lo, hi = it["spread_s"]
        print(f"{r['scenario']:<14}{'iteration':<11}{it['median_s']:>9.3f}"
              f"{f'{lo:.3f}-{hi:.3f}':>16}{r['conv_gmacs']:>10.1f}{r['gmacs_per_s']:>8.1f}"
              f"{r['pct_of_probe']:>7.1f}%{r['peak_rss_gib']:>9.2f}"
              f"{r['cpu_s_median']:>8.3f}")  # fmt: skip
        for part in ("weight_part", "arch_part"):
            if part in r:
                lo, hi = r[part]["spread_s"]
                print(f"{'':<14}{part:<11}{r[part]['median_s']:>9.3f}{f'{lo:.3f}-{hi:.3f}':>16}")
        if "profile" in r:
            pf = r["profile"]
            print(
                f"  profile: {pf['self_cpu_s_per_iteration']} s of self CPU time per iteration;"
                f" convs at {pf['conv_gmacs_per_s_in_kernels']} GMAC/s inside their kernels"
            )
            for g, t in pf["groups_s"].items():
                print(f"    {g:<42}{t:>8.3f} s")


if __name__ == "__main__":
    main()
