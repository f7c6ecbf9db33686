"""Atomic file writes and the one NaN policy of every JSON file the project writes.

A reader (a resumed run, a sweep's results table, a person) never sees a half-written file: the
content goes to a temporary file in the target's folder, is flushed to disk (``fsync``) and
then renamed over the target with ``os.replace``, which is atomic on POSIX and Windows. The
temporary file is removed if writing fails, and the old file, if any, is kept.

JSON has no NaN or infinity (``json.dumps`` would write the invalid tokens ``NaN`` and
``Infinity``), so :func:`to_json`, :func:`write_json` and :func:`write_jsonl` write every
non-finite float as ``null``; :func:`finite` is that conversion. Standard library only, so any
part of the project can import it.
"""

from __future__ import annotations

import contextlib
import json
import math
import numbers
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "atomic_write", "finite", "to_json", "write_json", "write_jsonl"]


def _fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable where the platform allows it (best effort)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically.

    For writers that want a file name (``torch.save``, ``DataFrame.to_parquet``)::

        with atomic_path(out / "results.parquet") as tmp:
            frame.to_parquet(tmp)

    The parent folder is created if needed. If the block raises, the temporary file is removed,
    ``path`` is left as it was and the exception propagates.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield tmp
        with open(tmp, "rb+") as f:  # the writer closed it: flush its content to disk
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` (``str`` as UTF-8) to ``path`` atomically; returns the path."""
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(raw)
    return path


def finite(obj: Any) -> Any:
    """``obj`` with every NaN/inf float replaced by ``None``, through dicts, lists and tuples.

    Tuples become lists (as JSON writes them); other values are returned unchanged.
    """
    if isinstance(obj, float) or (
        isinstance(obj, numbers.Real) and not isinstance(obj, numbers.Integral)
    ):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def to_json(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """Strict JSON text of ``obj``: non-finite floats as ``null``, never ``NaN``."""
    return json.dumps(finite(obj), indent=indent, sort_keys=sort_keys, allow_nan=False)


def write_json(
    path: str | Path, obj: Any, *, indent: int | None = 2, sort_keys: bool = False
) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf -> ``null``) plus a newline, atomically."""
    return atomic_write(path, to_json(obj, indent=indent, sort_keys=sort_keys) + "\n")


def write_jsonl(path: str | Path, rows: Iterable[Any]) -> Path:
    """Write one strict-JSON object per line (NaN/inf -> ``null``), atomically."""
    return atomic_write(path, "".join(to_json(row) + "\n" for row in rows))
