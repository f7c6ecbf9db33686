"""Every derived architecture as an MLflow logged model of its trial (MLflow 3 ``LoggedModel``).

A complete trial's ``model.onnx`` (the derived network exported by ``ssr.run.pipeline``) becomes a
logged model of the trial's child run, in the ONNX flavour: with a signature read from the ONNX
graph (exact input and output shapes), an input example (zeros of the input shape, when it is
small enough to store as JSON: :data:`MAX_EXAMPLE_VALUES`), pinned ``onnx``/``onnxruntime``
requirements, the run's params, and tags ``ssr.trial_id``, ``ssr.sweep``, ``ssr.genotype_id``,
``ssr.baseline`` by which it is found again (a resume never logs it twice). The trial's final
metrics are logged with the model's id, which links them to the model (its "Metrics" in the UI).

The weights are the best retraining epoch's when the trial retrained, else the network's initial
ones (tag ``ssr.weights``: ``retrained (best epoch N)`` or ``initial``); with initial weights the
model is the architecture, for deployment, speed and export checks; its accuracy is the run's
metrics. The registry of the front is :mod:`sweeps.tracking.registry`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sweeps.tracking.runs import Tracker

log = logging.getLogger(__name__)

#: The largest input (number of values) stored as an input example (zeros, about 5 bytes each as
#: JSON, twice: input_example.json and serving_input_example.json). 1x3x256x512 fits.
MAX_EXAMPLE_VALUES = 1 << 19
#: ``model_type`` of the logged models.
MODEL_TYPE = "ssr-derived-net"


def bind_process_uri(uri: str) -> None:
    """Make ``uri`` MLflow's process-wide tracking URI.

    NOTE: ``Model.log`` resolves its client from the process-wide URI, and a SQLite registry
    resolves a version's ``models:/<id>`` source through it too; the driver tracks to one store,
    so binding it for the process is safe (the client of :class:`Tracker` is explicit anyway).
    """
    import mlflow

    if mlflow.get_tracking_uri() != uri:
        mlflow.set_tracking_uri(uri)


def model_filter(tracker: Tracker, trial_id: str) -> str:
    """The search filter of a trial's logged model."""
    return f"tags.`ssr.trial_id` = '{trial_id}' AND tags.`ssr.sweep` = '{tracker.sweep}'"


def find_model(tracker: Tracker, trial_id: str) -> Any | None:
    """The trial's logged model (the oldest, if a crash left several), or None."""
    known = tracker.book.model_id(trial_id)
    if known is not None:
        return tracker.client.get_logged_model(known)
    if tracker.knows_all("models"):  # a new sweep's trial without a model in the book has none
        return None
    found = list(
        tracker.client.search_logged_models(
            [tracker.experiment_id], filter_string=model_filter(tracker, trial_id), max_results=50
        )
    )
    if not found:
        return None
    model = min(found, key=lambda m: m.creation_timestamp or 0)
    tracker.book.note_model(trial_id, model.model_id)
    return model


def model_of(tracker: Tracker, trial_id: str, ready: bool = False) -> str | None:
    """The id of the trial's logged model, if it has one (None also when MLflow is away);
    ``ready``: only a model whose files are in (not one left PENDING or FAILED)."""
    model = tracker.store.fetch(
        f"looking up the logged model of {trial_id}", lambda: find_model(tracker, trial_id)
    )
    if model is None or (ready and not is_ready(model)):
        return None
    return model.model_id


def prepare_model(
    tracker: Tracker, run_id: str, row: Mapping[str, Any], params: Mapping[str, Any]
) -> Any:
    """The trial's logged model, created (PENDING, no files yet) on first sight."""
    found = find_model(tracker, row["trial_id"])
    if found is not None:
        return found
    tags = {
        "ssr.trial_id": str(row["trial_id"]),
        "ssr.sweep": tracker.sweep,
        "ssr.weights": str(row.get("exported_weights") or "initial"),
    }
    for key in ("genotype_id", "baseline", "input_size"):
        if row.get(key):
            tags[f"ssr.{key}"] = str(row[key])
    name = f"{row.get('baseline') or 'ssr'}-{row.get('genotype_id') or row['trial_id']}"
    model = tracker.client.create_logged_model(
        tracker.experiment_id,
        name=name,
        source_run_id=run_id,
        tags=tags,
        params={k: str(v)[:6000] for k, v in params.items()},
        model_type=MODEL_TYPE,
    )
    tracker.book.note_model(row["trial_id"], model.model_id)
    return model


