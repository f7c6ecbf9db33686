"""The sweep after its checks: Tune fit, missing rows, exclusive re-measurement, sync, report.

Called by ``sweeps/run.py`` once the sweep file, dataset, tracking store and Ray are known to be
good. Steps (docs/architecture.md §4-§5; what the driver adds to Tune and MLflow: docs/stack.md §9):

1. ``Tuner.fit()`` (or ``Tuner.restore`` on ``--resume``), with the results and MLflow callbacks
   writing from the driver as trials end;
2. rows a killed driver never wrote are rebuilt from Tune's result grid (never lose data);
3. every unique genotype of a complete trial is re-measured alone, one after the other, all on one
   node (``fps_exclusive``, ...), cached in ``exclusive.json`` so a resume does not redo it, and
   logged back to its runs;
4. whatever MLflow missed (a server that went away) is synced from results.parquet;
5. the Pareto report goes to ``<run folder>/report/`` and its table to stdout, with the command
   to open the runs in the MLflow UI.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from ssr.config.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE
from ssr.files.atomic import write_json
from sweeps import tracking
from sweeps.contract.protocol import (
    COMPLETE,
    EARLY_STOPPED,
    EXCLUSIVE_FIELDS,
    EXCLUSIVE_TEXT_FIELDS,
    FAILED,
    STATUSES,
    trial_dirname,
)
from sweeps.define.definition import Sweep
from sweeps.progress import ProgressCallback
from sweeps.record.recovery import failed_trials, rebuild_rows, settle_failed
from sweeps.record.results import ResultsCallback, ResultsTable, result_trial_id, row_from_result
from sweeps.runtime.interrupts import Interrupts
from sweeps.runtime.rundir import EXCLUSIVE_FILE, REPORT_DIR, RESULTS_FILE, is_remote
from sweeps.tracking import MlflowCallback, Tracker

log = logging.getLogger("sweeps")


def make_tuner(
    sweep: Sweep,
    storage: str,
    name: str,
    callbacks: list[Any],
    resume: bool,
    quiet: bool,
    run_dir: Path | None = None,
    retry_failed: bool = False,
) -> Any:
    """A new Tuner, or the restored one of ``<storage>/<name>`` when resuming.

    With ``run_dir`` the Optuna study is stored (``<run_dir>/optuna.db`` unless the sweep file
    names a storage); a restored tuner reconnects to the study its searcher was pickled with.
    A restored tuner leaves failed trials failed (:func:`sweeps.record.recovery.settle_failed`) unless
    ``retry_failed``: then they resume from their last checkpoints. With ``preemptible`` in the
    sweep, a trial whose node is lost resumes from its last checkpoint on another node
    (:class:`sweeps.runtime.preemption.PreemptionCallback`).
    """
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from sweeps.runtime.preemption import PreemptionCallback
    from sweeps.runtime.restore import restore_tuner
    from sweeps.trial import run_trial

    r = sweep.spec.resources
    trainable = tune.with_resources(run_trial, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})
    all_callbacks = [JsonLoggerCallback(), CSVLoggerCallback(), *callbacks]
    if sweep.spec.preemptible:  # a lost node resumes its trials (sweeps/runtime/preemption.py)
        all_callbacks.append(PreemptionCallback(sweep.spec.max_resumes))
    path = f"{storage.rstrip('/')}/{name}"
    if resume and tune.Tuner.can_restore(path):
        if run_dir is not None and Path(path) == run_dir:  # a local folder (not s3:// ...)
            failed = failed_trials(run_dir, run_dir / RESULTS_FILE, sweep.spec.max_failures)
            settle_failed(run_dir, failed)
        return restore_tuner(path, trainable, all_callbacks, resume_errored=retry_failed)
    return tune.Tuner(
        trainable,
        param_space=sweep.param_space(),
        tune_config=tune.TuneConfig(
            search_alg=sweep.searcher(run_dir),
            scheduler=sweep.scheduler(),
            num_samples=sweep.spec.num_samples,
            max_concurrent_trials=sweep.spec.max_concurrent,
            trial_dirname_creator=trial_dirname,
            reuse_actors=True,  # NOTE: saves a process start and the torch import per trial
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=storage,
            verbose=0,  # progress: sweeps.progress.ProgressCallback
            callbacks=all_callbacks,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=sweep.spec.max_failures),
        ),
    )


def unfinished_trials(storage: str, name: str, table: ResultsTable | None = None) -> list[str]:
    """Trial ids the saved experiment state does not mark finished (an interrupted fit), less
    those with a row in ``table`` (Tune's state can list a failed trial as RUNNING,
    :mod:`sweeps.record.recovery`).

    NOTE: after an interrupted fit Tune's in-memory trials read TERMINATED (its cleanup stops
    them); the experiment state it saved just before says PENDING/RUNNING.
    """
    from ray.tune import ExperimentAnalysis

    try:
        analysis = ExperimentAnalysis(f"{storage.rstrip('/')}/{name}")
    except Exception as exc:  # no readable state: treat the fit as finished, keep going
        log.warning("cannot read Tune's experiment state: %s", exc)
        return []
    return [
        t.trial_id
        for t in analysis.trials
        if t.status not in ("TERMINATED", "ERROR") and (table is None or t.trial_id not in table)
    ]


def reconcile(table: ResultsTable, grid: Any, sweep_name: str) -> dict[str, Any]:
    """Fill rows missing from the table; return Tune's results by trial id."""
    results: dict[str, Any] = {}
    added = 0
    for res in grid:
        trial_id = result_trial_id(res)
        results[trial_id] = res
        if trial_id not in table:
            table.upsert(row_from_result(sweep_name, res))
            added += 1
    if added:
        log.info("rebuilt %d result rows from Tune's experiment state", added)
    table.write()
    return results


