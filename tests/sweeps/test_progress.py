"""The live console of a sweep (sweeps/progress.py) and the short trial names it shares with the
MLflow runs (sweeps/tracking/names.py): formatting, ETA, heartbeat, --quiet. No Ray run."""

from __future__ import annotations

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps.define.spec import CONFIG_DIR, load_sweep
from sweeps.progress import (
    MAX_LINE,
    ProgressCallback,
    clip,
    duration,
    end_line,
    eta_seconds,
    front_size,
    phase_epoch,
    progress_line,
    start_line,
    varied_keys,
)
from sweeps.record.results import ResultsTable
from sweeps.tracking.names import (
    defining_params,
    settings_text,
    short_keys,
    short_value,
    trial_label,
    trial_number,
)

#: The default sweep's values at their widest (every varied key, the longest baseline).
WIDE = {
    "ssr.op": 99.7, "ssr.out": 29.9, "ssr.mid": 29.9, "ssr.depth": 29.9,
    "shrink.threshold": 0.2999, "shrink.every": 2, "shrink.warmup": 4, "flops.weight": 999.9,
    "flops.target": 0.8999, "arch_optim.lr": 0.0999, "baseline": "darts_pruning", "seed": 2,
}  # fmt: skip


def test_short_values_and_keys() -> None:
    assert [short_value(v) for v in (32.4, 3.14, 0.152, 0.031, -0.15, 0.0, 7, "ssr")] == [
        "32", "3.1", ".15", ".031", "-.15", "0", "7", "ssr",
    ]  # fmt: skip
    assert short_value(1.5e-5) == "1.5e-05"
    keys = short_keys(["ssr.op", "shrink.threshold", "flops.weight", "arch_optim.lr", "seed"])
    assert keys == {
        "ssr.op": "op", "shrink.threshold": "thr", "flops.weight": "fl.w",
        "arch_optim.lr": "arch.lr", "seed": "seed",
    }  # fmt: skip
    assert short_keys(["ssr.op", "shrink.op"]) == {"ssr.op": "ssr.op", "shrink.op": "shrink.op"}


def test_trial_numbers_from_ids_and_tags() -> None:
    assert trial_number("7c1f2_00007") == "#08"  # random/grid ids count from 0
    assert trial_number("9a69e430", "3_dims=...") == "#03"  # Optuna's tags count from 1
    assert trial_number("9a69e430") == "9a69e430"


def test_labels_show_the_baseline_and_only_varied_values() -> None:
    config = {"dims": {"ssr.op": 32.4, "ssr.out": 12.0, "baseline": "no_shrink", "seed": 1}}
    assert (
        trial_label(config, "#07", ["ssr.op", "seed", "baseline"]) == "no_shrink op=32 seed=1 #07"
    )
    assert settings_text({"dims": {}}, []) == "ssr"  # no baseline sampled: the method itself


def test_start_lines_fit_in_a_hundred_characters() -> None:
    sweep = load_sweep(CONFIG_DIR / "default.yaml")
    varied = varied_keys(sweep)
    assert set(varied) == set(WIDE)
    line = start_line("#16", {"dims": WIDE}, varied)
    assert len(line) <= MAX_LINE and line.startswith("#16 start  darts_pruning op=")
    assert clip("x" * 150).endswith("...") and len(clip("x" * 150)) == MAX_LINE


def test_defining_params_are_the_varied_and_the_run_defining_ones() -> None:
    flat = {
        "cfg.ssr.op": 3.0, "cfg.ssr.mid": 1.0, "cfg.baseline": "ssr", "cfg.seed": 0,
        "cfg.data.name": "synthetic", "cfg.epochs": 2, "cfg.retrain.epochs": 1,
        "cfg.bench.iters": 2, "cfg.retrain.optim.lr": 0.1,
    }  # fmt: skip
    params = defining_params(flat, ["ssr.op", "baseline"])
    assert set(params) == {
        "cfg.ssr.op", "cfg.baseline", "cfg.seed", "cfg.data.name", "cfg.epochs",
        "cfg.retrain.epochs",
    }  # fmt: skip


def test_end_lines_say_what_happened() -> None:
    done = {"status": "complete", "derived_miou": 0.452, "fps_shared": 123.4,
            "genotype_id": "0123456789", "wall_s": 62.0}  # fmt: skip
    assert end_line("#03", done, ["derived_miou", "fps_shared"], 4, "val_miou", None) == (
        "#03 complete  derived_miou=.45 fps_shared=123  genotype 0123456789  1m02s"
    )
    resumed = {**done, "resumes": 1}  # it lost its node once (or the sweep was resumed)
    assert end_line("#03", resumed, ["derived_miou"], 4, "val_miou", None).endswith(
        "1m02s  resumed 1x"
    )
    stopped = {"status": "early_stopped", "iterations": 2}
    last = {"step": 2.0, "val_miou": 0.31}
    assert end_line("#04", stopped, ["derived_miou"], 4, "val_miou", last) == (
        "#04 early_stopped  at epoch 2/3  val_miou=.31"
    )
    failed = {"status": "failed", "error": "ValueError: bad width\n---\nTraceback ..."}
    assert end_line("#05", failed, [], 4, "val_miou", None) == "#05 failed: ValueError: bad width"


