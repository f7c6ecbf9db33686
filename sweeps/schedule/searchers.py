"""Optuna under Ray Tune, told only final records, with its study where Optuna's tools look.

Ray's ``OptunaSearch`` tells Optuna a trial stopped early by a Tune scheduler as COMPLETE with
its last (low-fidelity) values, so ASHA-stopped trials would enter Optuna's Pareto front and
steer the sampler (docs/stack.md §2). Here a trial counts as COMPLETE only when its last report
carries the final record (``final_record == 1``); an early-stopped trial is told as PRUNED, an
errored one (or one whose objectives are missing or NaN) as FAIL. Intermediate reports never
reach Optuna (its pruners do not run under Tune, and multi-objective studies cannot take
intermediate values).

The study lives in an Optuna RDB storage, by default ``sqlite:///<run folder>/optuna.db``
(:func:`study_storage_url`; the sweep file's ``searcher.storage`` names another), as the study
named like the run, so ``optuna-dashboard <url>`` and ``optuna.visualization`` show the sweep:

- parameters under their names in the sweep file (``ssr.op``, ``baseline``), not Tune's
  flattened ``dims/ssr.op`` (:func:`readable_name`; every sampled value lives under
  ``SAMPLED_KEY`` in the param space);
- the told columns as metric names: the axis titles of Optuna's and optuna-dashboard's plots,
  the same names as the record's columns in every other view;
- the sweep as study user attributes. A speed measured inside a trial (``fps_shared``) shares
  the device; the sweep's front ranks its exclusive re-measurement after the sweep, which Optuna
  cannot be told for a finished trial. The report compares Optuna's Pareto set with its front
  and writes both and the statement of their difference into the study's ``ssr.front_*``
  attributes (``analysis/agreement.py``);
- each trial's Tune ``trial_id``, ``baseline``, ``genotype_id`` and ``status`` as trial user
  attributes. Ray
pickles the searcher with the experiment (the storage reconnects by URL on unpickling), so a
resumed sweep continues the same study; trials a killed driver had asked for but Tune never
recorded are marked FAIL on restore.

Imported lazily by :mod:`sweeps.define.definition`; this module imports Ray and Optuna at the top.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna  # NOTE: imported first so that a broken optuna shows its own error (ray #65376)
from ray.tune.search.optuna import OptunaSearch

from ssr.config import ConfigError
from sweeps.contract.protocol import COMPLETE, EARLY_STOPPED, FAILED, FINAL_KEY, SAMPLED_KEY
from sweeps.schedule.study_mirror import MirroredStorage, open_storage
from sweeps.schedule.tpe import tpe_sampler

#: The study file in a run folder (the default storage).
STUDY_FILE = "optuna.db"


def study_storage_url(storage: str, run_dir: Path) -> str:
    """The study's storage URL: ``storage`` as given, else ``sqlite:///<run_dir>/optuna.db``."""
    return storage or f"sqlite:///{Path(run_dir).resolve() / STUDY_FILE}"


def probe_study(storage: str, run_dir: Path) -> None:
    """Before a new sweep: the storage opens and has no study named like the run yet
    (ConfigError otherwise, so two sweeps never mix in one study)."""
    url = study_storage_url(storage, run_dir)
    names = optuna.study.get_all_study_names(open_storage(url))
    if Path(run_dir).name in names:
        raise ConfigError(
            f"Optuna storage {url} already has a study named {Path(run_dir).name!r}: pass "
            "--resume to continue that sweep or choose another --name"
        )


def readable_name(name: str) -> str:
    """Tune's flattened ``dims/ssr.op`` -> ``ssr.op``, the parameter's name in the sweep file."""
    return name.removeprefix(f"{SAMPLED_KEY}/")


def _sampled(result: Mapping[str, Any], key: str) -> Any:
    """A sampled value from a Tune result (flattened ``config/dims/<key>`` or nested)."""
    flat = result.get(f"config/{SAMPLED_KEY}/{key}")
    if flat is not None:
        return flat
    return ((result.get("config") or {}).get(SAMPLED_KEY) or {}).get(key)


def _label(ot_trial: Any, **attrs: str) -> None:
    """Set user attributes of a trial; a trial told before (a resumed sweep ending it again)
    keeps the ones it has."""
    try:
        for key, value in attrs.items():
            ot_trial.set_user_attr(key, value)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


