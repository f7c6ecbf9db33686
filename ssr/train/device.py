"""Device names from a config turned into a ``torch.device``, with one clear error each.

``device: cpu | cuda | cuda:<index>`` is a config field of searching, retraining and
benchmarking; a name torch does not know, a non-CUDA accelerator, CUDA missing from this torch
build or an index past the visible GPUs is a :class:`~ssr.config.ConfigError` (a one-line user
error), not a traceback from deep inside the first ``.to(device)``.
"""

from __future__ import annotations

import torch

from ssr.config import ConfigError

__all__ = ["resolve_device"]


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:i"`` -> ``torch.device``, with clear errors."""
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(
            f"device {name!r} is not valid; use 'cpu', 'cuda' or 'cuda:<index>'"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ConfigError(f"device {name!r} is not supported; use 'cpu', 'cuda' or 'cuda:<index>'")
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {name!r} requested but CUDA is not available to torch "
            f"{torch.__version__} (a CPU build, or no GPU visible); use device=cpu"
        )
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) are visible"
        )
    return device
