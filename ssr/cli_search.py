"""``python -m ssr search`` and ``python -m ssr pipeline``: the method from the command line.

``search`` runs :func:`ssr.search.run_search` and writes ``genotype.json``, ``summary.json``,
``history.jsonl``, ``prune_events.jsonl``, ``config.resolved.yaml`` and checkpoints into
``--out``; ``--resume`` continues an interrupted search to the same result. ``pipeline`` runs
one whole sweep trial (:func:`ssr.pipeline.run_pipeline`) without Ray.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SUMMARY_KEYS = (
    "genotype_id",
    "supernet_miou",
    "derived_miou",
    "discretization_gap",
    "discrete_at_epoch",
    "epochs",
    "params_m",
    "gmacs",
    "space_log10_size",
)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "search",
        help="run an SSR search (supernet, SSR loss, progressive shrinking) to a genotype",
        description="Run one SSR search. Config: defaults <- --config YAML <- --set overrides.",
    )
    _common(p)
    p.set_defaults(_kind="search")
    q = subparsers.add_parser(
        "pipeline",
        help="one sweep trial without Ray: search, retrain, evaluate, measure, export",
        description="Search, derive, retrain, evaluate and measure (a PipelineConfig).",
    )
    _common(q)
    q.set_defaults(_kind="pipeline", _run=run)
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="YAML config file (see ssr/configs/)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, e.g. --set ssr.op=30 (repeatable)",
    )
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--device", help="cpu or cuda[:i] (shortcut for --set device=...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ssr.config import PipelineConfig, SearchConfig, load_config

    overrides = list(args.overrides)
    if args._kind == "pipeline":
        if args.device:
            overrides += [f"search.device={args.device}", f"retrain.device={args.device}"]
        cfg = load_config(PipelineConfig, args.config, overrides)
        from ssr.pipeline import run_pipeline

        record = run_pipeline(cfg, args.out, resume=args.resume, progress=not args.no_progress)
        print(json.dumps({k: v for k, v in record.items() if k != "genotype"}, indent=2))
        return 0
    if args.device:
        overrides.append(f"device={args.device}")
    cfg = load_config(SearchConfig, args.config, overrides)
    from ssr.search import run_search

    result = run_search(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    summary = {k: result.summary.get(k) for k in SUMMARY_KEYS}
    print(json.dumps(summary, indent=2))
    print(f"genotype written to {args.out / 'genotype.json'}", file=sys.stderr)
    return 0
