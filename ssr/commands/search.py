"""``python -m ssr search``: one SSR search to a genotype (docs/method.md §4-§7).

Runs :func:`ssr.method.search.run_search` and writes ``genotype.json``, ``summary.json``,
``history.jsonl``, ``prune_events.jsonl``, ``config.resolved.yaml`` and checkpoints into
``--out``; ``--resume`` continues an interrupted search to the same result. Config:
:class:`ssr.config.SearchConfig` defaults <- ``--config`` <- ``--set`` <- ``--device``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ssr.commands import Command
from ssr.config.cliargs import add_config_args
from ssr.files.atomic import to_json

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


def add_run_args(p: argparse.ArgumentParser) -> None:
    """The options of a run that writes into a folder: ``search`` and ``pipeline``."""
    add_config_args(p, config_help="YAML config file (see ssr/configs/)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoints in --out")
    p.add_argument("--device", help="cpu or cuda[:i] (shortcut for --set device=...)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(_precheck=check_out)


def check_out(args: argparse.Namespace) -> None:
    """``--out`` is a folder or can become one (checked before torch loads)."""
    from ssr.config.errors import ConfigError

    out = Path(args.out)
    for folder in (out, *out.parents):
        if folder.exists():
            if not folder.is_dir():
                raise ConfigError(f"--out {out}: {folder} is a file, not a folder")
            break


def run(args: argparse.Namespace) -> int:
    """Search; print the summary (JSON) on stdout and where the genotype went on stderr."""
    from ssr.config import SearchConfig, load_config
    from ssr.measure.footprint import check_search_fits

    items = list(args.set)
    if args.device:
        items.append(f"device={args.device}")
    cfg = load_config(SearchConfig, args.config, items)  # bad input is refused before torch loads
    check_search_fits(cfg)
    from ssr.method.search import run_search

    result = run_search(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    summary = {k: result.summary.get(k) for k in SUMMARY_KEYS}
    print(to_json(summary, indent=2))
    print(f"genotype written to {args.out / 'genotype.json'}", file=sys.stderr)
    return 0


COMMAND = Command(
    name="search",
    help="run an SSR search (supernet, SSR loss, progressive shrinking) to a genotype",
    description="Run one SSR search. Config: defaults <- --config YAML <- --set overrides.",
    add_arguments=add_run_args,
    run=run,
)
