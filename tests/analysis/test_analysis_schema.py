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
    assert str(frame["cfg.baseline"].dtype) == "string"
    assert frame["baseline"].tolist()[:3] == ["ssr", "darts_pruning", "no_shrink"]
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
                "cfg.flag": "False",
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
                "cfg.flag": "true",
                "cfg.name": "x",
            },
        ]
    )
    assert str(frame["cfg.ssr.op"].dtype) == "Int64"
    assert str(frame["cfg.arch_optim.lr"].dtype) == "Float64"
    assert frame["cfg.arch_optim.lr"].isna().tolist() == [False, True]
    assert frame["cfg.flag"].tolist() == [False, True]
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
        ({"baseline": "dartz"}, "baseline values"),
        ({"fps_exclusive_lo": 9.0, "fps_exclusive_hi": 8.0}, "fps_exclusive_lo > fps_exclusive_hi"),
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


def test_new_fields_are_taken_from_older_config_columns() -> None:
    """Older files: baseline, retrain_epochs and search_input_size come from cfg.*; a recorded
    value wins; a cfg.baseline that names no baseline stays unknown."""
    base = {"sweep": "s", "status": "failed", "cfg.data.height": 64, "cfg.data.width": 128}
    frame = records_frame(
        [
            {**base, "trial_id": "1", "cfg.baseline": "no_shrink", "cfg.retrain.epochs": 3},
            {**base, "trial_id": "2", "cfg.baseline": "True", "cfg.retrain.epochs": 40},
            {**base, "trial_id": "3", "baseline": "ssr", "cfg.baseline": "no_shrink",
             "retrain_epochs": 50, "cfg.retrain.epochs": 3, "search_input_size": "32x64"},
        ]
    )  # fmt: skip
    assert frame["baseline"].tolist() == ["no_shrink", pd.NA, "ssr"]
    assert frame["retrain_epochs"].tolist() == [3, 40, 50]
    assert frame["search_input_size"].tolist() == ["64x128", "64x128", "32x64"]
    for column in ("baseline", "exclusive_device", "search_input_size"):
        assert str(frame[column].dtype) == "string"
    for column in ("retrain_epochs", "exclusive_threads", "fallback_prunes"):
        assert str(frame[column].dtype) == "Int64"
    for column in ("derived_miou_lo", "fps_exclusive_hi", "gap_at_discrete"):
        assert str(frame[column].dtype) == "Float64"
