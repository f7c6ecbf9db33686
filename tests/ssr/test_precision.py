"""Mixed precision and the GPU habits of a step, checked on CPU (docs/architecture.md §6).

bf16 and fp16 autocast both run on CPU, so the code paths a GPU takes (autocast, the fp16
gradient scalers and their skipped steps, deferred divergence checks, device-side averaging,
channels-last, loaders without tqdm) are exercised here; the CUDA-only parts (cudnn.benchmark,
pinned memory, the speed) are checked by benchmarks/gpu_check.py on a GPU.
"""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from ssr.config import ConfigError, DataConfig, PipelineConfig, RetrainConfig
from ssr.config.errors import DivergenceError
from ssr.config.kernels import bf16_channels_last_sound
from ssr.method.genotype import Genotype
from ssr.method.search import run_search
from ssr.run.pipeline import retrain_config, run_pipeline
from ssr.run.retrain import run_retrain
from ssr.train import loop
from ssr.train.finite import StepChecks
from ssr.train.loop import evaluate, run_epoch
from ssr.train.precision import Stepper, autocast, cuda_habits, dtype_of
from tests.ssr.test_search import tiny_cfg

CPU = torch.device("cpu")


def _finite(values) -> bool:
    return all(math.isfinite(float(v)) for v in values)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_short_search_in_reduced_precision_is_finite_and_recorded(
    tiny_space, tmp_path, precision
) -> None:
    torch.set_num_threads(1)
    cfg = tiny_cfg(tiny_space, epochs=2, precision=precision)
    res = run_search(cfg, tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    # channels-last by default only for bf16 on a CPU whose bf16 kernels are sound (AMX)
    assert summary["precision"] == precision
    assert summary["channels_last"] is (precision == "bf16" and bf16_channels_last_sound())
    assert _finite([summary["supernet_miou"], summary["derived_miou"], summary["gmacs"]])
    for row in res.history:
        assert _finite([row["train_loss"], row["arch_loss"], row["ssr_op"]])
        if precision == "fp16":  # the share of steps the scaler skipped, in [0, 1]
            assert 0.0 <= row["weight_skipped"] <= 1.0 and 0.0 <= row["arch_skipped"] <= 1.0
        else:
            assert "weight_skipped" not in row
    assert all(torch.isfinite(p).all() for p in res.supernet.parameters())
    ckpt = torch.load(tmp_path / "checkpoints" / "search_last.pt", weights_only=True)
    assert set(ckpt) >= {"w_scaler", "a_scaler", "w_opt", "a_opt"}
    assert bool(ckpt["w_scaler"]) == (precision == "fp16")  # fp16 keeps the scaler's state


def test_bf16_search_stays_close_to_fp32(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    runs = {
        p: run_search(tiny_cfg(tiny_space, epochs=1, precision=p), tmp_path / p, progress=False)
        for p in ("fp32", "bf16")
    }
    a, b = runs["fp32"].history[0], runs["bf16"].history[0]
    assert b["train_loss"] != a["train_loss"]  # autocast did run in bf16 ...
    # ... and one epoch of it agrees to bf16's ~3 significant digits per op
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=0.05)
    assert b["arch_ce"] == pytest.approx(a["arch_ce"], rel=0.05)
    assert b["ssr_op"] == pytest.approx(a["ssr_op"], rel=0.05, abs=1e-3)  # fp32 terms


def test_channels_last_search_matches_the_default_layout(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    base = run_search(  # NCHW: channels-last is a CPU search's default (SearchConfig)
        tiny_cfg(tiny_space, epochs=1, channels_last=False), tmp_path / "a", progress=False
    )
    nhwc = run_search(
        tiny_cfg(tiny_space, epochs=1, channels_last=True), tmp_path / "b", progress=False
    )
    assert nhwc.summary["channels_last"] is True
    assert nhwc.history[0]["train_loss"] == pytest.approx(base.history[0]["train_loss"], rel=1e-4)
    assert nhwc.genotype == base.genotype


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_short_retrain_in_reduced_precision(tmp_path, precision) -> None:
    torch.set_num_threads(1)
    cfg = RetrainConfig(
        data=DataConfig(height=32, width=64, train_size=8, val_size=4, batch_size=4),
        epochs=2,
        precision=precision,
        # NOTE: bf16 with channels_last is refused on CPU (it diverges: ssr/config/validate.py)
        channels_last=precision != "bf16",
    )
    res = run_retrain(cfg, Genotype.load("ssr_cityscapes"), tmp_path, progress=False)
    assert res.precision == precision and res.channels_last is (precision != "bf16")
    assert _finite([res.miou, res.pixel_acc] + [r["train_loss"] for r in res.history])
    assert ("skipped_steps" in res.history[0]) == (precision == "fp16")
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert bool(state["scaler"]) == (precision == "fp16")


def test_pipeline_records_precision_and_retraining_inherits_it(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    search = tiny_cfg(tiny_space, epochs=1, precision="bf16")
    cfg = PipelineConfig(
        search=search,
        retrain=RetrainConfig(epochs=1),
        bench=dataclasses.replace(
            PipelineConfig().bench, height=32, width=64, iters=2, warmup=1, repeats=1
        ),
        export_onnx=False,
    )
    assert retrain_config(cfg).precision == "bf16"
    fixed = dataclasses.replace(cfg, retrain=RetrainConfig(epochs=1, precision="fp16"))
    assert retrain_config(fixed).precision == "fp16"  # set for retraining: kept
    rec = run_pipeline(cfg, tmp_path, progress=False)
    assert rec["search_precision"] == "bf16" and rec["retrain_precision"] == "bf16"
    assert rec["precision"] == "fp32"  # the benchmark's precision, a column of the record
    assert rec["search_seconds"] > 0 and rec["retrain_seconds"] > 0 and rec["measure_seconds"] > 0
    assert "visible_devices" in rec


def test_bad_precision_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="precision 'fp8' is not one of fp32, bf16, fp16"):
        dtype_of("fp8")
    from ssr.config import SearchConfig, load_config

    with pytest.raises(ConfigError, match="precision"):
        load_config(SearchConfig, None, ["precision=fp64"])


# --------------------------------------------------------------------------------------------
# The pieces


def test_stepper_skips_an_fp16_overflow_and_steps_otherwise() -> None:
    p = torch.nn.Parameter(torch.ones(3))
    s = Stepper([p], torch.optim.SGD([p], lr=0.1), CPU, "fp16", clip=None)
    scale = s.scaler.get_scale()
    loss = (p * torch.tensor([1.0, float("inf"), 1.0])).sum()
    norm = s.backward(loss)
    assert not math.isfinite(float(norm))
    assert float(s.step(norm)) == 1.0  # skipped ...
    assert (
        torch.equal(p.detach(), torch.ones(3)) and s.scaler.get_scale() == scale / 2
    )  # ... backs off
    norm = s.backward((p * 2).sum())
    assert float(norm) == pytest.approx(2 * math.sqrt(3))  # unscaled
    assert float(s.step(norm)) == 0.0
    assert torch.allclose(p.detach(), torch.full((3,), 0.8))
    fp32 = Stepper([p], torch.optim.SGD([p], lr=0.1), CPU, "fp32", clip=1.0)
    norm = fp32.backward((p * 10).sum())
    fp32.step(norm)  # clipped to norm 1 with the norm computed once
    assert torch.allclose(p.detach(), torch.full((3,), 0.8 - 0.1 / math.sqrt(3)))
    assert fp32.state_dict() == {} or not fp32.scaler.is_enabled()


def test_deferred_checks_raise_at_flush_with_the_first_bad_value() -> None:
    checks = StepChecks("search", deferred=True)
    checks.start(3)
    checks.check(
        [("weight loss", torch.tensor(1.0)), ("weight gradient norm", torch.tensor(2.0))], "a"
    )
    checks.check([("weight loss", torch.tensor(float("inf"))), ("weight gradient norm", torch.tensor(2.0))], "a")  # fmt: skip
    checks.check([("weight loss", torch.tensor(float("nan")))], "a")
    with pytest.raises(
        DivergenceError, match=r"^search diverged at epoch 3: weight loss is inf; a$"
    ):
        checks.flush()
    checks.start(4)
    checks.check([("x", torch.tensor(1.0))], "b")
    checks.flush()  # all finite: nothing
    now = StepChecks("retraining", deferred=False)
    now.start(1)
    with pytest.raises(
        DivergenceError, match="retraining diverged at epoch 1: training loss is NaN"
    ):
        now.check([("training loss", torch.tensor(float("nan")))], "lower it")


def test_run_epoch_averages_tensors_like_floats_and_runs_without_tqdm(monkeypatch) -> None:
    batches = [torch.zeros(3, 2), torch.zeros(1, 2)]
    values = iter([torch.tensor(1.0), torch.tensor(5.0)])
    out = run_epoch(batches, lambda b: {"loss": next(values), "k": 2.0}, desc="t", progress=False)
    assert out == {"loss": pytest.approx(2.0), "k": pytest.approx(2.0)}
    monkeypatch.setattr(loop, "tqdm", None)
    monkeypatch.setattr(loop.sys.stderr, "isatty", lambda: True)
    values = iter([torch.tensor(1.0), torch.tensor(5.0)])
    assert run_epoch(batches, lambda b: {"loss": next(values)}, desc="t") == {
        "loss": pytest.approx(2.0)
    }


def test_evaluate_under_bf16_matches_fp32_and_autocast_is_a_no_op_for_fp32() -> None:
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 8, 8)
    y = model(x).argmax(1).detach()
    loader = [(x, y)]
    a = evaluate(model, loader, 4, "cpu", progress=False)
    b = evaluate(model, loader, 4, "cpu", progress=False, precision="bf16", channels_last=True)
    assert a["miou"] == pytest.approx(1.0) and b["miou"] > 0.9
    assert b["loss"] == pytest.approx(a["loss"], rel=0.05, abs=0.02)
    with autocast(CPU, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(CPU, "bf16"):
        assert torch.is_autocast_enabled("cpu")
    before = torch.backends.cudnn.benchmark
    with cuda_habits(CPU):  # CPU: nothing changes
        assert torch.backends.cudnn.benchmark == before


def test_deferred_checks_as_on_cuda_give_the_same_search_and_fail_the_same_epoch(
    tiny_space, tmp_path, monkeypatch
) -> None:
    """The CUDA mode of the divergence checks (read once per epoch), run on CPU."""
    import ssr.method.search_step as step_mod
    import ssr.run.retrain as retrain_mod
    from ssr.config import OptimConfig

    torch.set_num_threads(1)
    cfg = tiny_cfg(tiny_space, epochs=2)
    now = run_search(cfg, tmp_path / "now", progress=False)
    for mod in (step_mod, retrain_mod):
        monkeypatch.setattr(mod, "StepChecks", lambda phase, deferred: StepChecks(phase, True))
    later = run_search(cfg, tmp_path / "later", progress=False)
    assert later.genotype == now.genotype
    assert later.history[-1]["train_loss"] == now.history[-1]["train_loss"]
    bad = tiny_cfg(tiny_space, weight_optim=OptimConfig(lr=1e30))
    with pytest.raises(DivergenceError) as info:
        run_search(bad, tmp_path / "bad", progress=False)
    msg = str(info.value)
    assert msg.startswith("search diverged at epoch 1: ") and "weight_optim.lr" in msg
    rcfg = RetrainConfig(
        data=DataConfig(height=32, width=64, train_size=8, val_size=4, batch_size=4),
        epochs=1,
        optim=OptimConfig(lr=1e30),
    )
    with pytest.raises(DivergenceError, match="retraining diverged at epoch 1: training loss"):
        run_retrain(rcfg, Genotype.load("ssr_cityscapes"), None, progress=False)
