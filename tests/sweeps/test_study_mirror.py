"""The Optuna study in memory, mirrored to its database by a writer process
(sweeps/schedule/study_mirror.py): the database ends equal to the driver's study, the driver
reads no SQL, and a pickled searcher (Tune's snapshot) reopens the study from the database."""

from __future__ import annotations

import pickle
import random
from pathlib import Path
from typing import Any

import optuna
import pytest

from sweeps.contract.protocol import FINAL_KEY
from sweeps.define.spec import CONFIG_DIR, load_sweep
from sweeps.schedule import study_mirror


def searcher(run_dir: Path) -> Any:
    from ray import tune

    s = load_sweep(CONFIG_DIR / "smoke.yaml").searcher(run_dir)
    dims = {"a": tune.uniform(0, 1), "b": tune.loguniform(1e-3, 1), "c": tune.choice(["x", "y"])}
    s.set_search_properties(None, None, {"dims": dims})
    return s


def drive(s: Any, first: int, n: int, rng: random.Random) -> None:
    """``n`` trials as the driver runs them: two at a time, some complete, some stopped."""
    running = []
    for i in range(first, first + n):
        s.suggest(f"t{i}")
        running.append(f"t{i}")
        if len(running) == 2:
            done = running.pop(0)
            if rng.random() < 0.5:
                values = {"derived_miou": rng.random(), "fps_shared": rng.uniform(10, 90)}
                s.on_trial_complete(done, {**values, FINAL_KEY: 1.0, "genotype_id": "g"})
            else:
                s.on_trial_complete(done, {FINAL_KEY: 0.0})
    for done in running:
        s.on_trial_complete(done, error=True)


def summary(trials: list[optuna.trial.FrozenTrial]) -> list[tuple]:
    return [
        (t.number, t.state, t.values, t.params, t.user_attrs, sorted(t.distributions))
        for t in sorted(trials, key=lambda t: t.number)
    ]


def test_the_database_ends_equal_to_the_driver_s_study(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-1"
    s = searcher(run_dir)
    drive(s, 0, 24, random.Random(0))  # past TPE's startup trials
    mine = s._ot_study
    figures = study_mirror.close_all()
    assert figures["failed"] == 0 and figures["sent"] > 24
    stored = optuna.load_study(study_name="run-1", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert summary(stored.trials) == summary(mine.trials)
    assert stored.user_attrs == mine.user_attrs and stored.metric_names == mine.metric_names
    assert {t.state.name for t in stored.trials} == {"COMPLETE", "PRUNED", "FAIL"}


def test_the_driver_reads_no_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After opening, every read is answered from memory (the writer process has its own
    storage, so refusing SQL in this process only stops the driver's reads)."""
    s = searcher(tmp_path / "run-1")
    s.suggest("t0")

    def refused(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the driver read the study from its database")

    for name in ("get_all_trials", "get_trial", "get_study_user_attrs", "get_study_directions"):
        monkeypatch.setattr(optuna.storages.RDBStorage, name, refused)
    drive(s, 1, 16, random.Random(1))
    monkeypatch.undo()
    assert study_mirror.close_all()["failed"] == 0


def test_a_pickled_searcher_reopens_the_study_from_the_database(tmp_path: Path) -> None:
    run_dir = tmp_path / "run-1"
    s = searcher(run_dir)
    drive(s, 0, 12, random.Random(2))
    restored = pickle.loads(pickle.dumps(s))  # Tune's snapshot waits for the writer first
    assert summary(restored._ot_study.trials) == summary(s._ot_study.trials)
    drive(restored, 12, 6, random.Random(3))  # the resumed driver goes on numbering
    study_mirror.close_all()
    stored = optuna.load_study(study_name="run-1", storage=f"sqlite:///{run_dir / 'optuna.db'}")
    assert [t.number for t in stored.trials] == list(range(18))
    assert summary(stored.trials) == summary(restored._ot_study.trials)


def test_an_unknown_event_fails_alone(tmp_path: Path) -> None:
    """The writer applies in order and counts what it could not write."""
    storage = study_mirror.MirroredStorage(f"sqlite:///{tmp_path / 'o.db'}", "s")
    study = optuna.create_study(storage=storage, study_name="s")
    storage._send("set_trial_user_attr", 99, "k", "v")  # a trial the database does not have
    study.tell(study.ask(), 1.0)
    figures = storage.close()
    assert figures["failed"] == 1
    assert optuna.load_study(study_name="s", storage=storage.url).trials[0].value == 1.0


def test_a_deleted_study_is_deleted_in_the_database(tmp_path: Path) -> None:
    storage = study_mirror.MirroredStorage(f"sqlite:///{tmp_path / 'o.db'}", "s")
    study = optuna.create_study(storage=storage, study_name="s")
    study.tell(study.ask(), 1.0)
    optuna.delete_study(study_name="s", storage=storage)
    assert storage.close()["failed"] == 0
    assert optuna.get_all_study_names(storage.url) == []
