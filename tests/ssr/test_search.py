"""The search loop: outputs, resume to the same result, baselines, the CLI."""

import json
import subprocess
import sys

import pytest
import torch

from ssr.config import DataConfig, OptimConfig, SearchConfig, ShrinkConfig, SpaceConfig, SSRConfig
from ssr.method.search import run_search
from ssr.method.supernet import DIMENSIONS, Supernet


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
    events = [json.loads(x) for x in (tmp_path / "prune_events.jsonl").read_text().splitlines()]
    assert events and all(
        {"epoch", "dimension", "group", "candidate", "prob"} <= set(e) for e in events
    )
    # the prune record is the whole discretization: replayed on a fresh supernet, the recorded
    # decisions (shrinking's, then the argmax fallback's) give exactly the final alive masks,
    # and those are discrete (docs/method.md §5, §12.12)
    replay = Supernet(tiny_space, res.supernet.num_classes)
    for e in events:
        alive = replay.alive(e["dimension"])
        alive.view(-1, alive.shape[-1])[e["group"], e["candidate"]] = False
    replay.refresh_alive()
    for dim in DIMENSIONS:
        assert torch.equal(replay.alive(dim), res.supernet.alive(dim)), dim
    assert replay.is_discrete()
    fallback = [e for e in events if e["reason"] == "argmax"]
    assert len(fallback) == res.fallback_prunes == summary["fallback_prunes"]
    assert all(e["epoch"] == summary["epochs"] for e in fallback)  # decided when the budget ended
    assert (summary["discrete_at_epoch"] is None) == (res.fallback_prunes > 0)


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


def _ssr_part(cfg: SearchConfig, row: dict[str, float]) -> float:
    """What the SSR terms added to an epoch's mean architecture loss (docs/method.md §4.2):
    the mean loss minus its CE and FLOPs parts (all three are means over the same steps)."""
    return row["arch_loss"] - cfg.ce_scale * row["arch_ce"] - cfg.flops.weight * row["flops_loss"]


def test_baselines_ssr_off_and_shrink_off(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    off = SSRConfig(op=0, out=0, mid=0, depth=0)
    ssr_cfg, darts_cfg = tiny_cfg(tiny_space, epochs=2), tiny_cfg(tiny_space, ssr=off, epochs=2)
    ssr = run_search(ssr_cfg, progress=False)
    darts = run_search(darts_cfg, progress=False)
    plain = run_search(
        tiny_cfg(tiny_space, shrink=ShrinkConfig(enabled=False), epochs=2), progress=False
    )
    # without shrinking every decision is the end-of-budget argmax
    assert all(e["reason"] == "argmax" for e in plain.events)
    assert plain.summary["discrete_at_epoch"] is None
    # darts_pruning (every SSR weight 0) differs from SSR exactly in the architecture loss: no
    # SSR part at all, while SSR's is negative (its terms are -KL(U || p) <= 0, weights > 0)...
    for d, s in zip(darts.history, ssr.history, strict=True):
        assert _ssr_part(darts_cfg, d) == pytest.approx(0.0, abs=1e-5 * d["arch_loss"])
        assert _ssr_part(ssr_cfg, s) < -1e-3
    # ...so SSR drives every dimension further from uniform than DARTS does in the same steps
    for dim in DIMENSIONS:
        assert ssr.history[-1][f"ssr_{dim}"] < darts.history[-1][f"ssr_{dim}"], dim
        assert not torch.equal(ssr.supernet.arch[dim], darts.supernet.arch[dim]), dim
    # and it is the same search otherwise: same first weight step (alpha starts uniform in both)
    assert darts.history[0]["train_loss"] == pytest.approx(ssr.history[0]["train_loss"], rel=1e-3)


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
