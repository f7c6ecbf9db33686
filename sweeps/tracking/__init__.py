"""MLflow tracking of a sweep, written from the driver (docs/architecture.md §4, docs/stack.md §4).

One parent run per sweep and one nested child run per trial, created by a Tune callback in the
driver. Resuming reuses runs (found by tag, never created twice); a tracking store that goes
away mid-sweep costs no data (it is left alone for a while and caught up at the end of the
sweep, or on ``--resume``, from results.parquet and Tune's checkpoints). One idea per module:

- :mod:`~sweeps.tracking.store`: the default store, probing a URI, the client, time limits and
  back-off;
- :mod:`~sweeps.tracking.names`: short run names and the params a run keeps;
- :mod:`~sweeps.tracking.book`: :class:`~sweeps.tracking.book.RunBook`, what each child run
  holds (each step once);
- :mod:`~sweeps.tracking.runs`: :class:`Tracker`, the parent and child runs and their ends;
- :mod:`~sweeps.tracking.records`: epochs, final records, artifacts, re-measurements of a child;
- :mod:`~sweeps.tracking.models`: each derived architecture as a logged model of its trial;
- :mod:`~sweeps.tracking.registry`: the front in the model registry, with aliases;
- :mod:`~sweeps.tracking.sync`: back-fill after an outage, pruning of orphaned runs;
- :mod:`~sweeps.tracking.ui`: the training view of the MLflow UI and the views the sweep links;
- :mod:`~sweeps.tracking.callback`: :class:`MlflowCallback`, the Tune callback;
- :mod:`~sweeps.tracking.writer`: the process that writes the callback's events, off Tune's loop.
"""

from sweeps.tracking.callback import MlflowCallback
from sweeps.tracking.records import log_epoch, log_final, log_values
from sweeps.tracking.registry import register_front
from sweeps.tracking.runs import Tracker
from sweeps.tracking.store import (
    HTTP_LIMITS,
    TrackingError,
    artifact_root,
    default_uri,
    probe,
)
from sweeps.tracking.sync import prune_orphans, sync
from sweeps.tracking.ui import view_line, view_lines

__all__ = [
    "HTTP_LIMITS",
    "MlflowCallback",
    "Tracker",
    "TrackingError",
    "artifact_root",
    "default_uri",
    "log_epoch",
    "log_final",
    "log_values",
    "probe",
    "prune_orphans",
    "register_front",
    "sync",
    "view_line",
    "view_lines",
]
