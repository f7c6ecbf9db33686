"""The CLI fails fast, before any trial, with one clear line and a non-zero exit status."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from sweep_helpers import PYTHON, REPO, RUN, SMOKE, free_port, sweep_env


def cli(args: list[str], tmp_path: Path, timeout: float = 60) -> tuple[int, str, float]:
    t0 = time.monotonic()
    proc = subprocess.run(
        [PYTHON, str(RUN), "--storage", str(tmp_path / "runs"), *args],
        capture_output=True, text=True, env=sweep_env(), cwd=REPO, timeout=timeout,
        start_new_session=True,
    )  # fmt: skip
    return proc.returncode, proc.stdout + proc.stderr, time.monotonic() - t0


@pytest.mark.parametrize(
    ("args", "key"),
    [
        (["--set", "bogus=1"], "bogus"),
        (["--set", "num_samples=abc"], "num_samples"),
        (["--set", "space.shrink.threshold={uniform: [0.05, 1.5]}"], "shrink.threshold"),
        (["--num-samples", "0"], "num_samples"),
        (["--set", "base.search.space.bogus=3"], "base.search.space.bogus"),
    ],
)
def test_bad_sweep_file_exits_2(args: list[str], key: str, tmp_path: Path) -> None:
    code, out, seconds = cli(["--config", str(SMOKE), *args], tmp_path)
    assert code == 2, out
    assert key in out and "Traceback" not in out
    assert seconds < 10
    assert not (tmp_path / "runs").exists()  # nothing started


def test_bad_yaml_file_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsearcher: {kind: optuna, sampler: cmaes}\n")
    code, out, _ = cli(["--config", str(bad)], tmp_path)
    assert code == 2 and "searcher.sampler" in out and "Traceback" not in out
    code, out, _ = cli(["--config", str(tmp_path / "missing.yaml")], tmp_path)
    assert code == 2 and "does not exist" in out


def test_missing_dataset_exits_2(tmp_path: Path) -> None:
    paper = REPO / "sweeps" / "configs" / "paper.yaml"
    root = tmp_path / "no-cityscapes"
    code, out, seconds = cli(["--config", str(paper), "--set", f"dataset.root={root}"], tmp_path)
    assert code == 2, out
    assert str(root) in out and "Traceback" not in out
    assert seconds < 20


def test_unreachable_tracking_server_fails_fast(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    code, out, seconds = cli(["--config", str(SMOKE), "--tracking-uri", uri], tmp_path)
    assert code == 3, out
    assert uri in out and "unreachable" in out and "Traceback" not in out
    assert seconds < 15
    assert not list((tmp_path / "runs").glob("*/trial_*"))


def test_bad_ray_address_fails_fast(tmp_path: Path) -> None:
    code, out, seconds = cli(["--config", str(SMOKE), "--address", "127.0.0.9:1"], tmp_path)
    assert code == 3, out
    assert "127.0.0.9:1" in out and "Traceback" not in out
    assert seconds < 20
    assert not (tmp_path / "runs").exists()  # probed before anything is created


def test_resume_without_a_run_exits_2(tmp_path: Path) -> None:
    code, out, _ = cli(["--config", str(SMOKE), "--resume", "--name", "nothing"], tmp_path)
    assert code == 2 and "--resume" in out


def test_help_explains_every_option(tmp_path: Path) -> None:
    code, out, _ = cli(["--help"], tmp_path)
    assert code == 0
    for opt in ("--config", "--set", "--name", "--storage", "--tracking-uri", "--experiment",
                "--num-samples", "--max-concurrent", "--cpus-per-trial", "--gpus-per-trial",
                "--cluster", "--address", "--resume"):  # fmt: skip
        assert opt in out


def test_options_reach_the_sweep_as_parsed_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """Options are parsed once: their values go to the sweep as they are (never re-written as
    ``key=value`` text), after the --set items, which they override."""
    import sweeps.run as run

    seen: dict = {}
    monkeypatch.setattr(run, "load_sweep", lambda path, overrides=None, values=None: seen.update(
        path=path, overrides=overrides, values=values))  # fmt: skip
    args = run.build_parser().parse_args(
        ["--set", "num_samples=5", "--set", "seed=1", "--num-samples", "3",
         "--cpus-per-trial", "0.5", "--experiment", "a: b"]
    )  # fmt: skip
    run.load_definition(args)
    assert seen["overrides"] is None
    assert seen["values"] == {
        "seed": 1, "num_samples": 3, "resources.cpus_per_trial": 0.5, "experiment": "a: b",
    }  # fmt: skip


#: The functions that return a command's exit status.
STATUS_FUNCTIONS = {"main", "_run", "run_sweep", "_summarise"}


def test_exit_statuses_are_defined_once() -> None:
    """The statuses live in ssr.config.errors; no command module defines or returns a bare number."""
    import ast

    for rel in ("ssr/cli.py", "sweeps/run.py", "sweeps/driver.py", "ssr/config/cliargs.py"):
        tree = ast.parse((REPO / rel).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign):
                names = [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
                assert not any(n.startswith("EXIT_") for n in names), (rel, names)
            if isinstance(node, ast.FunctionDef) and node.name in STATUS_FUNCTIONS:
                for ret in (n for n in ast.walk(node) if isinstance(n, ast.Return)):
                    value = ret.value
                    sides = [value.body, value.orelse] if isinstance(value, ast.IfExp) else [value]
                    for side in sides:
                        number = isinstance(side, ast.Constant) and type(side.value) is int
                        assert not number, (rel, ret.lineno)
