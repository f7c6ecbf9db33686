"""``python -m ssr pipeline``: one sweep trial without Ray (:func:`ssr.run.pipeline.run_pipeline`).

Search, derive, retrain, evaluate and measure, as a :class:`ssr.config.PipelineConfig`; prints
the trial's record (without the genotype) as JSON. ``--device`` sets both the search's and the
retraining's device.
"""

from __future__ import annotations

import argparse

from ssr.commands import Command
from ssr.commands.search import add_run_args
from ssr.files.atomic import to_json


def run(args: argparse.Namespace) -> int:
    """Run the trial; print its record."""
    from ssr.config import PipelineConfig, load_config
    from ssr.measure.footprint import check_search_fits

    items = list(args.set)
    if args.device:
        items += [f"search.device={args.device}", f"retrain.device={args.device}"]
    cfg = load_config(PipelineConfig, args.config, items)
    check_search_fits(cfg.search)
    from ssr.run.pipeline import run_pipeline  # torch loads once the config is known to be good

    record = run_pipeline(cfg, args.out, resume=args.resume, progress=not args.no_progress)
    print(to_json({k: v for k, v in record.items() if k != "genotype"}, indent=2))
    return 0


COMMAND = Command(
    name="pipeline",
    help="one sweep trial without Ray: search, retrain, evaluate, measure, export",
    description="Search, derive, retrain, evaluate and measure (a PipelineConfig).",
    add_arguments=add_run_args,
    run=run,
)
