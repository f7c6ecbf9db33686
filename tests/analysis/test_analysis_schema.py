"""analysis.schema: the record's dtypes, coercion and validation."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from analysis import AnalysisInputError
from analysis.schema import COLUMNS, coerce_records, records_frame, validate_records, write_records


def test_coerce_gives_schema_dtypes_and_is_idempotent(records) -> None:
    frame = coerce_records(records())
    for column, dtype in COLUMNS.items():
        assert str(frame[column].dtype) == dtype, column
    assert str(frame["cfg.ssr.op"].dtype) == "Float64"
    assert str(frame["cfg.shrink.every"].dtype) == "Int64"
    assert str(frame["cfg.baseline"].dtype) == "boolean"
    validate_records(frame)
    pd.testing.assert_frame_equal(coerce_records(frame), frame)


def test_coerce_parses_text_config_and_fills_the_gap() -> None:
    frame = records_frame(
        [
            {
                "sweep": "s",
                "trial_id": "1",
                "status": "complete",
                "genotype_id": "0123456789ab",
                "cfg.ssr.op": "30",
                "cfg.arch_optim.lr": "3e-4",
                "cfg.baseline": "False",
                "cfg.name": "ssr",
                "supernet_miou": 0.6,
                "derived_miou": 0.5,
            },
            {
                "sweep": "s",
                "trial_id": "2",
                "status": "failed",
                "error": "boom",
                "cfg.ssr.op": "20",
                "cfg.arch_optim.lr": "None",
                "cfg.baseline": "true",
                "cfg.name": "x",
            },
        ]
    )
    assert str(frame["cfg.ssr.op"].dtype) == "Int64"
    assert str(frame["cfg.arch_optim.lr"].dtype) == "Float64"
    assert frame["cfg.arch_optim.lr"].isna().tolist() == [False, True]
    assert frame["cfg.baseline"].tolist() == [False, True]
    assert str(frame["cfg.name"].dtype) == "string"
    assert frame.loc[0, "discretization_gap"] == pytest.approx(0.1)


def test_coerce_writes_a_dict_genotype_as_json() -> None:
    genotype = {"depth": [1, 2], "ops": ["a", "b"]}
    frame = records_frame(
        [{"sweep": "s", "trial_id": "1", "status": "failed", "genotype": genotype}]
    )
    assert json.loads(frame.loc[0, "genotype"]) == genotype


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"status": "done"}, "status values"),
        ({"genotype_id": "XYZ"}, "genotype_id"),
        ({"derived_miou": 55.0}, "fractions"),
    ],
)
def test_validate_names_the_problem(records, change: dict, message: str) -> None:
    frame = records(n=4)
    for column, value in change.items():
        frame.loc[0, column] = value
    with pytest.raises(AnalysisInputError, match=message):
        validate_records(coerce_records(frame))


def test_validate_requires_identity_and_unique_trials(records) -> None:
    frame = coerce_records(records(n=3))
    with pytest.raises(AnalysisInputError, match="required column"):
        validate_records(frame.drop(columns="trial_id"))
    with pytest.raises(AnalysisInputError, match="share a"):
        validate_records(pd.concat([frame, frame.head(1)], ignore_index=True))


def test_write_records_round_trips_dtypes(records, tmp_path) -> None:
    path = write_records(records(), tmp_path / "run" / "results.parquet")
    back = pd.read_parquet(path)
    pd.testing.assert_frame_equal(back, coerce_records(records()))
