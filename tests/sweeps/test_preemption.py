"""sweeps/runtime/preemption.py without a cluster: the sweep option, the placement record, how a
lost node is told from a failure, and Tune's decision for each (the Ray internals it relies on
fail here when a release changes them). The kill of a real node is in test_faults_cluster.py.
"""

from __future__ import annotations

import inspect
import json
import types
from pathlib import Path

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError, RayTaskError
from ray.tune.experiment import Trial

from ssr.config import ConfigError
from sweeps.define.spec import load_sweep
from sweeps.runtime import preemption
from sweeps.runtime.preemption import (
    DIED_WAIT_S,
    UNREACHABLE_WAIT_S,
    NodeLostError,
    PreemptionCallback,
    lost_node,
    placement,
)

SMOKE = Path(__file__).resolve().parents[2] / "sweeps" / "configs" / "smoke.yaml"
NODE = "ab" * 28


class Clock:
    """A fake clock that ``sleep`` advances (no real waiting)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def table(alive_until: float, clock: Clock):
    """A GCS node table whose node NODE dies at ``alive_until`` on ``clock``."""
    return lambda: [
        {"NodeID": "cd" * 28, "Alive": True, "NodeManagerAddress": "127.0.0.2"},
        {"NodeID": NODE, "Alive": clock() < alive_until, "NodeManagerAddress": "127.0.0.3",
         "DeathReasonMessage": "health check failed due to missing too many heartbeats"},
    ]  # fmt: skip


def own_error() -> RayTaskError:
    return RayTaskError("train", "Traceback ...\nValueError: boom", ValueError("boom"))


def unreachable() -> ActorUnavailableError:
    return ActorUnavailableError("RpcError: Socket closed", b"\x01" * 16)


def test_the_sweep_option_defaults_off_and_is_checked() -> None:
    spec = load_sweep(SMOKE).spec
    assert spec.preemptible is False and spec.max_resumes == 3
    spec = load_sweep(SMOKE, ["preemptible=true", "max_resumes=1"]).spec
    assert spec.preemptible is True and spec.max_resumes == 1
    with pytest.raises(ConfigError, match="max_resumes must be >= 0"):
        load_sweep(SMOKE, ["max_resumes=-1"])
    with pytest.raises(ConfigError, match="preemptible"):
        load_sweep(SMOKE, ["preemptible=sometimes"])


def test_placement_travels_with_the_pipeline_folder(tmp_path: Path) -> None:
    a = {"host": "h", "ip": "127.0.0.3", "node_id": "n3"}
    first = placement(tmp_path, a, resumed=False)
    assert first["resumes"] == 0 and first["node_id"] == "n3"
    assert json.loads(first["nodes"]) == [{"host": "h", "ip": "127.0.0.3", "node_id": "n3"}]
    again = placement(tmp_path, {"host": "h", "ip": "127.0.0.2", "node_id": "n2"}, resumed=True)
    assert again["resumes"] == 1 and again["node_id"] == "n2"
    assert [n["ip"] for n in json.loads(again["nodes"])] == ["127.0.0.3", "127.0.0.2"]
    # a fresh start (no checkpoint) does not inherit leftovers; a damaged file loses only history
    assert placement(tmp_path, a, resumed=False)["resumes"] == 0
    (tmp_path / preemption.PLACEMENT_FILE).write_text("{not json")
    assert placement(tmp_path, a, resumed=True)["resumes"] == 1


def test_a_lost_node_is_told_from_a_failure() -> None:
    clock = Clock()
    kw = {"sleep": clock.sleep, "clock": clock}
    never = table(float("inf"), clock)
    assert lost_node(own_error(), NODE, never, **kw) is None  # the trial's own error
    assert clock() == 0.0  # decided at once
    assert lost_node(ValueError("boom"), NODE, never, **kw) is None
    assert lost_node(RayActorError(actor_init_failed=True), NODE, never, **kw) is None
    assert "preemption" in lost_node(RayActorError(preempted=True), None, never, **kw)
    # unreachable, and the GCS declares its node dead 15 s later: a lost node
    why = lost_node(unreachable(), NODE, table(15.0, clock), **kw)
    assert why and "127.0.0.3" in why and "heartbeats" in why
    assert 15.0 <= clock() < 16.0
    # a worker that died while its node lives on (OOM killer, a crash): a failure, soon
    clock.t = 0.0
    assert lost_node(ActorDiedError(), NODE, never, **kw) is None
    assert clock() == pytest.approx(DIED_WAIT_S, abs=1.0)
    clock.t = 0.0
    assert lost_node(unreachable(), NODE, never, **kw) is None
    assert clock() == pytest.approx(UNREACHABLE_WAIT_S, abs=1.0)
    assert lost_node(unreachable(), None, never, **kw) is None  # no node to ask about


def trial(tmp_path: Path, policy: PreemptionCallback, max_failures: int = 0) -> Trial:
    tmp_path.mkdir()
    storage = types.SimpleNamespace(trial_driver_staging_path=str(tmp_path))
    t = Trial("fake", stub=True, max_failures=max_failures, trial_id="t1", storage=storage)
    t.set_status(Trial.RUNNING)
    t.run_metadata.last_result = {"node_id": NODE}  # what the trial reported last
    keys = set(t.__dict__)
    policy.on_step_begin(0, [t])
    assert type(t).__name__ == "PreemptibleTrial" and isinstance(t, Trial)
    assert set(t.__dict__) == keys  # the saved trial state is Tune's own
    return t


def test_tune_requeues_a_lost_node_and_fails_an_own_error(tmp_path: Path) -> None:
    dead = table(0.0, Clock())  # the GCS already declared the node dead: no waiting
    policy = PreemptionCallback(max_resumes=2, nodes=dead)
    lost = trial(tmp_path / "a", policy)
    lost.handle_error(unreachable())  # not counted: Tune requeues it from its checkpoint
    assert lost.num_failures == 0 and lost.should_recover()
    assert not (tmp_path / "a" / "error.txt").exists()
    lost.handle_error(unreachable())
    assert lost.should_recover() and policy.losses == {"t1": 2}
    lost.handle_error(unreachable())  # a third loss: out of resumes, failed
    assert not lost.should_recover()
    assert "max_resumes (2)" in (tmp_path / "a" / "error.txt").read_text()
    # the trial's own error: exactly as without the option (max_failures retries it)
    own = trial(tmp_path / "b", PreemptionCallback(max_resumes=2, nodes=dead))
    own.handle_error(own_error())
    assert own.num_failures == 1 and not own.should_recover()
    retried = trial(tmp_path / "c", PreemptionCallback(3, nodes=dead), max_failures=1)
    retried.handle_error(own_error())
    assert retried.should_recover()
    # out of resumes fails even where max_failures would retry
    spent = trial(tmp_path / "d", PreemptionCallback(0, nodes=dead), max_failures=1)
    spent.handle_error(unreachable())
    assert not spent.should_recover()
    assert isinstance(NodeLostError("x"), RuntimeError)


def test_the_ray_internals_it_relies_on() -> None:
    from ray._private import state
    from ray.tune.execution.tune_controller import TuneController

    src = inspect.getsource(TuneController._process_trial_failure)
    assert src.index("trial.handle_error(exception)") < src.index("trial.should_recover()")
    assert "num_failures <= self.max_failures" in inspect.getsource(Trial.should_recover)
    assert "actor_id" in inspect.signature(state.actors).parameters
    assert preemption.actor_node("00" * 16) is None  # not connected: unknown, no exception


def test_the_record_keeps_resumes_and_nodes(tmp_path: Path) -> None:
    from sweeps.record.results import ResultsTable, build_row
    from sweeps.tracking.records import epoch_metrics, final_metrics, final_tags

    placement(tmp_path, {"host": "h", "ip": "127.0.0.3", "node_id": "n3"}, resumed=False)
    fields = placement(tmp_path, {"host": "h", "ip": "127.0.0.2", "node_id": "n2"}, resumed=True)
    row = build_row("s", "t1", {}, {**fields, "final_record": 1.0}, "early_stopped")
    assert row["resumes"] == 1 and json.loads(row["nodes"])[1]["ip"] == "127.0.0.2"
    table = ResultsTable(tmp_path / "results.parquet")
    table.upsert(row)
    assert table.frame()["resumes"].tolist() == [1]  # the record's column (analysis.schema)
    assert final_metrics(row)["resumes"] == 1 and final_tags(row)["ssr.nodes"] == row["nodes"]
    # per epoch it is no metric of its own: the final record has it once
    assert epoch_metrics({**fields, "step": 2.0, "train_loss": 0.5}) == {"search/train_loss": 0.5}
