"""What keeps the driver's cost per trial flat as a sweep grows (benchmarks/driver_scale.py):
the results table's journal, the progress line's running front, MO-ASHA's one-pass fronts."""

from __future__ import annotations

import json
import random
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
    # rewriting per trial would be 400 writes (O(n^2) bytes); 5 % growth: about 80
    assert len(writes) < 90, len(writes)
    assert writes[:20] == list(range(1, 21))  # a small table is rewritten at every trial
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