class FinalRecordOptunaSearch(OptunaSearch):
    """OptunaSearch that only learns from trials that returned their final record, and labels
    the study and its trials for Optuna's own tools."""

    def __init__(
        self,
        *args: Any,
        study_attrs: Mapping[str, Any] | None = None,
        baseline: str = "ssr",
        **kwargs: Any,
    ) -> None:
        self._study_attrs = dict(study_attrs or {})
        self._baseline = baseline
        #: Baseline label of each running trial this searcher labelled (not set again at its end).
        self._labelled: dict[str, str] = {}
        super().__init__(*args, **kwargs)

    @staticmethod
    def convert_search_space(spec: dict) -> dict[str, Any]:
        """Ray's conversion, with each parameter under its sweep-file name (:func:`readable_name`)."""
        return {readable_name(k): v for k, v in OptunaSearch.convert_search_space(spec).items()}

    def _setup_study(self, mode: str | list) -> None:
        super()._setup_study(mode)
        study = self._ot_study
        metrics = self.metric if isinstance(self.metric, list) else [self.metric]
        if study.metric_names is None and all(isinstance(m, str) for m in metrics):
            with warnings.catch_warnings():  # NOTE: "experimental" since Optuna 3.2, still there
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                study.set_metric_names(list(metrics))
        for key, value in self._study_attrs.items():
            if study.user_attrs.get(key) != value:
                study.set_user_attr(key, value)

    def suggest(self, trial_id: str) -> dict | None:
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        ot_trial = self._ot_trials.get(trial_id)
        # NOTE: a trial this call asked for has no labels yet and its params are ``config``
        # (flat, readable names): each read of the study is a query of its storage
        if ot_trial is not None and (new or "trial_id" not in ot_trial.user_attrs):
            flat = new and config is not None and SAMPLED_KEY not in config
            params = config if flat else ot_trial.params
            baseline = params.get("baseline", params.get(f"{SAMPLED_KEY}/baseline", self._baseline))
            _label(ot_trial, trial_id=trial_id, baseline=str(baseline))
            self._labelled[trial_id] = str(baseline)
        if config is None or SAMPLED_KEY in config:  # a state pickled with Tune's names
            return config
        # readable names hold no "/": Ray's unflatten left them flat; nest them back
        return {SAMPLED_KEY: config}

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """Intermediate (per-epoch) results are not told to Optuna."""
        return None

    def on_trial_complete(
        self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False
    ) -> None:
        final = bool(result) and result.get(FINAL_KEY) == 1.0
        if final:
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            values = [result.get(m) for m in metrics]
            if any(v is None or not math.isfinite(float(v)) for v in values):
                final, error = False, True
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is not None and trial_id not in self._completed_trials:
            attrs = {"status": COMPLETE if final else (FAILED if error else EARLY_STOPPED)}
            if result and isinstance(result.get("genotype_id"), str):
                attrs["genotype_id"] = result["genotype_id"]
            baseline = _sampled(result, "baseline") if result else None
            if baseline is not None and self._labelled.get(trial_id) != str(baseline):
                attrs["baseline"] = str(baseline)
            _label(ot_trial, **attrs)
        self._labelled.pop(trial_id, None)
        super().on_trial_complete(trial_id, result=result if final else None, error=error)

    def restore(self, checkpoint_path: str) -> None:
        """Restore Ray's pickled state, then mark FAIL the study's trials that a killed driver
        had asked for but that this state does not know (they never ran under Tune)."""
        super().restore(checkpoint_path)
        study = self._ot_study
        if study is None:
            return
        known = {t.number for t in self._ot_trials.values()}
        for frozen in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if frozen.number not in known:
                study.tell(frozen.number, state=optuna.trial.TrialState.FAIL)


def final_record_optuna(
    objectives: Sequence[tuple[str, str]],
    sampler: str = "tpe",
    seed: int = 0,
    storage: str | None = None,
    study_name: str | None = None,
    study_attrs: Mapping[str, Any] | None = None,
    baseline: str = "ssr",
) -> FinalRecordOptunaSearch:
    """Multi-objective (or single) Optuna search over ``[(metric, 'max'|'min'), ...]``.

    ``storage``: an RDB URL (None: in memory); ``study_name``: the study in it (created, or
    loaded when it exists); ``study_attrs``: user attributes of the study; ``baseline``: the
    baseline of trials that do not sample one.
    """
    samplers = {
        "tpe": lambda: tpe_sampler(seed),
        "nsga2": lambda: optuna.samplers.NSGAIISampler(seed=seed),
        "random": lambda: optuna.samplers.RandomSampler(seed=seed),
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study_name = study_name or ("ssr" if storage else None)
    metrics = [m for m, _ in objectives]
    modes = [d for _, d in objectives]
    return FinalRecordOptunaSearch(
        metric=metrics[0] if len(metrics) == 1 else metrics,
        mode=modes[0] if len(modes) == 1 else modes,
        sampler=samplers[sampler](),
        storage=MirroredStorage(storage, study_name) if storage else None,
        study_name=study_name,
        study_attrs=study_attrs,
        baseline=baseline,
    )
