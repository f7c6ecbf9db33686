"""The Optuna study of a sweep where Optuna's tools look: an RDB storage (SQLite in the run folder
by default), reopened with ``optuna.load_study``; the searcher's pickled state (Ray's save and
restore) continues the same study. A smoke sweep's study, reopened after a kill and a resume,
with its trials' values and user attributes: test_sweep_sqlite.py."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest

from ssr.config import ConfigError
from sweeps.contract.protocol import FINAL_KEY
from sweeps.define.spec import CONFIG_DIR, apply_overrides, build_sweep, load_sweep
from sweeps.schedule import study_mirror


def searcher(run_dir: Path) -> Any:
    """The smoke sweep's searcher with its study in ``run_dir``, over a small space."""
    from ray import tune

    s = load_sweep(CONFIG_DIR / "smoke.yaml").searcher(run_dir)
    s.set_search_properties(
        None,
        None,
        {"dims": {"ssr.op": tune.uniform(1, 2), "baseline": tune.choice(["ssr", "no_shrink"])}},
    )
    return s


def test_study_is_stored_labelled_and_continued_after_restore(tmp_path: Path) -> None:
    import optuna

    run_dir = tmp_path / "run-1"
    s = searcher(run_dir)
    s.suggest("a")
    s.suggest("b")
    final = {"derived_miou": 0.3, "fps_shared": 50.0, "genotype_id": "0123456789", FINAL_KEY: 1.0}
    s.on_trial_complete("a", final)
    s.save(str(tmp_path / "searcher.pkl"))  # what Tune writes with its experiment state
    s.suggest("lost")  # asked for after the last save: a killed driver leaves it RUNNING
    s._ot_study._storage.flush()  # (its writer had written it to the database)

    restored = pickle.loads(pickle.dumps(searcher(run_dir)))  # a new driver, then Tune's restore
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("b", {"derived_miou": float("nan"), FINAL_KEY: 0.0})
    restored.suggest("c")
    restored.on_trial_complete("c", error=True)
    study_mirror.close_all()  # what the driver does when Tune's run returns

    url = f"sqlite:///{run_dir / 'optuna.db'}"
    study = optuna.load_study(study_name="run-1", storage=url)
    assert study.metric_names == ["derived_miou", "fps_shared"]
    assert study.user_attrs == {"sweep": "smoke", "experiment": "ssr-smoke"}
    trials = {t.user_attrs.get("trial_id"): t for t in study.trials}
    assert {t: trials[t].state.name for t in ("a", "b", "lost", "c")} == {
        "a": "COMPLETE", "b": "PRUNED", "lost": "FAIL", "c": "FAIL",
    }  # fmt: skip
    assert trials["a"].values == [0.3, 50.0]
    assert trials["a"].user_attrs["genotype_id"] == "0123456789"
    assert trials["a"].user_attrs["status"] == "complete"
    assert trials["b"].user_attrs["status"] == "early_stopped"
    assert trials["c"].user_attrs["status"] == "failed"
    assert trials["a"].user_attrs["baseline"] == trials["a"].params["baseline"]
    figure = optuna.visualization.plot_pareto_front(study)  # plotly is in requirements.txt
    assert len(figure.data) >= 1


def test_a_new_sweep_never_joins_an_existing_study(tmp_path: Path) -> None:
    from sweeps.schedule.searchers import probe_study

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    probe_study(url, tmp_path / "run-2")  # nothing there yet
    searcher(tmp_path / "run-2")  # the default storage: <run>/optuna.db
    import optuna

    optuna.create_study(study_name="run-2", storage=url)
    with pytest.raises(ConfigError, match="already has a study named 'run-2'"):
        probe_study(url, tmp_path / "run-2")


