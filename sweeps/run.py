#!/usr/bin/env python
"""Run an SSR sweep: ``python sweeps/run.py [--config FILE] [--set key=value ...] [--cluster]``.

With no arguments it runs the embedded default (``sweeps/configs/default.yaml``): a local Ray
instance, a SQLite MLflow store in the run folder, the synthetic dataset and a sweep that ends
in about ten minutes on two CPU cores with the Pareto table printed, the report written and the
``mlflow ui`` command to view the runs. The run folder is ``<storage>/<name>/``: Tune's
experiment, ``results.parquet``, ``mlflow.db`` (default store), ``report/``.

Order of work: validate the sweep file -> check the dataset -> probe the tracking store -> join
or start Ray -> Tune (Optuna/ASHA, trials of :mod:`sweeps.trial`, MLflow and results callbacks)
-> fill any missing rows -> re-measure unique genotypes exclusively -> sync MLflow -> report.
Problems found before the first trial end the command within seconds with one line on stderr:
exit 2 for a bad sweep file, options or dataset, exit 3 for an unreachable tracking store or
Ray cluster. Exit 130 when interrupted (resume with ``--resume``), 1 when no trial completed.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path
from typing import Any

for _k, _v in {
    "RAY_AUTH_MODE": "disabled",
    "RAY_USAGE_STATS_ENABLED": "0",
    # NOTE: Tune's default TensorBoard logger warns on every text field of the record; the JSON
    # and CSV loggers are added explicitly below.
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
    # NOTE: CheckpointConfig(num_to_keep=1) forces an experiment snapshot per checkpoint (what a
    # resume needs); Tune warns about it every time.
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    # NOTE: MLflow's HTTP defaults retry for ~4 minutes; a sweep driver must not block that long.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}.items():
    os.environ.setdefault(_k, _v)

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ssr.config import ConfigError  # noqa: E402
from sweeps.spec import DEFAULT_CONFIG, Sweep, dump_sweep, load_sweep  # noqa: E402

log = logging.getLogger("sweeps")
EXIT_CONFIG, EXIT_UNREACHABLE, EXIT_NO_RESULTS, EXIT_INTERRUPTED = 2, 3, 1, 130
LOCAL_NODE_IP = "127.0.0.2"
RUN_FILE = "run.json"
NAME_RE = re.compile(
    r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
)  # tracking URI and storage of the run, for --resume


class Unreachable(RuntimeError):
    """A service the sweep needs (Ray cluster, tracking store) cannot be reached."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python sweeps/run.py",
        description="Run a sweep of SSR searches (Ray Tune + Optuna + ASHA), track every trial in "
        "MLflow, write results.parquet and a Pareto report. No arguments: the embedded default "
        "(local Ray, SQLite MLflow store in the run folder, synthetic data, ~10 min on 2 cores).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit status: 0 done, 1 no trial completed, 2 bad sweep file/options/dataset, "
        "3 tracking store or Ray unreachable, 130 interrupted (continue with --resume)",
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        help="YAML sweep definition (default: the "
        f"embedded {DEFAULT_CONFIG.name}; see sweeps/configs/)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the sweep file, YAML value (repeatable): "
        "num_samples=8, budget.search_epochs=5, base.search.data.height=64, "
        "'space.ssr.op={loguniform: [5, 60]}'",
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
        "http://127.0.0.1:5000 (default: sqlite:///<run folder>/mlflow.db)",
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
    p.add_argument("--quiet", action="store_true", help="no per-trial progress lines")
    return p


# --------------------------------------------------------------------------------------------
# Preparation (everything that can fail before a trial starts)


def default_storage() -> Path:
    repo = Path(__file__).resolve().parents[1]
    if (repo / "pyproject.toml").is_file() and (repo / "sweeps").is_dir():
        return repo / "runs"
    return Path.cwd() / "runs"


def _is_remote(storage: str) -> bool:
    return "://" in storage and not storage.startswith("file://")


def resolve_run(args: argparse.Namespace, spec_name: str) -> tuple[str, str, Path]:
    """(storage for Tune, run name, local run folder)."""
    raw = args.storage or str(default_storage())
    remote = _is_remote(raw)
    storage = raw if remote else str(Path(raw.removeprefix("file://")).expanduser().resolve())
    local_root = default_storage() if remote else Path(storage)
    name = args.name
    if name is not None and not NAME_RE.match(name):
        raise ConfigError(f"--name {name!r}: use letters, digits, '.', '_' and '-' only")
    if name is None and args.resume:
        candidates = sorted(
            (p for p in local_root.glob(f"{spec_name}-*") if (p / "sweep.yaml").is_file()),
            key=lambda p: p.stat().st_mtime,
        )
        if not candidates:
            raise ConfigError(
                f"--resume: no run of sweep {spec_name!r} under {local_root}; pass --name"
            )
        name = candidates[-1].name
    if name is None:
        name = f"{spec_name}-{_dt.datetime.now():%Y%m%d-%H%M%S}"
    run_dir = local_root / name
    exists = (run_dir / "sweep.yaml").is_file()
    if args.resume and not exists:
        raise ConfigError(f"--resume: {run_dir} holds no sweep (no sweep.yaml)")
    if not args.resume and exists:
        raise ConfigError(
            f"run folder {run_dir} already holds a sweep: pass --resume to continue it "
            "or choose another --name"
        )
    return storage, name, run_dir


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
    return load_sweep(args.config, [*args.overrides, *cli])


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


