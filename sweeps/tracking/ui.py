"""The MLflow UI as a sweep's user meets it: the training view and the link to the runs table.

MLflow 3.17's UI opens an experiment in its GenAI view (traces first) unless told otherwise. Two
things make it open on the runs table instead (read from the 3.17 UI bundle,
``mlflow/server/js/build``):

- the experiment tag ``mlflow.experimentKind = custom_model_development`` (the kind the UI's
  "Model training" switch writes; older UIs and the experiment header read it), set by
  :func:`mark_training` whenever a sweep creates or attaches to its experiment;
- the page's ``workflowType=machine_learning`` query parameter (3.17 chooses the view from it, or
  from the switch's setting in the browser, before the tag), used by :func:`runs_url` with the
  runs tab route ``#/experiments/<id>/runs``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

#: Experiment tag read by the MLflow UI to choose between the GenAI and the training views.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
#: Its value for experiments of model training runs.
TRAINING_KIND = "custom_model_development"
#: Where ``mlflow ui`` serves by default.
DEFAULT_UI = "http://127.0.0.1:5000"


def mark_training(client: Any, experiment_id: str) -> None:
    """Tag the experiment as model training (the UI then lists its runs first)."""
    exp = client.get_experiment(experiment_id)
    if (exp.tags or {}).get(EXPERIMENT_KIND_TAG) != TRAINING_KIND:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def runs_url(server: str, experiment_id: str) -> str:
    """The runs table of an experiment in the training view of the UI at ``server``."""
    return f"{server.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def view_line(uri: str, experiment_id: str) -> str:
    """How to look at the runs: the ``mlflow ui`` command for a SQLite store, the runs page of
    a server (whose URI is also the UI's address)."""
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        return runs_url(uri, experiment_id)
    return (
        f"mlflow ui --backend-store-uri {uri} --port 5000, then open "
        f"{runs_url(DEFAULT_UI, experiment_id)}"
    )
