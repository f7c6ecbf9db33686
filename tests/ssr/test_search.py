"""The search loop: outputs, resume to the same result, baselines, the CLI."""

import json
import subprocess
import sys

import pytest
import torch

from ssr.config import DataConfig, OptimConfig, SearchConfig, ShrinkConfig, SpaceConfig, SSRConfig
from ssr.search import run_search


def tiny_cfg(space: SpaceConfig, **changes) -> SearchConfig:
    base = dict(
        space=space,
        data=DataConfig(height=32, width=64, train_size=8, val_size=4, batch_size=4),
        flops=SearchConfig().flops,
        arch_optim=OptimConfig(lr=0.2, weight_decay=1e-3, poly_power=0.0, grad_clip=5.0),
        shrink=ShrinkConfig(threshold=0.3),
        epochs=3,
        bn_recalibration_batches=1,
    )
    base.update(changes)
    return SearchConfig(**base)


class Stop(Exception):
    pass


def test_search_writes_its_outputs(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    seen: list[tuple[dict, int]] = []
    res = run_search(tiny_cfg(tiny_space), tmp_path, lambda m, s: seen.append((m, s)))
    for name in ("genotype.json", "summary.json", "history.jsonl", "prune_events.jsonl"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "config.resolved.yaml").is_file()
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("supernet_miou", "derived_miou", "discretization_gap", "discrete_at_epoch",
                "epochs", "params_m", "gmacs", "space_log10_size"):  # fmt: skip
        assert key in summary
    assert summary["discretization_gap"] == pytest.approx(
        summary["supernet_miou"] - summary["derived_miou"]
    )
    assert [s for _, s in seen] == [1, 2, 3]
    assert {"ssr_op", "entropy_op", "maxprob_out", "alive_mid", "expected_gmacs"} <= set(seen[0][0])
    assert res.supernet.is_discrete()  # shrinking or the argmax fallback ends discrete
    events = [json.loads(x) for x in (tmp_path / "prune_events.jsonl").read_text().splitlines()]
    assert events and all(
        {"epoch", "dimension", "group", "candidate", "prob"} <= set(e) for e in events
    )


def test_interrupted_search_resumes_to_the_same_genotype(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    cfg = tiny_cfg(tiny_space, epochs=4)
    straight = run_search(cfg, tmp_path / "a", progress=False)

    def stop_after_two(metrics: dict, step: int) -> None:
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        run_search(cfg, tmp_path / "b", stop_after_two, progress=False)
    resumed = run_search(cfg, tmp_path / "b", resume=True, progress=False)
    assert resumed.genotype == straight.genotype
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in straight.history]
    assert resumed.events == straight.events
    for (k, a), b in zip(
        straight.supernet.state_dict().items(), resumed.supernet.state_dict().values()
    ):
        torch.testing.assert_close(a, b, msg=k)


def test_baselines_ssr_off_and_shrink_off(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    off = SSRConfig(op=0, out=0, mid=0, depth=0)
    darts = run_search(tiny_cfg(tiny_space, ssr=off, epochs=2), progress=False)
    plain = run_search(
        tiny_cfg(tiny_space, shrink=ShrinkConfig(enabled=False), epochs=2), progress=False
    )
    # without shrinking every decision is the end-of-budget argmax
    assert all(e["reason"] == "argmax" for e in plain.events)
    assert plain.summary["discrete_at_epoch"] is None
    assert darts.genotype is not None and plain.supernet.is_discrete()


@pytest.mark.slow
def test_cli_search_and_bad_config(tmp_path) -> None:
    cmd = [sys.executable, "-m", "ssr", "search", "--config", "ssr/configs/search_synthetic.yaml",
           "--set", "epochs=1", "--set", "data.train_size=8", "--set", "data.val_size=4",
           "--set", "data.height=32", "--set", "data.width=64", "--no-progress",
           "--out", str(tmp_path / "s")]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert (
        json.loads(out.stdout)["genotype_id"]
        == json.loads((tmp_path / "s" / "genotype.json").read_text())["id"]
    )
    bad = subprocess.run([*cmd[:6], "--set", "shrink.threshold=2", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 2 and "shrink.threshold" in bad.stderr
    assert "Traceback" not in bad.stderr
