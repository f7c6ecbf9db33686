"""``python -m analysis.report``: records -> pareto.csv, trials.parquet, PNGs, HTML, report.md.

The sweep driver calls the same :func:`write_report` at the end of a sweep and prints
:func:`format_front_table`. Bad input ends the command with a one-line message on stderr and
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from analysis.errors import AnalysisInputError
from analysis.front import FrontAnalysis, analyze_front
from analysis.html import write_front_html
from analysis.load import (
    canonical_records,
    from_mlflow,
    from_parquet,
    resolve_objectives_with_notes,
)
from analysis.plots import display_scale, is_miou, plot_front, plot_gap, plot_history

DEFAULT_OBJECTIVES = "miou:max,fps:max"
_CONTEXT = (
    "params_m",
    "gmacs",
    "discretization_gap",
    "cfg.ssr.op",
    "cfg.ssr.out",
    "cfg.ssr.mid",
    "cfg.ssr.depth",
)


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote and found."""

    paths: dict[str, Path]  # csv, trials, png, gap_png (if any), history_png, html, markdown
    front: pd.DataFrame
    hypervolume: float
    reference: dict[str, float]  # objective column -> reference value
    knee: dict[str, Any] | None  # trial_id, genotype_id and the objective values
    objectives: list[tuple[str, bool]]
    notes: list[str] = field(default_factory=list)
    analysis: FrontAnalysis | None = None


def _fmt(value: Any, column: str = "") -> str:
    if value is None or value is pd.NA or (isinstance(value, float) and value != value):
        return ""
    if isinstance(value, float):
        return f"{value * display_scale(column):.2f}" if is_miou(column) else f"{value:.4g}"
    return str(value)


def _columns(analysis: FrontAnalysis) -> list[str]:
    objectives = [c for c, _ in analysis.objectives]
    context = [c for c in _CONTEXT if c in analysis.front and c not in objectives]
    context = [c for c in context if analysis.front[c].notna().any()]
    return ["trial_id", "genotype_id", *objectives, *context]


def _rows(frame: pd.DataFrame, columns: Sequence[str]) -> list[list[str]]:
    return [[_fmt(row[c], c) for c in columns] for _, row in frame.iterrows()]


def _header(column: str) -> str:
    return f"{column} (%)" if is_miou(column) else column


