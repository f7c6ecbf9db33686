"""`import analysis` must stay light: no torch, no ray, and no mlflow, plotly or matplotlib until
they are used."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_analysis_loads_neither_torch_nor_ray() -> None:
    code = (
        "import json, sys, analysis, analysis.report, analysis.plots, analysis.page, "
        "analysis.notebook, analysis.objectives; "
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    loaded = set(json.loads(proc.stdout))
    assert not loaded & {"torch", "ray", "mlflow", "optuna", "ssr", "sweeps"}
    assert not loaded & {"plotly", "matplotlib", "nbclient"}  # loaded when a figure is drawn
