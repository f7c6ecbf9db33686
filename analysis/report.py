"""``python -m analysis.report``: records -> pareto.csv, trials.parquet, PNGs, HTML, report.md.

The sweep driver calls the same :func:`write_report` at the end of a sweep and prints
:func:`format_front_table`. Bad input (a missing or damaged file, an unknown experiment or
objective, a bad option) ends the command with a one-line message on stderr and exit status 2;
a tracking store that does not answer (probed in seconds, :mod:`analysis.probe`) with exit
status 3.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pandas as pd

from analysis.agreement import Agreement, agreement_for, agreement_lines
from analysis.errors import AnalysisInputError, TrackingUnreachableError
from analysis.front import FrontAnalysis, analyze_front
from analysis.load import (
    SOURCE_KEY,
    canonical_records,
    from_mlflow,
    from_parquet,
    resolve_objectives_with_notes,
)
from analysis.page import write_front_html
from analysis.plots import plot_effects, plot_front, plot_history
from analysis.probe import limit_http
from analysis.tables import report_markdown, text_table

EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote and found."""

    paths: dict[str, Path]  # csv, trials, png, effects_png (if any), history_png, html, markdown
    front: pd.DataFrame
    hypervolume: float
    reference: dict[str, float]  # objective column -> reference value
    knee: dict[str, Any] | None  # trial_id, genotype_id and the objective values
    objectives: list[tuple[str, bool]]
    notes: list[str] = field(default_factory=list)
    analysis: FrontAnalysis | None = None
    agreement: Agreement | None = None  # the report's front against Optuna's Pareto set


def format_front_table(result: ReportResult | FrontAnalysis, max_rows: int = 30) -> str:
    """The front as a plain-text table for a terminal (mIoU in percent, knee marked), with the
    hypervolume and its reference point underneath."""
    analysis = result.analysis if isinstance(result, ReportResult) else result
    if analysis is None:
        raise ValueError("this ReportResult carries no analysis")
    return text_table(analysis, max_rows)


def write_report(
    df: pd.DataFrame,
    objectives: str | list[tuple[str, bool]] | None = None,
    out_dir: str | Path = "report",
    reference: Sequence[float] | None = None,
    run_dir: str | Path | None = None,
) -> ReportResult:
    """Analyse records and write ``pareto.csv``, ``trials.parquet``, ``pareto.png``,
    ``hypervolume.png``, ``effects.png`` (when a setting varied among complete trials),
    ``pareto.html`` and ``report.md`` into ``out_dir``. ``run_dir``: the sweep's run folder,
    whose Optuna study (``optuna.db``) the report compares its front with and annotates
    (:mod:`analysis.agreement`); default: the folder of the results file the records were read
    from, else ``out_dir``'s parent (a sweep writes its report into ``<run folder>/report``). ``objectives`` is a spec like ``"miou:max,fps:max"`` or resolved pairs;
    None ranks the objectives recorded with the records (``df.attrs["objectives"]``, see
    :mod:`analysis.objectives`), so that a report of a sweep's results draws the sweep's front;
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
    if plot_effects(analysis.effects, out / "effects.png") is not None:
        paths["effects_png"] = out / "effects.png"
    write_front_html(analysis, paths["html"])
    source = run_dir or df.attrs.get(SOURCE_KEY) or out.resolve().parent
    agreement = agreement_for(analysis, source)
    markdown = report_markdown(analysis, paths, agreement_lines(agreement))
    paths["markdown"].write_text(markdown, encoding="utf-8")
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
        agreement=agreement,
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


def _error(exc: BaseException | str) -> None:
    """One ``error: ...`` line on stderr, whatever line breaks the message holds."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    print(f"error: {'; '.join(lines) or type(exc).__name__}", file=sys.stderr)


class _OneLineParser(argparse.ArgumentParser):
    """Usage errors as one line on stderr (exit status 2), like every other error here."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status (0 ok, 2 bad input, 3 unreachable
    tracking store)."""
    parser = _OneLineParser(
        prog="python -m analysis.report",
        description="Pareto front report of an SSR sweep: pareto.csv, trials.parquet, "
        "pareto.png, pareto.html and report.md from a results.parquet or an MLflow experiment.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--parquet", type=Path, help="a sweep's results.parquet (or its folder)")
    source.add_argument("--tracking-uri", help="MLflow tracking URI (with --experiment)")
    parser.add_argument("--experiment", help="MLflow experiment name")
    parser.add_argument("--sweep", help="only this sweep of the MLflow experiment")
    parser.add_argument(
        "--objectives",
        default=None,
        help="comma list name[:max|min], aliases miou, fps, latency, gmacs, params (default: "
        "the objectives the sweep recorded and ranked; miou:max,fps:max for older results)",
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
            limit_http()
            df = from_mlflow(args.tracking_uri, args.experiment, args.sweep)
        result = write_report(df, args.objectives, args.out, _parse_reference(args.reference))
    except TrackingUnreachableError as exc:
        _error(exc)
        return EXIT_UNREACHABLE
    except AnalysisInputError as exc:
        _error(exc)
        return EXIT_USAGE
    except OSError as exc:  # writing the report: a full disk, a folder that is a file
        _error(f"cannot write the report into {str(args.out)!r}: {exc}")
        return EXIT_USAGE
    print(format_front_table(result))
    print(f"report written to {result.paths['markdown'].parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
