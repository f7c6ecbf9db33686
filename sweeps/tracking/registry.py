"""The front's architectures in the MLflow model registry, with aliases to pick one.

After the report, :func:`register_front` registers the logged model (:mod:`sweeps.tracking.models`)
of every trial on the sweep's Pareto front as a version of one registered model per experiment,
``<experiment>-front``, and points three aliases at versions of this sweep:

- ``knee``: the front's knee (the point of the best trade-off, when the front has one);
- ``most-accurate``: the best value of the accuracy objective (an mIoU column);
- ``fastest``: the best value of the speed objective (an FPS or latency column).

A version carries tags ``ssr.sweep``, ``ssr.trial_id``, ``ssr.genotype_id``, ``ssr.baseline``,
the objective values and ``ssr.on_front`` (``false`` once a resumed sweep's front no longer holds
it). Versions are found again by ``ssr.sweep`` + ``ssr.trial_id``, so registering the front again
(``--resume``) adds only new front points and moves the aliases: no duplicate versions.
Several sweeps of one experiment share the registered model; the aliases follow the sweep that
registered last.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

from sweeps.tracking.models import bind_process_uri, model_of
from sweeps.tracking.runs import Tracker
from sweeps.tracking.ui import accuracy_and_speed

log = logging.getLogger(__name__)

ALIASES = ("knee", "most-accurate", "fastest")
#: Tag of a logged model listing its registered versions (``mlflow.utils.mlflow_tags``).
MODEL_VERSIONS_TAG = "mlflow.modelVersions"


def registered_name(experiment: str) -> str:
    """The registered model of an experiment's fronts."""
    return f"{experiment}-front"


def alias_rows(front: Any, objectives: Sequence[tuple[str, bool]]) -> dict[str, Any]:
    """Which front row each alias names: alias -> row (a pandas Series)."""
    out: dict[str, Any] = {}
    if front is None or len(front) == 0:
        return out
    if "is_knee" in front.columns:
        knee = front[front["is_knee"].fillna(False).astype(bool)]
        if len(knee):
            out["knee"] = knee.iloc[0]
    accuracy, speed = accuracy_and_speed([(c, m) for c, m in objectives if c in front.columns])
    for alias, objective in (("most-accurate", accuracy), ("fastest", speed)):
        if objective is None:
            continue
        column, maximize = objective
        values = front[column].astype("Float64")
        if values.notna().any():
            out[alias] = front.loc[values.idxmax() if maximize else values.idxmin()]
    return out


def _versions(tracker: Tracker, name: str) -> list[Any]:
    """Every version of the registered model (all pages)."""
    found: list[Any] = []
    token = None
    while True:
        page = tracker.client.search_model_versions(
            f"name = '{name}'", max_results=1000, page_token=token
        )
        found.extend(page)
        token = page.token
        if not token:
            return found


def _text(v: Any) -> str:
    """A tag value ("" for a missing one: None, NA, NaN)."""
    import pandas as pd

    return "" if v is None or pd.isna(v) else str(v)


def _number(v: Any) -> str | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return repr(f) if math.isfinite(f) else None


