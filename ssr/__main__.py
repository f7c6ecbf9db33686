"""Command line: ``python -m ssr <command>`` (design §2: thin entry points over library calls).

Commands here: ``bench`` (params, GMACs, latency/FPS through :func:`ssr.bench.measure`),
``export`` (one-file ONNX through :func:`ssr.bench.export_onnx`) and ``retrain``
(:func:`ssr.train.run_retrain`). User errors (a bad config or genotype, a missing file or
dataset, a missing optional package) print one ``error: ...`` line on stderr and exit with
status 2, without a traceback.

Adding a command from another module (e.g. ``python -m ssr search``): write a module that
defines ::

    def add_parser(subparsers) -> argparse.ArgumentParser:
        p = subparsers.add_parser("search", help="...")
        p.add_argument(...)
        return p

    def run(args: argparse.Namespace) -> int | None: ...  # exit status (None = 0)

and list its import path in :data:`COMMAND_MODULES`. Modules that are not installed are
skipped; ``run`` may raise :class:`ssr.config.ConfigError` for a one-line user error.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Modules that contribute commands through ``add_parser(subparsers)`` and ``run(args)``.
COMMAND_MODULES: tuple[str, ...] = ("ssr.cli_search",)

EXIT_USAGE = 2


def _input_size(text: str) -> tuple[int, int]:
    """``'512x1024'`` -> ``(512, 1024)`` (argparse type)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"input size must be positive, got {text!r}")
    return h, w


def _load_genotype(name: str) -> Any:
    from ssr.space import Genotype

    return Genotype.load(name)


def _build_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """Genotype and its DerivedNet (eval mode), with ``--weights`` loaded."""
    from ssr.network import DerivedNet

    genotype = _load_genotype(args.genotype)
    model = DerivedNet(genotype, args.num_classes).eval()
    if args.weights:
        _load_weights(model, Path(args.weights))
    return genotype, model


def _load_weights(model: Any, path: Path) -> None:
    """Load a state dict, or a checkpoint holding one under ``model`` / ``state_dict``."""
    import torch

    from ssr.config import ConfigError

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path} does not fit this genotype/num-classes: {first}") from None


# --------------------------------------------------------------------------------------------
# bench


def _add_bench(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "bench",
        help="params, conv GMACs and latency/FPS of a genotype's network",
        description="Measure a derived network with the one procedure of ssr.bench.measure.",
    )
    _model_args(p)
    p.add_argument("--batch", type=int, default=None, help="batch size (default 1)")
    p.add_argument("--backend", choices=("torch", "onnxruntime", "auto"), default=None)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (0: default)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default=None)
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 10)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per pass (50)")
    p.add_argument("--repeats", type=int, default=None, help="timing passes (default 3)")
    p.add_argument("--config", default=None, help="YAML file of BenchConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--no-timing", action="store_true", help="only params and GMACs")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs")
    p.add_argument(
        "--optimize",
        action="store_true",
        help="time each backend's exact inference form (torch: folded BN + channels-last; "
        "onnxruntime: ssr.deploy)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    p.add_argument(
        "--input", type=_input_size, default=None, metavar="HxW", help="default 512x1024"
    )
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--weights", default=None, help="state dict / checkpoint to load (optional)")


def _bench_config(args: argparse.Namespace) -> Any:
    from ssr.config import BenchConfig, deep_merge, from_dict, load_yaml, parse_overrides

    data = load_yaml(args.config) if args.config else {}
    data = deep_merge(data, parse_overrides(args.set))
    flags: dict[str, Any] = {}
    if args.input is not None:
        flags["height"], flags["width"] = args.input
    for key in ("batch", "backend", "threads", "device", "precision", "warmup", "iters", "repeats"):
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    return from_dict(BenchConfig, deep_merge(data, flags))


def run_bench(args: argparse.Namespace) -> int:
    """``python -m ssr bench``: one JSON object (``--json``) or a short table."""
    from ssr.bench import count_macs, count_params, measure

    cfg = _bench_config(args)
    genotype, model = _build_model(args)
    row: dict[str, Any] = {
        "genotype_id": genotype.id,
        "params": count_params(model),
        "params_m": round(count_params(model) / 1e6, 4),
        "gmacs": round(count_macs(model, (3, cfg.height, cfg.width)) / 1e9, 3),
        "input": f"{cfg.height}x{cfg.width}",
        "batch": cfg.batch,
        "num_classes": args.num_classes,
        "fold_bn": args.fold_bn,
    }
    if args.fold_bn:  # sizes above are those of the network as defined
        from ssr.deploy import fold_bn

        model = fold_bn(model)
    if not args.no_timing:
        res = measure(model, (cfg.batch, 3, cfg.height, cfg.width), cfg, optimize=args.optimize)
        row.update(res.to_dict())
    if args.json:
        print(json.dumps(row))
    else:
        _print_table(row)
    return 0


