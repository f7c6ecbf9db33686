#!/usr/bin/env python
"""What the sweep driver costs per trial as a sweep grows to thousands of trials.

The real driver runs (``sweeps/run.py``'s ``main``: Ray, Tune, the results table, the progress
lines, MLflow on the embedded SQLite store, the Optuna study, MO-ASHA, the report; the exclusive
re-measurement is off) with one change: the trainable is :func:`simulated_trial`, which runs no
search. It replays the per-epoch reports and the final record of one real pipeline run (made
once with the smoke sweep's base config, :func:`make_template`) with the objectives, the
genotype id and the config values varied per trial, and hands over the same final checkpoint
files (genotype, history, prune events, summary, record, resolved config, an ONNX model). So
every driver-side step sees records of the real shape, at a rate no real search reaches.

Every driver-side hook is timed (``time.perf_counter`` around the call, in the driver process):
the results table, the progress callback, the MLflow callback, Optuna's suggest and tell,
MO-ASHA's decisions, and after the fit the reconciliation, the MLflow sync, the report and the
model registry. For each part the benchmark prints the mean cost per trial and its growth: the
mean cost of the last tenth of the trials over the first tenth (about 1 for a cost per trial
that stays flat, i.e. O(n) in total; about 10+ for one that grows with the table, O(n^2)).
Between sizes, ``exponent`` is the slope of log(total time) over log(trials): 1 is linear.

    nice -n 19 python benchmarks/driver_scale.py --trials 100 1000 --json scale.json

Each size runs in a fresh process (``--one N``). The machine's load average is recorded: the
CPU is often shared, and every figure is wall time.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import yaml

from sweeps.contract.protocol import FINAL_KEY

REPO = Path(__file__).resolve().parents[1]
SMOKE = REPO / "sweeps" / "configs" / "smoke.yaml"
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
#: Where the simulated trial finds the template (set in the driver, pickled with the function).
TEMPLATE: dict[str, Any] = {}
#: Distinct genotypes among the simulated trials (a sweep finds far fewer than it runs).
GENOTYPES = 200

# --------------------------------------------------------------------------------------------
# The simulated trial


def make_template(out: Path) -> Path:
    """One real pipeline run of the smoke sweep's base config (about 30 s on 2 cores): its
    per-epoch reports go to ``epochs.json`` and its output folder holds the final files."""
    from ssr.run.pipeline import run_pipeline
    from sweeps.contract.params import build_pipeline
    from sweeps.define.spec import load_sweep

    if (out / "epochs.json").is_file():
        return out
    sweep = load_sweep(SMOKE)
    epochs: list[dict[str, Any]] = []
    run_pipeline(
        build_pipeline(sweep.base, {"seed": 0}),
        out,
        reporter=lambda m, step: epochs.append({"step": step, **m}),
        progress=False,
    )
    (out / "epochs.json").write_text(json.dumps(epochs))
    return out


def simulated_reports(
    config: dict[str, Any], final: Path, trial_id: str | None = None
) -> Iterator[dict[str, Any]]:
    """The reports of one simulated trial: its epochs, then its final record, whose checkpoint
    files are written to ``final`` (the template's, with this trial's values, and the drawing of
    its architecture, which a trial makes: :func:`sweeps.trial.run_trial`). ``trial_id``: the
    trial's (by default from ``final``'s folder, ``trial_<id>/final``)."""
    from sweeps.contract.protocol import FINAL_ARTIFACTS
    from sweeps.record.archplot import draw_final
    from sweeps.trial import epoch_result, final_result

    run = config["run"]
    objectives, sched = list(run["objectives"]), run["scheduler_metric"]
    src = Path(TEMPLATE["dir"])
    epochs = json.loads((src / "epochs.json").read_text())
    record = json.loads((src / "record.json").read_text())
    rng = random.Random(json.dumps(config.get("dims"), sort_keys=True, default=str))
    quality = rng.random()
    n = int(TEMPLATE["epochs"])
    for step in range(1, n + 1):
        m = dict(epochs[min(step, len(epochs)) - 1])
        m["val_miou"] = quality * step / n
        m["expected_gmacs"] = 0.002 * (1.5 - quality) * rng.uniform(0.9, 1.1)
        yield epoch_result(m, step, objectives, sched, TEMPLATE["node"])
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir(parents=True)
    for name in FINAL_ARTIFACTS:
        if (src / name).is_file():
            shutil.copy2(src / name, final / name)
    record.update(
        derived_miou=quality * 0.5,
        fps_shared=rng.uniform(20, 200),
        genotype_id=f"{rng.randrange(GENOTYPES):010x}",
    )
    draw_final(final, trial_id or final.parent.name.removeprefix("trial_"), record["genotype_id"])
    yield final_result(record, n + 1, objectives, sched, quality, TEMPLATE["node"])


def simulated_trial(config: dict[str, Any]) -> None:
    """A Tune trainable with the real trial's reports and final checkpoint, but no search."""
    from ray import tune

    final = Path(tune.get_context().get_trial_dir()) / "final"
    for res in simulated_reports(config, final, tune.get_context().get_trial_id()):
        checkpoint = tune.Checkpoint.from_directory(str(final)) if res[FINAL_KEY] else None
        tune.report(res, checkpoint=checkpoint)


