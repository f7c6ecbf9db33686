"""Retraining a derived network from scratch (docs/method.md §8.2), resumable to the same result.

:func:`run_retrain` trains ``DerivedNet(genotype)`` with the official recipe: Adam 5e-4, weight
decay 1e-4, poly 0.9 per epoch, class-weighted CE, flip + ±2 px shift, model selection by the
best validation mIoU. A run interrupted after any checkpoint and resumed ends with the same
weights as an uninterrupted one: batches are keyed by ``(seed, epoch)`` (:mod:`ssr.data`) and
the RNG states are checkpointed (:mod:`ssr.checkpoint`). A loss that stops being finite ends
the run with :class:`ssr.errors.DivergenceError` (one line: epoch, quantity, what to change).

``precision`` (fp32, bf16, fp16 with a gradient scaler) and ``channels_last`` apply to training
(ssr/precision.py); evaluation runs in fp32 whatever they are, and the result records both. On
CUDA, ``cudnn.benchmark`` is on, batches are pinned and copied without blocking, and a step
reads nothing on the host: losses are averaged on the device and the divergence check is read
once per epoch (:class:`ssr.finite.StepChecks`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ssr.atomic import write_jsonl
from ssr.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from ssr.config import ConfigError, RetrainConfig, dump_yaml, to_dict, validate
from ssr.data import build_dataset, build_loader, class_weights, dataset_info
from ssr.device import resolve_device
from ssr.errors import DivergenceError
from ssr.finite import StepChecks
from ssr.genotype import Genotype
from ssr.loop import Reporter, evaluate, run_epoch
from ssr.loss import weighted_ce
from ssr.optim import make_adam, poly_lr
from ssr.precision import Stepper, autocast, cuda_habits, memory_format, to_device

__all__ = ["Reporter", "RetrainResult", "TrainStep", "run_retrain"]

log = logging.getLogger(__name__)


@dataclass
class RetrainResult:
    """Outcome of :func:`run_retrain`. ``miou`` is the last epoch's val mIoU; ``best_*`` select
    by val mIoU as the official code does (docs/method.md §8.2: report both)."""

    miou: float
    per_class_iou: list[float]
    pixel_acc: float
    best_miou: float
    best_epoch: int
    epochs_run: int
    history: list[dict[str, Any]] = field(repr=False)
    params_m: float | None
    gmacs: float | None
    checkpoint: Path | None
    precision: str = "fp32"
    channels_last: bool = False


class TrainStep:
    """One retraining step of ``model`` (on ``device``): autocast forward, the weighted CE on
    fp32 logits, (scaled) backward, the divergence check, clipping, the Adam step.

    Returns 0-d tensors (``loss``; with fp16 ``skipped``, 1 for a step the scaler skipped). Set
    ``weights`` (the class weights, on ``device``) before the first call. ``run_retrain``,
    ``benchmarks/gpu_check.py`` and ``sweeps/plan.py`` time this same step.
    """

    def __init__(self, model: nn.Module, cfg: RetrainConfig, device: torch.device) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer = make_adam(model.parameters(), cfg.optim)
        self.stepper = Stepper(
            list(model.parameters()), self.optimizer, device, cfg.precision, cfg.optim.grad_clip
        )
        self.checks = StepChecks("retraining", deferred=device.type == "cuda")
        self.weights: Tensor | None = None
        self.advice = f"lower optim.lr ({cfg.optim.lr}) or set optim.grad_clip"

    def __call__(self, batch: Any) -> dict[str, Tensor]:
        cfg, device = self.cfg, self.device
        x, y = to_device(batch[0], device, cfg.channels_last), to_device(batch[1], device)
        with autocast(device, cfg.precision):
            logits = self.model(x)
        loss = weighted_ce(logits.float(), y, self.weights)  # the loss in fp32
        norm = self.stepper.backward(loss)
        self.checks.check([("training loss", loss)], self.advice)
        skipped = self.stepper.step(norm)
        return {"loss": loss.detach(), **({"skipped": skipped} if self.stepper.fp16 else {})}


def _size(model: nn.Module, height: int, width: int) -> tuple[float, float]:
    """Parameters (millions) and conv GMACs at ``height x width`` of ``model``."""
    from ssr.complexity import count_macs, count_params

    return count_params(model) / 1e6, count_macs(model, (1, 3, height, width)) / 1e9


def run_retrain(
    cfg: RetrainConfig,
    genotype: Genotype,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    *,
    progress: bool = True,
) -> RetrainResult:
    """Train ``DerivedNet(genotype)`` from scratch on ``cfg.data`` (docs/method.md §8.2).

    Adam + per-epoch poly LR, weighted CE (``cfg.data.class_weights``), evaluation every
    ``eval_every`` epochs and at the last one. ``reporter(metrics, epoch)`` is called after every
    epoch (after its checkpoint is written) with ``epoch``, ``train_loss``, ``lr``, ``val_miou``
    (the latest evaluation; ``evaluated`` says whether it is this epoch's), ``val_pixel_acc``,
    ``val_loss``, ``best_miou`` and ``seconds``. With ``out_dir`` it writes ``last.pt`` (every
    ``checkpoint_every`` epochs and at the end), ``best.pt`` (best val mIoU), ``history.jsonl``,
    ``genotype.json`` and ``config.resolved.yaml``; ``resume=True`` continues from ``last.pt``
    (a fresh start if there is none).
    """
    validate(cfg)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir (where last.pt is)")
    device = resolve_device(cfg.device)
    with cuda_habits(device):
        return _retrain(cfg, genotype, device, out, reporter, resume, progress)


def _retrain(
    cfg: RetrainConfig,
    genotype: Genotype,
    device: torch.device,
    out: Path | None,
    reporter: Reporter | None,
    resume: bool,
    progress: bool,
) -> RetrainResult:
    from ssr.network import DerivedNet

    info = dataset_info(cfg.data.name)
    torch.manual_seed(cfg.seed)
    model = DerivedNet(genotype, num_classes=info.num_classes)
    model = model.to(device, memory_format=memory_format(cfg.channels_last))
    step = TrainStep(model, cfg, device)
    optimizer, stepper, checks = step.optimizer, step.stepper, step.checks
    pin = device.type == "cuda"
    train_set = build_dataset(cfg.data, "train")
    train_loader = build_loader(cfg.data, "train", dataset=train_set, seed=cfg.seed, pin_memory=pin)
    val_loader = build_loader(cfg.data, "val", pin_memory=pin)

    start, history = 0, []
    best_miou, best_epoch = -math.inf, 0
    weights: Tensor | None = None
    last, best = (out / "last.pt", out / "best.pt") if out is not None else (None, None)
    if resume and last is not None and last.is_file():
        state = load_checkpoint(last)
        if state["genotype"] != genotype.to_json():
            raise ConfigError(f"{last} was written for another genotype; use a new out_dir")
        if state["config"] != to_dict(cfg):
            log.warning("resuming %s with a different config than it was started with", last)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        stepper.load_state_dict(state.get("scaler"))
        start, history = int(state["epoch"]), list(state["history"])
        best_miou, best_epoch = float(state["best_miou"]), int(state["best_epoch"])
        weights = state["class_weights"]
        set_rng_state(state["rng"])
        log.info("resumed retraining from %s after epoch %d", last, start)
    elif resume:
        log.info("resume requested but %s does not exist: starting from scratch", last)
    if weights is None:
        weights = class_weights(cfg.data, train_set)
    weights = step.weights = weights.to(device)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.resolved.yaml")
        genotype.save(out / "genotype.json")
        write_jsonl(out / "history.jsonl", history)

    last_eval: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        lr = poly_lr(optimizer, cfg.optim.lr, epoch, cfg.epochs, cfg.optim.poly_power)
        train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        model.train()
        desc = f"retrain {epoch + 1}/{cfg.epochs}"
        checks.start(epoch + 1)
        stats = run_epoch(train_loader, step, desc=desc, progress=progress, log_summary=False)
        checks.flush()
        if stepper.fp16 and stepper.scaler.get_scale() < 1.0:
            raise DivergenceError(
                f"retraining diverged at epoch {epoch + 1}: the fp16 gradients overflow even "
                f"unscaled (gradient scale {stepper.scaler.get_scale():.3g}); use precision "
                "bf16 or fp32"
            )
        evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if evaluated:
            ev = evaluate(
                model, val_loader, info.num_classes, device, weight=weights, progress=progress,
                channels_last=cfg.channels_last,
            )  # fmt: skip
            last_eval = {
                "val_miou": ev["miou"],
                "val_miou_official": ev["miou_official"],
                "val_pixel_acc": ev["pixel_acc"],
                "val_loss": ev["loss"],
                "val_per_class_iou": ev["per_class_iou"],
            }
            if math.isfinite(ev["miou"]) and ev["miou"] > best_miou:
                best_miou, best_epoch = ev["miou"], epoch + 1
                if best is not None:
                    save_checkpoint(
                        best,
                        model=model.state_dict(),
                        epoch=epoch + 1,
                        miou=best_miou,
                        genotype=genotype.to_json(),
                    )
        nan = float("nan")
        row: dict[str, Any] = {
            "epoch": float(epoch + 1),
            "train_loss": stats.get("loss", nan),
            "lr": lr,
            "val_miou": last_eval.get("val_miou", nan),
            "val_miou_official": last_eval.get("val_miou_official", nan),
            "val_pixel_acc": last_eval.get("val_pixel_acc", nan),
            "val_loss": last_eval.get("val_loss", nan),
            "evaluated": float(evaluated),
            "best_miou": best_miou if best_epoch else nan,
            "seconds": time.perf_counter() - t0,
        }
        if "skipped" in stats:  # fp16: the share of steps the gradient scaler skipped
            row["skipped_steps"] = stats["skipped"]
        if evaluated:
            row["val_per_class_iou"] = last_eval["val_per_class_iou"]
        history.append(row)
        log.info(
            "%s: train_loss=%.4g lr=%.3g val_miou=%.4f%s best=%.4f (epoch %d) %.1fs",
            desc,
            row["train_loss"],
            lr,
            row["val_miou"],
            "" if evaluated else " (earlier)",
            row["best_miou"],
            best_epoch,
            row["seconds"],
        )
        if out is not None:
            write_jsonl(out / "history.jsonl", history)
        if last is not None and (
            (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
        ):
            save_checkpoint(
                last,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scaler=stepper.state_dict(),
                epoch=epoch + 1,
                history=history,
                best_miou=best_miou,
                best_epoch=best_epoch,
                class_weights=weights.cpu(),
                rng=rng_state(),
                genotype=genotype.to_json(),
                config=to_dict(cfg),
            )
        if reporter is not None:
            reporter({k: v for k, v in row.items() if isinstance(v, float)}, epoch + 1)

    final = next((r for r in reversed(history) if r.get("evaluated")), {})
    params_m, gmacs = _size(model, cfg.data.height, cfg.data.width)
    return RetrainResult(
        miou=float(final.get("val_miou", math.nan)),
        per_class_iou=list(final.get("val_per_class_iou", [])),
        pixel_acc=float(final.get("val_pixel_acc", math.nan)),
        best_miou=best_miou if best_epoch else math.nan,
        best_epoch=best_epoch,
        epochs_run=len(history),
        history=history,
        params_m=params_m,
        gmacs=gmacs,
        checkpoint=best if best is not None and best.is_file() else None,
        precision=cfg.precision,
        channels_last=cfg.channels_last,
    )
