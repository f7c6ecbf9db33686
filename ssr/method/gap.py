"""The discretization gap: the accuracy a supernet loses when it is made discrete (docs/method.md §7).

Three gaps are recorded by the search (:mod:`ssr.method.search`), all ``supernet mIoU - derived mIoU``
on the validation set, where the derived network is the argmax sub-network of the supernet's
current state (the survivor of every decided group, the first maximum of every other group)
built with the supernet's weights and with its BatchNorm statistics re-estimated on training
batches:

- **gap at discretization** (``gap_at_discrete``): at the epoch whose shrinking decisions leave
  one candidate per group, the supernet evaluated at the end of that epoch, *just before* the
  last prune, against the derived network right after it. It measures what the last prune
  cost. A search that never becomes discrete by shrinking (no shrinking, or SSR off and the
  ratio threshold never fires) has none.
- **gap at epoch e** (``gap_at_<e>``, for ``search.gap_epochs``): the same measurement at the end
  of epoch ``e`` whatever the state: for an undecided supernet the derived network is its
  argmax. This is how arms that never become discrete are compared with SSR at the same epochs.
- **gap at the end of the budget** (``discretization_gap``): after the last epoch (and the argmax
  fallback when the budget ran out), as before.

Once the supernet is discrete it *is* the derived network (up to BN statistics), so the gap
after that is about 0 by construction: only the gap at discretization and the gaps at common
epochs compare arms honestly.

:func:`measure_derived` leaves the supernet as it was (alive masks restored, RNG forked), so
measuring never changes the search.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ssr.data.labels import IGNORE
from ssr.method.derive import derive_network, recalibrate_bn
from ssr.method.network import DerivedNet
from ssr.method.shrink import Decision, apply, argmax_fallback
from ssr.method.supernet import DIMENSIONS, Supernet
from ssr.train.metrics import confusion_per_image, miou_from_confusion


@dataclass
class DerivedEval:
    """A derived network with inherited weights and its per-image validation confusions."""

    model: DerivedNet
    miou: float
    per_image: Tensor  # [N, K, K] int64, one confusion matrix per validation image


def discretize_by_argmax(net: Supernet) -> list[tuple[str, Decision]]:
    """Keep only each active group's first maximum, dimension by dimension (docs/method.md §12.12).

    Depth first, then ops, then widths: pruning an op collapses its channel groups, so each
    dimension is decided on the groups the previous ones left active. Returns the decisions.
    """
    out: list[tuple[str, Decision]] = []
    for dim in DIMENSIONS:
        decisions = argmax_fallback(
            dim, net.probs(dim), net.alive(dim), net.active_groups(dim).cpu()
        )
        apply(net.alive(dim), decisions)
        net.refresh_alive()
        out.extend((dim, d) for d in decisions)
    return out


def evaluate_images(
    model: nn.Module,
    loader: Iterable,
    num_classes: int,
    device: torch.device,
    ignore_index: int = IGNORE,
) -> Tensor:
    """``[N, K, K]`` confusion matrices, one per validation image (docs/method.md §8.3).

    Same protocol as :func:`ssr.train.loop.evaluate` (eval mode, logits upsampled bilinearly to the
    label size, argmax): the sum over images is its confusion matrix.
    """
    mats = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in loader:
                x, y = batch[0].to(device), batch[1].to(device)
                logits = model(x)
                if logits.shape[-2:] != y.shape[-2:]:
                    logits = F.interpolate(
                        logits, size=y.shape[-2:], mode="bilinear", align_corners=False
                    )
                mats.append(confusion_per_image(logits.argmax(1), y, num_classes, ignore_index))
    finally:
        model.train(was_training)
    if not mats:
        return torch.zeros(0, num_classes, num_classes, dtype=torch.int64)
    return torch.cat([m.cpu() for m in mats])


def measure_derived(
    net: Supernet,
    recal_batches: Callable[[], Iterable[Tensor]],
    val_loader: Iterable,
    device: torch.device,
) -> DerivedEval:
    """Derive the argmax network of ``net``'s current state, recalibrate BN, evaluate per image.

    ``recal_batches()`` yields the input batches for BN recalibration (the same ones each call).
    The supernet's alive masks are restored afterwards and the global RNG is forked, so the
    search continues exactly as if nothing had been measured. Raises
    :class:`~ssr.config.errors.DivergenceError` when the probabilities are not finite.
    """
    saved = {d: net.alive(d).clone() for d in DIMENSIONS}
    devices = [device] if device.type == "cuda" else []
    # forked RNG: building the derived network initialises parameters before they are copied
    with torch.random.fork_rng(devices=devices):
        try:
            if not net.is_discrete():
                discretize_by_argmax(net)
            model = derive_network(net)
        finally:
            for d, a in saved.items():
                net.alive(d).copy_(a)
            net.refresh_alive()
        recalibrate_bn(model, recal_batches(), device)
        per_image = evaluate_images(model, val_loader, net.num_classes, device)
    return DerivedEval(model, miou_from_confusion(per_image.sum(0)), per_image)


def gap_summary(
    history: list[dict[str, float]], discrete_at: int | None, gap_epochs: tuple[int, ...]
) -> dict[str, Any]:
    """Summary keys of the gaps the search measured (history rows with ``argmax_gap``).

    ``gap_at_discrete``, ``supernet_miou_at_discrete``, ``derived_miou_at_discrete`` and one
    ``gap_at_<e>`` per ``gap_epochs`` entry; None where nothing was measured (never discrete by
    shrinking; an epoch the search did not reach).
    """
    rows = {int(r["epoch"]): r for r in history}
    at = rows.get(discrete_at) if discrete_at is not None else None
    out: dict[str, Any] = {
        "gap_at_discrete": at.get("argmax_gap") if at else None,
        "supernet_miou_at_discrete": at["supernet_miou"] if at and "argmax_gap" in at else None,
        "derived_miou_at_discrete": at.get("argmax_derived_miou") if at else None,
    }
    for e in gap_epochs:
        out[f"gap_at_{e}"] = rows[e].get("argmax_gap") if e in rows else None
    return out
