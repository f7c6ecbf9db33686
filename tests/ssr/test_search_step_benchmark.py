"""benchmarks/search_step.py times run_search's own step: split, counted work, no weight grads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _child(scenario: str, *extra: str) -> dict:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "search_step.py"), "--child", scenario,
           "--threads", "1", "--warmup", "1", "--iters", "2", "--passes", "1", "--batch", "2",
           "--input", "32x64", *extra]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_shrunk_iteration_is_split_and_counted() -> None:
    r = _child("shrunk")
    it = r["iteration"]
    assert it["median_s"] > 0 and len(it["pass_medians_s"]) == 1
    assert 0 < r["weight_part"]["median_s"] < it["median_s"]
    assert r["arch_part"]["median_s"] > 0
    fwd = r["flops_by_op"]["aten.convolution"]
    bwd = r["flops_by_op"]["aten.convolution_backward"]
    # weight step: input + weight gradients (2x its forward), the stem's input gradient never
    # needed; architecture step: none, since with every layer decided no mask carries alpha
    # into the logits (ssr/method/supernet.py): over both forwards, bwd/fwd just under 1
    assert 0.9 < bwd / fwd <= 1.0
    assert r["conv_gmacs"] == pytest.approx((fwd + bwd) / 2e9, abs=0.01)
    assert r["gmacs_per_s"] > 0


@pytest.mark.slow
def test_retrain_step_and_profile() -> None:
    r = _child("derived_paper", "--profile")
    assert r["iteration"]["median_s"] > 0 and "weight_part" not in r
    groups = r["profile"]["groups_s"]
    assert groups["conv forward"] > 0 and groups["conv backward"] > 0
    assert r["profile"]["conv_gmacs_per_s_in_kernels"] > 0