def test_progress_line_eta_and_front() -> None:
    assert duration(47) == "47s" and duration(252) == "4m12s" and duration(3720) == "1h02m"
    assert progress_line(5, 16, 2, 252.0, 552.0, 3) == (
        "[5/16] 2 running | 4m12s elapsed, ETA ~9m12s | front 3"
    )
    assert progress_line(0, None, 1, 10.0, None, 0) == "[0] 1 running | 10s elapsed | front 0"
    assert eta_seconds(100.0, 2.0, 0.0, 10) == pytest.approx(400.0)
    assert eta_seconds(100.0, 2.0, 2.0, 10) is None  # nothing done in this invocation yet
    rows = [
        {"status": "complete", "derived_miou": 0.5, "fps_shared": 10.0},
        {"status": "complete", "derived_miou": 0.4, "fps_shared": 20.0},
        {"status": "complete", "derived_miou": 0.3, "fps_shared": 5.0},  # dominated
        {"status": "early_stopped", "derived_miou": 0.9, "fps_shared": 90.0},  # never ranked
    ]
    objectives = [("derived_miou", "max"), ("fps_shared", "max")]
    assert front_size(rows, objectives) == 2
    assert phase_epoch({"step": 3.0, "phase": 0.0}, 16, 3) == "search 3/16"
    assert phase_epoch({"step": 18.0, "phase": 1.0}, 16, 3) == "retrain 2/3"
    assert phase_epoch(None, 16, 3) == "starting"


def _trial(trial_id: str, tag: str, status: str, last: dict | None) -> SimpleNamespace:
    return SimpleNamespace(
        trial_id=trial_id, experiment_tag=tag, status=status, last_result=last,
        config={"dims": {"ssr.op": 10.0, "baseline": "ssr"}},
    )  # fmt: skip


def test_callback_prints_starts_heartbeats_and_ends(tmp_path: Path) -> None:
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")  # 4 trials, 2 search + 1 retrain epochs
    table = ResultsTable(tmp_path / "results.parquet")
    now = [0.0]
    lines: list[str] = []
    cb = ProgressCallback(sweep, table, ["ssr.op"], clock=lambda: now[0], out=lines.append)
    cb.setup(total_num_samples=4)
    a = _trial("aaa", "1_x", "RUNNING", None)
    b = _trial("bbb", "2_x", "RUNNING", {"step": 3.0, "phase": 1.0})
    cb.on_trial_start(0, [a], a)
    assert lines == ["#01 start  ssr op=10"]
    now[0] = 29.0
    cb.on_step_end(1, [a, b])
    assert len(lines) == 1  # not yet
    now[0] = 31.0
    cb.on_step_end(2, [a, b])
    assert (
        lines[-1]
        == "[0/4] 2 running | 31s elapsed, ETA ~2m14s | front 0 | #01 starting, #02 retrain 1/1"
    )
    table.upsert({"sweep": "s", "trial_id": "bbb", "status": "complete", "derived_miou": 0.5,
                  "fps_shared": 10.0})  # fmt: skip
    b.status = "TERMINATED"
    cb.on_trial_complete(3, [a, b], b)
    assert lines[-2].startswith("#02 complete  derived_miou=.5 fps_shared=10")
    assert lines[-1].startswith("[1/4] 1 running | 31s elapsed, ETA ~") and "front 1" in lines[-1]
    b.status = "RUNNING"  # it lost its node: Tune starts it again from its checkpoint
    cb.on_trial_start(4, [a, b], b)
    assert lines[-1] == "#02 resumed from its last checkpoint (was at retrain 1/1)"
    copy = pickle.loads(pickle.dumps(cb))  # Tune pickles its callbacks with the experiment
    assert copy.sweep.spec.name == "smoke" and copy.varied == ["ssr.op"]


def test_quiet_prints_nothing(tmp_path: Path) -> None:
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    lines: list[str] = []
    cb = ProgressCallback(
        sweep, ResultsTable(tmp_path / "r.parquet"), verbose=False, heartbeat_s=0.0,
        out=lines.append,
    )  # fmt: skip
    a = _trial("aaa", "1_x", "RUNNING", None)
    cb.on_trial_start(0, [a], a)
    cb.on_step_end(1, [a])
    assert lines == []
