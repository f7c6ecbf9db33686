"""The sweep's runs in MLflow: one parent per sweep, one nested child per trial, their ends.

The parent is tagged ``ssr.role=sweep``, ``ssr.sweep=<name>``; a child ``ssr.role=trial``,
``ssr.trial_id``, ``ssr.baseline`` and ``mlflow.parentRunId`` (docs/architecture.md §4). Runs are found
by these tags, never created twice: a resumed sweep reuses its parent and each trial's oldest
child. A child is named by its baseline and the values the sweep varied
(:func:`~sweeps.tracking.names.trial_label`) and holds as params only those values and the few
that define a run (:func:`~sweeps.tracking.names.defining_params`). What each child already
holds (its params, the last logged epoch step, whether its final record is in, its logged model)
is in the tracker's run book (:mod:`sweeps.tracking.book`), so that nothing is logged twice. The
experiment is marked as a model-training one, so the MLflow UI lists its runs first
(:mod:`sweeps.tracking.ui`).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from sweeps.contract.params import flat_params
from sweeps.contract.protocol import COMPLETE, EARLY_STOPPED, FAILED, is_finite_number
from sweeps.tracking.book import RunBook
from sweeps.tracking.names import (
    baseline_of,
    defining_params,
    sampled_values,
    trial_label,
    trial_number,
)
from sweeps.tracking.store import NameTaken, Store, with_timeout
from sweeps.tracking.ui import mark_training

#: MLflow run status of a trial's child run, by the trial's status. An early-stopped trial ran
#: as it should (the scheduler ended it): FINISHED, told apart by its name and tag ``ssr.status``.
RUN_STATUS = {COMPLETE: "FINISHED", EARLY_STOPPED: "FINISHED", FAILED: "FAILED"}


class Tracker:
    """MLflow client side of one sweep: the parent run, the child runs and their run book."""

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
        #: What each trial's child run holds (:mod:`sweeps.tracking.book`).
        self.book = RunBook()
        #: ``store.failures`` when the book last held every child run of the sweep (a new
        #: sweep's parent, or the children read whole), and every logged model (a new sweep
        #: only); None: it may not. While it holds, a trial missing from the book has no run
        #: (model) yet, and making one needs no search first (:meth:`knows_all`).
        self._runs_known_at: int | None = None
        self._models_known_at: int | None = None

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
        number = trial_number(trial_id, tag)
        if number != trial_id:
            self.book.note_number(trial_id, number)

    def run_name(self, trial_id: str, config: Mapping[str, Any] | None) -> str:
        """The child run's name: ``ssr op=32 out=12 thr=.15 #08`` (the trial id without config;
        its number, else its id, at the end)."""
        if not config:
            return trial_id
        number = self.book.number(trial_id) or trial_id
        return trial_label(config, number, self.varied_keys(config))

    def knows_all(self, what: str = "runs") -> bool:
        """True while the run book holds every child run (``what="models"``: every logged
        model) of the sweep: nothing failed since it did, so nothing may have landed unseen."""
        known = self._runs_known_at if what == "runs" else self._models_known_at
        return known is not None and known == self.store.failures

    def assume_no_models(self) -> None:
        """Hold that the sweep has no logged model yet (a new sweep's MLflow writer, told so by
        the driver that made the parent run): no search before making each trial's model."""
        self._models_known_at = self.store.failures

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

        Raises :class:`~sweeps.tracking.store.TrackingError` when MLflow cannot be used, and its
        kind :class:`~sweeps.tracking.store.NameTaken` when a new sweep's name is already taken
        in the experiment (its runs would mix with this one's).
        """
        from mlflow.entities import RunStatus

        def setup() -> None:
            self.experiment_id = self._experiment()
            mark_training(self.client, self.experiment_id)
            found = self.client.search_runs(
                [self.experiment_id], self._parent_filter(), max_results=10
            )
            if found and not resume:
                raise NameTaken(
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
            self._runs_known_at = self._models_known_at = self.store.failures  # a new sweep
            self.store.log_params(self.parent_id, params, set())
            for path in artifacts:
                self.client.log_artifact(self.parent_id, str(path))

        with_timeout(setup, 60.0, self.uri)
        return self.parent_id

    def _experiment(self) -> str:
        """The id of the sweep's experiment, created (or restored from the bin) if need be."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            location = self.artifact_root.resolve().as_uri() if self.artifact_root else None
            try:
                return self.client.create_experiment(self.experiment, artifact_location=location)
            except Exception:  # created concurrently by another sweep
                exp = self.client.get_experiment_by_name(self.experiment)
                if exp is None:
                    raise
        if exp.lifecycle_stage == "deleted":
            self.client.restore_experiment(exp.experiment_id)
        return exp.experiment_id

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
        """Read the parent's child runs into the run book: trial ids, the last step each holds
        (the largest step of its metrics), final records."""
        failures = self.store.failures
        self._models_known_at = None  # NOTE: another copy of the callback may have made some
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
            if trial_id:  # NOTE: the oldest run of a trial is the one kept
                final = run.data.tags.get("ssr.final") == "1"
                self.book.add(trial_id, run.info.run_id, last_metric_step(run), final)
        self._runs_known_at = failures

    def stored_step(self, run_id: str) -> int | None:
        """The last step the run holds in the store (None: the store cannot answer now)."""
        return self.store.fetch(
            "reading a run's last step", lambda: last_metric_step(self.client.get_run(run_id))
        )

    def last_step(self, trial_id: str) -> int | None:
        """The last step the trial's run holds (None: unknown, the store cannot answer now)."""
        run_id = self.book.run_id(trial_id)
        if run_id is None:
            return None
        return self.book.last_step(trial_id, lambda: self.stored_step(run_id))

    def log_step(self, trial_id: str, step: int, what: str, log: Any) -> bool:
        """``log(run_id)`` at ``step`` unless the trial's run holds that step already; once
        (:meth:`~sweeps.tracking.book.RunBook.log_step`). False when MLflow could not take it."""
        run_id = self.book.run_id(trial_id)
        if run_id is None:
            return False
        return self.book.log_step(
            trial_id,
            step,
            lambda: self.store.call(what, lambda: log(run_id)),
            lambda: self.stored_step(run_id),
        )

    def child(self, trial_id: str, config: dict[str, Any] | None) -> str | None:
        """The child run of ``trial_id`` (created with its params on first sight), or None
        while MLflow is unreachable."""
        run_id = self.book.run_id(trial_id)
        if run_id is not None:
            if config is not None and not self.book.params_done(trial_id):  # reused on resume
                self.store.call(
                    f"logging the params of trial {trial_id}",
                    lambda: self.ensure_params(trial_id, run_id, config),
                )
            return run_id
        if not self.attach():
            return None
        found = self.store.fetch(
            f"creating the run of trial {trial_id}", lambda: self._create(trial_id, config)
        )
        if found is None:
            return None
        run_id, have, last_step = found
        run_id = self.book.add(trial_id, run_id, last_step)
        if config is not None:
            self.store.call(
                f"logging the params of trial {trial_id}",
                lambda: self.ensure_params(trial_id, run_id, config, have),
            )
        return run_id

    def _create(self, trial_id: str, config: dict[str, Any] | None) -> tuple[str, set[str], int]:
        """The trial's run (found again on resume, else created), the params it has and the last
        step it holds."""
        found = []
        if not self.knows_all("runs"):  # NOTE: a new trial of a new sweep has no run to find
            found = self.client.search_runs(
                [self.experiment_id],
                f"tags.`mlflow.parentRunId` = '{self.parent_id}' and "
                f"tags.`ssr.trial_id` = '{trial_id}'",
                max_results=1,
            )
        name = self.run_name(trial_id, config)
        if found:  # reused (resume): add the params an outage may have cut off
            run = found[0]
            if run.info.run_name == trial_id and name != trial_id:  # named before labels
                self.client.update_run(run.info.run_id, name=name)
            return run.info.run_id, set(run.data.params), last_metric_step(run)
        tags = {
            "mlflow.parentRunId": self.parent_id,
            "ssr.role": "trial",
            "ssr.trial_id": trial_id,
            "ssr.sweep": self.sweep,
        }
        if config:
            tags["ssr.baseline"] = baseline_of(config)
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        return run.info.run_id, set(), 0

    def ensure_params(
        self, trial_id: str, run_id: str, config: dict[str, Any], have: set[str] | None = None
    ) -> None:
        """Log the trial's params (the varied and defining ``cfg.*`` values) that the run lacks
        (an outage may cut them off)."""
        if have is None:
            have = set(self.client.get_run(run_id).data.params)
        params = defining_params(flat_params(config), self.varied_keys(config))
        self.store.log_params(run_id, params, have)
        self.book.mark_params(trial_id)

    def end_child(self, trial_id: str, status: str, step: int, name: str | None = None) -> bool:
        """Mark the trial's final record as logged at ``step`` (tag ``ssr.final``), rename the
        run when ``name`` is given, and end it."""
        run_id = self.book.run_id(trial_id)
        if not run_id:
            return False

        def end() -> None:
            from mlflow.entities import RunTag

            # NOTE: one batch; the store renames the run when it sets ``mlflow.runName``
            # (``update_run`` would read the whole run first)
            tags = [RunTag("ssr.final", "1")]
            if name is not None:
                tags.append(RunTag("mlflow.runName", name))
            self.client.log_batch(run_id, tags=tags)
            self.client.set_terminated(run_id, RUN_STATUS.get(status, "FAILED"))

        if not self.store.call(f"ending the run of {trial_id}", end):
            return False
        self.book.mark_final(trial_id, step)
        return True

    def reopen(self, trial_id: str) -> None:
        """Before a failed trial runs again: its run loses the error and takes a new record."""
        from mlflow.entities import RunStatus

        self.book.reopen(trial_id)
        run_id = self.book.run_id(trial_id)
        if not run_id:
            return

        def reopen() -> None:
            self.client.set_tag(run_id, "ssr.final", "0")
            self.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
            if "ssr.error" in self.client.get_run(run_id).data.tags:
                self.client.delete_tag(run_id, "ssr.error")

        self.store.call(f"reopening the run of {trial_id}", reopen)


def last_metric_step(run: Any) -> int:
    """The largest step among a run's metrics (MLflow keeps each metric's latest step): the
    last step the run holds, read from what it holds rather than from a marker beside it."""
    steps = [m.step for m in run.data.to_proto().metrics]
    return int(max(steps, default=0))
