#!/usr/bin/env python
"""Run an SSR sweep: ``python sweeps/run.py [--config FILE] [--set key=value ...] [--cluster]``.

With no arguments it runs the embedded default (``sweeps/configs/default.yaml``): a local Ray
instance, one SQLite MLflow store for all sweeps (``<storage>/mlflow.db``), the synthetic
dataset and a sweep that ends in about ten minutes on two CPU cores with the Pareto table
printed, the report written and the ``mlflow ui`` command to view the runs. The run folder is
``<storage>/<name>/``: Tune's experiment, ``results.parquet``, ``optuna.db`` (the Optuna
study), ``report/``. While it runs, :mod:`sweeps.progress` prints each trial's start and end, the
progress with an ETA, and a heartbeat every 30 s (``--quiet``: none of it).

Order of work: validate the sweep file -> check the dataset -> probe the tracking store -> join
or start Ray -> Tune (Optuna/ASHA, trials of :mod:`sweeps.trial`, MLflow and results callbacks)
-> fill any missing rows -> re-measure unique genotypes exclusively -> sync MLflow -> report.
Problems found before the first trial end the command within seconds with one line on stderr:
exit 2 for a bad sweep file, options or dataset, exit 3 for an unreachable tracking store or
Ray cluster. Exit 130 when interrupted (resume with ``--resume``), 1 when no trial completed.

This module holds the options and that order only: Ray lives in :mod:`sweeps.cluster`, run
folders in :mod:`sweeps.rundir`, the sweep file in :mod:`sweeps.spec`, the tracking store in
:mod:`sweeps.tracking` and everything from the Tune fit on in :mod:`sweeps.driver`. Importing it
changes nothing: :func:`main` sets the process environment Ray, Tune and MLflow need.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

from ssr.cliargs import add_config_args
from ssr.config import ConfigError
from sweeps import cluster
from sweeps.cluster import Unreachable
from sweeps.definition import Sweep
from sweeps.rundir import (
    SWEEP_FILE,
    read_run_file,
    resolve_run,
    write_run_file,
)
from sweeps.spec import DEFAULT_CONFIG, dump_sweep, load_sweep

log = logging.getLogger("sweeps")
EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_NO_RESULTS, EXIT_INTERRUPTED = 2, 3, 1, 130


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/run.py",
        description="Run a sweep of SSR searches (Ray Tune + Optuna + ASHA), track every trial in "
        "MLflow, write results.parquet and a Pareto report. No arguments: the embedded default "
        "(local Ray, one SQLite MLflow store under --storage, synthetic data, ~10 min on 2 cores).\n"
        "--set overrides a field of the sweep file: num_samples=8, budget.search_epochs=5, "
        "base.search.data.height=64, 'space.ssr.op={loguniform: [5, 60]}'.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done, 1 no trial completed, 2 bad sweep file/options/dataset, "
        "3 tracking store or Ray unreachable, 130 interrupted (continue with --resume)",
    )
    add_config_args(
        p,
        config_help=f"YAML sweep definition (default: the embedded {DEFAULT_CONFIG.name}; "
        "see sweeps/configs/)",
    )
    p.add_argument(
        "--name",
        help="run name = folder under --storage and MLflow parent run "
        "(default: <sweep name>-<date>-<time>; with --resume: the latest such run)",
    )
    p.add_argument(
        "--storage",
        metavar="PATH|URI",
        help="where run folders live; absolute path "
        "(relative ones are made absolute) or a URI Tune understands; on a cluster a "
        "folder shared by every node (default: <repo>/runs, or ./runs)",
    )
    p.add_argument(
        "--tracking-uri",
        metavar="URI",
        help="MLflow tracking URI, e.g. "
        "http://127.0.0.1:5000 (default: sqlite:///<storage>/mlflow.db, one store for all "
        "sweeps under --storage; a run folder with its own mlflow.db keeps it)",
    )
    p.add_argument(
        "--experiment",
        metavar="NAME",
        help="MLflow experiment (default: the sweep file's experiment)",
    )
    p.add_argument("--num-samples", type=int, metavar="N", help="trials to run (grid: repeats)")
    p.add_argument("--max-concurrent", type=int, metavar="N", help="trials running at once")
    p.add_argument(
        "--cpus-per-trial", type=float, metavar="C", help="CPUs per trial (torch threads follow)"
    )
    p.add_argument(
        "--gpus-per-trial",
        type=float,
        metavar="G",
        help="GPUs per trial, fractions "
        "allowed (e.g. 0.5: two trials share a GPU; scheduling only, no memory cap)",
    )
    p.add_argument(
        "--cluster",
        action="store_true",
        help="join an existing Ray cluster "
        "(RAY_ADDRESS, or the one started with `ray start` on this machine)",
    )
    p.add_argument(
        "--address",
        metavar="HOST:PORT",
        help="join the Ray cluster at this address (implies --cluster)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted sweep (same "
        "--name/--storage): finished trials are kept, unfinished ones resume from "
        "their checkpoints, MLflow runs are reused",
    )
    p.add_argument(
        "--quiet",
        action="store_true",
        help="no progress on the console: no trial start/end lines, progress/ETA lines or "
        "heartbeats (warnings, errors, the front table and the final summary still print)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="no sweep: run a few steps of each phase of one trial on --device and print its "
        "memory and hours and the sweep's GPU-hours and wall time on --gpus GPUs "
        "(sweeps/plan.py; no Ray or tracking store needed)",
    )
    p.add_argument("--device", metavar="D", help="with --plan: cpu, cuda or cuda:N "
                   "(default: the sweep's search device)")  # fmt: skip
    p.add_argument("--gpus", type=int, metavar="N", help="with --plan: GPUs of the cluster (1)")
    return p


# --------------------------------------------------------------------------------------------
# Preparation (everything that can fail before a trial starts)


def load_definition(args: argparse.Namespace) -> Sweep:
    """The sweep from --config/--set and the resource options (validated)."""
    cli = []
    for flag, key in (
        ("num_samples", "num_samples"),
        ("max_concurrent", "max_concurrent"),
        ("cpus_per_trial", "resources.cpus_per_trial"),
        ("gpus_per_trial", "resources.gpus_per_trial"),
        ("experiment", "experiment"),
    ):
        value = getattr(args, flag)
        if value is not None:
            cli.append(f"{key}={json.dumps(value)}")
    return load_sweep(args.config, [*args.set, *cli])


def check_dataset(sweep: Sweep) -> None:
    """A dataset other than the synthetic one must exist before trials start (ConfigError)."""
    cfg = sweep.base_config
    datas = [cfg.search.data] + ([cfg.retrain.data] if cfg.retrain.epochs > 0 else [])
    if all(d.name == "synthetic" for d in datas):
        return
    from ssr.data import DATASETS, build_dataset

    for d in datas:
        if d.name not in DATASETS:
            raise ConfigError(f"dataset.name {d.name!r}: registered datasets: {sorted(DATASETS)}")
        if d.name != "synthetic":
            for split in ("train", "val"):
                build_dataset(d, split)


def configure_logging() -> None:
    """The driver's console: INFO lines of the sweep, warnings of the libraries under it."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries: sweeps.tracking says it once


