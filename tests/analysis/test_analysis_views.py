"""Every view of a front says the same thing: baseline, ties, units; nothing non-finite drawn."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pagedata import page_figure

from analysis import analyze_front, canonical_records, format_front_table, write_report
from analysis.labels import BASELINE_STYLES
from analysis.noise import tie_groups

RANKED = [("derived_miou", True), ("fps_exclusive", True)]


def front_records(
    miou: list[float],
    fps: list[float],
    baselines: list[str | None] | None = None,
    miou_halfwidth: float | list[float] | None = 0.01,
    fps_halfwidth: float | list[float] | None = 0.02,
) -> pd.DataFrame:
    """Complete trials with the given objectives; intervals of +- halfwidth (fps relative)."""
    n = len(miou)
    baselines = baselines or ["ssr"] * n
    df = pd.DataFrame(
        {
            "sweep": "s",
            "trial_id": [f"t{i}" for i in range(n)],
            "genotype_id": [f"{i:02x}ab12cd34" for i in range(n)],
            "status": "complete",
            "completion_order": range(n),
            "dataset": "synthetic",
            "baseline": baselines,
            "cfg.ssr.op": [float(10 + i) for i in range(n)],
            "derived_miou": miou,
            "fps_exclusive": fps,
            "device": "cpu",
            "exclusive_device": "Xeon 8375C",
            "exclusive_threads": 1,
            "threads": 2,
            "batch": 1,
            "precision": "fp32",
            "input_size": "256x512",
        }
    )
    if miou_halfwidth is not None:
        df["derived_miou_lo"] = df["derived_miou"] - np.asarray(miou_halfwidth)
        df["derived_miou_hi"] = df["derived_miou"] + np.asarray(miou_halfwidth)
    if fps_halfwidth is not None:
        df["fps_exclusive_lo"] = df["fps_exclusive"] * (1 - np.asarray(fps_halfwidth))
        df["fps_exclusive_hi"] = df["fps_exclusive"] * (1 + np.asarray(fps_halfwidth))
    return df


def test_baseline_is_in_every_view(tmp_path) -> None:
    df = front_records([0.6, 0.5, 0.4, 0.3, 0.2], [10.0, 20.0, 30.0, 40.0, 35.0],
                       ["darts_pruning", "no_shrink", "ssr", None, "ssr"])  # fmt: skip
    result = write_report(df, RANKED, tmp_path)
    assert pd.read_csv(result.paths["csv"])["baseline"].fillna("?").tolist() == [
        "darts_pruning", "no_shrink", "ssr", "?"]  # fmt: skip
    table = format_front_table(result).splitlines()
    assert [line.split()[1] for line in table[2:6]] == [
        "darts_pruning", "no_shrink", "ssr", "unknown"]  # fmt: skip
    markdown = result.paths["markdown"].read_text()
    assert "| t0 | darts_pruning |" in markdown and "| t3 | unknown |" in markdown
    assert "Front points by baseline: darts_pruning 1, no_shrink 1, ssr 1, unknown 1." in markdown
    assert "contains no `ssr` point" not in markdown
    # the PNG: one marker per baseline in the legend, labels carry the baseline tag
    from analysis import plot_front

    ax = plot_front(result.analysis).axes[0]
    legend = {t.get_text() for t in ax.get_legend().get_texts()}
    assert {s.legend for s in BASELINE_STYLES.values()} <= legend
    assert "baseline not recorded" in legend
    labels = {t.get_text() for t in ax.texts}
    assert {"00ab12cd34 [darts]", "01ab12cd34 [no-shrink]", "02ab12cd34 [ssr]"} <= labels
    # the HTML page: marker symbol per baseline, baseline in the hover text
    data, _ = page_figure(result.paths["html"].read_text())
    symbols = {t["name"]: t["marker"]["symbol"] for t in data if t["name"].startswith("front: ")}
    assert symbols == {"front: DARTS pruning (SSR weights 0)": "square-open",
                       "front: no shrinking (argmax at end)": "triangle-up-open",
                       "front: SSR": "circle-open",
                       "front: baseline not recorded": "cross-open"}  # fmt: skip
    hover = " ".join(" ".join(t.get("hovertext") or []) for t in data)
    assert "<b>trial t0</b> (darts_pruning)" in hover and "<b>trial t3</b> (unknown)" in hover


def test_a_front_without_ssr_says_so(tmp_path) -> None:
    df = front_records([0.6, 0.5, 0.1], [10.0, 20.0, 5.0], ["darts_pruning", "no_shrink", "ssr"])
    result = write_report(df, RANKED, tmp_path)
    text = "The front contains no `ssr` point"
    assert text in result.paths["markdown"].read_text()
    assert text.replace("`", "") in format_front_table(result)


def test_tie_groups_need_overlap_in_every_objective() -> None:
    front = front_records([0.60, 0.59, 0.50, 0.495, 0.30], [10.0, 10.1, 20.0, 30.0, 31.0],
                          miou_halfwidth=0.01, fps_halfwidth=0.02)  # fmt: skip
    groups = tie_groups(front, ["derived_miou", "fps_exclusive"])
    # t0/t1 overlap in both; t2/t3 overlap in mIoU only; t3/t4 in FPS only
    assert groups.tolist() == [1, 1, pd.NA, pd.NA, pd.NA]
    exact = front.drop(columns=["derived_miou_lo", "derived_miou_hi"])
    assert tie_groups(exact, ["derived_miou", "fps_exclusive"]).isna().all()
    same = front_records([0.5] * 3, [20.0] * 3, miou_halfwidth=None, fps_halfwidth=None)
    assert tie_groups(same, ["derived_miou", "fps_exclusive"]).tolist() == [1, 1, 1]


def test_tied_points_are_marked_not_ranked(tmp_path) -> None:
    df = front_records([0.60, 0.595, 0.40, 0.39, 0.2], [10.0, 10.2, 30.0, 30.5, 31.5])
    result = write_report(df, RANKED, tmp_path)
    front = pd.read_csv(result.paths["csv"])
    assert front.set_index("trial_id")["tie_group"].fillna(0).to_dict() == {
        "t0": 1, "t1": 1, "t2": 2, "t3": 2, "t4": 0}  # fmt: skip
    markdown = result.paths["markdown"].read_text()
    assert "4 points are statistically tied: t0, t1 (group 1); t2, t3 (group 2)" in markdown
    assert "| 60.00 [59.00, 61.00] | 10 [9.8, 10.2] | 1 |" in markdown
    from analysis import plot_front

    labels = {t.get_text() for t in plot_front(result.analysis).axes[0].texts}
    assert "00ab12cd34 [ssr], tie 1" in labels


def test_axes_carry_units_from_the_records(tmp_path) -> None:
    df = front_records([0.6, 0.5], [10.0, 20.0])
    result = write_report(df, RANKED, tmp_path)
    from analysis import plot_front

    ax = plot_front(result.analysis).axes[0]
    fps = "FPS at 256x512 (cpu: Xeon 8375C, 1 thread, batch 1, fp32) ↑"
    assert ax.get_xlabel() == fps
    assert ax.get_ylabel() == "derived mIoU (%) on synthetic ↑"
    _, layout = page_figure(result.paths["html"].read_text())
    assert layout["xaxis"]["title"]["text"] == fps
    assert fps.removesuffix(" ↑") in result.paths["markdown"].read_text()
    assert fps.removesuffix(" ↑") in format_front_table(result)


def test_error_bars_come_from_the_intervals() -> None:
    df = canonical_records(front_records([0.6, 0.5], [10.0, 20.0]))
    from analysis import plot_front

    ax = plot_front(analyze_front(df, RANKED)).axes[0]
    segments = np.concatenate([c.get_segments() for c in ax.collections
                               if type(c).__name__ == "LineCollection"])  # fmt: skip
    ys = sorted({round(float(s[:, 1].min()), 6) for s in segments if s[0, 0] == s[1, 0]})
    assert ys == pytest.approx([49.0, 59.0])  # mIoU lower ends in percent
    xs = sorted({round(float(s[:, 0].max()), 6) for s in segments if s[0, 1] == s[1, 1]})
    assert xs == pytest.approx([10.2, 20.4])


def test_non_finite_values_are_excluded_with_a_reason_and_never_drawn(tmp_path) -> None:
    df = front_records([0.6, 0.5, 0.55, 0.4], [10.0, 20.0, 15.0, 25.0])
    df["fps_exclusive"] = df["fps_exclusive"].astype(object)
    df.loc[2, "fps_exclusive"] = np.inf
    df.loc[3, "derived_miou"] = np.nan
    df["derived_miou"] = df["derived_miou"].astype(object)
    df.loc[4] = df.loc[0].copy()
    df.loc[4, ["trial_id", "derived_miou"]] = ["t4", -np.inf]
    df["supernet_miou"] = 0.7  # the gap of t4 is +inf: no estimate or plot takes it
    result = write_report(df, RANKED, tmp_path)
    reasons = result.analysis.excluded.set_index("trial_id")["reason"].to_dict()
    assert reasons == {
        "t2": "non-finite fps_exclusive",
        "t3": "missing derived_miou",
        "t4": "non-finite derived_miou, discretization_gap",  # the gap derived from it too
    }
    effects = result.analysis.effects
    assert "t4" not in set(effects.table["setting"]) and effects.trials == 2
    for curve in effects.curves.values():
        assert np.isfinite(curve.y).all() and np.isfinite(curve.x).all()
    from analysis import plot_front

    ax = plot_front(result.analysis).axes[0]
    for collection in ax.collections:
        assert np.isfinite(np.asarray(collection.get_offsets(), dtype=float)).all()
    data, _ = page_figure(result.paths["html"].read_text())
    xs = [x for t in data for x in (t.get("x") or [])]
    assert np.isfinite(np.asarray(xs, dtype=float)).all() and 15.0 not in xs
    assert "non-finite fps_exclusive" in result.paths["markdown"].read_text()