def format_front_table(result: ReportResult | FrontAnalysis, max_rows: int = 30) -> str:
    """The front as a plain-text table for a terminal, with hypervolume, reference and knee."""
    analysis = result.analysis if isinstance(result, ReportResult) else result
    if analysis is None:
        raise ValueError("this ReportResult carries no analysis")
    columns = _columns(analysis)
    front = analysis.front.head(max_rows)
    rows = _rows(front, columns)
    marks = ["*" if bool(k) else "" for k in front["is_knee"].fillna(False)]
    header = [*(_header(c) for c in columns), "knee"]
    body = [[*r, m] for r, m in zip(rows, marks)]
    widths = [max(len(h), *(len(r[i]) for r in body)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths)) for r in body]
    if len(analysis.front) > max_rows:
        lines.append(f"... {len(analysis.front) - max_rows} more front rows in pareto.csv")
    ref = ", ".join(f"{c}={v:.4g}" for (c, _), v in zip(analysis.objectives, analysis.reference))
    lines.append(
        f"front: {len(analysis.front)} of {int(analysis.trials['usable'].sum())} usable trials "
        f"({len(analysis.excluded)} excluded); hypervolume {analysis.hypervolume:.6g} "
        f"(reference {ref})"
    )
    return "\n".join(lines)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(esc(h) for h in header) + " |"]
    lines.append("|" + "|".join(" --- " for _ in header) + "|")
    lines += ["| " + " | ".join(esc(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(analysis: FrontAnalysis, paths: dict[str, Path]) -> str:
    trials = analysis.trials
    sweeps = ", ".join(sorted(trials["sweep"].dropna().unique().astype(str)))
    objectives = ", ".join(f"{c} ({'max' if m else 'min'})" for c, m in analysis.objectives)
    columns = _columns(analysis)
    front_rows = [
        [*r, "knee" if bool(k) else ""]
        for r, k in zip(_rows(analysis.front, columns), analysis.front["is_knee"])
    ]
    ref = ", ".join(f"{c} = {v:.6g}" for (c, _), v in zip(analysis.objectives, analysis.reference))
    out = [
        "# SSR sweep report",
        "",
        f"Sweep(s): {sweeps or 'unknown'}; dataset: {analysis.dataset or 'unknown/mixed'}; "
        f"{len(trials)} trials, {int(trials['usable'].sum())} complete, "
        f"{len(analysis.excluded)} excluded from the front. Objectives: {objectives}. "
        "mIoU columns are shown in percent.",
        "",
        *(f"- {n}" for n in analysis.notes),
        "",
        f"## Pareto front ({len(analysis.front)} trials)",
        "",
        _md_table([*(_header(c) for c in columns), "knee"], front_rows),
        "",
        f"![Pareto front]({paths['png'].name}) (interactive: [{paths['html'].name}]"
        f"({paths['html'].name}))",
        "",
        "## Hypervolume",
        "",
        f"Hypervolume **{analysis.hypervolume:.6g}** (Zitzler & Thiele 1998; in the objectives' "
        f"stored units) with reference point {ref} ({analysis.reference_rule}). Compare "
        "hypervolumes only under the same reference point (pass it with --reference).",
        "",
        f"![Hypervolume over the sweep]({paths['history_png'].name})",
        "",
        "## Knee",
        "",
    ]
    if analysis.knee is not None:
        values = ", ".join(
            f"{_header(c)} {_fmt(analysis.knee[c], c)}" for c, _ in analysis.objectives
        )
        out.append(
            f"Trial {analysis.knee['trial_id']}, genotype {analysis.knee['genotype_id']}: "
            f"{values}. The knee is the front point farthest from the line joining the "
            "front's two extremes, both objectives normalised to [0, 1] (Das 1999)."
        )
    else:
        out.append("No knee: it needs two objectives and at least three distinct front points.")
    out += ["", "## Discretization gap vs SSR weight", ""]
    if len(analysis.gap):
        g = "discretization_gap"  # gaps are mIoU differences: shown in points (x100)
        gap_rows = [
            [
                r.weight,
                r.value,
                str(r.trials),
                _fmt(r.gap_mean, g),
                _fmt(r.gap_min, g),
                _fmt(r.gap_max, g),
                _fmt(r.derived_miou_mean, "derived_miou"),
            ]
            for r in analysis.gap.itertuples()
        ]
        out.append(
            _md_table(
                [
                    "weight",
                    "value",
                    "trials",
                    "gap mean (pts)",
                    "gap min",
                    "gap max",
                    "derived mIoU mean (%)",
                ],
                gap_rows,
            )
        )
        if "gap_png" in paths:
            out += ["", f"![Gap vs SSR weight]({paths['gap_png'].name})"]
    else:
        out.append("No SSR weight column (cfg.ssr.op/out/mid/depth) with a recorded gap.")
    out += ["", "## Genotypes (how many trials found each)", ""]
    out.append(
        _md_table(
            ["genotype_id", "trials", "complete", "on front", "trial ids"],
            [
                [
                    str(r.genotype_id),
                    str(r.trials),
                    str(r.usable),
                    "yes" if r.on_front else "",
                    str(r.trial_ids),
                ]
                for r in analysis.genotypes.itertuples()
            ],
        )
    )
    out += ["", f"## Excluded trials ({len(analysis.excluded)})", ""]
    if len(analysis.excluded):
        out.append(
            _md_table(
                ["trial_id", "genotype_id", "status", "reason"],
                [[_fmt(v) for v in r] for r in analysis.excluded.itertuples(index=False)],
            )
        )
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


def write_report(
    df: pd.DataFrame,
    objectives: str | list[tuple[str, bool]] = DEFAULT_OBJECTIVES,
    out_dir: str | Path = "report",
    reference: Sequence[float] | None = None,
) -> ReportResult:
    """Analyse records and write ``pareto.csv``, ``trials.parquet``, ``pareto.png``,
    ``hypervolume.png``, ``gap.png`` (when SSR weights vary), ``pareto.html`` and ``report.md``
    into ``out_dir``. ``objectives`` is a spec like ``"miou:max,fps:max"`` or resolved pairs;
    ``reference`` is the hypervolume reference point (default rule: see
    :func:`analysis.pareto.default_reference`). Raises :class:`AnalysisInputError` on bad input.
    """
    records = canonical_records(df)
    resolved, notes = resolve_objectives_with_notes(objectives, records)
    analysis = analyze_front(records, resolved, reference, notes)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnalysisInputError(f"cannot create the output folder {str(out)!r}: {exc}") from None
    paths = {
        "csv": out / "pareto.csv",
        "trials": out / "trials.parquet",
        "png": out / "pareto.png",
        "history_png": out / "hypervolume.png",
        "html": out / "pareto.html",
        "markdown": out / "report.md",
    }
    analysis.front.to_csv(paths["csv"], index=False)
    analysis.trials.to_parquet(paths["trials"], index=False)
    plot_front(analysis, paths["png"])
    plot_history(analysis, paths["history_png"])
    if plot_gap(analysis, out / "gap.png") is not None:
        paths["gap_png"] = out / "gap.png"
    write_front_html(analysis, paths["html"])
    paths["markdown"].write_text(_markdown(analysis, paths), encoding="utf-8")
    knee = None
    if analysis.knee is not None:
        keys = ["trial_id", "genotype_id", *(c for c, _ in resolved)]
        knee = {k: _python(analysis.knee[k]) for k in keys}
    return ReportResult(
        paths=paths,
        front=analysis.front,
        hypervolume=analysis.hypervolume,
        reference={c: v for (c, _), v in zip(resolved, analysis.reference)},
        knee=knee,
        objectives=resolved,
        notes=list(analysis.notes),
        analysis=analysis,
    )


def _python(value: Any) -> Any:
    """A plain Python value (numpy scalars unwrapped, NA as None)."""
    if value is None or value is pd.NA:
        return None
    return value.item() if hasattr(value, "item") else value


def _parse_reference(text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [float(v) for v in text.split(",")]
    except ValueError:
        raise AnalysisInputError(f"--reference must be numbers like 0.3,20, got {text!r}") from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m analysis.report", description=__doc__.splitlines()[0]
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--parquet", type=Path, help="a sweep's results.parquet (or its folder)")
    source.add_argument("--tracking-uri", help="MLflow tracking URI (with --experiment)")
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--sweep", help="only this sweep of the MLflow experiment")
    parser.add_argument(
        "--objectives",
        default=DEFAULT_OBJECTIVES,
        help="comma list name[:max|min] (default %(default)s)",
    )
    parser.add_argument("--out", type=Path, default=Path("report"), help="output folder")
    parser.add_argument(
        "--reference",
        help="hypervolume reference point v1,v2 in stored units "
        "(mIoU as a fraction); write --reference=-1,0 for negative values",
    )
    args = parser.parse_args(argv)
    try:
        if args.parquet is not None:
            df = from_parquet(args.parquet)
        elif not args.experiment:
            raise AnalysisInputError("--tracking-uri needs --experiment NAME")
        else:
            df = from_mlflow(args.tracking_uri, args.experiment, args.sweep)
        result = write_report(df, args.objectives, args.out, _parse_reference(args.reference))
    except AnalysisInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_front_table(result))
    for note in result.notes:
        print(f"note: {note}")
    print(f"report written to {result.paths['markdown'].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