def register_front(
    tracker: Tracker, front: Any, objectives: Sequence[tuple[str, bool]]
) -> dict[str, str]:
    """Register the front's logged models as versions of ``<experiment>-front`` and set the
    aliases ``knee``, ``most-accurate`` and ``fastest``; returns alias -> version.

    ``front``: the front rows of the report (``ReportResult.front`` or ``FrontAnalysis.front``:
    ``trial_id``, ``genotype_id``, ``baseline``, ``is_knee`` and the objective columns);
    ``objectives``: the (column, maximize) pairs it was ranked by (``ReportResult.objectives``).
    A front point whose trial has no READY logged model (no ONNX export, or one that could not
    be written: FAILED) is left out, with a warning.
    Returns {} when MLflow cannot be used (the results stay in results.parquet).
    """
    from mlflow.exceptions import MlflowException

    name = registered_name(tracker.experiment)
    result: dict[str, str] = {}
    if front is None or len(front) == 0 or not tracker.attach():
        return result

    def register() -> None:
        bind_process_uri(tracker.uri)
        client = tracker.client
        try:
            client.create_registered_model(
                name,
                tags={"ssr.experiment": tracker.experiment},
                description=f"Pareto fronts of the SSR sweeps of experiment {tracker.experiment}",
            )
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        mine = {
            v.tags.get("ssr.trial_id"): v
            for v in sorted(_versions(tracker, name), key=lambda v: -int(v.version))
            if v.tags.get("ssr.sweep") == tracker.sweep
        }
        on_front: dict[str, str] = {}
        for row in front.to_dict("records"):
            trial_id = str(row["trial_id"])
            version = mine.get(trial_id)
            if version is None:
                version = _new_version(tracker, name, row, objectives)
                if version is None:
                    continue
                mine[trial_id] = version
            link_version(client, version)
            on_front[trial_id] = str(version.version)
        for trial_id, version in mine.items():
            flag = "true" if trial_id in on_front else "false"
            if version.tags.get("ssr.on_front") != flag:
                client.set_model_version_tag(name, str(version.version), "ssr.on_front", flag)
        chosen = alias_rows(front, objectives)
        for alias in ALIASES:
            row = chosen.get(alias)
            version = on_front.get(str(row["trial_id"])) if row is not None else None
            if version is not None:
                client.set_registered_model_alias(name, alias, version)
                result[alias] = version
            elif (
                alias in _aliases(client, name)
                and _alias_sweep(client, name, alias) == tracker.sweep
            ):
                client.delete_registered_model_alias(name, alias)  # this sweep has none now

    tracker.store.call(f"registering the front in the model registry ({name})", register)
    return result


def _new_version(
    tracker: Tracker, name: str, row: dict[str, Any], objectives: Sequence[tuple[str, bool]]
) -> Any | None:
    """A new version of ``name`` for the front row's logged model, tagged with the sweep, the
    trial and its objective values; None (and a warning) when the trial has no logged model
    whose files are in (READY: a FAILED one is an export that could not be written)."""
    trial_id = str(row["trial_id"])
    model_id = model_of(tracker, trial_id, ready=True)
    if model_id is None:
        log.warning(
            "front trial %s has no ready logged model (no ONNX export?): not registered", trial_id
        )
        return None
    tags = {
        "ssr.sweep": tracker.sweep,
        "ssr.trial_id": trial_id,
        "ssr.genotype_id": _text(row.get("genotype_id")),
        "ssr.baseline": _text(row.get("baseline")),
    }
    for column, _ in objectives:
        text = _number(row.get(column))
        if text is not None:
            tags[f"ssr.{column}"] = text
    return tracker.client.create_model_version(
        name,
        source=f"models:/{model_id}",
        run_id=tracker.book.run_id(trial_id),
        tags=tags,
        model_id=model_id,
        description=f"sweep {tracker.sweep}, trial {trial_id}",
    )


def link_version(client: Any, version: Any) -> None:
    """Make the version's logged model list it (tag ``mlflow.modelVersions``, which the UI's
    logged model page and the models table read: "Registered" instead of "Not registered").

    NOTE: MLflow 3.17's SQL registry does not keep the ``model_id`` given to
    ``create_model_version`` (the version links to its model by ``source = models:/<id>``),
    and only ``mlflow.register_model`` tags the model. A version registered before this link
    (an earlier run of the sweep) is linked here when the front is registered again.
    """
    source = str(getattr(version, "source", "") or "")
    model_id = getattr(version, "model_id", None) or (
        source.removeprefix("models:/") if source.startswith("models:/m-") else None
    )
    if not model_id:
        return
    entry = {"name": version.name, "version": str(version.version)}
    tags = client.get_logged_model(model_id).tags or {}
    listed = json.loads(tags.get(MODEL_VERSIONS_TAG) or "[]")
    if entry not in [{"name": v.get("name"), "version": str(v.get("version"))} for v in listed]:
        client.set_logged_model_tags(model_id, {MODEL_VERSIONS_TAG: json.dumps([*listed, entry])})


def _aliases(client: Any, name: str) -> set[str]:
    return set(getattr(client.get_registered_model(name), "aliases", {}) or {})


def _alias_sweep(client: Any, name: str, alias: str) -> str | None:
    return client.get_model_version_by_alias(name, alias).tags.get("ssr.sweep")
