"""report.md's latency section (docs/method.md §4.4): target, expected, predicted and measured
latency of each search with a latency table; nothing without one."""

from __future__ import annotations

from pathlib import Path

from test_analysis_views import RANKED, front_records

from analysis import analyze_front, canonical_records
from analysis.latency import latency_lines, latency_rows
from analysis.tables import report_markdown

PATHS = {k: Path(f"{k}.x") for k in ("html", "png", "history_png", "csv")}


def test_report_shows_target_expected_predicted_and_measured_latency() -> None:
    df = front_records([0.5, 0.6, 0.7], [30.0, 25.0, 20.0])
    df["latency_target_ms"] = [30.0, 40.0, 50.0]
    df["expected_latency_ms"] = [32.0, 40.0, 52.0]
    df["predicted_latency_ms"] = [33.0, 41.0, 50.0]
    df["latency_ms_median"] = [30.0, 40.5, 60.0]  # inside the trial
    df["latency_exclusive_ms_median"] = [None, 41.0, None]  # alone, after the sweep
    analysis = analyze_front(canonical_records(df), RANKED)
    rows = {r["trial_id"]: r for r in latency_rows(analysis.trials)}
    assert rows["t1"]["measured"] == 41.0 and rows["t1"]["alone"]  # the exclusive one wins
    assert round(rows["t0"]["error_pct"], 1) == 10.0 and round(rows["t2"]["off_target_pct"]) == 20
    md = report_markdown(analysis, PATHS)
    assert "## Latency: target, expected, predicted, measured" in md
    assert "| t1 | 01ab12cd34 | 40.00 | 40.00 | 41.00 | 41.00* | +0.0 % | +2.5 % |" in md
    assert "Measured latency within +-10 % of the target: 2 of 3." in md


def test_no_latency_section_without_a_table() -> None:
    analysis = analyze_front(canonical_records(front_records([0.5, 0.6], [30.0, 25.0])), RANKED)
    assert latency_lines(analysis.trials) == []
    assert "## Latency" not in report_markdown(analysis, PATHS)
