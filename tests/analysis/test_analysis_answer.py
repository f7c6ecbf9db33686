"""The answer a report gives, not only the front: what each setting bought (with intervals, the
settings that do not apply left out), which trials survived the scheduler, and whether Optuna's
Pareto set is the report's front (and why not)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis import analyze_front, canonical_records, write_report
from analysis.agreement import STUDY_ATTRS, compare_fronts, told_objectives
from analysis.bought import TITLE, bought_lines
from analysis.effects import MIN_TRIALS
from analysis.placement import place_labels
from analysis.survival import survivorship_findings
from analysis.tables import hypervolume_units

RANKED = [("derived_miou", True), ("fps_exclusive", True)]


def sweep_records(n: int = 36, seed: int = 0) -> pd.DataFrame:
    """A sweep where the FLOPs weight buys speed (+40 FPS per decade) and costs accuracy, the
    SSR weight ``ssr.op`` narrows the gap only where it applies, and ``shrink.every`` does
    nothing; three baselines in turn, every trial complete."""
    rng = np.random.default_rng(seed)
    baseline = np.array(["ssr", "darts_pruning", "no_shrink"] * (n // 3))
    weight = 10 ** rng.uniform(1, 3, n)
    op = rng.uniform(3, 30, n)
    op_acts = baseline != "darts_pruning"
    gap = 0.08 - 0.002 * op * op_acts + rng.normal(0, 0.004, n)
    miou = 0.55 - 0.03 * np.log10(weight) + rng.normal(0, 0.01, n)
    fps = 30 + 40 * np.log10(weight) + rng.normal(0, 4, n)
    return pd.DataFrame(
        {
            "sweep": "s",
            "trial_id": [f"t{i:02d}" for i in range(n)],
            "genotype_id": [f"{i:02x}ab12cd34" for i in range(n)],
            "status": "complete",
            "completion_order": range(n),
            "baseline": baseline,
            "cfg.flops.weight": weight,
            "cfg.ssr.op": op,
            "cfg.shrink.every": rng.choice([1, 2], n),
            "cfg.seed": rng.choice([0, 1, 2], n),
            "derived_miou": miou,
            "supernet_miou": miou + gap,
            "discretization_gap": gap,
            "fps_shared": fps * rng.uniform(0.6, 0.9, n),
            "fps_exclusive": fps,
        }
    )


def effects_of(df: pd.DataFrame):
    analysis = analyze_front(canonical_records(df), RANKED)
    return analysis, analysis.effects.table.set_index(["setting", "outcome"])


def test_a_planted_effect_is_found_with_an_interval_that_holds_it() -> None:
    _, table = effects_of(sweep_records())
    fps = table.loc[("cfg.flops.weight", "fps_exclusive")]
    assert fps["log"] and fps["verdict"] == "distinguishable"
    assert fps["lo"] < 40 * np.log10(fps["high"] / fps["low"]) < fps["hi"]  # the true effect
    miou = table.loc[("cfg.flops.weight", "derived_miou")]
    assert miou["verdict"] == "distinguishable" and miou["hi"] < 0
    assert table.loc[("cfg.shrink.every", "fps_exclusive"), "verdict"] == "within noise"
    assert "cfg.seed" not in {s for s, _ in table.index}  # noise, not a setting


def test_a_setting_is_left_out_of_the_trials_it_does_not_act_in() -> None:
    df = sweep_records()
    _, table = effects_of(df)
    op = table.loc[("cfg.ssr.op", "discretization_gap")]
    assert op["n"] == int((df["baseline"] != "darts_pruning").sum())
    assert op["verdict"] == "distinguishable" and op["hi"] < 0
    shrink = table.loc[("cfg.shrink.every", "derived_miou")]
    assert shrink["n"] == int((df["baseline"] != "no_shrink").sum())
    # what darts_pruning trials did with their (unused) SSR weight changes nothing
    darts = (df["baseline"] == "darts_pruning").to_numpy()
    df.loc[darts, "discretization_gap"] = 0.5 * df.loc[darts, "cfg.ssr.op"] / 30
    _, again = effects_of(df)
    assert again.loc[("cfg.ssr.op", "discretization_gap"), "effect"] == pytest.approx(op["effect"])


def test_settings_that_do_nothing_are_not_findings_however_many() -> None:
    df = sweep_records(n=30, seed=1)
    rng = np.random.default_rng(101)
    for k in range(10):  # ten settings with no effect at all: 30 estimates at 90 %
        df[f"cfg.noise.k{k}"] = rng.uniform(0, 1, len(df))
    _, table = effects_of(df)
    noise = table[[s.startswith("cfg.noise") for s, _ in table.index]]
    assert (noise["verdict"] == "within noise (FDR)").sum() >= 2  # intervals that exclude 0
    assert not (noise["verdict"] == "distinguishable").any()  # ... are not called findings
    assert table.loc[("cfg.flops.weight", "fps_exclusive"), "verdict"] == "distinguishable"


def test_baselines_are_compared_against_ssr() -> None:
    df = sweep_records()
    df.loc[df["baseline"] == "no_shrink", "discretization_gap"] += 0.05
    _, table = effects_of(df)
    row = table.loc[("baseline: no_shrink vs ssr", "discretization_gap")]
    assert row["verdict"] == "distinguishable" and row["lo"] > 0.02


def test_a_small_sweep_says_it_cannot_say_anything(tmp_path) -> None:
    analysis, table = effects_of(sweep_records(n=6).head(MIN_TRIALS - 1))
    assert analysis.effects.too_small
    assert all(v.startswith("too few") for v in table["verdict"])
    text = "\n".join(bought_lines(analysis.effects))
    assert "too small to say what any setting bought" in text


def test_report_opens_with_what_each_setting_bought(tmp_path) -> None:
    result = write_report(sweep_records(), RANKED, tmp_path)
    markdown = result.paths["markdown"].read_text()
    sections = [line for line in markdown.splitlines() if line.startswith("## ")]
    assert sections[0] == f"## {TITLE}"
    assert "flops.weight | 1" in markdown and "✔" in markdown  # values tried, a finding
    assert result.paths["effects_png"].is_file()
    assert "gap.png" not in markdown and "discretization_gap (pts)" in markdown


def test_survivorship_counts_each_rung_and_says_when_stopping_kept_a_baseline_off() -> None:
    df = sweep_records(n=9)
    stop = (df["baseline"] == "no_shrink").to_numpy()
    df.loc[stop, "status"] = "early_stopped"
    df.loc[stop, "error"] = [f"stopped early by the scheduler after {e} reports (low-fidelity)"
                             for e in (6, 6, 12)]  # fmt: skip
    analysis = analyze_front(canonical_records(df), RANKED)
    table = analysis.survival.set_index("baseline")
    assert table.loc["no_shrink", "stopped at epoch 6"] == 2
    assert table.loc["no_shrink", "stopped at epoch 12"] == 1
    assert table.loc["no_shrink", "complete"] == 0 and table.loc["all", "started"] == 9
    assert table.loc["all", "on front"] == len(analysis.front)
    findings = " ".join(survivorship_findings(analysis.survival))
    assert "`no_shrink` has no complete trial" in findings and "early stopping" in findings


def test_hypervolume_is_given_in_the_axes_units() -> None:
    analysis = analyze_front(canonical_records(sweep_records()), RANKED)
    value, unit = hypervolume_units(analysis)
    assert value == pytest.approx(analysis.hypervolume * 100) and unit == "% × FPS"


def test_optuna_front_is_computed_on_what_optuna_was_told() -> None:
    df = sweep_records(n=12)
    analysis = analyze_front(canonical_records(df), RANKED)
    assert told_objectives(RANKED) == [("derived_miou", True), ("fps_shared", True)]
    df["fps_shared"] = df["fps_exclusive"] * 0.7  # ranks exactly like the final speed
    same = compare_fronts(analyze_front(canonical_records(df), RANKED))
    assert same.same and "equals the report's front" in same.statement
    fast = analysis.trials["trial_id"].iloc[0]
    df.loc[0, "fps_shared"] = 1e6  # measured alone by chance: on Optuna's front only
    other = compare_fronts(analyze_front(canonical_records(df), RANKED))
    assert not other.same and fast in other.searcher_front and fast in other.statement
    assert "fps_shared" in other.statement and "Spearman" in other.statement


def test_without_what_optuna_was_told_the_report_says_it_cannot_compare() -> None:
    df = sweep_records(n=12).drop(columns=["fps_shared"])
    agreement = compare_fronts(analyze_front(canonical_records(df), RANKED))
    assert agreement.searcher_front == [] and "cannot be recomputed" in agreement.statement


def test_report_reads_the_study_and_writes_the_difference_into_it(tmp_path) -> None:
    optuna = pytest.importorskip("optuna")
    df = sweep_records(n=12)
    run_dir = tmp_path / "run-x"
    run_dir.mkdir()
    url = f"sqlite:///{run_dir / 'optuna.db'}"
    study = optuna.create_study(study_name="run-x", storage=url, directions=["maximize"] * 2)
    for row in df.itertuples():
        trial = study.ask()
        trial.set_user_attr("trial_id", row.trial_id)
        study.tell(trial, [row.derived_miou, row.fps_shared])
    result = write_report(df, RANKED, run_dir / "report")
    agreement = result.agreement
    assert agreement.study_front is not None
    assert set(agreement.study_front) == set(agreement.searcher_front)
    attrs = optuna.load_study(study_name="run-x", storage=url).user_attrs
    assert set(STUDY_ATTRS) <= set(attrs)
    assert attrs["ssr.front_trials"] == sorted(result.front["trial_id"])
    assert attrs["ssr.front_vs_optuna"] == agreement.statement
    assert agreement.statement in result.paths["markdown"].read_text()


def test_labels_are_placed_apart_even_when_their_points_crowd() -> None:
    anchors = np.array([[100.0 + 3 * i, 100.0 + 2 * i] for i in range(8)])
    sizes = np.full((8, 2), (90.0, 12.0))
    where = place_labels(anchors, sizes, anchors, (0.0, 0.0, 600.0, 400.0))
    assert where.overlaps == 0 and where.far.any()
    boxes = np.c_[anchors + np.c_[where.dx, where.dy], anchors + np.c_[where.dx, where.dy] + sizes]
    assert np.all(boxes[:, :2] >= 0) and np.all(boxes[:, 2] <= 600) and np.all(boxes[:, 3] <= 400)
