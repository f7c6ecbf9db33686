"""Result records -> accuracy-vs-FPS Pareto fronts, hypervolume, knee, reports.

Reads records, never objects: imports neither torch nor ray; mlflow is imported only inside
:func:`from_mlflow` and matplotlib only when a figure is drawn.

Typical use::

    from analysis import from_parquet, write_report, format_front_table
    # objectives None: the ones the sweep recorded in results.parquet (analysis.objectives)
    result = write_report(from_parquet("runs/x/results.parquet"), None, "runs/x/report")
    print(format_front_table(result))
"""

from analysis.bought import bought_lines
from analysis.effects import SettingEffects, setting_effects
from analysis.errors import AnalysisInputError
from analysis.front import FrontAnalysis, analyze_front
from analysis.load import canonical_records, find_results, from_mlflow, from_parquet
from analysis.objectives import (
    OBJECTIVE_ALIASES,
    OBJECTIVES_KEY,
    objectives_json,
    recorded_objectives,
    resolve_objectives,
    resolve_objectives_with_notes,
)
from analysis.page import front_figure, front_html, write_front_html
from analysis.pareto import (
    default_reference,
    hypervolume,
    hypervolume_history,
    knee_index,
    pareto_mask,
    staircase,
)
from analysis.plots import CITYSCAPES_PUBLISHED, plot_effects, plot_front, plot_history
from analysis.schema import (
    BASELINES,
    COLUMNS,
    coerce_records,
    records_frame,
    validate_records,
    write_records,
)

# NOTE: the report names are loaded on first use (PEP 562) so that `python -m analysis.report`
# does not find its own module already imported by this package.
_REPORT_NAMES = ("ReportResult", "format_front_table", "write_report")


def __getattr__(name: str) -> object:
    if name in _REPORT_NAMES:
        from analysis import report

        return getattr(report, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "BASELINES",
    "CITYSCAPES_PUBLISHED",
    "COLUMNS",
    "OBJECTIVES_KEY",
    "OBJECTIVE_ALIASES",
    "AnalysisInputError",
    "FrontAnalysis",
    "ReportResult",
    "SettingEffects",
    "analyze_front",
    "bought_lines",
    "canonical_records",
    "coerce_records",
    "default_reference",
    "find_results",
    "format_front_table",
    "from_mlflow",
    "from_parquet",
    "front_figure",
    "front_html",
    "hypervolume",
    "hypervolume_history",
    "knee_index",
    "objectives_json",
    "pareto_mask",
    "plot_effects",
    "plot_front",
    "plot_history",
    "recorded_objectives",
    "records_frame",
    "resolve_objectives",
    "resolve_objectives_with_notes",
    "setting_effects",
    "staircase",
    "validate_records",
    "write_front_html",
    "write_records",
]
