"""The sweep's runs in MLflow: one parent per sweep, one nested child per trial, their ends.

The parent is tagged ``ssr.role=sweep``, ``ssr.sweep=<name>``; a child ``ssr.role=trial``,
``ssr.trial_id``, ``ssr.baseline`` and ``mlflow.parentRunId`` (docs/architecture.md §4). Runs are found
by these tags, never created twice: a resumed sweep reuses its parent and each trial's oldest
child. A child is named by its baseline and the values the sweep varied
(:func:`~sweeps.tracking.names.trial_label`) and holds as params only those values and the few
that define a run (:func:`~sweeps.tracking.names.defining_params`). A :class:`Tracker`
remembers what each child already holds (its params, the last logged epoch step, whether its
final record is in, its logged model) so that nothing is logged twice. The experiment is marked
as a model-training one, so the MLflow UI lists its runs first (:mod:`sweeps.tracking.ui`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ssr.config import ConfigError
from sweeps.params import flat_params
from sweeps.protocol import COMPLETE, EARLY_STOPPED, FAILED, is_finite_number
from sweeps.tracking.names import (
    baseline_of,
    defining_params,
    sampled_values,
    trial_label,
    trial_number,
)
from sweeps.tracking.store import Store, with_timeout
from sweeps.tracking.ui import mark_training

#: MLflow run status of a trial's child run, by the trial's status. An early-stopped trial ran
#: as it should (the scheduler ended it): FINISHED, told apart by its tag ``ssr.status``.
RUN_STATUS = {COMPLETE: "FINISHED", EARLY_STOPPED: "FINISHED", FAILED: "FAILED"}
#: Tag of a child run: the last per-epoch step it holds (a resume logs from the next one).
LAST_STEP_TAG = "ssr.last_step"


class Tracker:
    """MLflow client side of one sweep: the parent run, the child runs, what each holds."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        sweep: str,
        artifact_root: Path | None = None,
        varied: Sequence[str] | None = None,
    ) -> None:
        self.uri = uri
        self.experiment = experiment
        self.sweep = sweep
        self.artifact_root = artifact_root
        #: The sweep's keys that are sampled (not constant); None: every key of a trial's config.
        self.varied = list(varied) if varied is not None else None
        self.store = Store(uri)
        self.experiment_id: str = ""
        self.parent_id: str = ""
        self.children: dict[str, str] = {}  # trial_id -> run_id
        self.params_done: set[str] = set()  # runs whose params are known to be complete
        self.last_step: dict[str, int] = {}  # run_id -> last logged step
        self.final_logged: set[str] = set()  # trial ids whose final record is in MLflow
        self.models: dict[str, str] = {}  # trial_id -> logged model id
        self.numbers: dict[str, str] = {}  # trial_id -> its number in the sweep ("#08")

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment state: keep the settings, not the client
        keys = ("uri", "experiment", "sweep", "artifact_root", "varied")
        return {k: getattr(self, k, None) for k in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    @property
    def client(self) -> Any:
        """The ``MlflowClient`` of the store."""
        return self.store.client

    def varied_keys(self, config: Mapping[str, Any] | None) -> list[str]:
        """The keys of ``config`` the sweep varies."""
        return self.varied if self.varied is not None else list(sampled_values(config))

    def note_number(self, trial_id: str, tag: str | None) -> None:
        """Remember the trial's number from Tune's ``experiment_tag`` (for its run name)."""
        if trial_id not in self.numbers:
            number = trial_number(trial_id, tag)
            if number != trial_id:
                self.numbers[trial_id] = number

    def run_name(self, trial_id: str, config: Mapping[str, Any] | None) -> str:
        """The child run's name: ``ssr op=32 out=12 thr=.15 #08`` (the trial id without config;
        its number, else its id, at the end)."""
        if not config:
            return trial_id
        number = self.numbers.get(trial_id, trial_id)
        return trial_label(config, number, self.varied_keys(config))

    def _parent_filter(self) -> str:
        return f"tags.`ssr.role` = 'sweep' and tags.`ssr.sweep` = '{self.sweep}'"

    # ---- the sweep (parent) ----------------------------------------------------------------
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
                [self.experiment_id], self._parent_filter(), max_results=1
            )
            if found:
                self.parent_id = found[0].info.run_id
                self.load_children()

        self.store.call("looking up the sweep's parent run", find)
        return bool(self.parent_id)

    def start(
        self,
        params: Mapping[str, Any],
        tags: Mapping[str, str],
        artifacts: Iterable[Path],
        resume: bool = False,
    ) -> str:
        """Find or create the experiment and the sweep's parent run; returns its id.

        Raises :class:`~sweeps.tracking.store.TrackingError` when MLflow cannot be used, and
        ConfigError when a new sweep's name is already taken in the experiment (its runs would
        mix with this one's).
        """
        from mlflow.entities import RunStatus

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
            mark_training(self.client, self.experiment_id)
            found = self.client.search_runs(
                [self.experiment_id], self._parent_filter(), max_results=10
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
                self.load_children()
                return
            run = self.client.create_run(
                self.experiment_id,
                run_name=self.sweep,
                tags={"ssr.role": "sweep", "ssr.sweep": self.sweep, **tags},
            )
            self.parent_id = run.info.run_id
            self.store.log_params(self.parent_id, params, set())
            for path in artifacts:
                self.client.log_artifact(self.parent_id, str(path))

        with_timeout(setup, 60.0, self.uri)
        return self.parent_id

    def finish(self, metrics: Mapping[str, float], artifacts: Iterable[Path], status: str) -> None:
        """Log the sweep's summary and files to the parent run and end it with ``status``."""
        from mlflow.entities import Metric

        if not self.parent_id:
            return
        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if is_finite_number(v)]
        self.store.call(
            "logging the sweep summary",
            lambda: self.client.log_batch(self.parent_id, metrics=items),
        )
        for path in artifacts:
            p = Path(path)
            if p.is_dir():
                self.store.call(
                    f"uploading {p.name}",
                    lambda p=p: self.client.log_artifacts(self.parent_id, str(p), p.name),
                )
            elif p.is_file():
                self.store.call(
                    f"uploading {p.name}",
                    lambda p=p: self.client.log_artifact(self.parent_id, str(p)),
                )
        self.store.call(
            "ending the sweep run", lambda: self.client.set_terminated(self.parent_id, status)
        )

    # ---- the trials (children) -------------------------------------------------------------
    def load_children(self) -> None:
        """Read the parent's child runs: trial ids, last logged steps, final records."""
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
            # NOTE: runs logged before the tag existed hold the step as a metric
            step = int(float(run.data.tags.get(LAST_STEP_TAG) or run.data.metrics.get("step") or 0))
            self.last_step[run_id] = max(self.last_step.get(run_id, 0), step)
            if run.data.tags.get("ssr.final") == "1":
                self.final_logged.add(trial_id)

    def child(self, trial_id: str, config: dict[str, Any] | None) -> str | None:
        """The child run of ``trial_id`` (created with its params on first sight), or None
        while MLflow is unreachable."""
        if trial_id in self.children:
            run_id = self.children[trial_id]
            if config is not None and run_id not in self.params_done:  # reused on resume
                self.store.call(
                    f"logging the params of trial {trial_id}",
                    lambda: self.ensure_params(run_id, config),
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
            name = self.run_name(trial_id, config)
            if found:  # reused (resume): add the params an outage may have cut off
                run = found[0]
                have = set(run.data.params)
                if run.info.run_name == trial_id and name != trial_id:  # named before labels
                    self.client.update_run(run.info.run_id, name=name)
            else:
                have = set()
                tags = {
                    "mlflow.parentRunId": self.parent_id,
                    "ssr.role": "trial",
                    "ssr.trial_id": trial_id,
                    "ssr.sweep": self.sweep,
                }
                if config:
                    tags["ssr.baseline"] = baseline_of(config)
                run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
            if config is not None:
                self.ensure_params(run.info.run_id, config, have)
            return run.info.run_id

        box: list[str] = []
        self.store.call(f"creating the run of trial {trial_id}", lambda: box.append(create()))
        run_id = box[0] if box else None
        if run_id:
            self.children[trial_id] = run_id
            self.last_step.setdefault(run_id, 0)
        return run_id

    def ensure_params(
        self, run_id: str, config: dict[str, Any], have: set[str] | None = None
    ) -> None:
        """Log the trial's params (the varied and defining ``cfg.*`` values) that the run lacks
        (an outage may cut them off)."""
        if have is None:
            have = set(self.client.get_run(run_id).data.params)
        params = defining_params(flat_params(config), self.varied_keys(config))
        self.store.log_params(run_id, params, have)
        self.params_done.add(run_id)

    def end_child(self, trial_id: str, status: str) -> bool:
        """Mark the trial's final record as logged (tag ``ssr.final``) and end its run."""
        run_id = self.children.get(trial_id)
        if not run_id:
            return False
        if not self.store.call(
            f"ending the run of {trial_id}",
            lambda: (
                self.client.set_tag(run_id, "ssr.final", "1"),
                self.client.set_terminated(run_id, RUN_STATUS.get(status, "FAILED")),
            ),
        ):
            return False
        self.final_logged.add(trial_id)
        return True
