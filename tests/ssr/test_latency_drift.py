"""The drift reference of a latency table (ssr/measure/drift.py, docs/method.md §4.4): the
reference networks' genotypes kept in the table, the drift on a stubbed measurer, the shipped
tables, ``python -m ssr latency check`` and benchmarks/latency_search.py's summary."""

from __future__ import annotations

import dataclasses
import json
import random
from pathlib import Path

import pytest

from ssr.cli import main
from ssr.config import ConfigError
from ssr.measure import drift as drift_mod
from ssr.measure.drift import measure_against_table, reference_networks, with_reference_genotypes
from ssr.measure.latency import fit_correction
from ssr.method.derive import sample_genotype
from ssr.method.latency_table import LatencyTable, table_sum_ms
from tests.ssr.test_latency import SPACE2, fake_table, tiny_build

ROOT = Path(__file__).resolve().parents[2]


def fitted(seed: int = 0, n: int = 6) -> LatencyTable:
    """A fake table with a correction fitted on ``n`` networks drawn as build_table draws them."""
    table = fake_table(SPACE2, "padded")
    rng = random.Random(seed)
    nets = [sample_genotype(SPACE2, rng, table.reduction, table.head) for _ in range(n)]
    measured = [1.1 * table_sum_ms(table, g)["total"] + 0.5 for g in nets]
    return fit_correction(table, nets, measured)


def strip_genotypes(table: LatencyTable) -> LatencyTable:
    c = table.correction
    nets = tuple({k: v for k, v in n.items() if k != "genotype"} for n in c.networks)
    return dataclasses.replace(table, correction=dataclasses.replace(c, networks=nets))


def test_table_keeps_its_reference_genotypes(tmp_path: Path) -> None:
    table = fitted()
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert again.to_dict() == table.to_dict()
    refs = reference_networks(again)
    assert [g.id for g, _ in refs] == [n["genotype_id"] for n in table.correction.networks]
    assert [ms for _, ms in refs] == [n["measured_ms"] for n in table.correction.networks]
    assert all(g.head == table.head for g, _ in refs)
    picked = reference_networks(again, 3)  # spread over the range: fastest and slowest kept
    by_ms = sorted(ms for _, ms in refs)
    assert [ms for _, ms in picked] == [by_ms[0], by_ms[2], by_ms[-1]]
    assert len(reference_networks(again, 1)) == 1


