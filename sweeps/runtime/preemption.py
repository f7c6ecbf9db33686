"""Preemptible workers: a trial whose node is lost continues from its last checkpoint.

On a spot or preemptible cluster a worker node that disappears is routine, not a failure. With
``preemptible: true`` in the sweep file (docs/architecture.md §4, "Lost nodes"):

- a trial whose node is lost mid-run is requeued by Tune and continues from its last checkpoint
  on another node (from the start when it had none), without counting as a failure, at most
  ``max_resumes`` times (per trial, in one run of the driver); the next loss fails it with a
  line that says so;
- a trial that raises its own error fails exactly as without the option (``max_failures``
  retries, then ``failed``), and so does a worker that dies while its node lives on (the OOM
  killer, a crash).

**Telling a lost node from a failure** (:func:`lost_node`). The trial's own exception reaches
Tune as a ``RayTaskError`` whose cause is that exception. A lost worker reaches it as a
``RayActorError``: ``ActorUnavailableError`` when the driver's connection to the worker broke
before the GCS noticed the node was gone (a killed raylet: about 3 s), ``ActorDiedError`` once
it has, with ``preempted`` set when the node was drained for preemption. A ``RayActorError`` is
a node loss when the GCS declares the worker's node dead: drained nodes at once, others after
its health check gives up (about 15 s at Ray's defaults, docs/stack.md §3), so the driver waits
up to :data:`UNREACHABLE_WAIT_S` for it (Tune's loop waits with it: the other trials' reports
queue up meanwhile). Requeueing only then also keeps Tune from placing the trial again on the
dying node, whose CPUs still look free.

**Where Tune decides.** ``TuneController._process_trial_failure`` calls ``Trial.handle_error``
(which counts the failure) and then ``Trial.should_recover`` (failures <= ``max_failures``);
no public hook runs between the two. :class:`PreemptionCallback` gives every trial of the
experiment a subclass of Tune's ``Trial`` (its class is swapped, so the trial's saved state is
unchanged) whose ``handle_error`` leaves a node loss uncounted. Two more private Ray names are
used: the GCS actor table (``ray._private.state.actors``, the node an actor lived on) and the
trial's ``run_metadata.num_failures``. ``tests/sweeps/test_preemption.py`` fails when a Ray
release changes any of them.

**What the record says.** Each run of a trial appends its node to ``placement.json`` in the
pipeline folder, which travels with every checkpoint (:func:`placement`); the trial's reports
carry ``resumes`` (runs that continued from a checkpoint: after a lost node, or a resumed
sweep) and ``nodes`` (JSON: host, IP and Ray node id of each run, in order). A run lost before
its first checkpoint leaves no entry there; the driver's warning names it.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray.tune import Callback

from ssr.files.atomic import write_json

log = logging.getLogger("sweeps")

#: The trial's record of the nodes its runs ran on, in its pipeline folder (so in checkpoints).
PLACEMENT_FILE = "placement.json"
#: Seconds the driver waits for the GCS to declare an unreachable worker's node dead.
#: NOTE: Ray's health check declares a silent node dead after about 15 s by default
#: (``health_check_period_ms`` x ``health_check_failure_threshold`` and a timeout).
UNREACHABLE_WAIT_S = 45.0
#: Seconds it waits when the worker died while its node still answered (a node shut down in
#: order stops its workers first, then its raylet).
DIED_WAIT_S = 5.0
#: Seconds between two looks at the GCS's node table.
POLL_S = 0.5

NodeTable = Callable[[], list[dict[str, Any]]]


class NodeLostError(RuntimeError):
    """A trial lost its node once more than ``max_resumes`` allows: what Tune counts instead."""


# ---- the trial's side: where it ran ------------------------------------------------------------


def placement(out_dir: Path, here: dict[str, str], resumed: bool) -> dict[str, Any]:
    """Add this run (``here``: ``host``, ``ip``, ``node_id``) to ``out_dir/placement.json``;
    the report fields :func:`report_fields` makes of all runs so far.

    ``resumed``: this run continued from a checkpoint, whose runs are read first.
    """
    path = out_dir / PLACEMENT_FILE
    runs: list[dict[str, Any]] = []
    if resumed and path.is_file():
        try:
            runs = [r for r in json.loads(path.read_text()).get("runs", []) if isinstance(r, dict)]
        except (ValueError, AttributeError):  # a damaged file loses the history, not the trial
            runs = []
    runs.append({"host": here.get("host", ""), "ip": here.get("ip", ""),
                 "node_id": here.get("node_id", ""), "resumed": bool(resumed)})  # fmt: skip
    write_json(path, {"runs": runs})
    return report_fields(runs)


def report_fields(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """``node_id`` (this run's), ``resumes`` and ``nodes`` (JSON text) of a trial's runs."""
    nodes = [{k: str(r.get(k, "")) for k in ("host", "ip", "node_id")} for r in runs]
    return {
        "node_id": nodes[-1]["node_id"] if nodes else "",
        "resumes": float(sum(bool(r.get("resumed")) for r in runs)),
        "nodes": json.dumps(nodes, separators=(",", ":")),
    }


# ---- the driver's side: a lost node or a failure -----------------------------------------------


def actor_node(actor_id: str | None) -> str | None:
    """The id of the node an actor lived on, from the GCS actor table; None when unknown.

    NOTE: ``ray._private.state.actors`` is private (no public call answers it without the
    dashboard); a Ray release that changes it makes this None and :class:`PreemptionCallback`
    fall back to the node the trial last reported.
    """
    if not actor_id:
        return None
    try:
        from ray._private import state

        return str(state.actors(actor_id=actor_id)["Address"]["NodeID"]) or None
    except Exception:  # not connected, unknown actor, a changed table: unknown
        return None


def lost_worker(exc: BaseException | None) -> Any:
    """The ``RayActorError`` of a worker lost while it ran (``exc`` itself, or the cause Tune
    reads from a ``RayTaskError``); None for the trial's own error or a failed constructor."""
    from ray.exceptions import RayActorError, RayTaskError

    if isinstance(exc, RayTaskError):  # NOTE: as Tune reads it, an actor error may come wrapped
        cause = exc.as_instanceof_cause()
        exc = cause if isinstance(cause, RayActorError) else exc
    if not isinstance(exc, RayActorError) or exc.actor_init_failed:
        return None
    return exc


def lost_node(
    exc: BaseException | None,
    node_id: str | None,
    nodes: NodeTable | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> str | None:
    """Why ``exc`` is the loss of the node ``node_id`` (one line), or None when it is a failure:
    the trial's own error, or a worker that died on a node that stays alive (module docstring).
    ``nodes``: the GCS's node table (``ray.nodes``)."""
    from ray.exceptions import ActorUnavailableError

    exc = lost_worker(exc)
    if exc is None:
        return None
    if exc.preempted:
        return "its node was drained for preemption"
    if not node_id:
        return None
    if nodes is None:
        import ray

        nodes = ray.nodes
    deadline = clock() + (
        UNREACHABLE_WAIT_S if isinstance(exc, ActorUnavailableError) else DIED_WAIT_S
    )
    while True:
        node = next((n for n in nodes() if n.get("NodeID") == node_id), None)
        if node is not None and not node.get("Alive", True):
            why = node.get("DeathReasonMessage") or "no reason given"
            return f"its node {node.get('NodeManagerAddress', '?')} ({node_id[:10]}) died: {why}"
        if clock() >= deadline:
            return None
        sleep(POLL_S)


class PreemptionCallback(Callback):
    """Tune callback (driver side): node losses resume trials instead of failing them.

    It gives every trial Tune's decision with node losses left uncounted (module docstring),
    up to ``max_resumes`` per trial in one run of the driver. ``nodes`` replaces the GCS's node
    table (tests).
    """

    def __init__(self, max_resumes: int, nodes: NodeTable | None = None) -> None:
        self.max_resumes = int(max_resumes)
        self.nodes = nodes
        #: Node losses each trial resumed from, by trial id.
        self.losses: dict[str, int] = {}
        self._trial_class: type | None = None

    def __getstate__(self) -> dict[str, Any]:
        # NOTE: pickled with Tune's experiment: the setting only
        return {"max_resumes": self.max_resumes}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def on_step_begin(self, iteration: int, trials: list[Any], **info: Any) -> None:
        # NOTE: before any trial starts (an actor placed on a node that dies fails too)
        for trial in trials:
            self.adopt(trial)

    def adopt(self, trial: Any) -> None:
        """Give ``trial`` the handling of this callback (a no-op when it has it)."""
        from ray.tune.experiment import Trial

        if type(trial) is Trial:
            trial.__class__ = self.trial_class()

    def trial_class(self) -> type:
        """Tune's ``Trial`` with node losses taken out of its failure count."""
        if self._trial_class is None:
            from ray.tune.experiment import Trial

            policy = self

            class PreemptibleTrial(Trial):
                """A trial whose lost node is not a failure (:mod:`sweeps.runtime.preemption`)."""

                def handle_error(self, exc: Any = None) -> None:
                    counted = policy.counted(self, exc)
                    if counted is None:  # a node loss: Tune requeues it from its checkpoint
                        return
                    super().handle_error(counted)
                    if isinstance(counted, NodeLostError):  # out of resumes: no retry either
                        meta = self.run_metadata
                        meta.num_failures = max(meta.num_failures, self.max_failures + 1)

            self._trial_class = PreemptibleTrial
        return self._trial_class

    def counted(self, trial: Any, exc: Any) -> Any:
        """What Tune counts for ``exc``: None for a node loss the trial resumes from, ``exc``
        for a failure, a :class:`NodeLostError` once the trial used up its resumes."""
        worker = lost_worker(exc)
        if worker is None:  # the trial's own error: at once, as without the option
            return exc
        last = getattr(trial, "last_result", None) or {}
        node = actor_node(worker.actor_id) or last.get("node_id")
        reason = lost_node(worker, node, self.nodes)
        if reason is None:
            return exc
        used = self.losses.get(trial.trial_id, 0)
        if used >= self.max_resumes:
            log.warning("trial %s: %s; no resumes left", trial.trial_id, reason)
            return NodeLostError(
                f"lost its node {used + 1} times, more than max_resumes ({self.max_resumes}) "
                f"allows; the last time {reason}"
            )
        self.losses[trial.trial_id] = used + 1
        log.warning(
            "trial %s: %s; it continues from its last checkpoint (resume %d of %d)",
            trial.trial_id,
            reason,
            used + 1,
            self.max_resumes,
        )
        return None