def onnx_signature(onnx_model: Any) -> tuple[Any, tuple[int, ...] | None]:
    """The model signature of an ONNX graph (its input and output tensors, exact shapes; a
    dynamic axis is -1) and the input shape when it is fully fixed."""
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec
    from onnx import helper

    def specs(values: Any) -> tuple[list[Any], list[tuple[int, ...]]]:
        out, shapes = [], []
        for v in values:
            t = v.type.tensor_type
            shape = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
            dtype = np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type))
            out.append(TensorSpec(dtype, shape, v.name))
            shapes.append(shape)
        return out, shapes

    initializers = {i.name for i in onnx_model.graph.initializer}
    inputs, shapes = specs([i for i in onnx_model.graph.input if i.name not in initializers])
    outputs, _ = specs(onnx_model.graph.output)
    signature = ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))
    fixed = shapes[0] if len(shapes) == 1 and all(d > 0 for d in shapes[0]) else None
    return signature, fixed


class ExportError(RuntimeError):
    """The ONNX flavour of a model cannot be written (the export, not the store, failed)."""


def save_model(tracker: Tracker, model: Any, run_id: str, onnx_path: Path, step: int) -> None:
    """Write the ONNX flavour of the trial's model (signature, example, requirements), link it to
    the run as an output at ``step`` and mark it READY.

    Raises :class:`ExportError` when the flavour cannot be written (the caller marks the model
    FAILED), any other exception when the store failed: the model then stays PENDING, and the
    record's retry (the end-of-sweep sync) completes the same model, since each step may be
    done again (the link is made once, :func:`link_output`; the files are uploaded again).

    The steps of ``mlflow.onnx.log_model`` for a model that exists (``model_id``) and a run:
    the run's output, the flavour's files (an ``MLmodel`` naming the run and the model), the
    upload. NOTE: two steps of ``Model.log`` are left out, being the driver's largest cost per
    trial and changing nothing here: linking the run's metrics at ``step`` to the model (it
    reads every metric's history; the final record's metrics are logged with the model's id
    already, :func:`sweeps.tracking.records.log_final`) and running the input example through
    onnxruntime (a warning at most; the trial checked its export, ``ssr.deploy.onnx_export``).
    """
    import tempfile

    from mlflow.entities import LoggedModelStatus

    bind_process_uri(tracker.uri)
    client = tracker.client
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp) / "model"
        try:
            write_flavour(model, run_id, onnx_path, local)
        except Exception as exc:  # an export problem, not the store's
            raise ExportError(f"{type(exc).__name__}: {exc}") from exc
        link_output(client, run_id, model.model_id, step)
        client.log_model_artifacts(model.model_id, str(local))
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def write_flavour(model: Any, run_id: str, onnx_path: Path, local: Path) -> None:
    """The files of the model's ONNX flavour in the folder ``local`` (nothing is uploaded)."""
    import mlflow.onnx
    import numpy as np
    import onnx
    import onnxruntime as ort
    from mlflow.models import Model

    onnx_model = onnx.load(str(onnx_path))
    signature, shape = onnx_signature(onnx_model)
    example = None
    if shape is not None and int(np.prod(shape)) <= MAX_EXAMPLE_VALUES:
        example = np.zeros(shape, dtype=signature.inputs.inputs[0].type)
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")]
    providers = [p for p in providers if p in ort.get_available_providers()]
    flavour = Model(
        artifact_path=model.artifact_location,
        model_uuid=model.model_id,
        run_id=run_id,
        model_id=model.model_id,
    )
    mlflow.onnx.save_model(
        onnx_model,
        str(local),
        mlflow_model=flavour,
        signature=signature,
        input_example=example,
        pip_requirements=[f"onnx=={onnx.__version__}", f"onnxruntime=={ort.__version__}"],
        onnx_execution_providers=providers,
        save_as_external_data=False,
    )


def link_output(client: Any, run_id: str, model_id: str, step: int) -> None:
    """Make the model an output of the run at ``step``, once: a link that an earlier, cut-off
    attempt made already (the store refuses it twice) is left as it is."""
    from mlflow.entities import LoggedModelOutput

    try:
        client.log_outputs(run_id, models=[LoggedModelOutput(model_id, step=step)])
    except Exception:
        outputs = client.get_run(run_id).outputs
        if not any(o.model_id == model_id for o in getattr(outputs, "model_outputs", None) or []):
            raise


def is_ready(model: Any) -> bool:
    """True when the logged model's files are in (a resume does not write them again)."""
    return str(getattr(model.status, "name", model.status)).upper().endswith("READY")
