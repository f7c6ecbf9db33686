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

import logging
import math
from collections.abc import Sequence
from typing import Any

from sweeps.tracking.models import bind_process_uri, model_of
from sweeps.tracking.runs import Tracker

log = logging.getLogger(__name__)

ALIASES = ("knee", "most-accurate", "fastest")


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
    cols = [(c, m) for c, m in objectives if c in front.columns]
    accuracy = next((o for o in cols if "miou" in o[0]), cols[0] if cols else None)
    speed = next(
        (o for o in cols if o[0].startswith("fps") or "latency" in o[0]),
        cols[1] if len(cols) > 1 else None,
    )
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
    A front point whose trial has no logged model (no ONNX export) is left out, with a warning.
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
                model_id = model_of(tracker, trial_id)
                if model_id is None:
                    log.warning(
                        "front trial %s has no logged model (no ONNX export?): not registered",
                        trial_id,
                    )
                    continue
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
                version = client.create_model_version(
                    name,
                    source=f"models:/{model_id}",
                    run_id=tracker.children.get(trial_id),
                    tags=tags,
                    model_id=model_id,
                    description=f"sweep {tracker.sweep}, trial {trial_id}",
                )
                mine[trial_id] = version
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


def _aliases(client: Any, name: str) -> set[str]:
    return set(getattr(client.get_registered_model(name), "aliases", {}) or {})


def _alias_sweep(client: Any, name: str, alias: str) -> str | None:
    return client.get_model_version_by_alias(name, alias).tags.get("ssr.sweep")
