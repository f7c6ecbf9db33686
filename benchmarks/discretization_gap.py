"""The discretization gap of SSR and two baselines on the synthetic search (docs/method.md §7).

Three arms, same seeds, budget and settings (``ssr/configs/search_synthetic.yaml``):

- ``ssr``: SSR terms and progressive shrinking, as configured;
- ``darts_pruning``: every SSR weight 0 (DARTS with the same progressive shrinking);
- ``no_shrink``: SSR terms, no shrinking (the argmax decides everything at the end).

For each run: the gap at discretization (``gap_at_discrete``: supernet just before the last
prune vs the derived network right after it, inherited weights, BN recalibrated; only for runs
that become discrete by shrinking), the gap at the common ``--gap-epochs`` (the same measurement
on the argmax network, for every arm), the discrete epoch, the argmax-fallback prunes, the
end-of-budget gap, the final derived mIoU with its 90 % bootstrap interval over validation
images, and the wall time. Per arm: mean and standard deviation over seeds, and in how many runs
each value exists.

The architecture optimiser (``--arch-optim``; docs/method.md §6 gives the paper's: Adam, lr 2e-3,
betas (0.9, 0.999), weight decay 1e-3, constant, gradients clipped to 5):

- ``paper-wd`` (default): the paper's betas, weight decay and clipping, with the synthetic
  config's learning rate 0.1. Why not 2e-3: the synthetic search has 480 architecture steps
  (60 epochs x 8) against the paper's ~99,000 (200 x 496), and Adam moves a logit by at most
  about ``lr`` per step; measured (seed 0, 60 epochs, 1 thread): with lr 2e-3 not one candidate
  was pruned, every arm ends by the argmax fallback (56 prunes) and there is no discretization
  to measure; with lr 0.1 and weight decay 1e-3 the SSR arm was discrete by shrinking alone at
  epochs 39, 35 and 48 (seeds 0, 1, 2).
- ``paper``: exactly the paper's (lr 2e-3), to reproduce that measurement.
- ``config``: the synthetic config's own (lr 0.1, weight decay 0.02: discrete at about epoch 26).

``--data camvid`` runs the same arms on real street scenes: CamVid's ``train`` split (64 images
evenly spread, halves A/B for the two steps) at 96x128 (CamVid's 4:3), the derived and supernet
mIoU on every ``val`` image, the FLOPs term at 96x128; ``--root`` (default ``$SSR_CAMVID_ROOT``)
is a SegNet-layout CamVid. Nothing reads the test split.

Usage::

    python benchmarks/discretization_gap.py [--seeds 0,1,2] [--epochs 60] [--threads 2]
        [--gap-epochs 10,20,30,40,50,60] [--arch-optim paper-wd|paper|config] [--out DIR]
        [--data synthetic|camvid] [--root DIR] [--tiny]
        [--set KEY=VALUE ...]

Writes ``discretization_gap.json`` (every run, every gap, the per-arm summary) and
``discretization_gap.md`` (the table) into ``--out`` (``discretization_gap_camvid.*`` for
CamVid) and prints the table.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "ssr" / "configs" / "search_synthetic.yaml"
ARMS: dict[str, list[str]] = {
    "ssr": [],
    "darts_pruning": ["ssr.op=0", "ssr.out=0", "ssr.mid=0", "ssr.depth=0"],
    "no_shrink": ["shrink.enabled=false"],
}
#: docs/method.md §6: the official architecture optimiser, and with the synthetic config's lr
PAPER_WD = [
    "arch_optim.betas=[0.9, 0.999]",
    "arch_optim.weight_decay=0.001",
    "arch_optim.poly_power=0.0",
    "arch_optim.grad_clip=5.0",
]
ARCH_OPTIM = {"paper": ["arch_optim.lr=0.002", *PAPER_WD], "paper-wd": PAPER_WD, "config": []}
#: a few seconds per run: small images, few images, a small space
TINY = [
    "data.height=32",
    "data.width=64",
    "data.train_size=8",
    "data.val_size=4",
    "data.batch_size=4",
    "bn_recalibration_batches=1",
    "space.stem_width=8",
    "space.stages=[{width: 16, max_depth: 2, min_depth: 1, dropout: 0.0},"
    " {width: 24, max_depth: 2, min_depth: 1, dropout: 0.0}]",
    "space.dilations=[1, 2]",
    "space.channel_remove=[4, 0]",
]
#: real street scenes: CamVid train/val at its aspect ratio (the root is added from --root)
CAMVID = [
    "data.name=camvid",
    "data.height=96",
    "data.width=128",
    "data.train_size=64",
    "data.val_size=null",
    "data.batch_size=8",
    "flops.height=96",
    "flops.width=128",
]
#: per-run values summarised per arm (mean, sd, count of runs where the value exists)
SUMMARISED = (
    "gap_at_discrete",
    "discrete_at_epoch",
    "fallback_prunes",
    "discretization_gap",
    "supernet_miou",
    "derived_miou",
    "derived_miou_lo",
    "derived_miou_hi",
    "seconds",
)


def run(arm: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """One search of ``arm``; the summary values the benchmark reports."""
    from ssr.config import SearchConfig, load_config
    from ssr.method.search import run_search

    cfg = load_config(SearchConfig, CONFIG, [*overrides, *ARMS[arm], f"seed={seed}",
                                             f"data.seed={seed}"])  # fmt: skip
    t0 = time.perf_counter()
    res = run_search(cfg, None, progress=False)
    s = res.summary
    row: dict[str, Any] = {"arm": arm, "seed": seed, "genotype_id": s["genotype_id"]}
    for key in SUMMARISED:
        row[key] = s.get(key)
    row["seconds"] = time.perf_counter() - t0
    row["gaps"] = {str(e): s[f"gap_at_{e}"] for e in cfg.gap_epochs}
    row["epochs"] = s["epochs"]
    return row


def _stats(values: list[float | None]) -> dict[str, Any]:
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return {
        "mean": statistics.fmean(vals) if vals else None,
        "sd": statistics.stdev(vals) if len(vals) > 1 else (0.0 if vals else None),
        "n": len(vals),
    }


def summarise(rows: list[dict[str, Any]], gap_epochs: list[int]) -> dict[str, Any]:
    """Per arm: mean, sd and count over seeds of every reported value and every common gap."""
    out: dict[str, Any] = {}
    for arm in ARMS:
        sel = [r for r in rows if r["arm"] == arm]
        if not sel:
            continue
        arm_sum = {key: _stats([r[key] for r in sel]) for key in SUMMARISED}
        for e in gap_epochs:
            arm_sum[f"gap_at_{e}"] = _stats([r["gaps"].get(str(e)) for r in sel])
        arm_sum["runs"] = len(sel)
        out[arm] = arm_sum
    return out


def typical_epoch(summary: dict[str, Any], gap_epochs: list[int]) -> int | None:
    """The first common epoch at or after the SSR arm's mean discrete epoch."""
    mean = summary.get("ssr", {}).get("discrete_at_epoch", {}).get("mean")
    if mean is None:
        return None
    later = [e for e in gap_epochs if e >= mean]
    return later[0] if later else None


