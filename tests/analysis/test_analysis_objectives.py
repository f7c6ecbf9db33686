"""analysis.objectives: recorded objectives travel with the records; aliases never switch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from analysis import AnalysisInputError, from_parquet, write_report
from analysis.objectives import OBJECTIVES_KEY, parse_objectives_json
from analysis.objectives import resolve_objectives_with_notes as resolve
from analysis.schema import write_records

ROOT = Path(__file__).resolve().parents[2]
RANKED = [("derived_miou", True), ("fps_exclusive", True)]


def sweep_records(records, retrain_epochs: int | None = 3) -> pd.DataFrame:
    """Records where the default alias rule and the sweep's ranking would draw different fronts:
    retrained_miou is set everywhere (unrelated to derived_miou), fps_shared too."""
    df = records(n=30, seed=3)
    complete = df["status"] == "complete"
    df["retrained_miou"] = (0.65 - df["derived_miou"]).where(complete)
    if retrain_epochs is not None:
        df["cfg.retrain.epochs"] = retrain_epochs
    return df


def test_objective_metadata_round_trip(records, tmp_path) -> None:
    path = write_records(sweep_records(records), tmp_path / "results.parquet", objectives=RANKED)
    raw = pq.read_schema(path).metadata[OBJECTIVES_KEY.encode()]
    assert parse_objectives_json(raw) == RANKED
    df = from_parquet(path)
    assert df.attrs["objectives"] == [
        {"metric": "derived_miou", "mode": "max"},
        {"metric": "fps_exclusive", "mode": "max"},
    ]
    copy = write_records(df, tmp_path / "copy.parquet")  # attrs are written back
    assert from_parquet(copy).attrs["objectives"] == df.attrs["objectives"]
    assert from_parquet(copy).attrs["source"] == str(copy.resolve())  # the run folder's file
    assert (
        "objectives" not in from_parquet(write_records(records(), tmp_path / "old.parquet")).attrs
    )


def test_bad_objective_metadata_is_one_clear_error(records, tmp_path) -> None:
    df = records()
    df.attrs["objectives"] = [{"metric": "derived_miou", "mode": "best"}]
    with pytest.raises(AnalysisInputError, match="expected a JSON list"):
        write_records(df, tmp_path / "x.parquet")


def test_no_spec_ranks_the_recorded_objectives(records) -> None:
    df = sweep_records(records)
    df.attrs["objectives"] = [{"metric": "derived_miou", "mode": "max"},
                              {"metric": "fps_shared", "mode": "max"}]  # fmt: skip
    from analysis import canonical_records

    df = canonical_records(df)
    pairs, notes = resolve(None, df)
    assert pairs == [("derived_miou", True), ("fps_shared", True)]
    assert notes == ["objectives derived_miou:max,fps_shared:max, as the sweep recorded them"]
    # aliases take the recorded column of their kind, not the default preference
    pairs, notes = resolve("miou,fps", df)
    assert pairs == [("derived_miou", True), ("fps_shared", True)]
    assert not any("differ" in n for n in notes)
    # an explicit, different choice is ranked, and said so
    pairs, notes = resolve("retrained_miou:max,fps", df)
    assert pairs == [("retrained_miou", True), ("fps_shared", True)]
    text = " | ".join(notes)
    assert "you chose retrained_miou; the sweep ranked derived_miou" in text
    assert "this front is not the sweep's front" in text
    assert "retrained mIoU after 3 epochs: not converged; ranked anyway because you asked" in text
    # a recorded column needs no direction
    assert resolve("derived_miou,fps_shared", df)[0] == [
        ("derived_miou", True),
        ("fps_shared", True),
    ]


def test_alias_skips_an_unconverged_retrain_without_recorded_objectives(records) -> None:
    from analysis import canonical_records

    short = canonical_records(sweep_records(records, retrain_epochs=3))
    pairs, notes = resolve("miou,fps", short)
    assert pairs[0] == ("derived_miou", True)
    assert "retrained_miou was left aside, after 3 retrain epochs" in notes[0]
    unknown = canonical_records(sweep_records(records, retrain_epochs=None))
    assert resolve("miou,fps", unknown)[0][0] == ("derived_miou", True)
    _, notes = resolve("retrained_miou:max,fps", unknown)
    assert "retrained mIoU after an unknown number of epochs: not converged" in notes[-1]
    long = canonical_records(sweep_records(records, retrain_epochs=60))
    pairs, notes = resolve("miou,fps", long)
    assert pairs[0] == ("retrained_miou", True)
    assert not any("not converged" in n for n in notes)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis.report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.mark.slow
def test_readme_report_command_reproduces_the_sweeps_report(records, tmp_path) -> None:
    """The sweep writes results.parquet with its objectives and its report; the README's command
    (no --objectives) rewrites the same folder with the same front."""
    run_dir = tmp_path / "run"
    path = write_records(sweep_records(records), run_dir / "results.parquet", objectives=RANKED)
    sweep = write_report(from_parquet(path), RANKED, run_dir / "report")
    before = pd.read_csv(sweep.paths["csv"])
    proc = run("--parquet", str(path), "--out", str(run_dir / "report"))
    assert proc.returncode == 0, proc.stderr
    after = pd.read_csv(run_dir / "report" / "pareto.csv")
    pd.testing.assert_frame_equal(before, after)
    assert "as the sweep recorded them" in proc.stdout
    # the default alias rule would have drawn another front on these records
    old = from_parquet(path).assign(retrain_epochs=60)
    old.attrs = {}  # an older file: nothing recorded
    other = write_report(old, "miou,fps", tmp_path / "o")
    assert other.objectives[0] == ("retrained_miou", True)
    assert set(other.front["trial_id"]) != set(before["trial_id"])
    # asking for the unconverged retrained mIoU is flagged in the console and report.md
    proc = run("--parquet", str(path), "--out", str(tmp_path / "r"),
               "--objectives", "retrained_miou:max,fps")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    flag = "retrained mIoU after 3 epochs: not converged; ranked anyway because you asked"
    assert flag in proc.stdout and flag in (tmp_path / "r" / "report.md").read_text()
    assert "you chose retrained_miou; the sweep ranked derived_miou" in proc.stdout
