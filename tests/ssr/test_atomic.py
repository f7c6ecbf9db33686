"""ssr.files.atomic: strict JSON (NaN -> null) and all-or-nothing replacement of the target file."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from ssr.files.atomic import atomic_path, atomic_write, finite, to_json, write_json, write_jsonl


def test_non_finite_floats_become_null() -> None:
    obj = {"a": math.nan, "b": [1.0, math.inf, -math.inf], "c": (2, "x"), "d": {"e": math.nan}}
    assert finite(obj) == {"a": None, "b": [1.0, None, None], "c": [2, "x"], "d": {"e": None}}
    text = to_json(obj)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == finite(obj)


def test_numpy_floats_are_checked_too() -> None:
    np = pytest.importorskip("numpy")
    assert finite([np.float32("nan"), np.float64(1.5), np.int64(3)])[0] is None
    assert finite(np.float64(1.5)) == 1.5


def test_write_json_is_strict_and_ends_with_a_newline(tmp_path) -> None:
    path = write_json(tmp_path / "sub" / "r.json", {"miou": math.nan, "n": 3})
    text = path.read_text()
    assert text.endswith("\n") and "NaN" not in text
    assert json.loads(text, parse_constant=lambda c: pytest.fail(c)) == {"miou": None, "n": 3}


def test_write_jsonl_one_strict_object_per_line(tmp_path) -> None:
    path = write_jsonl(tmp_path / "h.jsonl", [{"x": 1.0}, {"x": math.nan}])
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"x": 1.0}, {"x": None}]


def test_target_is_replaced_not_rewritten_in_place(tmp_path) -> None:
    path = tmp_path / "f.txt"
    path.write_text("old")
    inode = path.stat().st_ino
    with open(path) as reader:  # a reader that opened the old file keeps reading the old content
        atomic_write(path, "new")
        assert path.read_text() == "new" and reader.read() == "old"
        assert path.stat().st_ino != inode
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]  # no temporary left


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path) -> None:
    path = tmp_path / "f.bin"
    atomic_write(path, b"old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("writer crashed")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_atomic_path_temporary_is_in_the_same_folder(tmp_path) -> None:
    with atomic_path(tmp_path / "a.parquet") as tmp:
        assert tmp.parent == tmp_path and tmp.name != "a.parquet"
        tmp.write_bytes(b"x")
        assert not (tmp_path / "a.parquet").exists()
    assert (tmp_path / "a.parquet").read_bytes() == b"x"


def test_import_is_stdlib_only() -> None:
    code = (
        "import sys, ssr.files.atomic; print(sorted({'torch', 'numpy', 'yaml'} & set(sys.modules)))"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr
