"""Epoch loop, weighted CE, evaluation, LR schedule, checkpoints and resumable retraining."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from ssr.config import ConfigError, DataConfig, OptimConfig, RetrainConfig
from ssr.config.errors import DivergenceError
from ssr.method.genotype import Genotype, LayerGene, ReductionGene
from ssr.run.retrain import run_retrain
from ssr.train.checkpoint import load_checkpoint, save_checkpoint
from ssr.train.device import resolve_device
from ssr.train.loop import evaluate, run_epoch
from ssr.train.loss import weighted_ce
from ssr.train.optim import make_adam, poly_lr


@pytest.fixture(autouse=True)
def _one_thread():
    # NOTE: on a shared 2-core machine, two intra-op threads per process make steps 5x slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_genotype() -> Genotype:
    return Genotype(
        stem=8,
        reductions=(ReductionGene(8, 8), ReductionGene(16, 16)),
        layers=(
            LayerGene(0, 1, 1, 16, 16, 16),
            LayerGene(1, 2, 1, 32, 24, 32),
            LayerGene(1, 1, 2, 32, 32, 32),
        ),
    )


def tiny_cfg(**changes) -> RetrainConfig:
    data = DataConfig(height=64, width=128, train_size=8, val_size=4, batch_size=4)
    base = dict(data=data, optim=OptimConfig(lr=5e-3), epochs=2, checkpoint_every=1)
    return RetrainConfig(**{**base, **changes})


# --------------------------------------------------------------------------------------------
# Loss


def test_weighted_ce_ignores_255_and_uses_weights() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5))
    target[0, 0] = 255
    w = torch.tensor([1.0, 2.0, 0.5])
    loss = weighted_ce(logits, target, w)
    ref = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert torch.allclose(loss, ref)
    # by hand: weighted mean of the per-pixel NLL over labelled pixels
    nll = -F.log_softmax(logits, 1).gather(1, target.clamp(max=2)[:, None])[:, 0]
    keep = target != 255
    hand = (w[target[keep]] * nll[keep]).sum() / w[target[keep]].sum()
    assert torch.allclose(loss, hand)
    changed = logits.clone()
    changed[0, :, 0] = 100.0  # ignored pixels do not matter
    assert torch.allclose(weighted_ce(changed, target, w), loss)
    assert not torch.allclose(weighted_ce(logits, target, torch.ones(3)), loss)


def test_weighted_ce_upsamples_logits_and_survives_all_ignored() -> None:
    logits = torch.randn(1, 3, 2, 4, requires_grad=True)
    target = torch.randint(0, 3, (1, 8, 16))
    up = F.interpolate(logits, size=(8, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(weighted_ce(logits, target), F.cross_entropy(up, target))
    empty = weighted_ce(logits, torch.full((1, 8, 16), 255))
    assert empty.item() == 0.0
    empty.backward()
    assert torch.isfinite(logits.grad).all()


# --------------------------------------------------------------------------------------------
# Loop, evaluation, schedule, device


def test_run_epoch_weights_by_batch_size(caplog: pytest.LogCaptureFixture) -> None:
    batches = [torch.zeros(3, 2), torch.zeros(1, 2)]
    values = iter([1.0, 5.0])
    with caplog.at_level(logging.INFO, logger="ssr"):
        out = run_epoch(batches, lambda b: {"loss": next(values)}, desc="demo", progress=False)
    assert out == {"loss": pytest.approx((3 * 1.0 + 1 * 5.0) / 4)}
    assert any("demo: loss=2" in r.getMessage() for r in caplog.records)
    nested = [((torch.zeros(2), torch.zeros(2)), (torch.zeros(2), torch.zeros(2)))]
    assert run_epoch(nested, lambda b: {"x": 1.0}, desc="zip", progress=False) == {"x": 1.0}


class Oracle(torch.nn.Module):
    """Predicts the label it is given in channel 0 of the image, at 1/2 resolution."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.k = num_classes
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ids = x[:, 0, ::2, ::2].round().long().clamp(0, self.k - 1)
        return F.one_hot(ids, self.k).permute(0, 3, 1, 2).float() * 10 * self.scale


def test_evaluate_perfect_model_and_restores_mode() -> None:
    labels = torch.randint(0, 3, (4, 1, 4, 4)).repeat_interleave(2, 2).repeat_interleave(2, 3)
    labels = labels[:, 0]
    images = labels[:, None].float().repeat(1, 3, 1, 1)
    target = labels.clone()
    target[:, 0, 0] = 255
    loader = [(images[:2], target[:2]), (images[2:], target[2:])]
    model = Oracle(4).train()
    out = evaluate(model, loader, 4, "cpu", progress=False)
    assert out["miou"] == pytest.approx(1.0) and out["pixel_acc"] == pytest.approx(1.0)
    assert math.isnan(out["per_class_iou"][3]) and out["miou_official"] == pytest.approx(0.75)
    assert out["loss"] < 0.1 and model.training  # bilinear upsampling blurs the edges


