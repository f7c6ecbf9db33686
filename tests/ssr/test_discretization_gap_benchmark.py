"""benchmarks/discretization_gap.py at --tiny: every arm runs, the JSON and the table agree."""

import importlib.util
import json
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "discretization_gap", ROOT / "benchmarks" / "discretization_gap.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_tiny_benchmark_reports_every_arm(tmp_path) -> None:
    bench = _load()
    assert bench.main(["--tiny", "--threads", "1", "--seeds", "0,1", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "discretization_gap.json").read_text())
    assert (
        result["arch_optim"] == "paper-wd"
        and "arch_optim.weight_decay=0.001" in result["overrides"]
    )
    assert [r["arm"] for r in result["rows"]] == [
        "ssr", "ssr", "darts_pruning", "darts_pruning", "no_shrink", "no_shrink"
    ]  # fmt: skip
    ends = str(result["epochs"])
    for r in result["rows"]:
        assert r["gaps"][ends] == pytest.approx(r["discretization_gap"])  # same measurement
        assert r["derived_miou_lo"] <= r["derived_miou_hi"]
    no_shrink = result["summary"]["no_shrink"]
    assert no_shrink["runs"] == 2 and no_shrink["gap_at_discrete"]["n"] == 0  # never discrete
    assert no_shrink["fallback_prunes"]["n"] == 2 and no_shrink["fallback_prunes"]["mean"] > 0
    table = (tmp_path / "discretization_gap.md").read_text()
    assert all(f"| {arm} |" in table for arm in ("ssr", "darts_pruning", "no_shrink"))
    _values_follow_from_the_runs(result, table)


def _row(result: dict, arm: str, seed: int) -> dict:
    return next(r for r in result["rows"] if r["arm"] == arm and r["seed"] == seed)


def _values_follow_from_the_runs(result: dict, table: str) -> None:
    """The numbers, not only their shape: each gap is supernet minus derived, every summary
    value is the mean, sd and count of its rows, the table prints those, and the arms differ
    exactly where their settings do."""
    for r in result["rows"]:
        assert r["discretization_gap"] == pytest.approx(r["supernet_miou"] - r["derived_miou"])
    for arm, summary in result["summary"].items():
        rows = [r for r in result["rows"] if r["arm"] == arm]
        for key in ("derived_miou", "discretization_gap", "fallback_prunes", "supernet_miou"):
            values = [float(r[key]) for r in rows]
            assert summary[key] == {
                "mean": pytest.approx(statistics.fmean(values)),
                "sd": pytest.approx(statistics.stdev(values)),
                "n": len(values),
            }, (arm, key)
        d = summary["derived_miou"]
        cell = f"{d['mean'] * 100:.1f} ± {d['sd'] * 100:.1f} ({d['n']})"
        line = next(x for x in table.splitlines() if x.startswith(f"| {arm} |"))
        assert f"| {cell} |" in line, (cell, line)
    for seed in (0, 1):
        ssr, darts = _row(result, "ssr", seed), _row(result, "darts_pruning", seed)
        no_shrink = _row(result, "no_shrink", seed)
        # at --tiny shrinking prunes nothing (everything is the argmax fallback's), so no_shrink
        # is the ssr search itself: the same numbers; darts_pruning's loss differs, so its do
        assert ssr["fallback_prunes"] == no_shrink["fallback_prunes"] == 22
        for key in ("genotype_id", "supernet_miou", "derived_miou", "gaps"):
            assert ssr[key] == no_shrink[key], (seed, key)
        assert darts["gaps"] != ssr["gaps"], seed


def test_bad_arguments_are_one_line_errors(tmp_path) -> None:
    bench = _load()
    with pytest.raises(SystemExit, match="--gap-epochs must be comma-separated integers"):
        bench.main(["--tiny", "--gap-epochs", "a,b", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="gap_epochs"):
        bench.main(["--tiny", "--gap-epochs", "99", "--out", str(tmp_path)])
