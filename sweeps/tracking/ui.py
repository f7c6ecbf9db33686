"""The MLflow UI as a sweep's user meets it: the training view and the links the sweep prints.

MLflow 3.17's UI opens an experiment in its GenAI view (traces first) unless told otherwise. Two
things make it open on the runs table instead (read from the 3.17 UI bundle,
``mlflow/server/js/build``):

- the experiment tag ``mlflow.experimentKind = custom_model_development`` (the kind the UI's
  "Model training" switch writes; older UIs and the experiment header read it), set by
  :func:`mark_training` whenever a sweep creates or attaches to its experiment;
- the page's ``workflowType=machine_learning`` query parameter (3.17 chooses the view from it, or
  from the switch's setting in the browser, before the tag), used by :func:`runs_url` with the
  runs tab route ``#/experiments/<id>/runs``.

The links the sweep prints at its end open saved views (docs/mlflow.md). A view is the UI's
"shared view": an experiment tag ``mlflow.sharedViewState.<key>`` holding the page's state as
JSON (filter, order, columns, charts), opened by ``viewStateShareKey=<key>`` in the URL
(:func:`save_view`). :func:`trials_view` lists the sweep's trials flat (ordered by a metric; a
table ordered by start time nests them under one collapsed parent row) with their objectives,
status and varied values; :func:`front_view` charts the front's runs, accuracy against speed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlparse

#: Experiment tag read by the MLflow UI to choose between the GenAI and the training views.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Its value for experiments of model training runs.
TRAINING_KIND = "custom_model_development"
#: Where ``mlflow ui`` serves by default.
DEFAULT_UI = "http://127.0.0.1:5000"
#: Experiment tag prefix of the UI's shared views (followed by the view's key).
VIEW_TAG = "mlflow.sharedViewState."


def mark_training(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model training (the UI then lists its runs first)."""
    exp = client.get_experiment(experiment_id)
    if (exp.tags or {}).get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def runs_url(server: str, experiment_id: str, **query: str) -> str:
    """The runs tab of an experiment in the training view of the UI at ``server`` (more query
    parameters: ``viewStateShareKey``, ``compareRunsMode``)."""
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return (
        f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs"
        f"?workflowType=machine_learning{extra}"
    )


def ui_address(uri: str) -> str:
    """Where the UI of a tracking URI serves: a server's own address, else ``mlflow ui``'s."""
    return uri if urlparse(uri).scheme in ("http", "https") else DEFAULT_UI


def view_line(uri: str, experiment_id: str) -> str:
    """How to look at the runs: the ``mlflow ui`` command for a SQLite store, the runs page of
    a server (whose URI is also the UI's address)."""
    if urlparse(uri).scheme in ("http", "https"):
        return runs_url(uri, experiment_id)
    return (
        f"mlflow ui --backend-store-uri {uri} --port 5000, then open "
        f"{runs_url(DEFAULT_UI, experiment_id)}"
    )


def accuracy_and_speed(
    objectives: Sequence[tuple[str, bool]],
) -> tuple[tuple[str, bool] | None, tuple[str, bool] | None]:
    """The accuracy objective (an mIoU column, else the first) and the speed objective (an FPS
    or latency column, else the second) of ``(column, maximize)`` pairs."""
    pairs = list(objectives)
    accuracy = next((o for o in pairs if "miou" in o[0]), pairs[0] if pairs else None)
    speed = next(
        (o for o in pairs if o[0].startswith("fps") or "latency" in o[0]),
        pairs[1] if len(pairs) > 1 else None,
    )
    return accuracy, speed


def _column(kind: str, key: str) -> str:
    """A runs table column (and sort key) as the UI names it: ``metrics.`derived_miou```."""
    return f"{kind}.`{key}`"


def trials_view(
    sweep: str, objectives: Sequence[tuple[str, bool]], varied: Iterable[str]
) -> dict[str, Any]:
    """The runs table of the sweep's trials: one flat row per trial, best first by the first
    objective, with ``ssr.status``, the objectives and the varied values as columns."""
    first = list(objectives)[:1] or [("derived_miou", True)]
    leading = [_column("tags", "ssr.status")] + [_column("metrics", c) for c, _ in objectives]
    params = [_column("params", f"cfg.{k.removeprefix('search.')}") for k in varied]
    return {
        "searchFilter": f"tags.`ssr.sweep` = '{sweep}' and tags.`ssr.role` = 'trial'",
        "orderByKey": _column("metrics", first[0][0]),
        "orderByAsc": not first[0][1],
        "selectedColumns": leading + params,
        "columnOrder": leading,  # NOTE: else the UI groups columns: metrics, params, then tags
        "runsHiddenMode": "SHOW_ALL",
    }