def test_storage_option_is_checked_with_the_sweep_file() -> None:
    raw = yaml_smoke()
    ok = build_sweep(apply_overrides(raw, ["searcher.storage=postgresql://u@h/db"]))
    assert ok.spec.searcher.storage == "postgresql://u@h/db"
    with pytest.raises(ConfigError, match="give an RDB URL"):
        build_sweep(apply_overrides(raw, ["searcher.storage=file:///x.db"]))
    with pytest.raises(ConfigError, match="absolute path"):
        build_sweep(apply_overrides(raw, ["searcher.storage=sqlite:///rel.db"]))
    with pytest.raises(ConfigError, match=r"searcher\.storage is the Optuna study's"):
        build_sweep(
            apply_overrides(raw, ["searcher.kind=random", "searcher.storage=sqlite:////x.db"])
        )


def yaml_smoke() -> dict:
    from ssr.config import load_yaml

    return load_yaml(CONFIG_DIR / "smoke.yaml")


def test_tpe_reads_the_study_once_per_suggestion_not_once_per_parameter(tmp_path: Path) -> None:
    """The sweep's TPE is multivariate: past its startup trials a suggestion reads the study's
    trials a fixed number of times whatever the number of parameters (independent TPE reads
    them once per parameter: O(parameters x trials) per suggestion, BENCHMARKS.md)."""
    from ray import tune

    s = load_sweep(CONFIG_DIR / "smoke.yaml").searcher(tmp_path / "run")
    dims = {f"p{i}": tune.uniform(0, 1) for i in range(6)}
    s.set_search_properties(None, None, {"dims": dims})
    for i in range(12):  # past TPE's 10 startup trials
        s.suggest(f"t{i}")
        s.on_trial_complete(
            f"t{i}", {"derived_miou": i / 12, "fps_shared": 12.0 - i, FINAL_KEY: 1.0}
        )
    storage = s._ot_study._storage
    reads = []
    real = storage.get_all_trials
    storage.get_all_trials = lambda *a, **k: reads.append(1) or real(*a, **k)
    config = s.suggest("next")
    assert set(config["dims"]) == set(dims)
    assert len(reads) <= 3, f"{len(reads)} reads of the study for one suggestion of 6 parameters"


def test_the_sweep_s_tpe_suggests_what_optuna_s_tpe_suggests() -> None:
    """The sweep's TPE keeps each finished trial's kind, pruned score and internal row
        (sweeps/schedule/tpe.py): seed for seed, its suggestions are Optuna's multivariate TPE's, with
        one objective (pruned trials with intermediate values) and two (pruned without), with a
    running trial."""
    import random
    import warnings

    import optuna

    from sweeps.schedule.tpe import tpe_sampler

    def run(sampler: optuna.samplers.BaseSampler, directions: list[str]) -> list[dict]:
        study = optuna.create_study(directions=directions, sampler=sampler)
        rng, out = random.Random(0), []
        waiting = study.ask()  # a running trial throughout: the constant liar counts it
        waiting.suggest_float("x", 0, 1)
        waiting.suggest_float("lr", 1e-4, 1, log=True)
        waiting.suggest_int("n", 1, 8)
        waiting.suggest_categorical("op", ["a", "b", "c"])
        for i in range(40):
            trial = study.ask()
            params = {
                "x": trial.suggest_float("x", 0, 1),
                "lr": trial.suggest_float("lr", 1e-4, 1, log=True),
                "n": trial.suggest_int("n", 1, 8),
                "op": trial.suggest_categorical("op", ["a", "b", "c"]),
            }
            out.append(params)
            values = [params["x"] + rng.random(), params["n"] * rng.random()][: len(directions)]
            if i % 3 == 2:
                if len(directions) == 1:
                    trial.report(rng.random(), step=i % 5)
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                study.tell(trial, values)
        return out

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for directions in (["maximize"], ["maximize", "minimize"]):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            plain = optuna.samplers.TPESampler(seed=3, multivariate=True)
        kept = tpe_sampler(3)
        assert run(kept, directions) == run(plain, directions)
        assert kept._rows and kept._kinds  # kept (and used past the startup trials)