def test_poly_lr_and_adam() -> None:
    opt = make_adam([torch.nn.Parameter(torch.zeros(1))], OptimConfig(lr=5e-4))
    assert opt.defaults["weight_decay"] == 1e-4 and opt.defaults["betas"] == (0.9, 0.999)
    assert poly_lr(opt, 5e-4, 0, 300, 0.9) == 5e-4
    assert poly_lr(opt, 5e-4, 150, 300, 0.9) == pytest.approx(5e-4 * 0.5**0.9)
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-4 * 0.5**0.9)
    assert poly_lr(opt, 5e-4, 299, 300, 0.0) == 5e-4
    with pytest.raises(ConfigError, match="betas"):
        make_adam([torch.nn.Parameter(torch.zeros(1))], OptimConfig(betas=(0.9,)))


def test_adam_on_cpu_is_fused_and_steps_as_the_loop_does() -> None:
    """The fused Adam a CPU run gets takes the same steps as PyTorch's per-parameter loop (the
    recipe of docs/method.md §6, L2 weight decay included), to rounding, over five steps."""
    torch.manual_seed(0)
    shapes = [(16, 8, 3, 1), (16,), (5, 16)]
    fused = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    loop = [torch.nn.Parameter(p.detach().clone()) for p in fused]
    opt = make_adam(fused, OptimConfig(lr=1e-2, weight_decay=1e-3))
    ref = torch.optim.Adam(loop, lr=1e-2, weight_decay=1e-3, foreach=False)
    assert opt.defaults["fused"] and not ref.defaults["fused"]
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for params, o in ((fused, opt), (loop, ref)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            o.step()
    for p, q in zip(fused, loop):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not valid"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")


# --------------------------------------------------------------------------------------------
# Checkpoints


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    opt = make_adam(model.parameters(), OptimConfig())
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path / "sub" / "ckpt.pt",
        model=model.state_dict(),
        optimizer=opt.state_dict(),
        epoch=3,
        history=[{"epoch": 1.0, "val": float("nan"), "iou": [0.5, None]}],
        rng={"torch": torch.get_rng_state()},
        note="text",
    )
    state = load_checkpoint(path)  # weights_only=True inside
    assert state["epoch"] == 3 and state["note"] == "text"
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state["model"].items())
    assert state["optimizer"]["param_groups"] == opt.state_dict()["param_groups"]
    assert math.isnan(state["history"][0]["val"])
    assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]  # no temporary file left
    with pytest.raises(TypeError, match=r"state\['bad'\] is a object"):
        save_checkpoint(tmp_path / "x.pt", bad=object())
    with pytest.raises(FileNotFoundError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")


# --------------------------------------------------------------------------------------------
# Retraining


def test_retrain_lowers_the_loss_and_writes_outputs(tmp_path: Path) -> None:
    reports: list[tuple[dict[str, float], int]] = []
    cfg = tiny_cfg(epochs=4, eval_every=2)
    result = run_retrain(cfg, tiny_genotype(), tmp_path, lambda m, s: reports.append((m, s)))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < losses[0]
    assert [s for _, s in reports] == [1, 2, 3, 4]
    for metrics, _ in reports:
        assert {"epoch", "train_loss", "val_miou", "lr"} <= set(metrics)
        assert all(isinstance(v, float) for v in metrics.values())
    assert [m["evaluated"] for m, _ in reports] == [0.0, 1.0, 0.0, 1.0]
    assert reports[1][0]["lr"] < reports[0][0]["lr"]
    assert 0.0 <= result.miou <= 1.0 and len(result.per_class_iou) == 19
    assert result.best_epoch in (2, 4) and result.best_miou >= result.miou
    assert result.epochs_run == 4 and result.params_m and result.gmacs
    assert result.checkpoint == tmp_path / "best.pt"
    rows = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    for name in ("last.pt", "best.pt", "genotype.json", "config.resolved.yaml"):
        assert (tmp_path / name).is_file()
    assert rows[0]["val_miou"] is None  # not evaluated at epoch 1: NaN is written as null
    assert "NaN" not in (tmp_path / "history.jsonl").read_text()


def test_a_diverging_retrain_stops_with_one_line() -> None:
    cfg = tiny_cfg(optim=OptimConfig(lr=1e30, poly_power=0.0), epochs=2)
    with pytest.raises(DivergenceError, match=r"^retraining diverged at epoch 1: training loss"):
        run_retrain(cfg, tiny_genotype(), progress=False)


def test_retrain_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    genotype = tiny_genotype()
    straight = run_retrain(tiny_cfg(epochs=2), genotype, tmp_path / "a", progress=False)
    run_retrain(tiny_cfg(epochs=1), genotype, tmp_path / "b", progress=False)
    resumed = run_retrain(tiny_cfg(epochs=2), genotype, tmp_path / "b", resume=True)
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    assert a["model"].keys() == b["model"].keys()
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    assert straight.miou == resumed.miou and resumed.epochs_run == 2
    assert [r["train_loss"] for r in straight.history] == [r["train_loss"] for r in resumed.history]
    lines = (tmp_path / "b" / "history.jsonl").read_text().splitlines()
    assert len(lines) == 2
    with pytest.raises(ConfigError, match="another genotype"):
        run_retrain(
            tiny_cfg(epochs=3), Genotype.load("ssr_cityscapes"), tmp_path / "b", resume=True
        )
