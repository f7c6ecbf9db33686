"""Shared fixtures: small synthetic record tables in the analysis.schema layout."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

GENOTYPES = [f"{i:02x}" + "a1b2c3d4e5"[: 10 - 2] for i in range(8)]  # 10 hex chars each


def make_records(n: int = 24, seed: int = 0, dataset: str = "synthetic") -> pd.DataFrame:
    """``n`` trial records of one sweep: a few failed / early-stopped, genotypes repeated."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        op = float(rng.choice([20.0, 25.0, 30.0]))
        genotype_id = GENOTYPES[int(rng.integers(0, len(GENOTYPES)))]
        derived = float(rng.uniform(0.3, 0.6))
        supernet = derived + float(rng.uniform(0.0, 0.1))
        status = "complete"
        if i % 7 == 3:
            status = "failed"
        elif i % 7 == 5:
            status = "early_stopped"
        row = {
            "sweep": "smoke",
            "trial_id": f"t{i:03d}",
            "genotype_id": genotype_id,
            "genotype": json.dumps({"depth": [1, 2, 2], "id": genotype_id}),
            "status": status,
            "error": "RuntimeError: out of memory\ntraceback..." if status == "failed" else None,
            "completion_order": int(n - i),
            "node": "127.0.0.2",
            "dataset": dataset,
            "cfg.ssr.op": op,
            "cfg.ssr.depth": float(rng.choice([0.5, 1.0])),
            "cfg.shrink.every": int(rng.choice([2, 4])),
            "cfg.baseline": ("ssr", "darts_pruning", "no_shrink")[i % 3],
            "cfg.seed": i,
            "supernet_miou": supernet,
            "derived_miou": derived,
            "params_m": float(rng.uniform(0.5, 2.0)),
            "gmacs": float(rng.uniform(5, 40)),
            "fps_shared": float(rng.uniform(20, 200)),
            "latency_ms_median": float(rng.uniform(5, 50)),
            "fps_exclusive": float(rng.uniform(20, 200)),
            "device": "cpu",
            "threads": 2,
            "precision": "fp32",
            "batch": 1,
            "input_size": "128x256",
            "fps_shared_device": True,
        }
        if status == "failed":
            for key in ("supernet_miou", "derived_miou", "fps_shared", "fps_exclusive"):
                row[key] = None
            row["genotype_id"] = None
            row["genotype"] = None
        rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture
def records() -> Callable[..., pd.DataFrame]:
    """Factory for record tables: ``records(n=24, seed=0, dataset="synthetic")``."""
    return make_records