def front_view(run_ids: Sequence[str], objectives: Sequence[tuple[str, bool]]) -> dict[str, Any]:
    """The charts of the front's runs: first a large scatter of accuracy against speed (the
    trade-off the sweep is about), the per-epoch sections of the UI after it."""
    accuracy, speed = accuracy_and_speed(objectives)
    listed = ", ".join(f"'{r}'" for r in run_ids)
    section = "front"
    charts = []
    if accuracy is not None and speed is not None:
        charts.append(
            {
                "uuid": "front-tradeoff",
                "type": "SCATTER",
                "runsCountToCompare": 100,
                "metricSectionId": section,
                "deleted": False,
                "isGenerated": False,
                "displayName": f"{accuracy[0]} vs {speed[0]} (front)",
                "xaxis": {"key": speed[0], "type": "METRIC"},
                "yaxis": {"key": accuracy[0], "type": "METRIC"},
            }
        )
    return {
        "searchFilter": f"attributes.run_id IN ({listed})",
        "orderByKey": _column("metrics", accuracy[0]) if accuracy else "",
        "orderByAsc": not accuracy[1] if accuracy else False,
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": charts,
        "compareRunSections": [
            {
                "uuid": section,
                "name": "Pareto front",
                "display": True,
                "isReordered": False,
                "columns": 1,
                "cardHeight": 520,
            }
        ],
        "isAccordionReordered": True,
    }


def view_key(sweep: str, kind: str) -> str:
    """The key of a sweep's view (URL-safe whatever the sweep's name)."""
    return f"ssr-{kind}-{hashlib.sha1(sweep.encode()).hexdigest()[:12]}"


def save_view(client: Any, experiment_id: str, key: str, state: dict[str, Any]) -> None:
    """Store a view of the experiment's runs page under ``key`` (an experiment tag)."""
    client.set_experiment_tag(experiment_id, VIEW_TAG + key, json.dumps(state))


def view_url(uri: str, experiment_id: str, key: str, charts: bool = False) -> str:
    """The URL that opens a saved view (as a table, or as charts)."""
    mode = "CHART" if charts else "TABLE"
    return runs_url(ui_address(uri), experiment_id, viewStateShareKey=key, compareRunsMode=mode)


def view_lines(tracker: Any, objectives: Sequence[tuple[str, bool]], front: Any = None) -> str:
    """Save the sweep's two views and say how to open them: the trials, and the front's runs
    charted accuracy against speed (``front``: the report's front rows, with ``trial_id``).
    Without MLflow, the plain runs page of :func:`view_line`.

    ``tracker`` is the sweep's :class:`~sweeps.tracking.runs.Tracker`.
    """
    plain = f"view the runs: {view_line(tracker.uri, tracker.experiment_id)}"
    if not tracker.attach():
        return plain
    trials = view_key(tracker.sweep, "trials")
    fronts = view_key(tracker.sweep, "front")
    ids = [tracker.book.run_id(str(t)) for t in ([] if front is None else front["trial_id"])]
    ids = [r for r in ids if r]
    varied = tracker.varied or []

    def save() -> None:
        save_view(tracker.client, tracker.experiment_id, trials,
                  trials_view(tracker.sweep, objectives, varied))  # fmt: skip
        if ids:
            save_view(tracker.client, tracker.experiment_id, fronts, front_view(ids, objectives))

    if not tracker.store.call("saving the sweep's views in the MLflow UI", save):
        return plain
    head = "view the runs:"
    if urlparse(tracker.uri).scheme not in ("http", "https"):
        head += f" mlflow ui --backend-store-uri {tracker.uri} --port 5000, then open"
    lines = [head, f"  trials: {view_url(tracker.uri, tracker.experiment_id, trials)}"]
    if ids:
        lines.append(
            f"  front:  {view_url(tracker.uri, tracker.experiment_id, fronts, charts=True)}"
        )
    return "\n".join(lines)
