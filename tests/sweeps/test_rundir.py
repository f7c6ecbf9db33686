"""Run folders: names, resolution for new and resumed runs, run.json."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ssr.config import ConfigError
from sweeps.define.spec import apply_overrides, build_sweep, load_sweep
from sweeps.runtime.rundir import (
    SWEEP_FILE,
    check_name,
    read_run_file,
    resolve_run,
    write_run_file,
)


@pytest.mark.parametrize("name", ["smoke", "a.b-c_1", "0x"])
def test_good_names(name: str) -> None:
    check_name(name, "--name")


@pytest.mark.parametrize("name", ["", "-x", ".hidden", "a/b", "a b", "é", "nan", "None"])
def test_bad_names_are_refused_by_the_cli_and_the_sweep_file(name: str) -> None:
    with pytest.raises(ConfigError, match="--name"):
        check_name(name, "--name")
    raw = apply_overrides(load_sweep().source, [])
    raw["name"] = name
    with pytest.raises(ConfigError, match="name"):  # the same rule for a sweep file's name
        build_sweep(raw)


def make_run(root: Path, name: str, mtime: float) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / SWEEP_FILE).write_text("name: s\n")
    os.utime(run / SWEEP_FILE, (mtime, mtime))
    os.utime(run, (mtime, mtime))
    return run


def test_new_run_gets_a_dated_name_and_an_absolute_storage(tmp_path: Path) -> None:
    storage, name, run_dir = resolve_run(str(tmp_path / "runs"), None, False, "smoke")
    assert storage == str((tmp_path / "runs").resolve())
    assert name.startswith("smoke-") and run_dir == Path(storage) / name
    assert not run_dir.exists()  # resolving creates nothing


def test_a_new_run_never_reuses_a_sweep_folder(tmp_path: Path) -> None:
    make_run(tmp_path, "taken", 1.0)
    with pytest.raises(ConfigError, match="--resume"):
        resolve_run(str(tmp_path), "taken", False, "s")


def test_resume_takes_the_latest_run_of_the_sweep(tmp_path: Path) -> None:
    make_run(tmp_path, "s-1", 1000.0)
    make_run(tmp_path, "s-2", 2000.0)
    make_run(tmp_path, "other-3", 3000.0)
    _, name, _ = resolve_run(str(tmp_path), None, True, "s")
    assert name == "s-2"
    with pytest.raises(ConfigError, match="no run of sweep 'x'"):
        resolve_run(str(tmp_path), None, True, "x")
    with pytest.raises(ConfigError, match="holds no sweep"):
        resolve_run(str(tmp_path), "missing", True, "s")


def test_remote_storage_is_kept_as_given(tmp_path: Path) -> None:
    storage, name, _ = resolve_run("s3://bucket/runs", "r1", False, "s")
    assert (storage, name) == ("s3://bucket/runs", "r1")


def test_run_file_round_trip(tmp_path: Path) -> None:
    assert read_run_file(tmp_path) == {}
    write_run_file(tmp_path, "sqlite:////x/mlflow.db", "/x")
    assert read_run_file(tmp_path) == {"tracking_uri": "sqlite:////x/mlflow.db", "storage": "/x"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no temporary left