def quiet_mlflow() -> None:
    """Import mlflow and set its loggers back to WARNING. NOTE: mlflow sets INFO on import."""
    import mlflow  # noqa: F401

    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, check everything a sweep needs, run it; returns the exit status."""
    args = build_parser().parse_args(argv)
    if args.plan:  # before Ray and tracking: what one trial and the sweep cost (sweeps/plan.py)
        from sweeps.plan import run_plan

        return run_plan(args, load_definition)
    if args.address:
        args.cluster = True
    configure_logging()
    t0 = time.monotonic()
    from sweeps import tracking

    cluster.set_environment({**cluster.RAY_ENV, **tracking.HTTP_LIMITS})
    try:
        if args.resume and args.name:  # the saved definition is all a resume needs
            storage, name, run_dir = resolve_run(args.storage, args.name, args.resume, "")
            given = load_definition(args) if (args.config or args.set) else None
        else:
            given = load_definition(args)
            storage, name, run_dir = resolve_run(
                args.storage, args.name, args.resume, given.spec.name
            )
        sweep = given
        if args.resume:
            sweep = load_sweep(run_dir / SWEEP_FILE)
            if given is not None and given.source != sweep.source:
                log.warning(
                    "--resume continues %s with its saved definition (%s); the "
                    "differing --config/--set/options are ignored",
                    run_dir,
                    SWEEP_FILE,
                )
        check_dataset(sweep)
        saved = read_run_file(run_dir) if args.resume else {}
        uri = args.tracking_uri or saved.get("tracking_uri") or tracking.default_uri(run_dir)
        if saved and uri != saved.get("tracking_uri"):
            log.warning(
                "tracking URI changed from %s to %s: runs are looked up (or created) there",
                saved.get("tracking_uri"),
                uri,
            )
        if args.address:  # a cheap check first: a wrong address fails before anything is created
            cluster.tcp_probe(args.address)
        quiet_mlflow()
        tracking.probe(uri)
        if sweep.spec.searcher.storage and not args.resume:  # the default is made with the run
            from sweeps.searchers import probe_study

            probe_study(sweep.spec.searcher.storage, run_dir)
        address = cluster.start_ray(
            _ray_address(args),
            sweep.spec.resources.cpus_per_trial,
            sweep.spec.resources.gpus_per_trial,
        )
        run_dir.mkdir(parents=True, exist_ok=True)
        varied = [p.key for p in sweep.params if p.kind != "const"]
        tracker = tracking.Tracker(
            uri, sweep.spec.experiment, name, tracking.artifact_root(uri), varied
        )
        if not args.resume:
            dump_sweep(sweep, run_dir / SWEEP_FILE)
        write_run_file(run_dir, uri, storage)
        from analysis.objectives import objectives_json

        tracker.start(
            params={f"sweep.{k}": v for k, v in _flat(sweep.source).items()},
            tags={
                "ssr.storage": str(run_dir),
                "ssr.objectives": objectives_json(sweep.report_objectives()),
            },
            artifacts=[run_dir / SWEEP_FILE],
            resume=args.resume,
        )
    except ConfigError as exc:
        cluster.shutdown_ray()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (Unreachable, tracking.TrackingError) as exc:
        cluster.shutdown_ray()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    log.info(
        "sweep %s: run folder %s, tracking %s, Ray %s (ready in %.1f s)",
        name,
        run_dir,
        uri,
        address,
        time.monotonic() - t0,
    )
    from sweeps.driver import run_sweep

    try:
        return run_sweep(sweep, storage, name, run_dir, tracker, args.resume, args.quiet)
    except KeyboardInterrupt:
        print(
            f"interrupted; continue with: python sweeps/run.py --resume --name {name} "
            f"--storage {storage}",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
    finally:
        cluster.shutdown_ray()


def _ray_address(args: argparse.Namespace) -> str | None:
    """``--address``, else with ``--cluster`` RAY_ADDRESS or ``auto``; None: a local instance."""
    if args.address:
        return args.address
    return (os.environ.get("RAY_ADDRESS") or "auto") if args.cluster else None


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted view of the sweep file for the parent run's params (parameters stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and key != "space":
            out.update(_flat(v, key + "."))
        elif isinstance(v, dict):
            out.update({f"space.{dk}": dv for dk, dv in v.items()})
        else:
            out[key] = v
    return out


if __name__ == "__main__":
    sys.exit(main())
