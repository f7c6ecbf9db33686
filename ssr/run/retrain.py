"""Retraining a derived network from scratch (docs/method.md §8.2), resumable to the same result.

:func:`run_retrain` trains ``DerivedNet(genotype)`` with the official recipe: Adam 5e-4, weight
decay 1e-4, poly 0.9 per epoch, class-weighted CE, flip + ±2 px shift, model selection by the
best validation mIoU. A run interrupted after any checkpoint and resumed ends with the same
weights as an uninterrupted one: batches are keyed by ``(seed, epoch)`` (:mod:`ssr.data`) and
the RNG states are checkpointed (:mod:`ssr.train.checkpoint`). A loss that stops being finite ends
the run with :class:`ssr.config.errors.DivergenceError` (one line: epoch, quantity, what to change).

``precision`` (fp32, bf16, fp16 with a gradient scaler), ``channels_last`` and ``compile``
apply to training (ssr/train/precision.py, ssr/train/compiled.py); evaluation runs eagerly in
fp32 whatever they are, and the result records them. On
CUDA, ``cudnn.benchmark`` is on, batches are pinned and copied without blocking, and a step
reads nothing on the host: losses are averaged on the device and the divergence check is read
once per epoch (:class:`ssr.train.finite.StepChecks`).
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

from ssr.config import ConfigError, RetrainConfig, dump_yaml, to_dict
from ssr.config.errors import DivergenceError
from ssr.data import build_dataset, build_loader, class_weights, dataset_info
from ssr.method.genotype import Genotype
from ssr.train.checkpoint import save_checkpoint
from ssr.train.compiled import CompiledForward
from ssr.train.device import resolve_device
from ssr.train.epochs import EpochDriver
from ssr.train.finite import StepChecks
from ssr.train.loop import Reporter, evaluate, run_epoch
from ssr.train.loss import weighted_ce
from ssr.train.optim import make_adam, poly_lr
from ssr.train.precision import Stepper, autocast, cuda_habits, memory_format, to_device

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
    #: 90 % bootstrap interval of ``miou`` over validation images (:func:`final_interval`)
    miou_lo: float = math.nan
    miou_hi: float = math.nan
    class_names: tuple[str, ...] = ()
    #: the loss's class weights, computed from the training split (``data.class_weights``)
    class_weights: tuple[float, ...] = ()
    #: ``compile`` as it ran, the graphs compiled and the seconds spent (ssr/train/compiled.py)
    compile: bool = False
    compiles: int = 0
    compile_seconds: float = 0.0


class TrainStep:
    """One retraining step of ``model`` (on ``device``): autocast forward, the weighted CE on
    fp32 logits, (scaled) backward, the divergence check, clipping, the Adam step.

    Returns 0-d tensors (``loss``; with fp16 ``skipped``, 1 for a step the scaler skipped). Set
    ``weights`` (the class weights, on ``device``) before the first call. ``run_retrain``,
    ``benchmarks/gpu_check.py`` and ``sweeps/schedule/plan.py`` time this same step.
    """

    def __init__(self, model: nn.Module, cfg: RetrainConfig, device: torch.device) -> None:
        self.model, self.cfg, self.device = model, cfg, device
        self.optimizer = make_adam(model.parameters(), cfg.optim)
        self.stepper = Stepper(
            list(model.parameters()), self.optimizer, device, cfg.precision, cfg.optim.grad_clip
        )
        self.checks = StepChecks("retraining", deferred=device.type == "cuda")
        self.forward = CompiledForward(model, bool(cfg.compile))  # or the model itself
        self.weights: Tensor | None = None
        self.advice = f"lower optim.lr ({cfg.optim.lr}) or set optim.grad_clip"

    def __call__(self, batch: Any) -> dict[str, Tensor]:
        cfg, device = self.cfg, self.device
        x, y = to_device(batch[0], device, cfg.channels_last), to_device(batch[1], device)
        with autocast(device, cfg.precision):
            logits = self.forward(x)
        loss = weighted_ce(logits.float(), y, self.weights)  # the loss in fp32
        norm = self.stepper.backward(loss)
        self.checks.check([("training loss", loss)], self.advice)
        skipped = self.stepper.step(norm)
        return {"loss": loss.detach(), **({"skipped": skipped} if self.stepper.fp16 else {})}


def _size(model: nn.Module, height: int, width: int) -> tuple[float, float]:
    """Parameters (millions) and conv GMACs at ``height x width`` of ``model``."""
    from ssr.method.complexity import count_macs, count_params

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
    cfg = cfg.inherit()  # a retraining on its own: None fields take the default search's
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1 to retrain, got {cfg.epochs}")
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir (where last.pt is)")
    device = resolve_device(cfg.device)
    with cuda_habits(device):
        return _retrain(cfg, genotype, device, out, reporter, resume, progress)


@dataclass
class _RetrainRun:
    """One retraining in progress: the network and its step, the data, the best epoch so far.
    The epochs around it are :class:`ssr.train.epochs.EpochDriver`'s."""

    cfg: RetrainConfig
    genotype: Genotype
    device: torch.device
    progress: bool
    model: nn.Module
    step: TrainStep
    train_set: Any
    train_loader: Any
    val_loader: Any
    num_classes: int
    best_path: Path | None
    best_miou: float = -math.inf
    best_epoch: int = 0
    last_eval: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def build(
        cls, cfg: RetrainConfig, genotype: Genotype, device: torch.device, out: Path | None,
        progress: bool,
    ) -> _RetrainRun:  # fmt: skip
        """The network (seeded), its step and the loaders."""
        from ssr.method.network import DerivedNet

        info = dataset_info(cfg.data.name)
        torch.manual_seed(cfg.seed)
        model = DerivedNet(genotype, num_classes=info.num_classes)
        model = model.to(device, memory_format=memory_format(cfg.channels_last))
        pin = device.type == "cuda"
        train_set = build_dataset(cfg.data, "train")
        return cls(
            cfg, genotype, device, progress, model, TrainStep(model, cfg, device), train_set,
            build_loader(cfg.data, "train", dataset=train_set, seed=cfg.seed, pin_memory=pin),
            build_loader(cfg.data, "val", pin_memory=pin), info.num_classes,
            out / "best.pt" if out is not None else None,
        )  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Weights, optimiser, scaler, best epoch and class weights of a checkpoint."""
        if state["genotype"] != self.genotype.to_json():
            raise ConfigError("the checkpoint was written for another genotype; use a new out_dir")
        if state["config"] != to_dict(self.cfg):
            log.warning("resuming retraining with a different config than it was started with")
        self.model.load_state_dict(state["model"])
        self.step.optimizer.load_state_dict(state["optimizer"])
        self.step.stepper.load_state_dict(state.get("scaler"))
        self.best_miou, self.best_epoch = float(state["best_miou"]), int(state["best_epoch"])
        self.step.weights = state["class_weights"].to(self.device)

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of this retraining (the driver adds epoch, history, RNG)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.step.optimizer.state_dict(),
            "scaler": self.step.stepper.state_dict(),
            "best_miou": self.best_miou,
            "best_epoch": self.best_epoch,
            "class_weights": self.step.weights.cpu(),
            "genotype": self.genotype.to_json(),
            "config": to_dict(self.cfg),
        }

    def epoch(self, epoch: int) -> dict[str, Any]:
        """One retraining epoch (0-based): train, evaluate when due, keep the best weights."""
        cfg, step, t0 = self.cfg, self.step, time.perf_counter()
        lr = poly_lr(step.optimizer, cfg.optim.lr, epoch, cfg.epochs, cfg.optim.poly_power)
        self.train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        self.model.train()
        desc = f"retrain {epoch + 1}/{cfg.epochs}"
        step.checks.start(epoch + 1)
        stats = run_epoch(self.train_loader, step, desc=desc, progress=self.progress,
                          log_summary=False)  # fmt: skip
        step.checks.flush()
        scale = step.stepper.scaler.get_scale() if step.stepper.fp16 else 1.0
        if scale < 1.0:
            raise DivergenceError(
                f"retraining diverged at epoch {epoch + 1}: the fp16 gradients overflow even "
                f"unscaled (gradient scale {scale:.3g}); use precision bf16 or fp32"
            )
        evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if evaluated:
            self.evaluate(epoch + 1)
        nan, ev = float("nan"), self.last_eval
        row: dict[str, Any] = {
            "epoch": float(epoch + 1),
            "train_loss": stats.get("loss", nan),
            "lr": lr,
            **{k: ev.get(k, nan) for k in ("val_miou", "val_miou_official", "val_pixel_acc",
                                            "val_loss")},
            "evaluated": float(evaluated),
            "best_miou": self.best_miou if self.best_epoch else nan,
            "seconds": time.perf_counter() - t0,
        }  # fmt: skip
        if "skipped" in stats:  # fp16: the share of steps the gradient scaler skipped
            row["skipped_steps"] = stats["skipped"]
        if evaluated:
            row["val_per_class_iou"] = ev["val_per_class_iou"]
        log.info(
            "%s: train_loss=%.4g lr=%.3g val_miou=%.4f%s best=%.4f (epoch %d) %.1fs", desc,
            row["train_loss"], lr, row["val_miou"], "" if evaluated else " (earlier)",
            row["best_miou"], self.best_epoch, row["seconds"],
        )  # fmt: skip
        return row

    def evaluate(self, done: int) -> None:
        """Evaluate after epoch ``done``; a new best mIoU saves ``best.pt``."""
        ev = evaluate(
            self.model, self.val_loader, self.num_classes, self.device, weight=self.step.weights,
            progress=self.progress, channels_last=self.cfg.channels_last,
        )  # fmt: skip
        self.last_eval = {
            "val_miou": ev["miou"],
            "val_miou_official": ev["miou_official"],
            "val_pixel_acc": ev["pixel_acc"],
            "val_loss": ev["loss"],
            "val_per_class_iou": ev["per_class_iou"],
        }
        if math.isfinite(ev["miou"]) and ev["miou"] > self.best_miou:
            self.best_miou, self.best_epoch = ev["miou"], done
            if self.best_path is not None:
                save_checkpoint(
                    self.best_path, model=self.model.state_dict(), epoch=done,
                    miou=self.best_miou, genotype=self.genotype.to_json(),
                )  # fmt: skip


def _retrain(
    cfg: RetrainConfig,
    genotype: Genotype,
    device: torch.device,
    out: Path | None,
    reporter: Reporter | None,
    resume: bool,
    progress: bool,
) -> RetrainResult:
    run = _RetrainRun.build(cfg, genotype, device, out, progress)
    driver = EpochDriver(
        cfg.epochs,
        cfg.checkpoint_every,
        checkpoint=out / "last.pt" if out is not None else None,
        reporter=reporter,
        history_file=out / "history.jsonl" if out is not None else None,
    )
    if resume and not driver.resume(run.restore):
        log.info("resume requested but %s does not exist: starting from scratch", driver.checkpoint)
    if run.step.weights is None:
        run.step.weights = class_weights(cfg.data, run.train_set).to(device)
    run.last_eval = driver.history[-1] if driver.history else {}
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.resolved.yaml")
        genotype.save(out / "genotype.json")
    history = driver.run(run.epoch, run.state)

    final = next((r for r in reversed(history) if r.get("evaluated")), {})
    lo, hi = final_interval(run)
    params_m, gmacs = _size(run.model, cfg.data.height, cfg.data.width)
    best = run.best_path
    return RetrainResult(
        miou=float(final.get("val_miou", math.nan)),
        per_class_iou=list(final.get("val_per_class_iou", [])),
        pixel_acc=float(final.get("val_pixel_acc", math.nan)),
        best_miou=run.best_miou if run.best_epoch else math.nan,
        best_epoch=run.best_epoch,
        epochs_run=len(history),
        history=history,
        params_m=params_m,
        gmacs=gmacs,
        checkpoint=best if best is not None and best.is_file() else None,
        precision=cfg.precision,
        channels_last=cfg.channels_last,
        miou_lo=lo,
        miou_hi=hi,
        class_names=tuple(dataset_info(cfg.data.name).class_names),
        class_weights=tuple(float(w) for w in run.step.weights.cpu()),
        compile=run.step.forward.enabled,
        compiles=run.step.forward.compiles,
        compile_seconds=round(run.step.forward.compile_seconds, 2),
    )


def final_interval(run: _RetrainRun) -> tuple[float, float]:
    """The 90 % bootstrap interval (over validation images, docs/method.md §8.3) of the final
    network's validation mIoU: one more pass over the validation set, image by image, with the
    protocol of :func:`ssr.train.loop.evaluate` (the sum of the per-image matrices is its matrix)."""
    from ssr.method.gap import evaluate_images
    from ssr.train.metrics import bootstrap_miou_interval

    per_image = evaluate_images(run.model, run.val_loader, run.num_classes, run.device)
    return bootstrap_miou_interval(per_image)
