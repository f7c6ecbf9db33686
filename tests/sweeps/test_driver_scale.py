"""What keeps the driver's cost per trial flat as a sweep grows (benchmarks/driver_scale.py):
the results table's journal, the progress line's running front, MO-ASHA's one-pass fronts; and
what keeps it small: SQLite stores in WAL mode, no search for a new sweep's runs, Optuna labels
written once."""

from __future__ import annotations

import contextlib
import json
import pickle
import random
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from analysis.pareto import pareto_mask
from sweeps.progress import RunningFront, front_size
from sweeps.record import results
from sweeps.record.recovery import failed_trials
from sweeps.record.results import ResultsTable, journal_path
from sweeps.schedule.moasha import _as_min, nondominated_fronts, nondominated_rank, position_of_last

OBJECTIVES = [("derived_miou", True), ("fps_shared", True)]


def row(i: int, status: str = "complete") -> dict:
    rng = random.Random(i)
    return {
        "sweep": "s",
        "trial_id": f"t{i:05d}",
        "status": status,
        "derived_miou": rng.random(),
        "fps_shared": rng.uniform(10, 100),
        "genotype_id": f"{i % 7:010x}",
    }


def test_table_is_rewritten_a_logarithmic_number_of_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = ResultsTable(tmp_path / "results.parquet", OBJECTIVES)
    writes = []
    original = ResultsTable.write
    monkeypatch.setattr(
        ResultsTable, "write", lambda self: writes.append(len(self)) or original(self)
    )
    for i in range(400):
        table.record(row(i))
    # rewriting per trial would be 400 writes (O(n^2) bytes); 10 % growth: about 50
    assert len(writes) < 60, len(writes)
    assert writes[:10] == list(range(1, 11))  # a small table is rewritten at every trial
    assert len(ResultsTable(tmp_path / "results.parquet")) == 400  # file + journal


def test_a_killed_driver_loses_no_row_of_the_journal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(results, "COMPACT_FRACTION", 0.5)  # the journal keeps up to half
    path = tmp_path / "results.parquet"
    table = ResultsTable(path, OBJECTIVES)
    for i in range(30):
        table.record(row(i, "failed" if i == 29 else "complete"))
    journal = journal_path(path)
    assert journal.is_file() and len(results.read_rows(path)) < 30  # some in the journal only
    with journal.open("a") as fh:
        fh.write('{"trial_id": "t9999", "stat')  # the line a SIGKILL cut short
    again = ResultsTable(path, OBJECTIVES)
    assert sorted(r["trial_id"] for r in again.rows()) == [f"t{i:05d}" for i in range(30)]
    assert again.get("t00029")["status"] == "failed"
    assert failed_trials(tmp_path, path, max_failures=0) == {"t00029"}
    again.record(row(30))  # completion order goes on from the journal's rows
    assert again.get("t00030")["completion_order"] == 31
    again.write()
    assert not journal.exists()
    assert len(results.read_rows(path)) == 31


def test_journal_rows_are_json(tmp_path: Path) -> None:
    table = ResultsTable(tmp_path / "results.parquet", OBJECTIVES)
    for i in range(25):
        table.record({**row(i), "iterations": np.int64(3), "fps_shared": float("nan")})
    lines = journal_path(tmp_path / "results.parquet").read_text().splitlines()
    assert lines and all(json.loads(ln)["iterations"] == 3 for ln in lines)
    assert all(json.loads(ln)["fps_shared"] is None for ln in lines)


def test_running_front_matches_the_whole_table() -> None:
    objectives = [("derived_miou", "max"), ("fps_shared", "min")]
    front = RunningFront(objectives)
    rows = []
    rng = random.Random(0)
    for i in range(300):
        r = {"trial_id": f"t{i}", "status": rng.choice(["complete"] * 4 + ["failed"])}
        r["derived_miou"] = float(rng.randint(0, 12))  # ties and equal points
        r["fps_shared"] = float(rng.randint(0, 12)) if i % 17 else float("nan")
        rows.append(r)
        front.add(r)
        assert len(front) == front_size(rows, objectives), i


def _peeled(points: np.ndarray, modes: tuple[str, str]) -> list[int]:
    v = _as_min(points, modes)
    finite = np.all(np.isfinite(v), axis=1)
    out, rest, f = np.zeros(len(v), dtype=int), np.flatnonzero(finite), 0
    while rest.size:
        on = pareto_mask(v[rest], maximize=False)
        out[rest[on]], rest, f = f, rest[~on], f + 1
    out[~finite] = f
    return out.tolist()


