"""Time one search iteration of the paper's space, against a training step of a derived net.

Scenarios (each in its own process, so peak memory is its own; issue 6 reference figures of
the official implementation on this machine kind in brackets):

- ``start``: the whole space (depth search 3-5 / 6-9, 10 ops, 9 x 9 widths), one weight step
  plus one architecture step at batch 2x3x256x512 [4.1 s = 2.0 + 2.1; peak 3.8 GiB];
- ``discrete``: the supernet after full shrinking, restricted to the paper's 4+9 genotype,
  weight step only (the architecture step is skipped once discrete) [0.50 s; weight step 0.24 s];
- ``derived_max``: one training step of the largest derived network (aggregation head);
- ``derived_paper``: one training step of the paper network [0.40 s].

Usage::

    python benchmarks/search_step.py [--threads 2] [--iters 5] [--passes 3] [--json]

Prints a table and, with ``--json``, one JSON object. Medians over ``iters`` iterations per
pass; the spread is the range of the per-pass medians.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

SCENARIOS = ("start", "discrete", "derived_max", "derived_paper")


def run_scenario(
    name: str, threads: int, iters: int, passes: int, batch: int, h: int, w: int
) -> dict:
    import resource

    import torch

    from ssr.config import SpaceConfig
    from ssr.derive import restrict_to
    from ssr.genotype import Genotype
    from ssr.loss import weighted_ce
    from ssr.network import DerivedNet
    from ssr.supernet import Supernet

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, h, w)
    y = torch.randint(0, 19, (batch, h, w))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    timings: dict[str, list[list[float]]] = {}

    if name in ("start", "discrete"):
        net = Supernet(SpaceConfig(), 19).train()
        if name == "discrete":
            restrict_to(net, Genotype.load("ssr_cityscapes"))
        wp, ap = net.weight_parameters(), net.arch_parameters()
        w_opt = torch.optim.Adam(wp, 3e-4, weight_decay=1e-4)
        a_opt = torch.optim.Adam(ap, 2e-3, weight_decay=1e-3)
        y8 = y[:, 4::8, 4::8]  # cell centres, as ssr.search._labels

        def weight_step() -> None:
            loss = weighted_ce(net(x), y8)
            w_opt.zero_grad(set_to_none=True)
            loss.backward(inputs=wp)
            w_opt.step()

        def arch_step() -> None:
            e = net.expected_macs(512, 1024) / 1e9
            loss = 100 * weighted_ce(net(x), y8) + 1e-3 * e
            a_opt.zero_grad(set_to_none=True)
            loss.backward(inputs=ap)
            torch.nn.utils.clip_grad_norm_(ap, 5.0)
            a_opt.step()

        steps = {"weight_step": weight_step}
        if name == "start":
            steps["arch_step"] = arch_step
    else:
        geno = Genotype.load("ssr_cityscapes")
        if name == "derived_max":
            net = Supernet(SpaceConfig(), 19)
            from ssr.derive import genotype_from_supernet

            probs = net.max_probs()
            for d, p in probs.items():
                net.alive(d).copy_(p > 0)
            net.refresh_alive()
            geno = genotype_from_supernet(net)
        model = DerivedNet(geno, 19).train()
        opt = torch.optim.Adam(model.parameters(), 5e-4, weight_decay=1e-4)

        def train_step() -> None:
            loss = weighted_ce(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps = {"train_step": train_step}

    for f in steps.values():  # warm-up: oneDNN primitive creation, allocator
        f()
    for key in steps:
        timings[key] = []
    for _ in range(passes):
        for key, f in steps.items():
            ts = []
            for _ in range(iters):
                t0 = time.perf_counter()
                f()
                ts.append(time.perf_counter() - t0)
            timings[key].append(ts)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    out: dict = {"scenario": name, "threads": threads, "batch": f"{batch}x3x{h}x{w}"}
    total = 0.0
    for key, per_pass in timings.items():
        medians = [statistics.median(p) for p in per_pass]
        med = statistics.median([t for p in per_pass for t in p])
        out[f"{key}_s"] = med
        out[f"{key}_spread_s"] = [min(medians), max(medians)]
        total += med
    out["iteration_s"] = total
    out["peak_rss_gib"] = rss
    out["rss_before_model_gib"] = rss0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--input", default="256x512")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    h, w = (int(v) for v in args.input.split("x"))
    if args.child:
        res = run_scenario(args.child, args.threads, args.iters, args.passes, args.batch, h, w)
        print(json.dumps(res))
        return
    results = []
    for name in args.scenarios.split(","):
        cmd = [sys.executable, __file__, "--child", name, "--threads", str(args.threads),
               "--iters", str(args.iters), "--passes", str(args.passes),
               "--batch", str(args.batch), "--input", args.input]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
    from ssr.host import cpu_name

    report = {"machine": cpu_name(), "threads": args.threads, "results": results}
    if args.json:
        print(json.dumps(report, indent=2))
        return
    print(
        f"machine: {report['machine']}, threads {args.threads}, input {args.batch}x3x{args.input}"
    )
    print(f"{'scenario':<15}{'step':<13}{'median s':>10}{'pass range s':>18}{'peak RSS GiB':>14}")
    for r in results:
        for key in ("weight_step", "arch_step", "train_step"):
            if f"{key}_s" in r:
                lo, hi = r[f"{key}_spread_s"]
                print(f"{r['scenario']:<15}{key:<13}{r[key + '_s']:>10.3f}{f'{lo:.3f}-{hi:.3f}':>18}"
                      f"{r['peak_rss_gib']:>14.2f}")  # fmt: skip
        print(f"{r['scenario']:<15}{'iteration':<13}{r['iteration_s']:>10.3f}")


if __name__ == "__main__":
    main()
