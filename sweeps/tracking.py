"""MLflow tracking of a sweep, written from the driver (design.md §4, anchors.md §3.1-§3.5).

One parent run per sweep (tag ``ssr.role=sweep``, ``ssr.sweep=<name>``) and one nested child run
per trial (tag ``ssr.role=trial``, ``ssr.trial_id``, ``mlflow.parentRunId``), all created by a
Tune :class:`~ray.tune.Callback` in the driver: one writer (SQLite never locks) and workers need
no route to the tracking server. A child holds the flattened trial config as params
``cfg.<key>``, the per-epoch metrics (step = training iteration), the final record as metrics
named like the record's numeric columns and tags ``ssr.<column>`` for its text fields, and the
trial's artifacts taken from its final Tune checkpoint (genotype, history, prune events, summary,
ONNX) plus a drawing of the architecture.

Resuming reuses runs: the parent is found by tag ``ssr.sweep`` and children by ``ssr.trial_id``
under it, never created twice. A tracking server that goes away mid-sweep costs no data: the
failure is logged once, MLflow is left alone for a while, and everything not yet logged is
synced at the end of the sweep (or on ``--resume``) from results.parquet and Tune's checkpoints.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ray.tune import Callback

from ssr.config import ConfigError
from sweeps.dims import flat_params
from sweeps.results import EXCLUSIVE_FIELDS, NUMERIC_FIELDS, ResultsTable, genotype_json
from sweeps.spec import FINAL_KEY
from sweeps.trial import FINAL_ARTIFACTS

log = logging.getLogger(__name__)

ARTIFACT_FILES = FINAL_ARTIFACTS  # what a trial's final checkpoint carries
#: Tune bookkeeping keys that are not metrics of the trial.
_SKIP = frozenset(
    {
        "timestamp", "pid", "done", "training_iteration", "time_since_restore",
        "iterations_since_restore", "trial_id", "date", "hostname", "node_ip", "experiment_tag",
        "config", "checkpoint_dir_name", "should_checkpoint", FINAL_KEY,
    }
)  # fmt: skip
_TAG_COLUMNS = (
    "genotype_id", "trial_id", "sweep", "status", "node", "device", "precision", "input_size",
    "dataset", "error",
)  # fmt: skip
_ROW_METRICS = (*NUMERIC_FIELDS, *EXCLUSIVE_FIELDS, "completion_order", "iterations", "wall_s")
_STATUS = {"complete": "FINISHED", "early_stopped": "KILLED", "failed": "FAILED"}
OFFLINE_S = 60.0


class TrackingError(RuntimeError):
    """The tracking store cannot be reached or used; the message says what to do."""


def default_uri(run_dir: Path) -> str:
    """The embedded default: a SQLite store in the run folder."""
    return f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}"


def probe(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (seconds) when ``uri`` cannot serve MLflow; raises :class:`TrackingError`."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        url = uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                ok = resp.status == 200
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise TrackingError(
                f"MLflow tracking server {uri} is unreachable ({getattr(exc, 'reason', exc)}); "
                "start it (e.g. mlflow server --host 127.0.0.1 --port 5000 --workers 1) or leave "
                "out --tracking-uri to use the SQLite store in the run folder"
            ) from None
        if not ok:
            raise TrackingError(f"MLflow tracking server {uri}: {url} did not answer 200 OK")
    elif scheme in ("", "file"):
        raise TrackingError(
            f"tracking URI {uri!r}: MLflow 3.17 refuses file stores; use sqlite:////abs/path/mlflow.db "
            "or an http(s):// server"
        )
    elif scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        if not db.is_absolute():
            raise TrackingError(
                f"tracking URI {uri!r}: give an absolute path (sqlite:////abs/mlflow.db)"
            )
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking URI {uri!r}: cannot create {db.parent}: {exc}") from None
    _with_timeout(lambda: _client(uri).search_experiments(max_results=1), 30.0, uri)


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # NOTE: mlflow sets INFO on import
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return MlflowClient(tracking_uri=uri)


def _with_timeout(fn: Callable[[], Any], seconds: float, uri: str) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except Exception as exc:
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    if t.is_alive():
        raise TrackingError(f"MLflow at {uri} did not answer within {seconds:.0f} s")
    if isinstance(box.get("error"), ConfigError):
        raise box["error"]
    if "error" in box:
        raise TrackingError(f"MLflow at {uri} cannot be used: {box['error']}")
    return box.get("value")


def _scalar(v: Any, limit: int = 6000) -> str:
    text = json.dumps(v) if isinstance(v, (list, dict)) else str(v)
    return text[:limit]


class Tracker:
    """MLflow client side of one sweep: parent run, child runs, resilient logging."""

    def __init__(self, uri: str, experiment: str, sweep: str, artifact_root: Path | None = None):
        self.uri = uri
        self.experiment = experiment
        self.sweep = sweep
        self.artifact_root = artifact_root
        self.client = _client(uri)
        self.experiment_id: str = ""
        self.parent_id: str = ""
        self.children: dict[str, str] = {}  # trial_id -> run_id
        self._params_done: set[str] = set()  # runs whose params are known to be complete
        self.last_step: dict[str, int] = {}  # run_id -> last logged step
        self.final_logged: set[str] = set()  # trial ids whose final record is in MLflow
        self._offline_until = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment state: keep the settings, not the client
        return {k: getattr(self, k) for k in ("uri", "experiment", "sweep", "artifact_root")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def attach(self) -> bool:
        """Find the experiment and the sweep's parent run (created by :meth:`start`)."""
        if self.parent_id:
            return True

        def find() -> None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                return
            self.experiment_id = exp.experiment_id
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`ssr.role` = 'sweep' and tags.`ssr.sweep` = '{self.sweep}'",
                max_results=1,
            )
            if found:
                self.parent_id = found[0].info.run_id
                self._load_children()

        self._call("looking up the sweep's parent run", find)
        return bool(self.parent_id)

    # ---- resilience ------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]) -> bool:
        """Run one MLflow operation; on failure warn, go offline for a while, return False."""
        if time.monotonic() < self._offline_until:
            return False
        try:
            fn()
            return True
        except Exception as exc:
            self._offline_until = time.monotonic() + OFFLINE_S
            log.warning(
                "MLflow (%s) failed while %s: %s; results stay in results.parquet and Tune "
                "storage and are synced at the end of the sweep (or on --resume)",
                self.uri,
                what,
                exc,
            )
            return False

    @property
    def online(self) -> bool:
        return time.monotonic() >= self._offline_until

    # ---- sweep (parent) --------------------------------------------------------------------
    def start(
        self,
        params: dict[str, Any],
        tags: dict[str, str],
        artifacts: Iterable[Path],
        resume: bool = False,
    ) -> str:
        """Find or create the experiment and the sweep's parent run.

        Raises :class:`TrackingError` when MLflow cannot be used, and ConfigError when a new
        sweep's name is already taken in the experiment (its runs would mix with this one's).
        """
        from mlflow.entities import Param, RunStatus

        def setup() -> None:
            exp = self.client.get_experiment_by_name(self.experiment)
            if exp is None:
                location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
                try:
                    self.experiment_id = self.client.create_experiment(
                        self.experiment, artifact_location=location
                    )
                except Exception:  # created concurrently by another sweep
                    exp = self.client.get_experiment_by_name(self.experiment)
                    if exp is None:
                        raise
            if exp is not None:
                if exp.lifecycle_stage == "deleted":
                    self.client.restore_experiment(exp.experiment_id)
                self.experiment_id = exp.experiment_id
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`ssr.role` = 'sweep' and tags.`ssr.sweep` = '{self.sweep}'",
                max_results=10,
            )
            if found and not resume:
                raise ConfigError(
                    f"MLflow experiment {self.experiment!r} at {self.uri} already has a sweep "
                    f"named {self.sweep!r}: pass --resume to continue it or choose another --name"
                )
            if found:
                self.parent_id = found[0].info.run_id
                self.client.update_run(
                    self.parent_id, status=RunStatus.to_string(RunStatus.RUNNING)
                )
                self._load_children()
                return
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.sweep,
                tags={"ssr.role": "sweep", "ssr.sweep": self.sweep, **tags},
            )
            self.parent_id = run.info.run_id
            items = [Param(k, _scalar(v)) for k, v in params.items()]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.parent_id, params=items[i : i + 100])
            for path in artifacts:
                self.client.log_artifact(self.parent_id, str(path))

        _with_timeout(setup, 60.0, self.uri)
        return self.parent_id

    def _load_children(self) -> None:
        runs = []
        token = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id],
                f"tags.`mlflow.parentRunId` = '{self.parent_id}'",
                max_results=1000,
                page_token=token,
            )
            runs.extend(page)
            token = page.token
            if not token:
                break
        for run in sorted(runs, key=lambda r: r.info.start_time or 0):
            trial_id = run.data.tags.get("ssr.trial_id")
            if not trial_id:
                continue
            run_id = self.children.setdefault(trial_id, run.info.run_id)
            if run_id != run.info.run_id:  # NOTE: the oldest run of a trial is the one kept
                continue
            step = int(run.data.metrics.get("step") or 0)
            self.last_step[run_id] = max(self.last_step.get(run_id, 0), step)
            if run.data.tags.get("ssr.final") == "1":
                self.final_logged.add(trial_id)

    def finish(self, metrics: dict[str, float], artifacts: Iterable[Path], status: str) -> None:
        """Log the sweep's summary and files to the parent run and end it."""
        from mlflow.entities import Metric

        if not self.parent_id:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if _finite(v)]
        self._call(
            "logging the sweep summary",
            lambda: self.client.log_batch(self.parent_id, metrics=items),
        )
        for path in artifacts:
            p = Path(path)
            if p.is_dir():
                self._call(
                    f"uploading {p.name}",
                    lambda p=p: self.client.log_artifacts(self.parent_id, str(p), p.name),
                )
            elif p.is_file():
                self._call(
                    f"uploading {p.name}",
                    lambda p=p: self.client.log_artifact(self.parent_id, str(p)),
                )
        self._call(
            "ending the sweep run", lambda: self.client.set_terminated(self.parent_id, status)
        )

    # ---- trials (children) -----------------------------------------------------------------
    def child(self, trial_id: str, config: dict[str, Any] | None) -> str | None:
        """The child run of ``trial_id`` (created with its params on first sight)."""

        if trial_id in self.children:
            run_id = self.children[trial_id]
            if config is not None and run_id not in self._params_done:  # reused on resume
                self._call(
                    f"logging the params of trial {trial_id}",
                    lambda: self._ensure_params(run_id, config),
                )
            return run_id
        if not self.attach():
            return None

        def create() -> str:
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`mlflow.parentRunId` = '{self.parent_id}' and tags.`ssr.trial_id` = '{trial_id}'",
                max_results=1,
            )
            if found:  # reused (resume): add the params an outage may have cut off
                run = found[0]
                have = set(run.data.params)
            else:
                have = set()
                run = self.client.create_run(
                    self.experiment_id,
                    run_name=trial_id,
                    tags={
                        "mlflow.parentRunId": self.parent_id,
                        "ssr.role": "trial",
                        "ssr.trial_id": trial_id,
                        "ssr.sweep": self.sweep,
                    },
                )
            if config is not None:
                self._ensure_params(run.info.run_id, config, have)
            return run.info.run_id

        box: list[str] = []
        self._call(f"creating the run of trial {trial_id}", lambda: box.append(create()))
        run_id = box[0] if box else None
        if run_id:
            self.children[trial_id] = run_id
            self.last_step.setdefault(run_id, 0)
        return run_id

    def _ensure_params(
        self, run_id: str, config: dict[str, Any], have: set[str] | None = None
    ) -> None:
        """Log the trial's ``cfg.*`` params that the run lacks (an outage may cut them off)."""
        from mlflow.entities import Param

        if have is None:
            have = set(self.client.get_run(run_id).data.params)
        params = flat_params(config).items()
        items = [Param(k, _scalar(v)) for k, v in params if k not in have]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])
        self._params_done.add(run_id)

    def log_epoch(self, trial_id: str, config: dict[str, Any], result: dict[str, Any]) -> bool:
        """Per-epoch metrics at the pipeline's epoch step (the training iteration; a step that a
        resumed trial reports again is skipped). False when MLflow could not take them."""
        from mlflow.entities import Metric

        run_id = self.child(trial_id, config)
        if not run_id:
            return False
        step = int(result.get("step") or result.get("training_iteration") or 0)
        if step <= self.last_step.get(run_id, 0):
            return True
        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, step)
            for k, v in result.items()
            if k not in _SKIP and "/" not in k and _finite(v)
        ]
        ok = self._call(
            f"logging epoch metrics of {trial_id}",
            lambda: self.client.log_batch(run_id, metrics=items),
        )
        if ok:
            self.last_step[run_id] = step
        return ok

    def log_final(
        self, row: dict[str, Any], config: dict[str, Any] | None, checkpoint: Any
    ) -> bool:
        """The final record (metrics, ``ssr.*`` tags), artifacts, and the run's end status."""
        from mlflow.entities import Metric, RunTag

        trial_id = row["trial_id"]
        run_id = self.child(trial_id, config)
        if not run_id:
            return False
        step = max(int(row.get("iterations") or 0), self.last_step.get(run_id, 0))
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(row[k]), now, step) for k in _ROW_METRICS if _finite(row.get(k))]
        tags = [
            RunTag(f"ssr.{k}", str(row[k])[:5000])
            for k in _TAG_COLUMNS
            if row.get(k) not in (None, "")
        ]
        geno = genotype_json(row)
        if geno:
            tags.append(RunTag("ssr.genotype", geno[:7500]))
        if row.get("fps_shared_device") is not None:
            tags.append(
                RunTag("ssr.fps_shared_device", str(bool(row["fps_shared_device"])).lower())
            )
        if not self._call(
            f"logging the record of {trial_id}",
            lambda: self.client.log_batch(run_id, metrics=metrics, tags=tags),
        ):
            return False
        if checkpoint is not None and not self._log_artifacts(run_id, row, checkpoint):
            return False
        if not self._call(
            f"ending the run of {trial_id}",
            lambda: (
                self.client.set_tag(run_id, "ssr.final", "1"),
                self.client.set_terminated(run_id, _STATUS.get(row["status"], "FAILED")),
            ),
        ):
            return False
        self.final_logged.add(trial_id)
        return True

    def _log_artifacts(self, run_id: str, row: dict[str, Any], checkpoint: Any) -> bool:
        def upload() -> None:
            with checkpoint.as_directory() as d, tempfile.TemporaryDirectory() as tmp:
                src = Path(d)
                for name in ARTIFACT_FILES:
                    if (src / name).is_file():
                        self.client.log_artifact(run_id, str(src / name))
                geno = src / "genotype.json"
                if geno.is_file():
                    from sweeps.archplot import draw_genotype

                    title = f"{row.get('trial_id')}  genotype {row.get('genotype_id', '')}"
                    png = draw_genotype(geno, Path(tmp) / "architecture.png", title=title)
                    self.client.log_artifact(run_id, str(png))

        return self._call(f"uploading the artifacts of {row.get('trial_id')}", upload)

    def log_values(self, trial_id: str, values: dict[str, Any], tags: dict[str, str]) -> None:
        """Extra metrics and tags on a child run (the exclusive re-measurement)."""
        from mlflow.entities import Metric, RunTag

        run_id = self.children.get(trial_id)
        if not run_id:
            return
        step = self.last_step.get(run_id, 0)
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(v), now, step) for k, v in values.items() if _finite(v)]
        rtags = [RunTag(k, str(v)) for k, v in tags.items()]
        self._call(
            f"logging exclusive measurements of {trial_id}",
            lambda: self.client.log_batch(run_id, metrics=metrics, tags=rtags),
        )

    def sync(self, table: ResultsTable, results: dict[str, Any]) -> int:
        """Log every row whose final record is not in MLflow yet, with the per-epoch history a
        tracking outage missed (from Tune's ``progress.csv``); returns how many are missing.

        ``results`` maps trial ids to Tune ``Result`` objects (config, checkpoint, history).
        """
        self._offline_until = 0.0
        if self.attach():  # NOTE: another copy of the callback may have logged meanwhile
            self._call("listing the sweep's runs", self._load_children)
        missing = 0
        for row in table.rows():
            t = row["trial_id"]
            if t in self.final_logged:
                continue
            res = results.get(t)
            config = getattr(res, "config", None)
            if not self._backfill(t, config, res, int(row.get("iterations") or 0)):
                missing += 1
                continue
            checkpoint = (
                getattr(res, "checkpoint", None) if row.get("status") == "complete" else None
            )
            if not self.log_final(row, config, checkpoint):
                missing += 1
        return missing

    def prune_orphans(self, known: set[str]) -> list[str]:
        """Soft-delete child runs of trials that Tune never recorded (returns their ids).

        A driver killed between starting a trial and Tune's next experiment snapshot leaves a
        run whose trial the restored experiment does not know: the resumed search runs that
        point again under a new trial id. The orphan (no final record, partial metrics) is
        tagged ``ssr.orphan`` and deleted (MLflow keeps it restorable until ``mlflow gc``).
        """
        from mlflow.entities import RunStatus

        if not self._call("listing the sweep's runs", self._load_children):
            return []
        orphans = [t for t in self.children if t not in known and t not in self.final_logged]
        for t in orphans:
            run_id = self.children[t]

            def drop(run_id: str = run_id) -> None:
                self.client.set_tag(run_id, "ssr.orphan", "1")
                self.client.set_terminated(run_id, RunStatus.to_string(RunStatus.KILLED))
                self.client.delete_run(run_id)

            if self._call(f"removing the orphaned run of trial {t}", drop):
                del self.children[t]
        return orphans

    def _backfill(self, trial_id: str, config: Any, result: Any, last: int) -> bool:
        run_id = self.child(trial_id, config)
        if not run_id:
            return False
        if result is None or self.last_step.get(run_id, 0) >= last - 1:
            return True
        try:
            history = result.metrics_dataframe
        except Exception as exc:  # no progress.csv: the final record still gets logged
            log.warning("no per-epoch history for trial %s: %s", trial_id, exc)
            return True
        if history is None:
            return True
        for rec in history.to_dict("records"):
            if rec.get(FINAL_KEY) != 1.0 and not self.log_epoch(trial_id, config, rec):
                return False
        return True


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class MlflowCallback(Callback):
    """Tune callback (driver side): child runs, per-epoch metrics, final records, artifacts."""

    def __init__(self, tracker: Tracker, table: ResultsTable) -> None:
        self.tracker = tracker
        self.table = table

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.child(trial.trial_id, trial.config)

    def on_trial_restore(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.tracker.child(trial.trial_id, trial.config)

    def on_trial_result(
        self, iteration: int, trials: list[Any], trial: Any, result: dict[str, Any], **info: Any
    ) -> None:
        if result.get(FINAL_KEY) != 1.0:  # the final record is logged from the row, once
            self.tracker.log_epoch(trial.trial_id, trial.config, result)

    def _final(self, trial: Any) -> None:
        row = self.table.get(trial.trial_id)
        if row is not None:
            checkpoint = trial.checkpoint if row.get("status") == "complete" else None
            self.tracker.log_final(row, trial.config, checkpoint)

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._final(trial)

    def on_trial_error(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self._final(trial)