@pytest.mark.parametrize("modes", [("max", "min"), ("min", "min"), ("max", "max")])
def test_one_pass_fronts_equal_peeled_fronts(modes: tuple[str, str]) -> None:
    rng = np.random.default_rng(1)
    for _ in range(150):
        pts = rng.integers(0, 6, (int(rng.integers(1, 50)), 2)).astype(float)
        pts[rng.random(len(pts)) < 0.1, 1] = np.nan
        assert nondominated_fronts(pts, modes) == _peeled(pts, modes)
        assert position_of_last(pts, modes) == nondominated_rank(pts, modes)[-1]


def _journal_mode(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(db)) as con:
        return con.execute("PRAGMA journal_mode").fetchone()[0]


def test_sqlite_stores_commit_in_wal_mode(tmp_path: Path) -> None:
    from sqlalchemy import text

    from sweeps.schedule.study_mirror import open_storage
    from sweeps.tracking.store import Store

    store = Store(f"sqlite:///{tmp_path / 'mlflow.db'}")
    store.client.create_experiment("x")
    assert _journal_mode(tmp_path / "mlflow.db") == "wal"
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert _journal_mode(tmp_path / "optuna.db") == "wal"
    # Ray pickles the study's storage with the searcher: the engine it makes again keeps WAL
    again = pickle.loads(pickle.dumps(storage))
    with again.engine.connect() as con:
        assert con.execute(text("PRAGMA synchronous")).scalar() == 1  # NORMAL


def test_a_new_sweeps_trials_get_runs_without_a_search(tmp_path: Path) -> None:
    from sweeps.define.spec import CONFIG_DIR, load_sweep
    from sweeps.tracking import Tracker

    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", "exp", "sw", tmp_path / "art")
    tracker.start(params={}, tags={}, artifacts=[])
    searches = []
    search = tracker.client.search_runs
    tracker.client.search_runs = lambda *a, **kw: searches.append(a) or search(*a, **kw)
    config = {**sweep.param_space(), "dims": {"ssr.op": 10.0, "seed": 0}}
    first = tracker.child("t1", config)
    assert first and searches == [] and tracker.knows_all("models")
    assert tracker.child("t1", config) == first  # the book's
    tracker.store.failures += 1  # a write that failed may have landed: look before making one
    assert tracker.child("t2", config) and len(searches) == 1
    assert not tracker.knows_all("runs") and not tracker.knows_all("models")
    tracker.load_children()  # read whole again: runs known, models not (not read)
    assert tracker.knows_all("runs") and not tracker.knows_all("models")
    assert tracker.child("t3", config) and len(searches) == 2  # load_children's own


def test_optuna_labels_each_trial_once(tmp_path: Path) -> None:
    from sweeps.define.spec import CONFIG_DIR, load_sweep

    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    searcher = sweep.searcher(tmp_path)
    searcher.set_search_properties(None, None, sweep.param_space())
    storage = searcher._ot_study._storage
    writes = []
    original = storage.set_trial_user_attr
    storage.set_trial_user_attr = lambda t, k, v: writes.append(k) or original(t, k, v)
    config = searcher.suggest("a")
    result = {"final_record": 1.0, "derived_miou": 0.5, "fps_shared": 30.0,
              "genotype_id": "g1", "config": config}  # fmt: skip
    searcher.on_trial_complete("a", result=result)
    assert sorted(writes) == ["baseline", "genotype_id", "status", "trial_id"]
    attrs = searcher._ot_study.trials[0].user_attrs
    baseline = config["dims"]["baseline"]  # sampled: the label is the trial's
    assert attrs == {
        "trial_id": "a",
        "baseline": baseline,
        "status": "complete",
        "genotype_id": "g1",
    }


def test_a_trials_own_drawing_is_uploaded_not_drawn_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sweeps.record import archplot
    from sweeps.tracking import records

    genotype = Path(__file__).parents[2] / "ssr" / "genotypes" / "ssr_cityscapes.json"
    final = tmp_path / "final"
    final.mkdir()
    (final / "genotype.json").write_text(genotype.read_text())
    png = archplot.draw_final(final, "t1", "g1")  # what the trial does (sweeps.trial)
    assert png == final / archplot.DRAWING and png.stat().st_size > 0
    logged = []

    class Client:
        def log_artifact(self, run_id: str, path: str) -> None:
            logged.append(Path(path).name)

    class Tracker:
        client = Client()

    def no_drawing(*a: object, **kw: object) -> None:
        raise AssertionError("the driver drew it again")

    monkeypatch.setattr(archplot, "draw_genotype", no_drawing)
    records._upload_files(Tracker(), "r", {"trial_id": "t1"}, final, skip_model=True)
    assert logged == ["genotype.json", archplot.DRAWING]
