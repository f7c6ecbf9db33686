"""The one shim on Ray internals (sweeps.runtime.restore) still works with the installed Ray.

Fails when a Ray release moves a restored Tuner's run config: then ``--resume`` would run the
callbacks pickled with the experiment instead of this invocation's (see sweeps/runtime/restore.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

tune = pytest.importorskip("ray.tune")


class Marker(tune.Callback):
    """A callback that can be told apart from another (and pickled with the experiment)."""

    def __init__(self, label: str) -> None:
        self.label = label


def trainable(config: dict[str, Any]) -> None:
    tune.report({"x": 1.0})


def test_restored_tuner_runs_the_given_callbacks(tmp_path: Path) -> None:
    from sweeps.runtime.restore import replace_callbacks, restore_tuner

    # NOTE: constructing a Tuner saves its state (tuner.pkl) without starting Ray
    tune.Tuner(trainable, run_config=tune.RunConfig(name="exp", storage_path=str(tmp_path),
                                                     callbacks=[Marker("saved")]))  # fmt: skip
    fresh = [Marker("fresh")]
    tuner = restore_tuner(str(tmp_path / "exp"), trainable, fresh)
    run_config = tuner._local_tuner.get_run_config()  # the private attribute the shim relies on
    assert [c.label for c in run_config.callbacks] == ["fresh"]
    assert replace_callbacks(tuner, fresh) is True


def test_shim_says_when_ray_moved_the_run_config(caplog: pytest.LogCaptureFixture) -> None:
    from sweeps.runtime.restore import replace_callbacks

    assert replace_callbacks(object(), []) is False
    assert "callbacks saved with the experiment" in caplog.text