def _fmt(st: dict[str, Any], scale: float = 100.0, digits: int = 1) -> str:
    if st["mean"] is None:
        return "n/a"
    return f"{st['mean'] * scale:.{digits}f} ± {st['sd'] * scale:.{digits}f} ({st['n']})"


def _interval(lo: dict[str, Any], hi: dict[str, Any]) -> str:
    if lo["mean"] is None or hi["mean"] is None:
        return "n/a"
    return f"[{lo['mean'] * 100:.1f}, {hi['mean'] * 100:.1f}]"


def table(summary: dict[str, Any], gap_epochs: list[int]) -> str:
    """Markdown table: gaps and mIoU in points (mean ± sd over seeds, (runs with a value))."""
    typ = typical_epoch(summary, gap_epochs)
    shown = [e for e in dict.fromkeys([typ, gap_epochs[-1] if gap_epochs else None]) if e]
    head = ["arm", "gap at discrete", *[f"gap at epoch {e}" for e in shown], "discrete epoch",
            "fallback prunes", "end gap", "derived mIoU", "90 % interval (mean lo, hi)"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for arm, s in summary.items():
        cells = [
            arm,
            _fmt(s["gap_at_discrete"], digits=2),
            *[_fmt(s[f"gap_at_{e}"], digits=2) for e in shown],
            _fmt(s["discrete_at_epoch"], scale=1.0),
            _fmt(s["fallback_prunes"], scale=1.0),
            _fmt(s["discretization_gap"], digits=2),
            _fmt(s["derived_miou"]),
            _interval(s["derived_miou_lo"], s["derived_miou_hi"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise SystemExit(f"error: {what} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise SystemExit(f"error: {what} is empty")
    return values


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--seeds", default=None, help="comma-separated seeds (default 0,1,2; 0 --tiny)")
    ap.add_argument("--epochs", type=int, default=None, help="search budget (default: config's)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gap-epochs", default=None,
                    help="common epochs of the gap measurement (default: every 10th and the last)")  # fmt: skip
    ap.add_argument("--arch-optim", choices=tuple(ARCH_OPTIM), default="paper-wd")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--data", choices=("synthetic", "camvid"), default="synthetic")
    ap.add_argument("--root", default=os.environ.get("SSR_CAMVID_ROOT"),
                    help="CamVid in the SegNet layout (default: $SSR_CAMVID_ROOT)")  # fmt: skip
    ap.add_argument("--tiny", action="store_true", help="a few seconds: the smoke test")
    ap.add_argument("--set", dest="extra", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)
    seeds = _ints(args.seeds or ("0" if args.tiny else "0,1,2"), "--seeds")
    import torch

    from ssr.config import ConfigError, SearchConfig, load_config, to_dict

    if args.threads < 1:
        raise SystemExit("error: --threads must be >= 1")
    torch.set_num_threads(args.threads)
    data: list[str] = []
    if args.data == "camvid":
        if not args.root:
            raise SystemExit("error: --data camvid needs --root DIR (or $SSR_CAMVID_ROOT)")
        data = [*CAMVID, f"data.root={args.root}"]
    base = [*data, *(TINY if args.tiny else []), *ARCH_OPTIM[args.arch_optim]]
    epochs = args.epochs or (3 if args.tiny else None)
    if epochs is not None:
        base.append(f"epochs={epochs}")
    try:
        cfg = load_config(SearchConfig, CONFIG, [*base, *args.extra])
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None
    step = max(1, cfg.epochs // 6) if args.tiny else 10
    default = sorted({*range(step, cfg.epochs + 1, step), cfg.epochs})
    gap_epochs = _ints(args.gap_epochs, "--gap-epochs") if args.gap_epochs else default
    overrides = [*base, f"gap_epochs={gap_epochs}", *args.extra]
    try:
        load_config(SearchConfig, CONFIG, overrides)
    except ConfigError as exc:
        raise SystemExit(f"error: {exc}") from None

    rows = []
    for arm in ARMS:
        for seed in seeds:
            rows.append(run(arm, seed, overrides))
            r = rows[-1]
            print(f"{arm} seed {seed}: gap@discrete {r['gap_at_discrete']}, discrete at "
                  f"{r['discrete_at_epoch']}, fallback {r['fallback_prunes']}, derived "
                  f"{r['derived_miou']:.4f}, {r['seconds']:.0f}s", file=sys.stderr)  # fmt: skip
    summary = summarise(rows, gap_epochs)
    text = table(summary, gap_epochs)
    result = {
        "config": str(CONFIG.relative_to(ROOT)),
        "overrides": overrides,
        "arch_optim": args.arch_optim,
        "arch_optim_settings": to_dict(cfg.arch_optim),
        "epochs": cfg.epochs,
        "gap_epochs": gap_epochs,
        "seeds": seeds,
        "threads": args.threads,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "rows": rows,
        "summary": summary,
        "typical_discrete_epoch": typical_epoch(summary, gap_epochs),
    }
    from ssr.files.atomic import write_json

    args.out.mkdir(parents=True, exist_ok=True)
    stem = "discretization_gap" + ("_camvid" if args.data == "camvid" else "")
    result["data"] = args.data
    write_json(args.out / f"{stem}.json", result)
    header = (f"config {result['config']} on {args.data}, {cfg.epochs} epochs, arch optimiser {args.arch_optim}, "
              f"seeds {seeds}, {args.threads} threads; gaps and mIoU in points, mean ± sd "
              "(runs with a value)\n\n")  # fmt: skip
    (args.out / f"{stem}.md").write_text(header + text + "\n")
    print(header + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
