"""report.md and the terminal table: text renderings of a computed FrontAnalysis.

Every front row says its baseline and its tie group; objectives with an interval are shown as
``value [lo, hi]``; each objective's unit and measurement conditions are written under the table
(:func:`analysis.labels.axis_title`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.bought import bought_lines
from analysis.front import FrontAnalysis
from analysis.labels import (
    axis_label,
    axis_title,
    baseline_text,
    display_scale,
    display_unit,
    is_miou,
)
from analysis.latency import latency_lines
from analysis.noise import INTERVAL_MEANING, interval_columns, tie_summary
from analysis.survival import survivorship_findings

#: Context columns shown next to the objectives in front tables, when they hold values.
CONTEXT_COLUMNS = (
    "params_m",
    "gmacs",
    "discretization_gap",
    "gap_at_discrete",
    "fallback_prunes",
    "cfg.flops.weight",  # the FLOPs term is what moves a derived network's cost
    "cfg.flops.target",
    "cfg.ssr.op",
    "cfg.ssr.out",
    "cfg.ssr.mid",
    "cfg.ssr.depth",
)
_MEASUREMENT = (
    "device",
    "precision",
    "batch",
    "input_size",
    "threads",
    "fps_shared_device",
    "exclusive_device",
    "exclusive_threads",
    "search_input_size",
    "retrain_epochs",
)


def fmt(value: Any, column: str = "") -> str:
    """A cell: mIoU fractions (and gaps) in percent with 2 decimals, other floats 4 digits."""
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value * display_scale(column):.2f}" if is_miou(column) else f"{value:.4g}"
    return str(value)


def header(column: str) -> str:
    """Column title with its display unit (mIoU in %, the gap in mIoU points)."""
    return axis_label(column)


def front_columns(analysis: FrontAnalysis) -> list[str]:
    """Columns of a front table: identity, baseline, objectives, tie group, context."""
    objectives = [c for c, _ in analysis.objectives]
    context = [c for c in CONTEXT_COLUMNS if c in analysis.front and c not in objectives]
    context = [c for c in context if analysis.front[c].notna().any()]
    return ["trial_id", "baseline", "genotype_id", *objectives, "tie_group", *context]


def _cell(row: pd.Series, column: str, objectives: Sequence[str]) -> str:
    if column == "baseline":
        return baseline_text(row["baseline"])
    text = fmt(row[column], column)
    lo, hi = f"{column}_lo", f"{column}_hi"
    has_interval = column in objectives and lo in row.index and hi in row.index
    if text and has_interval and pd.notna(row[lo]) and pd.notna(row[hi]):
        text += f" [{fmt(row[lo], column)}, {fmt(row[hi], column)}]"
    return text


def front_rows(analysis: FrontAnalysis, max_rows: int | None = None) -> list[list[str]]:
    """Formatted front rows (best first by the first objective), the last cell marks the knee;
    an objective with an interval reads ``value [lo, hi]``."""
    front = analysis.front if max_rows is None else analysis.front.head(max_rows)
    columns = front_columns(analysis)
    objectives = [c for c, _ in analysis.objectives]
    return [
        [*(_cell(row, c, objectives) for c in columns), "knee" if bool(row["is_knee"]) else ""]
        for _, row in front.iterrows()
    ]


def other_points(analysis: FrontAnalysis) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the points drawn but not on the front (no label on the plots): trial,
    baseline, genotype and objectives, best first by the first objective."""
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()]
    rest = pool[~pool["on_front"].fillna(False).to_numpy(dtype=bool)]
    (first, maximize), *_ = analysis.objectives
    rest = rest.sort_values(first, ascending=not maximize, kind="stable")
    objectives = [c for c, _ in analysis.objectives]
    columns = ["trial_id", "baseline", "genotype_id", *objectives]
    rows = [[_cell(row, c, objectives) for c in columns] for _, row in rest.iterrows()]
    return [header(c) for c in columns], rows


def units_lines(analysis: FrontAnalysis) -> list[str]:
    """``"<column>: <unit and conditions>"`` per objective, from the competing trials' records."""
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()]
    lines = []
    for column, maximize in analysis.objectives:
        line = f"{column}: {axis_title(pool, column, maximize)}"
        if interval_columns(pool, column) is not None:
            meaning = INTERVAL_MEANING.get(column, f"{column}_lo to {column}_hi")
            line += f"; [lo, hi]: {meaning}"
        lines.append(line)
    return lines


