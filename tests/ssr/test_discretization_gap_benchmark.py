"""benchmarks/discretization_gap.py at --tiny: every arm runs, the JSON and the table agree."""

import importlib.util
import json
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


def test_bad_arguments_are_one_line_errors(tmp_path) -> None:
    bench = _load()
    with pytest.raises(SystemExit, match="--gap-epochs must be comma-separated integers"):
        bench.main(["--tiny", "--gap-epochs", "a,b", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="gap_epochs"):
        bench.main(["--tiny", "--gap-epochs", "99", "--out", str(tmp_path)])
