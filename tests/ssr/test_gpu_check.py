"""benchmarks/gpu_check.py runs unchanged at a tiny size on CPU, without Ray, MLflow, Optuna,
tqdm or Pillow (the GPU machine's image has none of them), from the repository root."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
CHECK = REPO / "benchmarks" / "gpu_check.py"
MISSING = ("ray", "mlflow", "optuna", "tqdm", "PIL")


def _run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, dict]:
    blocked = tmp_path / "blocked"
    for name in MISSING:  # importing any of them fails, as on the GPU image
        (blocked / name).mkdir(parents=True)
        (blocked / name / "__init__.py").write_text(f"raise ImportError('no {name} here')")
    env = {**os.environ, "PYTHONPATH": str(blocked), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(
        [sys.executable, str(CHECK), *args, "--out", str(out)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path,
    )  # fmt: skip
    return proc, json.loads(out.read_text()) if out.is_file() else {}


@pytest.mark.slow
def test_gpu_check_runs_tiny_on_cpu(tmp_path: Path) -> None:
    proc, report = _run(tmp_path, "--device", "cpu", "--tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = report["rows"]
    assert not [r for r in rows if "error" in r], rows
    by = {s: [r for r in rows if r["section"] == s] for s in ("agreement", "search", "retrain",
                                                            "fps", "onnxruntime")}  # fmt: skip
    assert len(by["agreement"]) == 3 and all(r["ok"] for r in by["agreement"])
    assert {(r["state"], r["precision"]) for r in by["search"]} == {
        ("start", "fp32"),
        ("start", "bf16"),
        ("discrete", "fp32"),
        ("discrete", "bf16"),
    }
    for r in by["search"] + by["retrain"]:
        secs = r.get("seconds_per_iteration", r.get("seconds_per_step"))
        assert secs > 0 and math.isfinite(secs) and r["peak_gib"] > 0
    assert [r["precision"] for r in by["retrain"]] == ["fp32", "bf16"]
    eager = [r for r in by["fps"] if "fps" in r]
    assert {r["input"] for r in eager} == {"64x128", "128x256"} and all(r["fps"] > 0 for r in eager)
    assert all(r["skipped"] == "needs CUDA" for r in by["fps"] if "fps" not in r)
    assert by["onnxruntime"][0]["skipped"].startswith("checks the CUDA provider")
    assert report["machine"]["device"] and report["seconds"]["total"] > 0
    assert (tmp_path / "gpu_check.md").read_text().count("| search |") == 4
    assert "| fps |" in proc.stdout


def test_gpu_check_bad_device_is_one_line(tmp_path: Path) -> None:
    proc, _ = _run(tmp_path, "--device", "tpu")
    assert proc.returncode == 2 and proc.stderr.startswith("error: device 'tpu'")
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_check_tiny_on_cuda(tmp_path: Path) -> None:
    proc, report = _run(tmp_path, "--device", "cuda", "--tiny")
    assert proc.returncode == 0, proc.stderr[-3000:]
    graphs = [r for r in report["rows"] if r.get("form") == "cuda_graph"]
    assert graphs and all(r["fps"] > 0 for r in graphs)