def remeasure(sweep: Sweep, table: ResultsTable, run_dir: Path, tracker: Tracker) -> int:
    """Exclusive FPS of every unique genotype: one Ray task, all genotypes interleaved.

    The genotypes are timed together in ``bench.repeats`` rotated passes (at least 2) on one
    device with nothing else running (docs/architecture.md §5), so that they are compared like for
    like and each keeps its spread. The values are cached in ``exclusive.json`` with the bench
    settings; when a resumed sweep adds genotypes, all are measured again together.
    """
    import ray

    from ssr.config import to_dict
    from sweeps.trial import measure_exclusive

    by_geno: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in table.rows():
        if row.get("status") == COMPLETE and row.get("genotype_id") and row.get("genotype"):
            by_geno[row["genotype_id"]].append(row)
    if not by_geno:
        return 0
    cache_path = run_dir / EXCLUSIVE_FILE
    cache: dict[str, Any] = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    bench = to_dict(sweep.base_config.bench)
    passes = max(2, int(bench.get("repeats") or 2))
    key = json.dumps({**bench, "interleaved_passes": passes}, sort_keys=True)
    if any(cache.get(g, {}).get("bench") != key for g in by_geno):
        r = sweep.spec.resources
        task = ray.remote(num_cpus=r.cpus_per_trial, num_gpus=1 if r.gpus_per_trial > 0 else 0)(
            measure_exclusive
        )
        genotypes = {g: rows[0]["genotype"] for g, rows in by_geno.items()}
        dataset = next(iter(by_geno.values()))[0].get("dataset") or "synthetic"
        print(
            f"re-measuring {len(genotypes)} unique genotype(s) exclusively at "
            f"{bench['batch']}x3x{bench['height']}x{bench['width']}, {passes} interleaved "
            "passes ...",
            flush=True,
        )
        try:
            values = ray.get(task.remote(genotypes, dataset, bench, r.cpus_per_trial, passes))
        except Exception as exc:  # the sweep's results stand without it; say so
            log.warning("exclusive re-measurement failed: %s", exc)
            values = {}
        for g, v in values.items():
            cache[g] = {"bench": key, **v}
        if values:
            write_json(cache_path, cache)
    measured = 0
    for g, rows in by_geno.items():
        values = cache.get(g)
        if not values or values.get("bench") != key:
            continue
        measured += 1
        ids = [row["trial_id"] for row in rows]
        numbers = {k: values[k] for k in EXCLUSIVE_FIELDS if k in values}
        texts = {k: str(values[k]) for k in EXCLUSIVE_TEXT_FIELDS if k in values}
        table.update_many(ids, {**numbers, **texts})
        tags = {
            "ssr.exclusive_device": str(values.get("exclusive_device")),
            "ssr.exclusive_node": str(values.get("exclusive_node")),
        }
        for t in ids:
            tracking.log_values(tracker, t, numbers, tags)
    table.write()
    return measured


