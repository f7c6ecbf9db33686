#!/usr/bin/env python
"""Run an SSR sweep: ``python sweeps/run.py [--config FILE] [--set key=value ...] [--cluster]``.

With no arguments it runs the embedded default (``sweeps/configs/default.yaml``): a local Ray
instance, one SQLite MLflow store for all sweeps (``<storage>/mlflow.db``), the synthetic
dataset and a sweep that ends in about ten minutes on two CPU cores with the Pareto table
printed, the report written and the ``mlflow ui`` command to view the runs. The run folder is
``<storage>/<name>/``: Tune's experiment, ``results.parquet``, ``optuna.db`` (the Optuna
study), ``report/``. While it runs, :mod:`sweeps.progress` prints each trial's start and end, the
progress with an ETA, and a heartbeat every 30 s (``--quiet``: none of it).

Order of work: validate the sweep file -> check the dataset -> claim the run folder (created
0700 and locked for the driver's lifetime, :func:`sweeps.runtime.rundir.claim_run`; nothing is written
there before) -> probe the tracking store -> join or start Ray (token authentication unless
``--insecure``, :mod:`sweeps.runtime.cluster`; a local instance dies with the driver,
:mod:`sweeps.runtime.reaper`) -> write the run definition -> Tune (Optuna/ASHA, trials of
:mod:`sweeps.trial`, MLflow and results callbacks) -> fill any missing rows -> re-measure unique
genotypes exclusively -> sync MLflow -> report. A failed trial is a result (a ``failed`` row),
not an interruption. Problems found before the first trial end the command within seconds with
one line on stderr: exit 2 for a bad sweep file, options, dataset or a run folder in use, exit 3
for an unreachable tracking store or Ray cluster. Exit 130 when the driver is interrupted
(SIGINT, SIGTERM; resume with ``--resume``), 1 when no trial completed. No input ends in a
traceback.

This module holds the options and that order only: Ray lives in :mod:`sweeps.runtime.cluster`, run
folders in :mod:`sweeps.runtime.rundir`, the sweep file in :mod:`sweeps.define.spec`, the tracking store in
:mod:`sweeps.tracking` and everything from the Tune fit on in :mod:`sweeps.driver`. Importing it
changes nothing: :func:`main` sets the process environment Ray, Tune and MLflow need.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from ssr.config import ConfigError
from ssr.config.cliargs import OneLineParser, add_config_args, parse_set
from ssr.config.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_UNREACHABLE, EXIT_USAGE
from sweeps.define.definition import Sweep
from sweeps.define.spec import DEFAULT_CONFIG, check_dataset, dump_sweep, flat_source, load_sweep
from sweeps.runtime import cluster, reaper
from sweeps.runtime.cluster import Unreachable
from sweeps.runtime.interrupts import Interrupts
from sweeps.runtime.rundir import (
    RESULTS_FILE,
    RUN_FILE,
    SWEEP_FILE,
    RunLocation,
    abandon_run,
    claim_run,
    read_run_file,
    resolve_run,
    write_run_file,
)

log = logging.getLogger("sweeps")

#: The options that set a field of the sweep file: option dest -> dotted sweep-file key.
SWEEP_OPTIONS = {"num_samples": "num_samples", "max_concurrent": "max_concurrent",
                 "cpus_per_trial": "resources.cpus_per_trial",
                 "gpus_per_trial": "resources.gpus_per_trial", "experiment": "experiment"}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    """The options of ``sweeps/run.py`` (exit statuses: :mod:`ssr.config.errors`)."""
    p = OneLineParser(
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
    _add_where_options(p)
    _add_how_options(p)
    return p


def _add_where_options(p: argparse.ArgumentParser) -> None:
    """Where the run lives and is tracked, and the fields of the sweep file that options set
    (:data:`SWEEP_OPTIONS`)."""
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


def _add_how_options(p: argparse.ArgumentParser) -> None:
    """The cluster, resuming, the console, and ``--plan``."""
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
        "--retry-failed",
        action="store_true",
        help="with --resume: run the failed trials again from their last checkpoints "
        "(by default a resumed sweep keeps them as failed results)",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="run Ray without token authentication (RAY_AUTH_MODE=disabled), e.g. to join a "
        "cluster started that way; anyone who reaches Ray's ports can then run code here",
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
        "(sweeps/schedule/plan.py; no Ray or tracking store needed)",
    )
    p.add_argument("--device", metavar="D", help="with --plan: cpu, cuda or cuda:N "
                   "(default: the sweep's search device)")  # fmt: skip
    p.add_argument("--gpus", type=int, metavar="N", help="with --plan: GPUs of the cluster (1)")


# --------------------------------------------------------------------------------------------
# Preparation (everything that can fail before a trial starts)


def load_definition(args: argparse.Namespace) -> Sweep:
    """The sweep from --config/--set and the options of :data:`SWEEP_OPTIONS` (validated); the
    options' parsed values are set as they are, after the --set items."""
    values = parse_set(args.set)
    for dest, key in SWEEP_OPTIONS.items():
        if getattr(args, dest) is not None:
            values.pop(key, None)
            values[key] = getattr(args, dest)
    return load_sweep(args.config, values=values)


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


