"""The one exception type the analysis package raises for bad input."""

from __future__ import annotations


class AnalysisInputError(ValueError):
    """Input the analysis cannot use: a missing file or experiment, an empty result, a record that
    breaks the schema, an unknown objective.

    The message always says what was missing and what to do about it; entry points print it as a
    single line and exit with status 2 instead of showing a traceback.
    """


class TrackingUnreachableError(AnalysisInputError):
    """The MLflow tracking store does not answer (a dead server, a network that drops the
    connection): entry points exit with status 3 instead of 2, as the sweep driver does."""