def tiny_onnx(path: Path) -> None:
    """A valid one-node ONNX model (the template's real model is ~0.5 MB; thousands of copies
    would fill the disk, and the driver only hands the file to MLflow)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "tiny", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
    onnx.save(model, path)


# --------------------------------------------------------------------------------------------
# Timing the driver's hooks


class Timings:
    """Seconds (wall, and CPU of the driver's thread) spent in each part of the driver, with
    the number of rows the results table held at each call. ``details`` are steps inside the
    parts (not added to the driver's total)."""

    def __init__(self) -> None:
        self.calls: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
        self.details: dict[str, list[tuple[int, float, float]]] = defaultdict(list)
        self.table: Any = None
        #: The MLflow writer's figures (its CPU seconds, events), from the driver's drain.
        self.writer: dict[str, Any] = {}
        #: The Optuna study mirror's writer figures, from the driver's drain.
        self.study_writer: dict[str, Any] = {}

    def done(self) -> int:
        return len(self.table) if self.table is not None else 0

    def wrap(self, owner: Any, attr: str, part: str, detail: bool = False) -> None:
        """Replace ``owner.attr`` by a timed call that books its seconds to ``part`` (a step
        inside a part with ``detail``)."""
        original = getattr(owner, attr)
        book = self.details if detail else self.calls

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                dt, dc = time.perf_counter() - t, time.thread_time() - c
                book[part].append((self.done(), dt, dc))

        setattr(owner, attr, timed)


def skip_mlflow() -> None:
    """``--skip mlflow``: the MLflow callback and the end-of-sweep sync and registry do nothing
    (the parent run is still made), to measure the rest at sizes MLflow makes too slow here."""
    from sweeps import tracking
    from sweeps.tracking import callback

    for hook in ("on_trial_start", "on_trial_restore", "on_trial_result", "on_trial_complete",
                 "on_trial_error"):  # fmt: skip
        setattr(callback.MlflowCallback, hook, lambda self, *a, **kw: None)
    tracking.sync = lambda *a, **kw: 0
    tracking.register_front = lambda *a, **kw: {}


def instrument(timings: Timings) -> None:
    """Time every driver-side hook of the real classes (see the module docstring)."""
    from sweeps import driver, progress, tracking
    from sweeps.record import results
    from sweeps.schedule import searchers
    from sweeps.schedule.moasha import MOASHAScheduler
    from sweeps.tracking import callback

    original_init = results.ResultsTable.__init__

    def keep(self: Any, *a: Any, **kw: Any) -> None:
        original_init(self, *a, **kw)
        timings.table = self

    results.ResultsTable.__init__ = keep
    hooks = ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error")
    for cls, part in (
        (results.ResultsCallback, "results table"),
        (progress.ProgressCallback, "progress"),
        (callback.MlflowCallback, "mlflow"),
    ):
        for hook in (*hooks, "on_step_end"):
            if hook in vars(cls):
                timings.wrap(cls, hook, part)
    for hook in ("suggest", "on_trial_complete"):
        timings.wrap(searchers.FinalRecordOptunaSearch, hook, "optuna")
    for hook in ("on_trial_result", "on_trial_complete"):
        timings.wrap(MOASHAScheduler, hook, "mo-asha")
    for name, part in (
        ("reconcile", "end: reconcile"),
        ("report", "end: report"),
        ("unfinished_trials", "end: unfinished"),
    ):
        timings.wrap(driver, name, part)
    for name, part in (
        ("sync", "end: mlflow sync"),
        ("prune_orphans", "end: mlflow orphans"),
        ("register_front", "end: registry"),
    ):
        timings.wrap(tracking, name, part)
    timings.wrap(tracking.Tracker, "finish", "end: parent run")
    timings.wrap(callback.MlflowCallback, "close", "end: mlflow writer drain")
    instrument_details(timings)
    close = callback.MlflowCallback.close

    def keep_writer(self: Any) -> dict[str, Any]:
        figures = close(self)
        timings.writer = figures
        return figures

    callback.MlflowCallback.close = keep_writer
    from sweeps.schedule import study_mirror

    timings.wrap(study_mirror, "close_all", "end: optuna writer drain")
    close_all = study_mirror.close_all

    def keep_study_writer() -> dict[str, Any]:
        timings.study_writer = close_all()
        return timings.study_writer

    study_mirror.close_all = keep_study_writer


def instrument_details(timings: Timings) -> None:
    """Time the steps inside the Optuna part (suggest and tell). MLflow's writes happen in
    its writer process (:mod:`sweeps.tracking.writer`), whose CPU time is reported whole
    (``mlflow_writer``); the driver's MLflow part is handing events to it."""
    from sweeps.schedule import searchers

    for owner, attr, step in (
        (searchers.FinalRecordOptunaSearch, "suggest", "optuna: suggest"),
        (searchers.FinalRecordOptunaSearch, "on_trial_complete", "optuna: tell"),
    ):
        timings.wrap(owner, attr, step, detail=True)


# --------------------------------------------------------------------------------------------
# One size


def sweep_file(path: Path, trials: int, epochs: int, skip: Sequence[str] = ()) -> Path:
    """The smoke sweep with ``trials`` samples, MO-ASHA rungs at 1 and 2, no re-measurement
    (``skip`` optuna: Ray's random search instead)."""
    spec = yaml.safe_load(SMOKE.read_text())
    if "optuna" in skip:
        spec["searcher"] = {"kind": "random", "seed": 0}
    spec.update(
        name="scale",
        experiment="ssr-scale",
        num_samples=trials,
        max_concurrent=2,
        remeasure=False,
        budget={"search_epochs": epochs, "retrain_epochs": 0, "checkpoint_every": 1},
        scheduler={
            "kind": "moasha",
            "metric": "val_miou",
            "mode": "max",
            "cost_metric": "expected_gmacs",
            "cost_mode": "min",
            "grace_period": 1,
            "reduction_factor": 2,
        },
    )
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def growth(calls: list[tuple[int, float, float]], trials: int) -> float | None:
    """CPU seconds booked while the last tenth of the trials ended over those of the first
    tenth (per trial: about 1 when the cost per trial stays flat)."""
    tenth = max(1, trials // 10)
    first = sum(c for n, _, c in calls if n < tenth)
    last = sum(c for n, _, c in calls if n >= trials - tenth)
    return last / first if first > 0 and last > 0 else None


def page_figures(html: Path) -> dict[str, Any]:
    """Size of ``pareto.html`` and the time node takes to read it and compile its scripts."""
    out: dict[str, Any] = {"pareto_html_bytes": html.stat().st_size if html.is_file() else None}
    node = shutil.which("node")
    if node and html.is_file():
        code = (
            "const fs=require('fs');const t=process.hrtime.bigint();"
            "const s=fs.readFileSync(process.argv[1],'utf8');let n=0;"
            "for(const m of s.matchAll(/<script[^>]*>([\\s\\S]*?)<\\/script>/g)){new Function(m[1]);n++}"
            "console.log(JSON.stringify({ms:Number(process.hrtime.bigint()-t)/1e6,scripts:n}))"
        )
        proc = subprocess.run([node, "-e", code, str(html)], capture_output=True, text=True)
        if proc.returncode == 0:
            out["pareto_html_parse_ms"] = round(json.loads(proc.stdout)["ms"], 1)
    return out


def use_engine(engine: str) -> None:
    """Real Tune with :func:`simulated_trial`, or the driver's hooks called by
    :class:`scale_loop.LoopTuner` in place of ``Tuner.fit`` (see its docstring)."""
    import sweeps.trial
    from sweeps import driver

    sweeps.trial.run_trial = simulated_trial  # NOTE: make_tuner imports it at call time
    if engine == "loop":
        from scale_loop import LoopTuner

        def make_tuner(sweep: Any, storage: str, name: str, callbacks: list, *rest: Any) -> Any:
            run_dir = rest[2]  # NOTE: (resume, quiet, run_dir, retry_failed), as run_sweep passes
            return LoopTuner(sweep, storage, name, callbacks, run_dir, simulated_reports)

        driver.make_tuner = make_tuner


def run_one(
    trials: int, epochs: int, template: Path, keep: Path | None, engine: str, skip: Sequence[str]
) -> dict[str, Any]:
    """Run the real driver over ``trials`` simulated trials; timings per part."""
    from sweeps import run

    os.environ.update(ENV)
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ssr-scale-", dir=keep))
    tiny = tmp / "template"
    shutil.copytree(template, tiny, ignore=shutil.ignore_patterns("search", "retrain"))
    tiny_onnx(tiny / "model.onnx")
    TEMPLATE.update(dir=str(tiny), epochs=epochs, node="127.0.0.2")
    use_engine(engine)
    if "mlflow" in skip:
        skip_mlflow()
    timings = Timings()
    instrument(timings)
    spec = sweep_file(tmp / "scale.yaml", trials, epochs, skip)
    argv = ["--config", str(spec), "--storage", str(tmp / "runs"), "--name", "scale", "--insecure"]
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    with open(tmp / "driver.log", "w") as log:
        stdout, sys.stdout = sys.stdout, log
        try:
            code = run.main(argv)
        finally:
            sys.stdout = stdout
    wall = time.perf_counter() - t0
    run_dir = tmp / "runs" / "scale"
    result = summarize(timings, trials, wall, code)
    if code != 0:  # the figures of a sweep that stopped measure nothing: say why
        result["driver_log_tail"] = (tmp / "driver.log").read_text()[-1500:]
    result.update(page_figures(run_dir / "report" / "pareto.html"))
    size = (
        (run_dir / "results.parquet").stat().st_size
        if (run_dir / "results.parquet").exists()
        else 0
    )
    result.update(results_parquet_bytes=size, load_average_1min=[round(load0, 2),
                  round(os.getloadavg()[0], 2)])  # fmt: skip
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        result["kept"] = str(tmp)
    return result


def per_part(
    calls_of: dict[str, list[tuple[int, float, float]]], trials: int
) -> dict[str, dict[str, Any]]:
    """Total seconds, ms per trial (wall, CPU), calls and growth of each part."""
    parts: dict[str, Any] = {}
    for part, calls in sorted(calls_of.items()):
        total, cpu = sum(c[1] for c in calls), sum(c[2] for c in calls)
        parts[part] = {
            "total_s": round(total, 3),
            "cpu_s": round(cpu, 3),
            "ms_per_trial": round(1000 * total / trials, 3),
            "cpu_ms_per_trial": round(1000 * cpu / trials, 3),
            "calls": len(calls),
            "growth_last_over_first_tenth": _round(growth(calls, trials)),
        }
    return parts


def summarize(timings: Timings, trials: int, wall: float, code: int) -> dict[str, Any]:
    """Per part: total seconds, ms per trial, calls, growth; the driver overhead per trial."""
    parts = per_part(timings.calls, trials)
    during = sum(p["total_s"] for k, p in parts.items() if not k.startswith("end:"))
    end = sum(p["total_s"] for k, p in parts.items() if k.startswith("end:"))
    cpu = sum(p["cpu_s"] for p in parts.values())
    return {
        "trials": trials,
        "exit_code": code,
        "rows": timings.done(),
        "wall_s": round(wall, 2),
        "wall_ms_per_trial": round(1000 * wall / trials, 2),
        "driver_hooks_ms_per_trial": round(1000 * during / trials, 2),
        "after_fit_s": round(end, 2),
        "driver_overhead_ms_per_trial": round(1000 * (during + end) / trials, 2),
        "driver_overhead_cpu_ms_per_trial": round(1000 * cpu / trials, 2),
        "parts": parts,
        "details": per_part(timings.details, trials),
        **{
            key: {**figures, "cpu_ms_per_trial": round(1000 * figures.get("cpu_s", 0) / trials, 2)}
            for key, figures in (
                ("mlflow_writer", timings.writer),
                ("optuna_writer", timings.study_writer),
            )
        },
    }


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


# --------------------------------------------------------------------------------------------
# Several sizes, the table


def exponents(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Slope of log(total CPU seconds) over log(trials) per part, between consecutive sizes (CPU:
    wall time follows the machine's load, which changes between sizes); ``wall``: the whole
    run's wall time."""
    out: dict[str, Any] = {}
    for a, b in itertools.pairwise(results):
        key = f"{a['trials']}->{b['trials']}"
        ratio = math.log(b["trials"] / a["trials"])
        slopes = {}
        for part, pa in [*a["parts"].items(), *a.get("details", {}).items()]:
            pb = b["parts"].get(part) or b.get("details", {}).get(part)
            if pb and pa["cpu_s"] > 0 and pb["cpu_s"] > 0:
                slopes[part] = round(math.log(pb["cpu_s"] / pa["cpu_s"]) / ratio, 2)
        slopes["wall"] = round(math.log(b["wall_s"] / a["wall_s"]) / ratio, 2)
        out[key] = slopes
    return out


def table(results: list[dict[str, Any]], slopes: dict[str, Any]) -> str:
    """ms per trial for each part and size, growth within the largest size, slopes."""
    sizes = [r["trials"] for r in results]
    parts = sorted({p for r in results for p in r["parts"]})
    head = f"{'part (ms per trial)':<22}" + "".join(f"{n:>10}" for n in sizes)
    head += f"{'growth':>9}" + "".join(f"{k:>13}" for k in slopes)
    lines = [head]
    details = sorted({p for r in results for p in r.get("details", {})})
    for part in [*parts, *details]:
        key = "parts" if part in parts else "details"
        cells = [r.get(key, {}).get(part, {}).get("ms_per_trial") for r in results]
        g = results[-1].get(key, {}).get(part, {}).get("growth_last_over_first_tenth")
        name = part if key == "parts" else f"  {part.split(': ', 1)[-1]}"[:22]
        line = f"{name:<22}" + "".join(f"{c if c is not None else '-':>10}" for c in cells)
        line += f"{g if g is not None else '-':>9}"
        line += "".join(f"{s.get(part, '-')!s:>13}" for s in slopes.values())
        lines.append(line)
    for key in ("mlflow_writer", "optuna_writer"):
        cells = [r.get(key, {}).get("cpu_ms_per_trial", "-") for r in results]
        name = f"{key.replace('_', ' ')} CPU"
        lines.append(f"{name:<22}" + "".join(f"{c:>10}" for c in cells) + "  (own process)")
    for key in ("driver_overhead_ms_per_trial", "wall_ms_per_trial"):
        lines.append(
            f"{key[:-13].replace('_', ' '):<22}" + "".join(f"{r[key]:>10}" for r in results)
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, nargs="+", default=[100, 1000, 5000])
    p.add_argument("--epochs", type=int, default=3, help="per-epoch reports per trial")
    p.add_argument(
        "--engine",
        choices=("loop", "tune"),
        default="loop",
        help="loop: the driver's hooks in a stand-in for Tune's loop (benchmarks/scale_loop.py); "
        "tune: real Ray Tune (seconds per trial of Tune's own work on a small machine)",
    )
    p.add_argument(
        "--skip",
        nargs="+",
        choices=("mlflow", "optuna"),
        default=[],
        help="leave these parts out (MLflow: no logging; Optuna: Ray's random search), to reach "
        "sizes they make too slow on a small machine; their cost is measured at smaller sizes",
    )
    p.add_argument("--template", type=Path, help="a template folder to reuse (made if missing)")
    p.add_argument("--keep", type=Path, help="keep each size's run folder under this folder")
    p.add_argument("--timeout", type=float, default=7200, help="seconds per size")
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--one", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    template = args.template or Path(tempfile.gettempdir()) / "ssr-scale-template"
    if args.one:
        print(
            json.dumps(run_one(args.one, args.epochs, template, args.keep, args.engine, args.skip))
        )
        return 0
    make_template(template)
    results = []
    for n in args.trials:
        cmd = [sys.executable, __file__, "--one", str(n), "--epochs", str(args.epochs), "--engine", args.engine, *(["--skip", *args.skip] if args.skip else []),
               "--template", str(template)] + (["--keep", str(args.keep)] if args.keep else [])  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout,
                              env={**os.environ, **ENV}, start_new_session=True)  # fmt: skip
        if proc.returncode != 0:
            print(proc.stdout[-2000:], proc.stderr[-4000:], file=sys.stderr)
            return 1
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        if results[-1]["exit_code"] != 0:
            print(f"error: the sweep of {n} trials ended with exit status "
                  f"{results[-1]['exit_code']}:\n{results[-1].get('driver_log_tail', '')}\n"
                  f"{proc.stderr[-1500:]}", file=sys.stderr)  # fmt: skip
            return 1
        print(f"{n} trials: {results[-1]['wall_s']} s", file=sys.stderr, flush=True)
        if args.json:  # NOTE: after every size, so a long run that is stopped keeps the others
            args.json.write_text(json.dumps({"sizes": results}, indent=2) + "\n")
    slopes = exponents(results)
    print(table(results, slopes))
    summary = {
        "epochs_per_trial": args.epochs,
        "engine": args.engine,
        "skipped": args.skip,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "python": platform.python_version(),
        "sizes": results,
        "exponents": slopes,
    }
    print(json.dumps(summary))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