def load_run(args: argparse.Namespace) -> tuple[Sweep, RunLocation]:
    """The validated sweep and where its run lives (ConfigError if bad); writes nothing.

    A resume reloads the definition saved in the run folder; differing --config/--set are
    ignored with a warning.
    """
    if args.resume and args.name:  # the saved definition is all a resume needs
        location = resolve_run(args.storage, args.name, args.resume, "")
        given = load_definition(args) if (args.config or args.set) else None
    else:
        given = load_definition(args)
        location = resolve_run(args.storage, args.name, args.resume, given.spec.name)
    if not args.resume:
        assert given is not None
        return given, location
    sweep = load_sweep(location.run_dir / SWEEP_FILE)
    if given is not None and given.source != sweep.source:
        log.warning(
            "--resume continues %s with its saved definition (%s); the differing "
            "--config/--set/options are ignored",
            location.run_dir,
            SWEEP_FILE,
        )
    return sweep, location


def main(argv: list[str] | None = None) -> int:
    """Parse the options, check everything a sweep needs, run it; returns the exit status.

    Whatever happens, the command ends with one line on stderr and an exit status, never a
    traceback: an unexpected error's traceback goes to ``<run folder>/driver_error.txt``.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.plan:  # no Ray, no tracking: what a trial and the sweep cost (sweeps/schedule/plan.py)
        from sweeps.schedule.plan import run_plan

        return run_plan(args, load_definition)
    if args.address:
        args.cluster = True
    if args.retry_failed and not args.resume:
        parser.error("--retry-failed runs the failed trials of a sweep again: add --resume")
    configure_logging()
    interrupts = Interrupts().install()
    state: dict[str, Any] = {}
    try:
        return _run(args, interrupts, state)
    except KeyboardInterrupt as exc:
        _end_parent(state, "KILLED")
        resume = ""
        if state.get("claimed"):
            resume = (
                f"; continue with: python sweeps/run.py --resume --name {state['name']} "
                f"--storage {state['storage']}"
            )
        print(f"interrupted ({exc or 'SIGINT'}){resume}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # not bad input: a bug or the machine; still one line
        _end_parent(state, "FAILED")
        where = _save_traceback(state.get("run_dir"))
        msg = " ".join(str(exc).split())[:400]
        print(f"error: unexpected {type(exc).__name__}: {msg}{where}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        cluster.shutdown_ray()
        interrupts.restore()


def _run(args: argparse.Namespace, interrupts: Interrupts, state: dict[str, Any]) -> int:
    """:func:`main` once the options are parsed: prepare everything, then run the sweep."""
    t0 = time.monotonic()
    from sweeps import tracking

    cluster.set_environment({**cluster.RAY_ENV, **tracking.HTTP_LIMITS})
    written: list[Path] = []  # files this driver created before the sweep started
    try:
        sweep, location = load_run(args)
        storage, name, run_dir = location
        check_dataset(sweep)
        uri = _tracking_uri(args, run_dir)
        cluster.configure_auth(args.insecure)
        if args.address:  # a cheap check first: a wrong address fails before anything is created
            cluster.tcp_probe(args.address)
        # From here on the run folder is this driver's: locked, re-checked, then written.
        state["lock"] = claim_run(location, args.resume)
        state.update(claimed=True, name=name, storage=storage, run_dir=run_dir)
        if args.resume:
            # NOTE: imports ray: after the auth
            from sweeps.record.recovery import set_aside_damaged

            set_aside_damaged(run_dir / RESULTS_FILE)
        quiet_mlflow()
        tracking.probe(uri)
        if sweep.spec.searcher.storage and not args.resume:  # the default is made with the run
            from sweeps.schedule.searchers import probe_study

            probe_study(sweep.spec.searcher.storage, run_dir)
        address = cluster.start_ray(
            _ray_address(args),
            sweep.spec.resources.cpus_per_trial,
            sweep.spec.resources.gpus_per_trial,
        )
        interrupts.install()  # NOTE: again: ray.init replaced the SIGTERM handler
        if address == "local":
            reaper.watch()  # its processes go when this driver dies, however it dies
        if not args.resume:
            written = [run_dir / SWEEP_FILE, run_dir / RUN_FILE]
        tracker = state["tracker"] = _start_tracker(args, sweep, location, uri)
    except (ConfigError, Unreachable, tracking.TrackingError) as exc:
        cluster.shutdown_ray()
        if "lock" in state:  # a sweep that never started leaves no definition behind
            abandon_run(location, written)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ConfigError) else EXIT_UNREACHABLE
    log.info(
        "sweep %s: run folder %s, tracking %s, Ray %s (ready in %.1f s)",
        name,
        run_dir,
        uri,
        address,
        time.monotonic() - t0,
    )
    from sweeps.driver import run_sweep

    return run_sweep(
        sweep,
        storage,
        name,
        run_dir,
        tracker,
        args.resume,
        args.quiet,
        retry_failed=args.retry_failed,
        interrupts=interrupts,
    )


def _tracking_uri(args: argparse.Namespace, run_dir: Path) -> str:
    """--tracking-uri, else the one a resumed run was started with, else the default store."""
    from sweeps import tracking

    saved = read_run_file(run_dir) if args.resume else {}
    uri = args.tracking_uri or saved.get("tracking_uri") or tracking.default_uri(run_dir)
    if saved and uri != saved.get("tracking_uri"):
        log.warning(
            "tracking URI changed from %s to %s: runs are looked up (or created) there",
            saved.get("tracking_uri"),
            uri,
        )
    return uri


def _start_tracker(args: argparse.Namespace, sweep: Sweep, location: RunLocation, uri: str) -> Any:
    """Write the run definition (a new run) and the run file; start the MLflow parent run."""
    from analysis.objectives import objectives_json
    from sweeps import tracking

    storage, name, run_dir = location
    varied = [p.key for p in sweep.params if p.kind != "const"]
    tracker = tracking.Tracker(
        uri, sweep.spec.experiment, name, tracking.artifact_root(uri), varied
    )
    if not args.resume:
        dump_sweep(sweep, run_dir / SWEEP_FILE)
    write_run_file(run_dir, uri, storage)
    tracker.start(
        params={f"sweep.{k}": v for k, v in flat_source(sweep.source).items()},
        tags={
            "ssr.storage": str(run_dir),
            "ssr.objectives": objectives_json(sweep.report_objectives()),
        },
        artifacts=[run_dir / SWEEP_FILE],
        resume=args.resume,
    )
    return tracker


def _end_parent(state: dict[str, Any], status: str) -> None:
    """End the sweep's MLflow parent run (if started) with ``status``; never raises."""
    tracker = state.get("tracker")
    if tracker is not None:
        with contextlib.suppress(Exception):
            tracker.finish({}, [], status)


def _save_traceback(run_dir: Path | None) -> str:
    """The traceback to ``<run_dir>/driver_error.txt``; a note naming it (or nothing)."""
    if run_dir is None:
        return ""
    path = Path(run_dir) / "driver_error.txt"
    with contextlib.suppress(OSError):
        path.write_text(traceback.format_exc())
        return f" (traceback in {path})"
    return ""


def _ray_address(args: argparse.Namespace) -> str | None:
    """``--address``, else with ``--cluster`` RAY_ADDRESS or ``auto``; None: a local instance."""
    if args.address:
        return args.address
    return (os.environ.get("RAY_ADDRESS") or "auto") if args.cluster else None


if __name__ == "__main__":
    sys.exit(main())
