"""``python -m ssr latency build|predict|check``: a per-device latency table, what it predicts,
and how far this machine has drifted from it.

``build`` times every block of a search space on one device, runtime, precision and thread
count at one input size (:func:`ssr.measure.latency.build_table`) and writes the table as JSON;
``predict`` prints one genotype's predicted latency with the table's device and input size
(:func:`ssr.method.latency_table.predict_ms`); ``check`` measures the table's reference
networks here and now and prints the drift, measured now / measured at build
(:mod:`ssr.measure.drift`), refusing a bench that differs from the table's. docs/method.md §4.4 says what the table is and how
the search uses it; README "Searching for a latency budget" gives the commands.

The space comes from ``--config`` (a search config, or a sweep file: its ``base.search``) with
``--set`` overrides relative to the search (``--set space.pools=[1]``); without it, the
default space.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from ssr.commands import Command
from ssr.commands.model_args import input_size, positive_int
from ssr.config.cliargs import add_config_args
from ssr.files.atomic import to_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="time every block of a space and write the table")
    b.add_argument("--out", required=True, type=Path, help="the table's JSON file")
    b.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    b.add_argument("--backend", choices=("onnxruntime", "torch"), default="onnxruntime",
                   help="onnxruntime: the deploy form; torch: folded BN, channels-last")  # fmt: skip
    b.add_argument("--threads", type=int, default=1, help="intra-op threads (0: default)")
    b.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    b.add_argument("--input", type=input_size, default=(512, 1024), metavar="HxW")
    b.add_argument("--num-classes", type=positive_int, default=None,
                   help="classes of the head (default: the config's dataset)")  # fmt: skip
    b.add_argument("--head", choices=("aggregation", "search"), default="aggregation")
    b.add_argument("--warmup", type=int, default=3, help="untimed runs per block")
    b.add_argument("--iters", type=positive_int, default=10, help="timed runs per pass")
    b.add_argument("--repeats", type=positive_int, default=3, help="timing passes")
    b.add_argument("--statistic", choices=("median", "min"), default="median")
    b.add_argument("--clock", choices=("wall", "thread"), default="wall",
                   help="thread: CPU time of the calling thread (cpu, --threads 1)")  # fmt: skip
    b.add_argument("--max-widths", type=positive_int, default=None,
                   help="time at most this many widths per axis, interpolate the rest")  # fmt: skip
    b.add_argument("--fit", type=int, default=10,
                   help="random networks measured whole to fit the correction (0: none)")  # fmt: skip
    b.add_argument("--seed", type=int, default=0, help="seed of those networks")
    b.add_argument("--json", action="store_true", help="print one JSON object")
    add_config_args(b, config_help="search config or sweep file whose space to time")
    q = sub.add_parser("predict", help="one genotype's predicted latency")
    q.add_argument("--table", required=True, help="a table of latency build")
    q.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    q.add_argument("--measure", action="store_true",
                   help="also measure the network on this machine, as the table's blocks")  # fmt: skip
    q.add_argument("--json", action="store_true", help="print one JSON object")
    c = sub.add_parser("check", help="the machine's drift since the table was built")
    c.add_argument("--table", required=True, help="a table of latency build")
    c.add_argument("--references", type=positive_int, default=None,
                   help="reference networks to measure (default: all the table has)")  # fmt: skip
    c.add_argument("--device", default=None, help="default: the table's")
    c.add_argument("--backend", choices=("onnxruntime", "torch"), default=None,
                   help="default: the table's")  # fmt: skip
    c.add_argument("--threads", type=int, default=None, help="default: the table's")
    c.add_argument("--json", action="store_true", help="print one JSON object")


def search_config(args: argparse.Namespace) -> Any:
    """The :class:`~ssr.config.SearchConfig` whose space is timed: ``--config`` (a sweep file's
    ``base.search`` block, or a search config) and ``--set``."""
    from ssr.config import SearchConfig, deep_merge, from_dict, load_yaml, parse_overrides

    data = load_yaml(args.config) if args.config else {}
    if isinstance(data.get("base"), dict):  # a sweep file: its base search and dataset
        sweep = data
        data = dict(sweep["base"].get("search") or {})
        if isinstance(sweep.get("dataset"), dict):
            data["data"] = deep_merge(data.get("data") or {}, sweep["dataset"])
    data = deep_merge(data, parse_overrides(args.set))
    data.pop("epochs", None)
    data.pop("latency", None)  # the table being built may be the one the config names
    return from_dict(SearchConfig, data, "search")


def build(args: argparse.Namespace) -> int:
    from ssr.config import BenchConfig, ConfigError
    from ssr.data import dataset_info
    from ssr.measure.latency import build_table

    cfg = search_config(args)
    if args.fit == 1 or args.fit < 0:
        raise ConfigError("--fit: the correction needs 0 (none) or at least 2 networks")
    h, w = args.input
    bench = BenchConfig(
        height=h, width=w, warmup=args.warmup, iters=args.iters, repeats=args.repeats,
        backend=args.backend, precision=args.precision, threads=args.threads, device=args.device,
    )  # fmt: skip
    classes = args.num_classes or dataset_info(cfg.data.name).num_classes
    t0 = time.perf_counter()
    table = build_table(
        cfg.space, bench, num_classes=classes, head=args.head, reduction=cfg.reduction_width,
        clock=args.clock, statistic=args.statistic, max_widths=args.max_widths, fit=args.fit,
        seed=args.seed, progress=lambda msg: print(f"latency: {msg}", file=sys.stderr),
    )  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    table.save(args.out)
    row = summary(table, str(args.out))
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(to_json(row) if args.json else _lines(row))
    return 0


def summary(table: Any, path: str) -> dict[str, Any]:
    """What a table was built on and with: the fields ``build`` prints."""
    c = table.correction
    return {
        "table": path,
        "device": table.device_name,
        "device_type": table.bench.device.split(":")[0],
        "backend": table.bench.backend,
        "layout": table.layout,
        "precision": table.bench.precision,
        "threads": table.bench.threads,
        "input": table.input_size,
        "num_classes": table.num_classes,
        "clock": table.clock,
        "statistic": table.statistic,
        "blocks_timed": table.meta.get("blocks_timed"),
        "entries_interpolated": table.meta.get("entries_interpolated"),
        "other_load": table.meta.get("other_load"),
        "correction": None if c is None else _correction(c),
    }


def _correction(c: Any) -> dict[str, Any]:
    return {"scale": c.scale, "offset_ms": c.offset_ms, "networks": len(c.networks)}


def predict(args: argparse.Namespace) -> int:
    from ssr.method.genotype import Genotype
    from ssr.method.latency_table import LatencyTable, predict_ms, table_sum_ms

    table = LatencyTable.load(args.table)
    genotype = Genotype.load(args.genotype)
    if genotype.head != table.head:
        genotype = genotype.with_head(table.head)
    parts = table_sum_ms(table, genotype)
    row: dict[str, Any] = {
        "genotype_id": genotype.id,
        "predicted_ms": round(predict_ms(table, genotype), 4),
        "table_ms": round(parts["total"], 4),
        "corrected": table.correction is not None,
        "parts_ms": {k: round(v, 4) for k, v in parts.items() if k != "total"},
        **{k: v for k, v in summary(table, args.table).items() if k not in ("correction",)},
    }
    if args.measure:
        from ssr.measure.latency import measure_network

        row["measured_ms"] = round(
            measure_network(genotype, table.bench, table.num_classes, table.clock,
                            table.statistic), 4,
        )  # fmt: skip
    print(to_json(row) if args.json else _lines(row))
    return 0


def check(args: argparse.Namespace) -> int:
    """Measure the table's reference networks on the table's bench (or the one the options
    give, refused when it differs from the table's) and print the drift."""
    import dataclasses

    from ssr.config import ConfigError
    from ssr.measure.drift import measure_against_table, reference_networks
    from ssr.measure.host import device_name
    from ssr.method.latency_table import LatencyTable, check_bench

    table = LatencyTable.load(args.table)
    t = table.bench
    bench = dataclasses.replace(
        t, device=args.device or t.device, backend=args.backend or t.backend,
        threads=t.threads if args.threads is None else args.threads,
    )  # fmt: skip
    why = check_bench(table, bench)
    if why:
        raise ConfigError(f"latency check: {args.table} was not built for this bench: {why}")
    reference_networks(table, args.references, f"latency table {args.table}")  # before timing
    here = device_name(bench.device)
    if here != table.device_name:
        print(f"latency check: warning: this device is {here!r}, the table's "
              f"{table.device_name!r}: the drift compares two machines", file=sys.stderr)  # fmt: skip
    t0 = time.perf_counter()
    res = measure_against_table([], dataclasses.replace(table, bench=bench), args.references)
    row: dict[str, Any] = {
        "table": args.table, "device": here, "built_at": table.meta.get("created_at"),
        "checked_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **{k: round(v, 4) if isinstance(v, float) else v for k, v in res.summary().items()},
        "reference_networks": [{k: round(v, 4) if isinstance(v, float) else v
                                for k, v in r.items()} for r in res.references],
        "seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    if args.json:
        print(to_json(row))
        return 0
    print(f"drift {res.drift:.3f} (median of {len(res.references)} reference networks, "
          f"{row['drift_min']:.3f}-{row['drift_max']:.3f}): they run {res.drift:.3f}x their "
          f"time when the table was built ({row['built_at']}) on {here}; divide a measurement "
          f"by it to compare with the table's predictions")  # fmt: skip
    return 0


def _lines(row: dict[str, Any]) -> str:
    return "\n".join(f"{k:>22}  {v}" for k, v in row.items())


def run(args: argparse.Namespace) -> int:
    return {"build": build, "predict": predict, "check": check}[args.action](args)


COMMAND = Command(
    name="latency",
    help="build a per-device latency table; predict a genotype's latency from it; check the "
    "machine's drift since it was built",
    description="Latency lookup tables for the hardware-aware search (docs/method.md §4.4).",
    add_arguments=add_arguments,
    run=run,
)
