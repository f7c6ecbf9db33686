"""The one epoch loop, the segmentation loss, evaluation, checkpoints and retraining (spec §8).

Everything here is shared by the search (:mod:`ssr.search`) and retraining:

- :func:`run_epoch` iterates batches through a ``step`` callable and averages what it returns;
- :func:`weighted_ce` is the class-weighted cross-entropy of spec §4.1 with logits upsampled to
  the label size (spec §8.2);
- :func:`evaluate` computes mIoU / per-class IoU / pixel accuracy (spec §8.3);
- :func:`poly_lr` and :func:`make_adam` are the optimiser recipe of spec §6 / §8.2;
- :func:`save_checkpoint` / :func:`load_checkpoint` write atomically and read with
  ``weights_only=True``, so checkpoints hold tensors and plain containers only.

:func:`run_retrain` trains a derived network from scratch (spec §8.2: Adam 5e-4, wd 1e-4,
poly 0.9 per epoch, weighted CE, flip + ±2 px shift, model selection by best val mIoU) and is
resumable: a run interrupted after any checkpoint and resumed ends with the same weights as an
uninterrupted one (batches are keyed by (seed, epoch), RNG states are checkpointed).
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ssr.config import ConfigError, OptimConfig, RetrainConfig, dump_yaml, to_dict, validate
from ssr.data import build_dataset, build_loader, class_weights, dataset_info
from ssr.metrics import ConfusionMatrix

log = logging.getLogger(__name__)
Reporter = Callable[[dict[str, float], int], None]
IGNORE = 255


# --------------------------------------------------------------------------------------------
# Device and logging


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


def _ensure_log_handler() -> None:
    """Show ``ssr`` INFO lines on stderr unless the application configured logging itself."""
    root = logging.getLogger("ssr")
    if not root.hasHandlers():
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
        root.addHandler(handler)
        if root.getEffectiveLevel() > logging.INFO:
            root.setLevel(logging.INFO)


# --------------------------------------------------------------------------------------------
# The epoch loop


def _batch_size(batch: Any) -> int:
    """Leading dimension of the first tensor in a (nested) batch."""
    while isinstance(batch, (list, tuple)) and batch:
        batch = batch[0]
    if isinstance(batch, Mapping) and batch:
        return _batch_size(next(iter(batch.values())))
    if isinstance(batch, Tensor) and batch.dim() > 0:
        return int(batch.shape[0])
    return 1


def run_epoch(
    batches: Iterable[Any],
    step: Callable[[Any], Mapping[str, float]],
    *,
    desc: str,
    progress: bool = True,
    log_summary: bool = True,
) -> dict[str, float]:
    """Run ``step`` on every batch; return the batch-size-weighted mean of what it returns.

    The one epoch loop of the project (design §6): the search's bi-level step, retraining and
    evaluation all go through it. A tqdm bar shows running means when ``progress`` is true and
    stderr is a terminal; one summary line per epoch is logged either way.
    """
    total = len(batches) if hasattr(batches, "__len__") else None  # type: ignore[arg-type]
    show = progress and sys.stderr.isatty()
    sums: dict[str, float] = {}
    seen = 0
    t0 = time.perf_counter()
    with tqdm(batches, desc=desc, total=total, disable=not show, leave=False) as bar:
        for batch in bar:
            n = _batch_size(batch)
            out = step(batch)
            for k, v in out.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            seen += n
            if show:
                bar.set_postfix({k: f"{v / seen:.4g}" for k, v in sums.items()}, refresh=False)
    means = {k: v / seen for k, v in sums.items()} if seen else {}
    if log_summary:
        _ensure_log_handler()
        secs = time.perf_counter() - t0
        parts = " ".join(f"{k}={v:.4g}" for k, v in means.items())
        log.info(
            "%s: %s (%d samples, %.1fs, %.1f/s)", desc, parts, seen, secs, seen / max(secs, 1e-9)
        )
    return means


# --------------------------------------------------------------------------------------------
# Loss and evaluation


def weighted_ce(
    logits: Tensor, target: Tensor, weight: Tensor | None = None, ignore_index: int = IGNORE
) -> Tensor:
    """Class-weighted cross-entropy with an ignore label (spec §4.1, §8.2).

    Logits ``[N, K, h, w]`` are upsampled bilinearly (align_corners=False) to the label size
    ``[N, H, W]`` when they differ. The mean is weighted by class, as ``NLLLoss2d(weight)``:
    ``sum_i w[y_i] * nll_i / sum_i w[y_i]`` over non-ignored pixels; a batch with no labelled
    pixel gives 0 (not NaN).
    """
    if logits.shape[-2:] != target.shape[-2:]:
        logits = F.interpolate(logits, size=target.shape[-2:], mode="bilinear", align_corners=False)
    target = target.long()
    losses = F.cross_entropy(
        logits, target, weight=weight, ignore_index=ignore_index, reduction="none"
    )
    valid = target != ignore_index
    # NOTE: the denominator is the summed weight of labelled pixels, as in the weighted mean.
    w = weight[torch.where(valid, target, 0)] * valid if weight is not None else valid
    denom = w.sum()
    return losses.sum() / denom.clamp_min(1e-12)


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    num_classes: int,
    device: torch.device | str,
    *,
    weight: Tensor | None = None,
    ignore_index: int = IGNORE,
    progress: bool = True,
) -> dict[str, Any]:
    """mIoU, per-class IoU, pixel accuracy and loss of ``model`` on ``loader`` (spec §8.3).

    Runs in eval and inference mode (the previous mode is restored); logits are upsampled to
    the label size. ``miou`` leaves classes absent from both prediction and label out of the
    mean (NaN in ``per_class_iou``); ``miou_official`` counts them as 0 like the official code.
    """
    device = torch.device(device)
    conf = ConfusionMatrix(num_classes, ignore_index, device=device)
    w = weight.to(device) if weight is not None else None

    def step(batch: Any) -> dict[str, float]:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        logits = model(x)
        if logits.shape[-2:] != y.shape[-2:]:
            logits = F.interpolate(logits, size=y.shape[-2:], mode="bilinear", align_corners=False)
        conf.update(logits.argmax(1), y)
        return {"loss": float(weighted_ce(logits, y, w, ignore_index))}

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            stats = run_epoch(loader, step, desc="eval", progress=progress, log_summary=False)
    finally:
        model.train(was_training)
    iou = conf.per_class_iou()
    return {
        "miou": conf.miou(),
        "miou_official": conf.miou(absent="zero"),
        "per_class_iou": [float(v) for v in iou],
        "pixel_acc": conf.pixel_accuracy(),
        "loss": stats.get("loss", float("nan")),
    }


# --------------------------------------------------------------------------------------------
# Optimisation


def poly_lr(
    optimizer: torch.optim.Optimizer, base_lr: float, epoch: int, total: int, power: float
) -> float:
    """Set and return ``base_lr * (1 - epoch / total) ** power`` (0-based epoch; spec §6, §8.2).

    The official code steps per epoch with ``(1 - (e - 1) / E) ** 0.9`` for 1-based ``e``, the
    same values. ``power = 0`` keeps the learning rate constant.
    """
    lr = base_lr * (1.0 - min(epoch, total) / total) ** power if power > 0 else base_lr
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def make_adam(params: Iterable[Any], cfg: OptimConfig) -> torch.optim.Adam:
    """Adam with the settings of ``cfg`` (spec §6: lr, betas, eps, L2 weight decay)."""
    if len(cfg.betas) != 2:
        raise ConfigError(f"optim.betas must have two values, got {list(cfg.betas)}")
    return torch.optim.Adam(
        params,
        lr=cfg.lr,
        betas=(cfg.betas[0], cfg.betas[1]),
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
    )


# --------------------------------------------------------------------------------------------
# Checkpoints


_PLAIN = (str, int, float, bool, type(None), torch.Size)


def _check_plain(obj: Any, where: str) -> None:
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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
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
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# Retraining


@dataclass
class RetrainResult:
    """Outcome of :func:`run_retrain`. ``miou`` is the last epoch's val mIoU; ``best_*`` select
    by val mIoU as the official code does (spec §8.2, §12.10: report both)."""

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


def _json_row(row: Mapping[str, Any]) -> str:
    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, list):
            return [clean(x) for x in v]
        return v

    return json.dumps({k: clean(v) for k, v in row.items()})


def _size(model: nn.Module, height: int, width: int) -> tuple[float | None, float | None]:
    try:
        from ssr.bench import count_macs, count_params
    except ImportError:  # pragma: no cover - bench ships with ssr
        return None, None
    return count_params(model) / 1e6, count_macs(model, (1, 3, height, width)) / 1e9


def run_retrain(
    cfg: RetrainConfig,
    genotype: Any,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    *,
    progress: bool = True,
) -> RetrainResult:
    """Train ``DerivedNet(genotype)`` from scratch on ``cfg.data`` (spec §8.2).

    Adam + per-epoch poly LR, weighted CE (``cfg.data.class_weights``), evaluation every
    ``eval_every`` epochs and at the last one. ``reporter(metrics, epoch)`` is called after every
    epoch (after its checkpoint is written) with ``epoch``, ``train_loss``, ``lr``, ``val_miou``
    (the latest evaluation; ``evaluated`` says whether it is this epoch's), ``val_pixel_acc``,
    ``val_loss``, ``best_miou`` and ``seconds``. With ``out_dir`` it writes ``last.pt`` (every
    ``checkpoint_every`` epochs and at the end), ``best.pt`` (best val mIoU), ``history.jsonl``,
    ``genotype.json`` and ``config.resolved.yaml``; ``resume=True`` continues from ``last.pt``
    (a fresh start if there is none).
    """
    from ssr.network import DerivedNet

    validate(cfg)
    out = Path(out_dir) if out_dir is not None else None
    if resume and out is None:
        raise ConfigError("resume=True needs out_dir (where last.pt is)")
    device = resolve_device(cfg.device)
    info = dataset_info(cfg.data.name)
    torch.manual_seed(cfg.seed)
    model = DerivedNet(genotype, num_classes=info.num_classes).to(device)
    optimizer = make_adam(model.parameters(), cfg.optim)
    train_set = build_dataset(cfg.data, "train")
    train_loader = build_loader(cfg.data, "train", dataset=train_set, seed=cfg.seed)
    val_loader = build_loader(cfg.data, "val")

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
        start, history = int(state["epoch"]), list(state["history"])
        best_miou, best_epoch = float(state["best_miou"]), int(state["best_epoch"])
        weights = state["class_weights"]
        set_rng_state(state["rng"])
        log.info("resumed retraining from %s after epoch %d", last, start)
    elif resume:
        log.info("resume requested but %s does not exist: starting from scratch", last)
    if weights is None:
        weights = class_weights(cfg.data, train_set)
    weights = weights.to(device)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.resolved.yaml")
        genotype.save(out / "genotype.json")
        (out / "history.jsonl").write_text("".join(_json_row(r) + "\n" for r in history))

    def step(batch: Any) -> dict[str, float]:
        x, y = batch[0].to(device, non_blocking=True), batch[1].to(device, non_blocking=True)
        loss = weighted_ce(model(x), y, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(
                f"training loss became {value} at epoch {epoch + 1}; lower optim.lr or set "
                "optim.grad_clip"
            )
        return {"loss": value}

    last_eval: dict[str, Any] = history[-1] if history else {}
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        lr = poly_lr(optimizer, cfg.optim.lr, epoch, cfg.epochs, cfg.optim.poly_power)
        train_loader.sampler.set_epoch(epoch)  # type: ignore[attr-defined]
        model.train()
        desc = f"retrain {epoch + 1}/{cfg.epochs}"
        stats = run_epoch(train_loader, step, desc=desc, progress=progress, log_summary=False)
        evaluated = (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs
        if evaluated:
            ev = evaluate(
                model, val_loader, info.num_classes, device, weight=weights, progress=progress
            )
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
        if evaluated:
            row["val_per_class_iou"] = last_eval["val_per_class_iou"]
        history.append(row)
        _ensure_log_handler()
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
            with open(out / "history.jsonl", "a") as f:
                f.write(_json_row(row) + "\n")
        if last is not None and (
            (epoch + 1) % cfg.checkpoint_every == 0 or epoch + 1 == cfg.epochs
        ):
            save_checkpoint(
                last,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
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
    )