def forget_failed(tracker: Tracker, trial_ids: list[str]) -> None:
    """Before failed trials run again: their child runs lose the error and take a new record."""
    for t in trial_ids:
        tracker.reopen(t)


def report(sweep: Sweep, table: ResultsTable, run_dir: Path) -> tuple[Any, str | None]:
    """Write ``report/`` with analysis.report and return (result, problem)."""
    from analysis.errors import AnalysisInputError
    from analysis.report import format_front_table, write_report

    try:
        result = write_report(table.frame(), sweep.report_objectives(), run_dir / REPORT_DIR)
    except AnalysisInputError as exc:
        return None, str(exc)
    print()
    print(format_front_table(result))
    return result, None


def run_sweep(
    sweep: Sweep,
    storage: str,
    name: str,
    run_dir: Path,
    tracker: Tracker,
    resume: bool,
    quiet: bool,
    retry_failed: bool = False,
    interrupts: Interrupts | None = None,
) -> int:
    """Fit, reconcile, re-measure, sync, report; returns the exit status.

    A trial that fails (it raised, its worker or its node died) is a result: its row and child
    run say ``failed`` with the error and the sweep goes on to the end. Only an interrupt of the
    driver (``interrupts`` received SIGINT/SIGTERM, or the fit itself raised) ends it early, with
    exit 130 and the command that resumes it. ``retry_failed`` (on resume): failed trials run
    again from their last checkpoints.
    """
    t0 = time.monotonic()
    table_path = run_dir / RESULTS_FILE
    objectives = sweep.report_objectives()
    table = ResultsTable(table_path, objectives)  # sweeps/run.py set a damaged file aside
    if resume:
        rebuild_rows(table, run_dir, name)
        if retry_failed:
            forget_failed(
                tracker, [r["trial_id"] for r in table.rows() if r.get("status") == FAILED]
            )
    results_cb = ResultsCallback(table, name)
    progress_cb = ProgressCallback(sweep, results_cb.table, tracker.varied, verbose=not quiet)
    mlflow_cb = MlflowCallback(tracker, results_cb.table)
    callbacks = [results_cb, progress_cb, mlflow_cb]  # NOTE: progress reads the rows just written
    try:
        tuner = make_tuner(sweep, storage, name, callbacks, resume, quiet, run_dir, retry_failed)
    except Exception as exc:  # a damaged Tune state on resume, a storage Tune cannot use
        tracker.finish({}, [], "FAILED")
        why = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        hint = (
            "; its tuner.pkl or experiment_state-*.json is damaged: start a new sweep (another "
            "--name) with the same --config"
            if resume
            else ""
        )
        print(
            f"error: Tune cannot run the sweep in {storage}/{name} ({why}){hint}", file=sys.stderr
        )
        return EXIT_UNREACHABLE if is_remote(storage) else EXIT_USAGE
    try:
        grid, stopped = _fit(tuner, tracker, interrupts or Interrupts())
    except BaseException:  # a second Ctrl-C: leave now, the resumed sweep's sync catches up
        mlflow_cb.writer.abandon()
        _study_writer(drain=False)
        raise
    mlflow_cb.close()  # NOTE: what the trials handed to MLflow is in before anything reads it
    _study_writer(drain=True)  # NOTE: and the Optuna study is whole before the report reads it
    if stopped:
        table = ResultsTable(table_path, objectives)  # what the callbacks wrote
        unfinished = unfinished_trials(storage, name, table)
        tracker.finish({}, [table_path] if table_path.is_file() else [], "KILLED")
        print(
            f"{stopped} with {len(unfinished)} unfinished trial(s); {len(table)} result "
            f"row(s) saved in {table_path}\ncontinue with: python sweeps/run.py --resume "
            f"--name {name} --storage {storage}",
            flush=True,
        )
        return EXIT_INTERRUPTED
    table = ResultsTable(table_path, objectives)  # what the callbacks wrote (whichever ran)
    _settle(sweep, table, reconcile(table, grid, name), run_dir, tracker)
    return _summarise(sweep, table, run_dir, tracker, time.monotonic() - t0)


