"""Mixed precision and the GPU habits of a training step (docs/architecture.md §6).

``precision`` (``SearchConfig``, ``RetrainConfig``) is one of:

- ``fp32``: no autocast (the default; CPU behaviour is unchanged);
- ``bf16``: forward passes under ``torch.autocast(device.type, torch.bfloat16)``; bf16 has
  fp32's exponent range, so no loss scaling is needed (works on CPU too);
- ``fp16``: autocast to float16 with a :class:`torch.amp.GradScaler` per optimiser. A step
  whose scaled gradients overflow is skipped by the scaler (and counted), not a divergence; an
  epoch in which every step was skipped is.

What stays fp32 whatever the precision: the losses (logits are cast to fp32 before the
cross-entropy), the SSR and FLOPs terms of the architecture objective (computed outside
autocast from the fp32 architecture parameters), the optimiser states and the master weights.

:class:`Stepper` is the one optimiser step of search and retraining: zero the gradients,
backward the (scaled) loss into its parameters, unscale, the total gradient norm, then, after
the caller's divergence checks, clip with that norm and step. :func:`cuda_habits` turns on
``cudnn.benchmark`` for the fixed input shapes of training (restored afterwards);
:func:`memory_format` and :func:`to_device` give channels-last tensors and non-blocking copies.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ssr.config import ConfigError

__all__ = [
    "PRECISIONS",
    "Stepper",
    "autocast",
    "cuda_habits",
    "dtype_of",
    "memory_format",
    "to_device",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def dtype_of(precision: str) -> torch.dtype:
    """The autocast dtype of ``precision`` (ConfigError naming the choices if unknown)."""
    if precision not in _DTYPES:
        raise ConfigError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    return _DTYPES[precision]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device``'s type for bf16/fp16; a no-op context for fp32."""
    dtype = dtype_of(precision)
    if dtype is torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def to_device(x: Tensor, device: torch.device, channels_last: bool = False) -> Tensor:
    """``x`` on ``device`` without blocking the host (pinned batches on CUDA); NHWC if asked."""
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@contextlib.contextmanager
def cuda_habits(device: torch.device) -> Iterator[None]:
    """``cudnn.benchmark = True`` on CUDA for the block (training shapes are fixed), then restored.

    The first batch of each new shape pays for the algorithm search; every later one runs the
    fastest kernel. On CPU it changes nothing.
    """
    if device.type != "cuda":
        yield
        return
    old = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = old


class Stepper:
    """One optimiser, its gradient scaler (enabled for fp16 only) and gradient clipping.

    Usage per step: ``norm = s.backward(loss)``; check ``loss`` and ``norm``; ``s.step(norm)``.
    ``norm`` is the unscaled total gradient norm, computed once and reused by clipping (so the
    check costs nothing extra). Nothing here reads a value on the host.
    """

    def __init__(
        self,
        params: Sequence[nn.Parameter],
        optimizer: torch.optim.Optimizer,
        device: torch.device,
        precision: str,
        clip: float | None,
    ) -> None:
        self.params, self.optimizer, self.clip = list(params), optimizer, clip
        self.fp16 = dtype_of(precision) is torch.float16
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.fp16)

    def backward(self, loss: Tensor) -> Tensor:
        """Zero, backward the (scaled) loss into the parameters, unscale; the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward(inputs=self.params)
        self.scaler.unscale_(self.optimizer)
        grads = [p.grad for p in self.params if p.grad is not None]
        if not grads:
            return torch.zeros((), device=loss.device)
        return torch.nn.utils.get_total_norm(grads)

    def step(self, norm: Tensor) -> Tensor:
        """Clip with ``norm``, step (the scaler skips an fp16 overflow), update the scale.

        Returns a device flag, 1.0 when the step was skipped (fp16 overflow), else 0.0.
        """
        if self.clip:
            torch.nn.utils.clip_grads_with_norm_(self.params, self.clip, norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if not self.fp16:
            return torch.zeros((), device=norm.device)
        return (~torch.isfinite(norm.detach())).float()

    def state_dict(self) -> dict[str, Any]:
        """The scaler's state (empty unless fp16): saved with the optimiser's in checkpoints."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.fp16 and state:
            self.scaler.load_state_dict(state)
