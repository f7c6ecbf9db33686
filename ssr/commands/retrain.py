"""``python -m ssr retrain``: train a genotype's network from scratch (docs/method.md §8.2).

Runs :func:`ssr.run.retrain.run_retrain` and writes ``summary.json`` and ``config.resolved.yaml``
next to its checkpoints. Config: :class:`ssr.config.RetrainConfig` defaults <- ``--config`` <-
``--set`` <- the ``--data/--epochs/--device`` shortcuts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ssr.commands import Command
from ssr.commands.model_args import load_genotype, positive_int
from ssr.commands.search import check_out
from ssr.config.cliargs import add_config_args


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    p.add_argument("--data", default=None, help="dataset name (synthetic, cityscapes, camvid)")
    p.add_argument("--epochs", type=positive_int, default=None)
    p.add_argument("--out", required=True, help="output folder")
    add_config_args(p, config_help="YAML file of RetrainConfig fields")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    p.set_defaults(_precheck=check_out)


def run(args: argparse.Namespace) -> int:
    """Train, then write ``summary.json`` next to the checkpoints."""
    from ssr.config import RetrainConfig, dump_yaml, load_config, to_dict
    from ssr.files.atomic import write_json
    from ssr.measure.footprint import check_retrain_fits

    items = list(args.set)
    for key, value in (("data.name", args.data), ("epochs", args.epochs), ("device", args.device)):
        if value is not None:
            items.append(f"{key}={value}")
    cfg = load_config(RetrainConfig, args.config, items)
    genotype = load_genotype(args.genotype)
    check_retrain_fits(cfg, genotype)
    from ssr.run.retrain import run_retrain  # torch loads once the input is known to be good

    out = Path(args.out)
    result = run_retrain(cfg, genotype, out, None, args.resume)
    out.mkdir(parents=True, exist_ok=True)
    dump_yaml(cfg, out / "config.resolved.yaml")
    summary = {
        "genotype_id": genotype.id,
        "miou": result.miou,
        "per_class_iou": result.per_class_iou,
        "pixel_acc": result.pixel_acc,
        "best_miou": result.best_miou,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "params_m": result.params_m,
        "gmacs": result.gmacs,
        "checkpoint": str(result.checkpoint) if result.checkpoint else None,
        "config": to_dict(cfg),
    }
    write_json(out / "summary.json", summary)
    print(f"retrained {genotype.id}: mIoU {result.miou:.4f} (best {result.best_miou:.4f}); {out}")
    return 0


COMMAND = Command(
    name="retrain",
    help="retrain a genotype's network from scratch (docs/method.md §8.2)",
    description="Run ssr.run.retrain.run_retrain; writes DIR/summary.json and the resolved config.",
    add_arguments=add_arguments,
    run=run,
)
