"""Compiled steps (ssr/train/compiled.py): the same search as eager, bounded recompiles.

The tests compile with dynamo and AOTAutograd but without code generation (``aot_eager``):
the capture, the per-step-kind graphs, the held plans and the recompile count are what a
compiled search runs; inductor's kernels cost minutes of C++ compilation on a 2-core machine
and are timed by ``benchmarks/compiled_steps.py`` instead.
"""

import dataclasses

import pytest
import torch

import ssr.train.compiled as compiled
from ssr.config import (
    ConfigError,
    DataConfig,
    OptimConfig,
    RetrainConfig,
    SearchConfig,
    ShrinkConfig,
    SpaceConfig,
    StageSpace,
)
from ssr.method.search import run_search
from ssr.train.compiled import REPLAN_FACTOR, should_replan

#: Per-epoch mean losses of a compiled and an eager search from one seed agree to this
#: relative tolerance. They are equal until the first prune the compiled search holds its plan
#: over; from then on the held plan also draws dropout noise for the pruned candidates (whose
#: outputs it weights by exactly 0), so the two runs see different dropout masks.
LOSS_RTOL = 0.01


def _search_cfg(compile_: bool) -> SearchConfig:
    space = SpaceConfig(
        stem_width=8,
        stages=(StageSpace(16, 2, 1, 0.1), StageSpace(24, 2, 1, 0.2)),
        dilations=(1, 2),
        pools=(1, 2),
        channel_remove=(8, 4, 0),
    )
    return SearchConfig(
        space=space,
        data=DataConfig(height=32, width=64, train_size=8, val_size=4, batch_size=4),
        arch_optim=OptimConfig(lr=0.2, weight_decay=1e-3, poly_power=0.0, grad_clip=5.0),
        shrink=ShrinkConfig(threshold=0.3),
        epochs=5,
        bn_recalibration_batches=1,
        compile=compile_,
    )


@pytest.mark.slow
def test_compiled_search_gives_the_eager_genotype(monkeypatch) -> None:
    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    torch.set_num_threads(1)
    eager = run_search(_search_cfg(False), None, progress=False)
    torch._dynamo.reset()
    comp = run_search(_search_cfg(True), None, progress=False)
    assert comp.genotype == eager.genotype
    assert eager.summary["compiles"] == 0 and not eager.summary["compile"]
    pruning = [h["epoch"] for h in eager.history if h["pruned"] > 0 and h["epoch"] < 5]
    assert pruning, "the test needs a prune event between steps"
    for a, b in zip(eager.history, comp.history):
        for key in ("train_loss", "arch_loss"):
            assert b[key] == pytest.approx(a[key], rel=LOSS_RTOL), (a["epoch"], key)
        assert b["pruned"] == a["pruned"]
    # one graph per step kind (weight, architecture) per plan; replans only when they pay
    s = comp.summary
    assert s["compile"] and s["compiles"] <= 2 * (s["replans"] + 1)
    assert s["compiles"] >= 2 and s["compile_seconds"] >= 0


def test_replanning_waits_until_it_pays() -> None:
    assert not should_replan(10.0, 10.0, discrete=True)  # nothing to gain
    assert not should_replan(REPLAN_FACTOR * 10.0 - 0.1, 10.0, discrete=False)  # not yet
    assert should_replan(REPLAN_FACTOR * 10.0, 10.0, discrete=False)
    assert should_replan(10.5, 10.0, discrete=True)  # a discrete net runs its plan to the end


@pytest.mark.slow
def test_compiled_retraining_step_equals_eager(monkeypatch) -> None:
    from ssr.method.genotype import Genotype, LayerGene, ReductionGene
    from ssr.method.network import DerivedNet
    from ssr.run.retrain import TrainStep

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    geno = Genotype(
        8,
        (ReductionGene(8, 8), ReductionGene(16, 8)),
        (LayerGene(0, 1, 1, 16, 12, 16), LayerGene(1, 2, 2, 24, 24, 20)),
        "aggregation",
    )
    x, y = torch.rand(2, 3, 32, 64), torch.randint(0, 5, (2, 32, 64))
    losses = {}
    for compile_ in (False, True):
        torch.manual_seed(0)
        model = DerivedNet(geno, 5)
        step = TrainStep(
            model, RetrainConfig(epochs=1, compile=compile_).inherit(), torch.device("cpu")
        )
        step.weights = torch.ones(5)
        torch.manual_seed(1)
        losses[compile_] = [float(step((x, y))["loss"]) for _ in range(3)]
        assert step.forward.compiles == (1 if compile_ else 0)
    assert losses[True] == pytest.approx(losses[False], rel=1e-4)


def test_compile_is_a_bool_and_retraining_inherits_it() -> None:
    assert SearchConfig().compile is False
    assert RetrainConfig().compile is None
    assert RetrainConfig().inherit(SearchConfig(compile=True)).compile is True
    assert RetrainConfig(compile=False).inherit(SearchConfig(compile=True)).compile is False
    with pytest.raises(ConfigError, match="compile"):
        SearchConfig(compile="yes")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="compile"):
        dataclasses.replace(RetrainConfig(), compile=1)  # type: ignore[arg-type]


@pytest.mark.slow
def test_the_benchmark_alternates_eager_and_compiled(monkeypatch) -> None:
    """benchmarks/compiled_steps.py: variants from one seed, alternated; compiles counted."""
    import argparse
    import sys
    from pathlib import Path

    monkeypatch.setattr(compiled, "BACKEND", "aot_eager")
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import compiled_steps

    args = argparse.Namespace(child="discrete", variants="eager,compiled_cl", threads=1, warmup=0,
                              iters=1, passes=1, batch=1, input="32x64", profile=False, precision="fp32")  # fmt: skip
    out = compiled_steps.step_child(args)
    eager, comp = out["variants"]["eager"], out["variants"]["compiled_cl"]
    assert eager["compiles"] == 0 and comp["compiles"] == 1  # the weight step alone: one graph
    assert comp["speedup_vs_eager"]["cpu"] > 0 and out["conv_gmacs"] > 0
    sys.modules.pop("compiled_steps", None)
