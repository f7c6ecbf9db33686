"""``python -m ssr bench``: params, conv GMACs and latency/FPS of a genotype's network.

Sizes come from :mod:`ssr.method.complexity`, timing from the one procedure :func:`ssr.measure.bench.measure`,
and on CPU the rate achieved against this machine's probe (:func:`ssr.measure.roofline.achieved`).
``--backend ort-int8`` measures the int8 form of :mod:`ssr.deploy.quantize` (ONNX Runtime, QDQ,
calibrated on ``--calibration-images`` training images of ``--data``).
Settings: :class:`ssr.config.BenchConfig` defaults <- ``--config`` <- ``--set`` <- flags.
"""

from __future__ import annotations

import argparse
from typing import Any

from ssr.commands import Command
from ssr.commands.model_args import add_model_args, build_model
from ssr.config.cliargs import add_config_args
from ssr.files.atomic import to_json

TABLE_KEYS = (
    "genotype_id", "params_m", "gmacs", "input", "batch", "backend", "device", "threads",
    "precision", "form", "latency_ms_median", "latency_ms_p90", "fps_median",
    "cv_between_passes", "other_load", "gmacs_per_s", "pct_of_probe", "probe_gmacs_per_s",
    "calibration",
)  # fmt: skip
FLAGS = ("batch", "backend", "threads", "device", "precision", "warmup", "iters", "repeats")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--batch", type=int, default=None, help="batch size (default 1)")
    p.add_argument(
        "--backend",
        choices=("torch", "onnxruntime", "auto", "ort-int8"),
        default=None,
        help="ort-int8: onnxruntime at precision int8 (static QDQ quantization)",
    )
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (0: default)")
    p.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16", "int8"), default=None)
    p.add_argument(
        "--data", default="synthetic", help="int8: dataset whose training images calibrate"
    )
    p.add_argument("--data-root", default=None, help="int8: folder of a real dataset")
    p.add_argument(
        "--calibration-images", type=int, default=None, help="int8: calibration images (16)"
    )
    p.add_argument("--warmup", type=int, default=None, help="untimed iterations (default 10)")
    p.add_argument("--iters", type=int, default=None, help="timed iterations per pass (50)")
    p.add_argument("--repeats", type=int, default=None, help="timing passes (default 3)")
    add_config_args(p, config_help="YAML file of BenchConfig fields")
    p.add_argument("--no-timing", action="store_true", help="only params and GMACs")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm into the convs")
    p.add_argument(
        "--optimize",
        action="store_true",
        help="time each backend's exact inference form (torch: folded BN + channels-last; "
        "onnxruntime: ssr.deploy)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def bench_config(args: argparse.Namespace) -> Any:
    """The :class:`~ssr.config.BenchConfig`: YAML file, then ``--set``, then the flags."""
    from ssr.config import (
        BenchConfig,
        ConfigError,
        deep_merge,
        from_dict,
        load_yaml,
        parse_overrides,
    )

    data = load_yaml(args.config) if args.config else {}
    data = deep_merge(data, parse_overrides(args.set))
    flags: dict[str, Any] = {}
    if args.input is not None:
        flags["height"], flags["width"] = args.input
    for key in FLAGS:
        if getattr(args, key) is not None:
            flags[key] = getattr(args, key)
    if flags.get("backend") == "ort-int8":
        if flags.get("precision", "int8") != "int8":
            raise ConfigError("--backend ort-int8 measures precision int8; drop --precision")
        flags.update(backend="onnxruntime", precision="int8")
    return from_dict(BenchConfig, deep_merge(data, flags))


def run(args: argparse.Namespace) -> int:
    """One JSON object (``--json``) or a short table."""
    from ssr.config import ConfigError, DataConfig
    from ssr.measure.bench import measure
    from ssr.method.complexity import count_macs, count_params

    cfg = bench_config(args)
    if cfg.precision == "int8" and args.optimize:
        raise ConfigError("--optimize picks exact fp32 forms; the int8 form is its own")
    genotype, model = build_model(args)
    macs = count_macs(model, (3, cfg.height, cfg.width))
    row: dict[str, Any] = {
        "genotype_id": genotype.id,
        "params": count_params(model),
        "params_m": round(count_params(model) / 1e6, 4),
        "gmacs": round(macs / 1e9, 3),
        "input": f"{cfg.height}x{cfg.width}",
        "batch": cfg.batch,
        "num_classes": args.num_classes,
        "fold_bn": args.fold_bn,
    }
    if args.fold_bn:  # sizes above are those of the network as defined
        from ssr.deploy import fold_bn

        model = fold_bn(model)
    if not args.no_timing:
        calibration = DataConfig(name=args.data, root=args.data_root)
        res = measure(
            model,
            (cfg.batch, 3, cfg.height, cfg.width),
            cfg,
            optimize=args.optimize,
            calibration=calibration if cfg.precision == "int8" else None,
            calibration_images=args.calibration_images,
        )
        row.update(res.to_dict())
        if res.device_type == "cpu":
            from ssr.measure.roofline import achieved

            seconds = res.latency_ms_median / 1e3
            row.update(achieved(macs * cfg.batch, seconds, res.threads, res.precision))
    if args.json:
        print(to_json(row))
    else:
        _print_table(row)
    return 0


def _print_table(row: dict[str, Any]) -> None:
    for k in TABLE_KEYS:
        if k in row:
            print(f"{k:>18}  {row[k]}")
    for name, cand in row.get("candidates", {}).items():
        figs = cand.get("error") or f"{cand['latency_ms_median']} ms, {cand['fps_median']} FPS"
        print(f"{'auto: ' + name:>18}  {figs}")


COMMAND = Command(
    name="bench",
    help="params, conv GMACs and latency/FPS of a genotype's network",
    description="Measure a derived network with the one procedure of ssr.measure.bench.measure.",
    add_arguments=add_arguments,
    run=run,
)