def front_findings(analysis: FrontAnalysis) -> list[str]:
    """What a reader must know about the front: which baselines it holds (and that it holds no
    SSR point, when so) and which points are statistically tied."""
    counts = analysis.front["baseline"].astype(object).map(baseline_text).value_counts()
    out = ["Front points by baseline: " + ", ".join(f"{b} {n}" for b, n in counts.items()) + "."]
    if "ssr" not in counts.index:
        out.append(
            "The front contains no `ssr` point: every non-dominated trial comes from a baseline "
            "(or one whose baseline was not recorded), so no SSR result is on this front."
        )
    ties = tie_summary(analysis.front)
    if ties is not None:
        out.append(ties)
    return out


def reference_text(analysis: FrontAnalysis, digits: int = 6) -> str:
    """The reference point in display units, e.g. ``derived_miou = 15.1 %, fps_exclusive = 38.3
    FPS``."""
    pairs = zip(analysis.objectives, analysis.reference)
    return ", ".join(
        f"{c} = {v * display_scale(c):.{digits}g} {display_unit(c)}".rstrip() for (c, _), v in pairs
    )


def hypervolume_units(analysis: FrontAnalysis) -> tuple[float, str]:
    """The hypervolume in the axes' units (mIoU in %, so fraction x FPS becomes % x FPS) and
    that unit, e.g. ``(491.9, "% × FPS")``."""
    scale, units = 1.0, []
    for column, _ in analysis.objectives:
        scale *= display_scale(column)
        units.append(display_unit(column) or column)
    return analysis.hypervolume * scale, " × ".join(units)


def hypervolume_text(analysis: FrontAnalysis, digits: int = 4) -> str:
    """``"491.9 % × FPS"``: the hypervolume as every view shows it."""
    value, unit = hypervolume_units(analysis)
    return f"{value:.{digits}g} {unit}"


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in head) + " |"]
    lines.append("|" + "|".join(" --- " for _ in head) + "|")
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _measurement(analysis: FrontAnalysis) -> str:
    pool = analysis.trials[analysis.trials["excluded_reason"].isna()]
    parts = []
    for column in (c for c in _MEASUREMENT if c in pool.columns):
        values = sorted({fmt(v) for v in pool[column].dropna()})
        if values:
            parts.append(f"{column} {'/'.join(values)}")
    return "Speed measured with " + ", ".join(parts) + "." if parts else ""


def _summary(analysis: FrontAnalysis) -> list[str]:
    trials = analysis.trials
    sweeps = ", ".join(sorted(trials["sweep"].dropna().unique().astype(str)))
    objectives = ", ".join(f"{c} ({'max' if m else 'min'})" for c, m in analysis.objectives)
    return [
        "## Sweep",
        "",
        f"Sweep(s): {sweeps or 'unknown'}; dataset: {analysis.dataset or 'unknown/mixed'}; "
        f"{len(trials)} trials, {int(trials['usable'].sum())} complete, "
        f"{len(analysis.excluded)} excluded from the front. Objectives: {objectives}. "
        f"mIoU columns are shown in percent. {_measurement(analysis)}",
        "",
        *(f"- {n}" for n in analysis.notes),
    ]


def _front(analysis: FrontAnalysis, paths: dict[str, Path]) -> list[str]:
    head = [*(header(c) for c in front_columns(analysis)), "knee"]
    html = paths["html"].name
    return [
        f"## Pareto front ({len(analysis.front)} trials)",
        "",
        md_table(head, front_rows(analysis)),
        "",
        *(f"- {line}" for line in units_lines(analysis)),
        "",
        *front_findings(analysis),
        "",
        f"![Pareto front]({paths['png'].name}) (interactive, hover for config and genotype: "
        f"[{html}]({html}))",
        "",
        *_others(analysis),
        "## Hypervolume",
        "",
        f"Hypervolume **{hypervolume_text(analysis, 6)}** (Zitzler & Thiele 1998), in the axes' "
        f"units, with reference point {reference_text(analysis)} ({analysis.reference_rule}). "
        "Compare hypervolumes only under the same reference point (pass it with --reference "
        f"{','.join(f'{v:.6g}' for v in analysis.reference)}: mIoU there as a fraction).",
        "",
        f"![Hypervolume over the sweep]({paths['history_png'].name})",
    ]


