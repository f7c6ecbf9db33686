"""Size and compute of a network: parameters and conv MACs (docs/method.md §8.1).

:func:`count_macs` counts multiply-accumulates of convolutions and linear layers only, like the
[M] figures of the paper (BN, activations, pooling and interpolation are excluded), so the
released network gives 10.90 GMACs at 512x1024. :func:`nchw` and :func:`eval_mode` are the
input-shape and mode helpers shared with measurement (:mod:`ssr.measure.bench`) and export
(:mod:`ssr.deploy.onnx_export`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["count_macs", "count_params", "eval_mode", "nchw"]


def count_params(model: nn.Module) -> int:
    """Number of parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters())


def nchw(input_shape: Sequence[int], batch: int = 1) -> tuple[int, int, int, int]:
    """``(C, H, W)`` (with ``batch``) or ``(N, C, H, W)`` -> ``(N, C, H, W)``."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (batch, *shape)
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input shape must be (C, H, W) or (N, C, H, W), got {input_shape}")
    return shape  # type: ignore[return-value]


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode for the block; restore its previous mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass, by forward hooks (docs/method.md §8.1 [M]).

    Convolutions count ``output elements x (c_in / groups) x kernel area`` and linear layers
    ``output elements x in_features``. BatchNorm, activations, pooling, the PSP matmuls and
    interpolation are excluded, as in the paper's conv-only figures (10.90 GMACs for the paper
    network at 512x1024). ``input_shape`` is ``(C, H, W)`` (batch 1) or ``(N, C, H, W)``.
    """
    shape = nchw(input_shape)
    total = 0

    def conv_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        nonlocal total
        k = math.prod(mod.kernel_size)
        total += out.numel() * (mod.in_channels // mod.groups) * k

    def linear_hook(mod: nn.Module, _inp: Any, out: Tensor) -> None:
        nonlocal total
        total += out.numel() * mod.in_features

    handles = []
    for mod in model.modules():
        if isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            handles.append(mod.register_forward_hook(conv_hook))
        elif isinstance(mod, nn.Linear):
            handles.append(mod.register_forward_hook(linear_hook))
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    with eval_mode(model), torch.inference_mode():
        try:
            model(torch.zeros(shape, device=device))
        finally:
            for h in handles:
                h.remove()
    return total