def _print_table(row: dict[str, Any]) -> None:
    keys = [
        "genotype_id", "params_m", "gmacs", "input", "batch", "backend", "device", "threads",
        "precision", "latency_ms_median", "latency_ms_p90", "fps_median", "cv_between_passes",
        "other_load",
    ]  # fmt: skip
    for k in keys:
        if k in row:
            print(f"{k:>18}  {row[k]}")
    for name, cand in row.get("candidates", {}).items():
        figs = cand.get("error") or f"{cand['latency_ms_median']} ms, {cand['fps_median']} FPS"
        print(f"{'auto: ' + name:>18}  {figs}")


# --------------------------------------------------------------------------------------------
# export


def _add_export(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "export",
        help="export a genotype's network to one ONNX file",
        description="Export with ssr.bench.export_onnx (fixed input shape, single file).",
    )
    _model_args(p)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--out", required=True, help="path of the .onnx file")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm first")
    p.add_argument(
        "--optimize", action="store_true", help="export the exact inference form (ssr.deploy)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p


def run_export(args: argparse.Namespace) -> int:
    """``python -m ssr export``: writes the file, prints nodes, seconds and max |diff|."""
    from ssr.bench import export_onnx
    from ssr.deploy import deploy, fold_bn

    genotype, model = _build_model(args)
    if args.fold_bn:
        model = fold_bn(model)
    if args.optimize:
        model = deploy(model)
    h, w = args.input or (512, 1024)
    res = export_onnx(model, (args.batch, 3, h, w), args.out, verify=not args.no_verify)
    row = {"genotype_id": genotype.id, **res.to_dict()}
    if args.json:
        print(json.dumps(row))
    else:
        diff = "n/a" if res.max_abs_diff is None else f"{res.max_abs_diff:.2e}"
        print(
            f"wrote {res.path}: {res.nodes} nodes, opset {res.opset}, {res.exporter} exporter, "
            f"{res.seconds:.1f} s, max |onnx - torch| = {diff}"
        )
    return 0


# --------------------------------------------------------------------------------------------
# retrain


def _add_retrain(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "retrain",
        help="retrain a genotype's network from scratch (spec §8.2)",
        description="Run ssr.train.run_retrain; writes DIR/summary.json and the resolved config.",
    )
    p.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    p.add_argument("--data", default=None, help="dataset name (synthetic, cityscapes, camvid)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--config", default=None, help="YAML file of RetrainConfig fields")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N")
    p.add_argument("--resume", action="store_true", help="continue from DIR/last.pt")
    return p


def run_retrain_cmd(args: argparse.Namespace) -> int:
    """``python -m ssr retrain``: train, then write ``summary.json`` next to the checkpoints."""
    from ssr.config import RetrainConfig, dump_yaml, load_config, to_dict
    from ssr.train import run_retrain

    overrides = list(args.set)
    for key, value in (("data.name", args.data), ("epochs", args.epochs), ("device", args.device)):
        if value is not None:
            overrides.append(f"{key}={value}")
    cfg = load_config(RetrainConfig, args.config, overrides)
    genotype = _load_genotype(args.genotype)
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
    (out / "summary.json").write_text(json.dumps(_finite(summary), indent=2) + "\n")
    print(f"retrained {genotype.id}: mIoU {result.miou:.4f} (best {result.best_miou:.4f}); {out}")
    return 0


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, recursively, so summary.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------
# main


BUILTIN: tuple[tuple[Callable[[Any], argparse.ArgumentParser], Callable[..., Any]], ...] = (
    (_add_bench, run_bench),
    (_add_export, run_export),
    (_add_retrain, run_retrain_cmd),
)


def build_parser() -> argparse.ArgumentParser:
    """The parser with the built-in commands and those of :data:`COMMAND_MODULES`."""
    parser = argparse.ArgumentParser(
        prog="python -m ssr", description="SSR: derived networks, retraining and measurement."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add, run in BUILTIN:
        add(sub).set_defaults(_run=run)
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(name) is None:  # not written / not installed
            continue
        mod = importlib.import_module(name)
        mod.add_parser(sub).set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 2 user error)."""
    from ssr.config import ConfigError  # GenotypeError and DatasetError derive from it

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args._run(args) or 0)
    except (ConfigError, FileNotFoundError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
