"""notebooks/pareto.ipynb runs top to bottom headless (nbclient, kernel "python3")."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from analysis.schema import write_records

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "pareto.ipynb"


@pytest.mark.slow
def test_notebook_executes(records, tmp_path, monkeypatch) -> None:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    results = write_records(records(dataset="cityscapes"), tmp_path / "run" / "results.parquet")
    monkeypatch.setenv("SSR_RESULTS", str(results))
    # NOTE: pin "python3" to this interpreter; a user-level kernelspec of that name could
    # otherwise point at another Python. JUPYTER_PATH comes first in the kernelspec search.
    spec = tmp_path / "jupyter" / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(
        nb,
        kernel_name="python3",
        timeout=180,
        resources={"metadata": {"path": str(NOTEBOOK.parent)}},
    )
    client.execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) == 3  # front, gap, hypervolume history
    text = "".join(o.get("text", "") for o in outputs)
    assert "hypervolume" in text