def _study_writer(drain: bool) -> None:
    """Drain (or, interrupted, abandon) the writer of the Optuna study's mirror, if this driver
    has one (:mod:`sweeps.schedule.study_mirror`; not imported by sweeps without Optuna)."""
    mirror = sys.modules.get("sweeps.schedule.study_mirror")
    if mirror is not None:
        mirror.close_all() if drain else mirror.abandon_all()


def _fit(tuner: Any, tracker: Tracker, interrupts: Interrupts) -> tuple[Any, str]:
    """``tuner.fit()``: its result grid and "" when it ran to the end, else what stopped it (an
    interrupt of the driver, or Tune itself failing: the state on disk is resumable)."""
    grid, stopped = None, ""
    try:
        with interrupts.fit():
            grid = tuner.fit()
    except KeyboardInterrupt:
        tracker.finish({}, [], "KILLED")
        raise
    except Exception as exc:  # Tune itself failed (not a trial): the state on disk is resumable
        stopped = f"the Tune run stopped: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    if interrupts.received and not stopped:
        stopped = f"interrupted ({interrupts.received})"
    return grid, stopped


def _settle(
    sweep: Sweep, table: ResultsTable, results: dict[str, Any], run_dir: Path, tracker: Tracker
) -> None:
    """After the fit: exclusive re-measurement, MLflow synced with the table, orphans pruned."""
    if sweep.spec.remeasure:
        remeasure(sweep, table, run_dir, tracker)
    missing = tracking.sync(tracker, table, results)
    orphans = tracking.prune_orphans(tracker, set(results) | {r["trial_id"] for r in table.rows()})
    if orphans:
        log.info(
            "removed %d MLflow run(s) of trials the restored experiment never recorded: %s",
            len(orphans),
            ", ".join(orphans),
        )
    if missing:
        log.warning(
            "%d trial(s) are not in MLflow yet (server unreachable?); they are in %s; "
            "run again with --resume to sync them",
            missing,
            table.path,
        )


def _summarise(
    sweep: Sweep, table: ResultsTable, run_dir: Path, tracker: Tracker, wall_s: float
) -> int:
    """The report, the front in the registry, the parent run ended, the summary printed; the
    exit status (:data:`ssr.config.errors.EXIT_FAILED` when no trial completed)."""
    table_path = run_dir / RESULTS_FILE
    result, problem = report(sweep, table, run_dir)
    rows = table.rows()
    counts = {s: sum(1 for r in rows if r.get("status") == s) for s in STATUSES}
    summary = {"trials": len(rows), **counts, "wall_s": wall_s}
    aliases: dict[str, str] = {}
    if result is not None:
        summary["hypervolume"] = result.hypervolume
        # the front's architectures in MLflow's registry, aliases knee/most-accurate/fastest
        aliases = tracking.register_front(tracker, result.front, result.objectives)
    artifacts = [table_path] + ([run_dir / REPORT_DIR] if result is not None else [])
    tracker.finish(summary, artifacts, "FINISHED" if counts[COMPLETE] else "FAILED")

    print()
    print(
        f"results: {table_path}  ({len(rows)} trials: {counts[COMPLETE]} complete, "
        f"{counts[EARLY_STOPPED]} early-stopped, {counts[FAILED]} failed)"
    )
    if result is not None:
        print(f"report:  {result.paths['markdown']}  (plot: {result.paths['png']})")
        if aliases:
            named = ", ".join(f"{a} = v{v}" for a, v in aliases.items())
            print(f"models:  {tracker.experiment}-front in the MLflow registry ({named})")
    else:
        print(f"report:  not written ({problem})")
    front = result.front if result is not None else None  # the views: docs/mlflow.md
    print(tracking.view_lines(tracker, sweep.report_objectives(), front), flush=True)
    return EXIT_OK if counts[COMPLETE] else EXIT_FAILED
