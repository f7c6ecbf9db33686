"""Bad input to every command line: one stderr line naming the problem, a non-zero exit status,
no traceback, within 10 s (docs/architecture.md §6). The cases are data, in tests/bad_input.py.

The cases of one command line run a few at a time, each in its own process; a failure lists
every case that misbehaved, with what was wrong.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.bad_input import CASES, free_port, make_inputs, problems, run_case

pytestmark = pytest.mark.slow  # about a minute: ~70 processes, most of them importing torch

WORKERS = 2


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from analysis.schema import write_records
    from tests.analysis.conftest import make_records

    folder = tmp_path_factory.mktemp("bad_input")
    good = folder / "good.parquet"
    write_records(make_records(), good)
    make_inputs(folder, good)
    return folder


def test_there_are_at_least_40_cases() -> None:
    assert sum(len(cases) for cases in CASES.values()) >= 40
    names = [c.name for cases in CASES.values() for c in cases]
    assert len(names) == len(set(names)), "case names must be unique"


@pytest.mark.parametrize("command", sorted(CASES))
def test_bad_input_is_one_line(command: str, inputs: Path) -> None:
    cases = CASES[command]
    if not cases:
        pytest.skip(f"no cases for {command} yet")
    port = free_port()
    with ThreadPoolExecutor(WORKERS) as pool:
        results = list(pool.map(lambda c: run_case(command, c, inputs, port), cases))
    failures = []
    for case, (status, stderr, seconds) in zip(cases, results):
        wrong = problems(case, status, stderr, seconds)
        if wrong:
            tail = stderr.strip().splitlines()[-3:]
            failures.append(f"{case.name}: {'; '.join(wrong)}; stderr: {tail}")
    assert not failures, "\n".join(failures)


def test_problems_sees_each_fault() -> None:
    """The checker itself: each way a command can misbehave is reported."""
    from tests.bad_input import Case

    case = Case("x", (), "names it")
    assert problems(case, 2, "error: names it\n", 1.0) == []
    assert problems(case, 0, "error: names it\n", 1.0) == ["exit status 0, expected 2"]
    assert "a traceback" in problems(case, 2, "Traceback (most recent call last):\n", 1.0)
    assert problems(case, 2, "warning\nerror: names it\n", 1.0) == ["2 stderr lines, expected 1"]
    assert problems(case, 2, "error: something else\n", 1.0) == ["the line does not say 'names it'"]
    assert problems(case, 2, "error: names it\n", 11.0) == ["11.0 s, more than 10 s"]


def test_an_inf_result_is_excluded_with_its_reason(inputs: Path, tmp_path: Path) -> None:
    """A non-finite objective value is not a crash: the report excludes the row and says why."""
    import subprocess
    import sys

    import numpy as np

    from analysis.schema import write_records
    from tests.analysis.conftest import make_records

    frame = make_records()
    frame.loc[0, "status"] = "complete"
    frame.loc[0, "derived_miou"] = np.inf
    frame.loc[1, "fps_shared"] = -np.inf
    write_records(frame, tmp_path / "results.parquet")
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.report", "--parquet", str(tmp_path),
         "--out", str(tmp_path / "report")],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "report" / "report.md").read_text()
    assert "non-finite derived_miou" in text and "| t000 |" in text