def _tcp_probe(address: str, timeout: float = 3.0) -> None:
    host, _, port = address.rpartition(":")
    host = host.removeprefix("ray://")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return
    except (OSError, ValueError) as exc:
        raise Unreachable(
            f"Ray cluster at {address} is unreachable ({exc}); start it with `ray start --head` "
            "or check --address"
        ) from None


def _loopback_ok(ip: str) -> bool:
    try:
        with socket.socket() as s:
            s.bind((ip, 0))
        return True
    except OSError:
        return False


def start_ray(args: argparse.Namespace, sweep: Sweep) -> str:
    """Join the cluster (``--cluster``/``--address``) or start a local instance."""
    import ray

    r = sweep.spec.resources
    address = args.address or (os.environ.get("RAY_ADDRESS") or "auto" if args.cluster else None)
    try:
        if address:
            if address != "auto":
                _tcp_probe(address)
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        else:
            kw: dict[str, Any] = {}
            if _loopback_ok(LOCAL_NODE_IP):  # NOTE: Ray rewrites 127.0.0.1 to the routable IP
                kw["_node_ip_address"] = LOCAL_NODE_IP
            ray.init(
                address="local",
                num_cpus=os.cpu_count() or 1,
                include_dashboard=False,
                object_store_memory=512 * 1024**2,
                logging_level=logging.WARNING,
                **kw,
            )
    except Unreachable:
        raise
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise Unreachable(f"cannot connect to Ray ({address or 'local'}): {exc}") from None
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    max_cpu = max((n["Resources"].get("CPU", 0) for n in nodes), default=0)
    max_gpu = max((n["Resources"].get("GPU", 0) for n in nodes), default=0)
    if r.cpus_per_trial > max_cpu or (r.gpus_per_trial > 0 and r.gpus_per_trial > max_gpu):
        ray.shutdown()
        raise ConfigError(
            f"resources: a trial needs {r.cpus_per_trial} CPU and {r.gpus_per_trial} GPU on one "
            f"node, but the largest node has {max_cpu} CPU and {max_gpu} GPU"
        )
    return address or "local"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.address:
        args.cluster = True
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "optuna"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.ERROR)  # retries: sweeps.tracking says it once
    t0 = time.monotonic()
    from sweeps import tracking

    try:
        if args.resume and args.name:  # the saved definition is all a resume needs
            storage, name, run_dir = resolve_run(args, "")
            given = load_definition(args) if (args.config or args.overrides) else None
        else:
            given = load_definition(args)
            storage, name, run_dir = resolve_run(args, given.spec.name)
        sweep = given
        if args.resume:
            sweep = load_sweep(run_dir / "sweep.yaml")
            if given is not None and given.source != sweep.source:
                log.warning(
                    "--resume continues %s with its saved definition (sweep.yaml); the "
                    "differing --config/--set/options are ignored",
                    run_dir,
                )
        check_dataset(sweep)
        saved = (
            json.loads((run_dir / RUN_FILE).read_text())
            if args.resume and (run_dir / RUN_FILE).is_file()
            else {}
        )
        uri = args.tracking_uri or saved.get("tracking_uri") or tracking.default_uri(run_dir)
        if saved and uri != saved.get("tracking_uri"):
            log.warning(
                "tracking URI changed from %s to %s: runs are looked up (or created) there",
                saved.get("tracking_uri"),
                uri,
            )
        if args.address:  # a cheap check first: a wrong address fails before anything is created
            _tcp_probe(args.address)
        tracking.probe(uri)
        address = start_ray(args, sweep)
        run_dir.mkdir(parents=True, exist_ok=True)
        local_artifacts = run_dir / "mlartifacts" if uri.startswith("sqlite:") else None
        tracker = tracking.Tracker(uri, sweep.spec.experiment, name, local_artifacts)
        if not args.resume:
            dump_sweep(sweep, run_dir / "sweep.yaml")
        (run_dir / RUN_FILE).write_text(json.dumps({"tracking_uri": uri, "storage": storage}))
        tracker.start(
            params={f"sweep.{k}": v for k, v in _flat(sweep.source).items()},
            tags={"ssr.storage": str(run_dir)},
            artifacts=[run_dir / "sweep.yaml"],
            resume=args.resume,
        )
    except ConfigError as exc:
        _shutdown_ray()
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except (Unreachable, tracking.TrackingError) as exc:
        _shutdown_ray()
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
        _shutdown_ray()


def _shutdown_ray() -> None:
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted view of the sweep file for the parent run's params (dimensions stay whole)."""
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
