"""Divergence: a search whose numbers stop being numbers fails with one line, and writes nothing."""

import pytest
import torch

from ssr.config import ConfigError, OptimConfig, SearchConfig, errors, load_config
from ssr.method.derive import genotype_from_supernet
from ssr.method.search import DivergenceError, run_search
from ssr.method.supernet import Supernet
from tests.ssr.test_search import tiny_cfg


def test_one_error_class_in_one_place() -> None:
    assert DivergenceError is errors.DivergenceError and issubclass(DivergenceError, RuntimeError)
    errors.check_finite(1.0, "loss", phase="search", epoch=1, advice="x")  # finite: no error
    with pytest.raises(DivergenceError, match=r"^retraining diverged at epoch 3: loss is -inf; x$"):
        errors.check_finite(float("-inf"), "loss", phase="retraining", epoch=3, advice="x")
    with pytest.raises(DivergenceError, match="alpha is NaN"):
        t = torch.tensor([0.0, float("nan")])
        errors.check_finite_tensor(t, "alpha", phase="search", epoch=1, advice="x")


@pytest.mark.parametrize(
    ("change", "names"),
    [
        ({"arch_optim": OptimConfig(lr=1e30, poly_power=0.0, grad_clip=5.0)}, "arch_optim.lr"),
        ({"weight_optim": OptimConfig(lr=1e30)}, "weight_optim.lr (1e+30)"),
    ],
)
def test_huge_learning_rate_fails_at_epoch_1_and_writes_no_genotype(
    tiny_space, tmp_path, change, names
) -> None:
    torch.set_num_threads(1)
    seen: list[int] = []
    with pytest.raises(DivergenceError) as info:
        run_search(tiny_cfg(tiny_space, **change), tmp_path, lambda m, s: seen.append(s))
    msg = str(info.value)
    assert msg.startswith("search diverged at epoch 1: ") and "\n" not in msg
    assert names in msg and ("NaN" in msg or "inf" in msg)
    assert seen == []  # no epoch was reported as a result
    for name in ("genotype.json", "summary.json", "history.jsonl"):
        assert not (tmp_path / name).exists(), name


def test_derivation_refuses_non_finite_probabilities(tiny_space) -> None:
    net = Supernet(tiny_space, num_classes=3)
    with torch.no_grad():
        net.arch["op"][1, 0] = float("nan")
    with pytest.raises(DivergenceError, match=r"cannot derive a genotype: .*'op'"):
        genotype_from_supernet(net)


def test_non_finite_settings_are_config_errors() -> None:
    for bad in ("arch_optim.lr=.inf", "ssr.op=.inf", "flops.weight=.inf"):
        with pytest.raises(ConfigError, match="finite"):
            load_config(SearchConfig, None, [bad])
