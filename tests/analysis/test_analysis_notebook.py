"""notebooks/pareto.ipynb runs headless with the command its first cell gives
(``python -m analysis.notebook``: nbclient + ipykernel, both in requirements.txt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from analysis.schema import write_records

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOK = ROOT / "notebooks" / "pareto.ipynb"


def test_first_cell_gives_the_runner_command() -> None:
    nbformat = pytest.importorskip("nbformat")
    first = nbformat.read(NOTEBOOK, as_version=4).cells[0].source
    assert "python -m analysis.notebook" in first
    assert "jupyter nbconvert" not in first  # not installed by requirements.txt


@pytest.mark.slow
def test_notebook_runs_with_the_command_of_its_first_cell(records, tmp_path) -> None:
    nbformat = pytest.importorskip("nbformat")
    run_dir = tmp_path / "run"
    df = records(dataset="cityscapes")
    write_records(df, run_dir / "results.parquet", [("derived_miou", True), ("fps_shared", True)])
    env_home = tmp_path / "home"  # a user kernelspec "python3" must not matter
    (env_home / ".local/share/jupyter/kernels/python3").mkdir(parents=True)
    (env_home / ".local/share/jupyter/kernels/python3/kernel.json").write_text(
        '{"argv": ["/nonexistent/python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],'
        ' "display_name": "broken", "language": "python"}'
    )
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.notebook", "--results", str(run_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(env_home), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    out = run_dir / "report" / "pareto.ipynb"
    assert str(out) in proc.stdout
    nb = nbformat.read(out, as_version=4)
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # front, what each setting bought, hypervolume history
    markdown = "".join(o.get("data", {}).get("text/markdown", "") for o in outputs)
    assert "90 % percentile bootstrap interval" in markdown  # the report's own section
    assert "Optuna's Pareto set" in markdown and "scheduler stopped" in markdown
    tables = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
    assert "discretization_gap (pts)" in tables  # the gap in points, as in the report
    plotly = [o for o in outputs if "application/vnd.plotly.v1+json" in o.get("data", {})]
    assert len(plotly) == 1
    text = "".join(o.get("text", "") for o in outputs)
    assert "hypervolume" in text and "as the sweep recorded them" in text
    assert "fps_shared" in text and "baseline" in text
    assert NOTEBOOK.read_text().count('"outputs": []') >= 1  # the source stays unexecuted


@pytest.mark.slow
def test_notebook_runner_bad_input_is_one_line(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.notebook", "--results", str(tmp_path / "none")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: no results file") and proc.stderr.count("\n") == 1
