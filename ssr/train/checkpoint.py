"""Checkpoints that a resumed run can trust: atomic writes, safe reads, and the RNG state.

:func:`save_checkpoint` writes through :func:`ssr.files.atomic.atomic_path` (a crash mid-write leaves
the previous checkpoint intact) and accepts tensors and plain containers only, so that
:func:`load_checkpoint` can read with ``torch.load(weights_only=True)``, which runs no pickled
code. :func:`rng_state` / :func:`set_rng_state` carry the global torch generators across an
interruption, so a resumed search or retraining continues to the same result as an
uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssr.files.atomic import atomic_path

__all__ = ["load_checkpoint", "rng_state", "save_checkpoint", "set_rng_state"]

_PLAIN = (str, int, float, bool, type(None), torch.Size)


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first entry ``weights_only=True`` could not read back."""
    if isinstance(obj, (Tensor, *_PLAIN)):
        return
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, (str, int)):
                raise TypeError(f"checkpoint key {where}[{k!r}] must be str or int")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_plain(v, f"{where}[{i}]")
        return
    raise TypeError(
        f"checkpoint entry {where} is a {type(obj).__name__}; store tensors, dicts, lists, numbers "
        "or strings only, so that torch.load(weights_only=True) can read it"
    )


def save_checkpoint(path: str | Path, **state: Any) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    _check_plain(state, "state")
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise RuntimeError(f"cannot read checkpoint {path}: {exc}") from exc


def rng_state() -> dict[str, Any]:
    """Torch CPU and CUDA generator states (the only global RNGs the training loop uses)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