def _others(analysis: FrontAnalysis) -> list[str]:
    head, rows = other_points(analysis)
    title = f"Points off the front ({len(rows)}; drawn grey and unlabelled)"
    return [f"### {title}", "", md_table(head, rows) if rows else "None.", ""]


def _knee(analysis: FrontAnalysis) -> list[str]:
    if analysis.knee is None:
        return ["## Knee", "", "None: it needs two objectives and three distinct front points."]
    knee = analysis.knee
    values = ", ".join(f"{header(c)} {fmt(knee[c], c)}" for c, _ in analysis.objectives)
    return [
        "## Knee",
        "",
        f"Trial {knee['trial_id']}, genotype {knee['genotype_id']}: {values}. The knee is the "
        "front point farthest from the line joining the front's two extremes, both objectives "
        "normalised to [0, 1] over the front (Das 1999): past it, more of one objective costs "
        "much more of the other.",
    ]


def _survival(analysis: FrontAnalysis) -> list[str]:
    table = analysis.survival
    rows = [[str(v) for v in r] for r in table.itertuples(index=False)]
    return [
        "## Survivorship: which trials reached the end",
        "",
        "Per baseline: trials started, stopped by the scheduler at each rung (epoch), failed, "
        "complete (ran the whole budget) and on the front. Only complete trials compete.",
        "",
        md_table(list(table.columns), rows),
        "",
        *survivorship_findings(table),
    ]


def _genotypes_and_exclusions(analysis: FrontAnalysis) -> list[str]:
    genotypes = [
        [r.genotype_id, r.trials, r.usable, "yes" if r.on_front else "", r.trial_ids]
        for r in analysis.genotypes.itertuples()
    ]
    excluded = [[fmt(v) for v in r] for r in analysis.excluded.itertuples(index=False)]
    return [
        "## Genotypes (how many trials found each)",
        "",
        md_table(["genotype_id", "trials", "complete", "on front", "trial ids"], genotypes),
        "",
        f"## Excluded trials ({len(excluded)})",
        "",
        md_table(["trial_id", "genotype_id", "status", "reason"], excluded)
        if excluded
        else "None.",
    ]


def report_markdown(
    analysis: FrontAnalysis, paths: dict[str, Path], views: Sequence[str] = ()
) -> str:
    """report.md: what each setting bought, the sweep summary and notes, front, ``views`` (the
    lines saying whether every view shows this front, :mod:`analysis.agreement`), survivorship,
    hypervolume, knee, genotypes, excluded trials; figures linked by file name (``paths`` from
    :func:`analysis.report.write_report`)."""
    effects = paths.get("effects_png")
    sections = [
        ["# SSR sweep report"],
        bought_lines(analysis.effects, effects.name if effects else None),
        _summary(analysis),
        _front(analysis, paths),
        list(views),
        _survival(analysis),
        *[lines for lines in [latency_lines(analysis.trials)] if lines],
        _knee(analysis),
        _genotypes_and_exclusions(analysis),
    ]
    return "\n\n".join("\n".join(s) for s in sections) + "\n"


def text_table(analysis: FrontAnalysis, max_rows: int = 30) -> str:
    """The front as aligned plain text; underneath: hypervolume and reference, each objective's
    unit and conditions, the front's baselines and ties, and the analysis notes."""
    head = [*(header(c) for c in front_columns(analysis)), "knee"]
    body = front_rows(analysis, max_rows)
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in body]
    if len(analysis.front) > max_rows:
        lines.append(f"... {len(analysis.front) - max_rows} more front rows in pareto.csv")
    lines.append(
        f"front: {len(analysis.front)} of {int(analysis.trials['usable'].sum())} complete trials "
        f"({len(analysis.excluded)} excluded); hypervolume {hypervolume_text(analysis, 6)} "
        f"(reference {reference_text(analysis, 4)})"
    )
    lines += units_lines(analysis)
    lines += [f.replace("`", "") for f in front_findings(analysis)]
    lines += [f"note: {n}" for n in analysis.notes]
    return "\n".join(lines)
