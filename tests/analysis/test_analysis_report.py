"""analysis.report: write_report, the terminal table and the command line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pagedata import page_figure

from analysis import AnalysisInputError, format_front_table, pareto_mask, write_report
from analysis.schema import write_records

ROOT = Path(__file__).resolve().parents[2]


def run_report(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "analysis.report", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_write_report_files_and_front(records, tmp_path) -> None:
    result = write_report(records(), "miou:max,fps:max", tmp_path)
    for key in ("csv", "trials", "png", "history_png", "effects_png", "html", "markdown"):
        assert result.paths[key].is_file() and result.paths[key].stat().st_size > 0, key
    front = pd.read_csv(result.paths["csv"])
    trials = pd.read_parquet(result.paths["trials"])
    usable = trials[trials["usable"] & trials["excluded_reason"].isna()]
    values = usable[["derived_miou", "fps_exclusive"]].to_numpy(dtype=float)
    assert set(front["trial_id"]) == set(usable["trial_id"][pareto_mask(values, True)])
    assert result.reference == pytest.approx(
        dict(zip(["derived_miou", "fps_exclusive"], result.analysis.reference))
    )
    assert result.hypervolume > 0 and result.knee is not None
    markdown = result.paths["markdown"].read_text()
    for section in (
        "## Pareto front",
        "## Hypervolume",
        "## Knee",
        "## What each setting bought",
        "## Survivorship",
        "## One front in every view",
        "## Genotypes",
        "## Excluded trials (6)",
        "reference point",
    ):
        assert section in markdown
    assert "failed: RuntimeError: out of memory" in markdown
    table = format_front_table(result)
    assert result.knee["trial_id"] in table and "hypervolume" in table


def test_write_report_html_is_plotly_and_self_contained(records, tmp_path) -> None:
    page = write_report(records(dataset="cityscapes"), "miou,fps", tmp_path).paths["html"]
    text = page.read_text()
    assert not re.findall(r"<script[^>]*\bsrc=", text)  # plotly.js is embedded, no CDN
    assert "<link" not in text and "@import" not in text
    data, layout = page_figure(text)
    assert layout["xaxis"]["title"]["text"].startswith("FPS at 128x256 (cpu, 2 threads")
    hover = " ".join(" ".join(t.get("hovertext") or []) for t in data)
    assert "genotype " in hover and "config (varied)" in hover and "ssr.op = " in hover
    assert "(darts_pruning)" in hover and "(ssr)" in hover
    assert len(text) > 1_000_000  # the bundle itself, not a link to it


def test_write_report_given_reference_and_no_usable_trial(records, tmp_path) -> None:
    result = write_report(records(), "miou:max,fps:max", tmp_path, reference=[0.0, 0.0])
    assert result.reference == {"derived_miou": 0.0, "fps_exclusive": 0.0}
    assert "given" in result.paths["markdown"].read_text()
    with pytest.raises(AnalysisInputError, match="reference"):
        write_report(records(), "miou:max,fps:max", tmp_path, reference=[0.0])
    failed = records(n=6).assign(status="failed", error="boom")
    with pytest.raises(AnalysisInputError, match="no usable trial"):
        write_report(failed, "miou:max,fps:max", tmp_path)


def test_three_objectives_report(records, tmp_path) -> None:
    result = write_report(records(n=40), "miou:max,fps:max,params:min", tmp_path)
    assert result.knee is None and any("knee" in n for n in result.notes)
    values = result.analysis.trials.loc[
        result.analysis.trials["excluded_reason"].isna(),
        ["derived_miou", "fps_exclusive", "params_m"],
    ].to_numpy(dtype=float)
    assert len(result.front) == int(pareto_mask(values, [True, True, False]).sum())


@pytest.mark.slow
def test_report_command_line(records, tmp_path) -> None:
    results = write_records(records(), tmp_path / "results.parquet")
    out = tmp_path / "report"
    proc = run_report("--parquet", str(results), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    for name in ("pareto.csv", "trials.parquet", "pareto.png", "pareto.html", "report.md"):
        assert (out / name).is_file(), name
    front = pd.read_csv(out / "pareto.csv")
    values = front[["derived_miou", "fps_exclusive"]].to_numpy(dtype=float)
    assert pareto_mask(values, True).all()  # no front row dominates another
    assert "hypervolume" in proc.stdout


@pytest.mark.slow
def test_report_command_line_bad_input(tmp_path) -> None:
    proc = run_report("--parquet", str(tmp_path / "missing.parquet"), "--out", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: no results file")
    assert "Traceback" not in proc.stderr
    proc = run_report("--tracking-uri", f"sqlite:///{tmp_path}/none.db", "--experiment", "x")
    assert proc.returncode == 2 and "no MLflow database" in proc.stderr


def test_front_table_is_plain_text(records) -> None:
    from analysis import analyze_front, canonical_records

    df = canonical_records(records())
    analysis = analyze_front(df, [("derived_miou", True), ("fps_exclusive", True)])
    lines = format_front_table(analysis).splitlines()
    assert lines[0].split()[:3] == ["trial_id", "baseline", "genotype_id"]
    assert lines[len(analysis.front) + 2].startswith("front:")
    assert np.all([len(line) < 250 for line in lines])
