"""NaN and inf anywhere in the records: every page, plot and table is written, and nothing
non-finite reaches a front, a hypervolume, a knee or a drawn point (docs/architecture.md §6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pagedata import page_figure

from analysis import format_front_table, write_report
from analysis.schema import COLUMNS

OBJECTIVES = [
    None,  # the recorded default
    "miou:max,fps:max",
    "gmacs:min,miou:max",
    "latency:min,params:min",
    "discretization_gap:min,fps:max",
    "miou:max,fps:max,gmacs:min",
]


def poisoned(records) -> pd.DataFrame:
    """Records in which every float column holds inf, -inf or NaN in some complete row."""
    df = records(n=28, seed=3)
    floats = [c for c, t in COLUMNS.items() if t == "Float64"]
    for c in floats:
        if c not in df.columns:  # intervals bracket the value they belong to
            base = c.removesuffix("_lo").removesuffix("_hi")
            width = -0.05 if c.endswith("_lo") else 0.05
            if base in df.columns and base != c:
                df[c] = df[base] * (1 + width)
            else:
                df[c] = np.linspace(0.1, 0.5, len(df))
    complete = df.index[df["status"] == "complete"].tolist()
    plain = [c for c in floats if not c.endswith(("_lo", "_hi"))]
    for i, c in enumerate(plain):
        df[c] = df[c].astype(object)
        df.loc[complete[i % len(complete)], c] = (np.inf, -np.inf, np.nan)[i % 3]
    df["cfg.ssr.op"] = df["cfg.ssr.op"].astype(object)
    df.loc[complete[0], "cfg.ssr.op"] = np.inf  # a swept setting, not a result
    return df


@pytest.mark.parametrize("objectives", OBJECTIVES)
def test_every_view_survives_non_finite_values(records, tmp_path, objectives) -> None:
    result = write_report(poisoned(records), objectives, tmp_path)
    for key, path in result.paths.items():
        assert path.is_file() and path.stat().st_size > 0, key
    columns = [c for c, _ in result.objectives]
    front = result.front[columns].to_numpy(dtype=float)
    assert len(front) and np.isfinite(front).all()
    assert np.isfinite(result.hypervolume)
    assert all(np.isfinite(v) for v in result.reference.values())
    if result.knee is not None:
        assert all(np.isfinite(float(result.knee[c])) for c in columns)
    excluded = result.analysis.excluded
    assert excluded["reason"].notna().all() and len(excluded) > 0
    data, _ = page_figure(result.paths["html"].read_text())
    for trace in data:
        for axis in ("x", "y"):
            values = [v for v in (trace.get(axis) or []) if isinstance(v, (int, float))]
            assert np.isfinite(np.asarray(values, dtype=float)).all(), (trace.get("name"), axis)
    text = result.paths["markdown"].read_text()
    assert "non-finite" in text
    table = format_front_table(result)  # the terminal table
    assert " inf " not in f" {table} ".replace("\n", " ") and " nan " not in table.lower()