def test_old_table_without_genotypes_loads_without_drift(tmp_path: Path) -> None:
    old = strip_genotypes(fitted())
    old.save(tmp_path / "old.json")
    loaded = LatencyTable.load(tmp_path / "old.json")  # still a table: it predicts
    assert loaded.correction.scale == old.correction.scale
    with pytest.raises(ConfigError, match="does not store its reference networks' genotypes"):
        reference_networks(loaded)
    with pytest.raises(ConfigError, match="no reference networks"):
        reference_networks(dataclasses.replace(loaded, correction=None))
    d = fitted().to_dict()
    d["correction"]["networks"][0]["genotype_id"] = "0000000000"
    (tmp_path / "bad.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="recorded 0000000000"):
        reference_networks(LatencyTable.load(tmp_path / "bad.json"))


def test_drift_on_a_stubbed_measurer(monkeypatch: pytest.MonkeyPatch) -> None:
    """Networks and references go to one measurement (the same interleaved passes); the drift
    is the median of the references' now / at-build ratios, one outlier does not move it."""
    table = fitted(n=5)
    built = [n["measured_ms"] for n in table.correction.networks]
    ratios = [1.1, 1.2, 1.15, 3.0, 1.05]  # one reference disturbed: the median ignores it
    calls = []

    def fake(genotypes, cfg, num_classes, clock, statistic, passes=None):
        calls.append(len(genotypes))
        return [10.0, 20.0] + [b * r for b, r in zip(built, ratios)]

    monkeypatch.setattr(drift_mod, "measure_networks", fake)
    nets = [sample_genotype(SPACE2, random.Random(9)) for _ in range(2)]
    res = measure_against_table(nets, table)
    assert calls == [7]
    assert res.raw_ms == [10.0, 20.0]
    assert res.drift == pytest.approx(1.15)
    assert res.adjusted_ms == pytest.approx([10.0 / 1.15, 20.0 / 1.15])
    assert res.spread == pytest.approx((1.05, 3.0))
    assert [r["ratio"] for r in res.references] == pytest.approx(ratios)
    assert res.summary()["references"] == 5
    none = measure_against_table(nets, table, references=0)
    assert none.drift is None and none.adjusted_ms is None and calls[-1] == 2


def test_reference_genotypes_are_redrawn_from_the_seed() -> None:
    table = fitted(seed=3)
    restored = with_reference_genotypes(strip_genotypes(table), seed=3)
    assert restored.to_dict() == table.to_dict()
    with pytest.raises(ConfigError, match="seed 4 does not redraw"):
        with_reference_genotypes(strip_genotypes(table), seed=4)


@pytest.mark.parametrize("name", ["sweep_cpu_ort_t1_256x512", "default_cpu_ort_t1_256x512"])
def test_shipped_tables_hold_their_references(name: str) -> None:
    table = LatencyTable.load(ROOT / "tables" / f"{name}.json")
    refs = reference_networks(table)
    assert len(refs) == 10 and all(ms > 0 for _, ms in refs)
    assert with_reference_genotypes(table, seed=0).to_dict() == table.to_dict()


def test_cli_check_measures_drift_and_refuses_another_bench(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A tiny table (eager torch, 32x64, two reference networks) checked at once: a finite
    drift; a bench of other threads and a table without genotypes: one line, status 2."""
    argv, out = tiny_build(tmp_path, 2, "--clock", "thread")
    assert main(argv) == 0
    capsys.readouterr()
    assert main(["latency", "check", "--table", str(out), "--json"]) == 0
    row = json.loads(capsys.readouterr().out)
    assert row["references"] == 2 and row["drift"] > 0
    assert row["drift_min"] <= row["drift"] <= row["drift_max"]
    assert main(["latency", "check", "--table", str(out), "--references", "1"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("drift ") and len(line.splitlines()) == 1
    assert main(["latency", "check", "--table", str(out), "--threads", "2"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "threads 1 (table) vs 2 (bench)" in err
    assert len(err.splitlines()) == 1
    strip_genotypes(LatencyTable.load(out)).save(tmp_path / "old.json")
    assert main(["latency", "check", "--table", str(tmp_path / "old.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "does not store its reference networks' genotypes" in err
    assert len(err.splitlines()) == 1


def test_benchmark_counts_landing_raw_and_adjusted() -> None:
    from benchmarks import (
        latency_search as ls,
    )  # a namespace package: the repository is on the path

    results = []
    for arm in ("latency", "flops"):
        for seed, raw in enumerate((17.0, 19.0)):  # 6 % and 19 % over; adjusted (/1.1): within
            results.append({
                "name": f"{arm}_T16_s{seed}", "arm": arm, "target_ms": 16.0, "seed": seed,
                "derived_miou": 0.3, "measured_ms": raw, "measured_adjusted_ms": raw / 1.1,
                "drift": 1.1, "expected_latency_ms": 16.0, "predicted_latency_ms": 16.2,
                "argmax_predicted_latency_ms": 18.0 if arm == "latency" else 16.2,
                "derive_changed_groups": 3 if arm == "latency" else 0,
            })  # fmt: skip
    summary = ls.summarise(results, [0, 1])
    lat = summary["arms"]["latency"]
    assert lat["landed_within_10pct"] == 0.5 and lat["adjusted_within_10pct"] == 1.0
    assert lat["predicted_within_10pct"] == 1.0 and lat["argmax_predicted_within_10pct"] == 0.0
    drift = {"drift": 1.1, "drift_min": 1.0, "drift_max": 1.2, "references": 10}
    text = ls.markdown({"summary": {**summary, "drift": drift}, "results": results})
    assert text.startswith("drift: 1.100 (median of 10 reference networks")
    assert "| latency | 2 | 50 % (100 %) | 100 % (0 %) |" in text
