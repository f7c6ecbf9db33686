"""Label sampling, the three discretization gaps, and SSR reaching a discrete net by itself."""

import json
import math

import pytest
import torch

from ssr.config import ConfigError, SearchConfig, ShrinkConfig, load_config
from ssr.method.search import _labels, run_search
from tests.ssr.test_search import tiny_cfg


def test_labels_are_sampled_at_the_cell_centres() -> None:
    # a label map that is only "right" at rows/cols 8i+4: the corner sampling (::8) sees 255
    h, w = 32, 48
    rows, cols = torch.arange(h)[:, None], torch.arange(w)[None, :]
    cell = (rows // 8) * (w // 8) + cols // 8
    centre = (rows % 8 == 4) & (cols % 8 == 4)
    y = torch.where(centre, cell, torch.full_like(cell, 255))[None]
    got = _labels(y, 8)
    assert got.shape == (1, h // 8, w // 8)
    assert torch.equal(got[0], torch.arange(h // 8 * (w // 8)).reshape(h // 8, w // 8))
    # every stride samples the pixel just past the cell's geometric centre
    for s in (2, 4):
        assert torch.equal(_labels(torch.arange(16)[None, :, None].expand(1, 16, 16), s)[0, :, 0],
                           torch.arange(s // 2, 16, s))  # fmt: skip
    assert _labels(y, 1) is y


def test_gap_epochs_are_measured_without_changing_the_search(tiny_space, tmp_path) -> None:
    torch.set_num_threads(1)
    no_shrink = dict(shrink=ShrinkConfig(enabled=False), epochs=3)
    plain = run_search(tiny_cfg(tiny_space, **no_shrink), progress=False)
    measured = run_search(
        tiny_cfg(tiny_space, gap_epochs=(1, 3), **no_shrink), tmp_path, progress=False
    )
    # measuring restores the supernet's state and RNG: the same search, the same result
    assert measured.genotype == plain.genotype
    assert [h["train_loss"] for h in measured.history] == [h["train_loss"] for h in plain.history]
    s = measured.summary
    assert s["discrete_at_epoch"] is None and s["gap_at_discrete"] is None
    assert s["fallback_prunes"] == measured.fallback_prunes > 0
    assert math.isfinite(s["gap_at_1"]) and math.isfinite(s["gap_at_3"])
    h1 = measured.history[0]
    assert h1["argmax_gap"] == pytest.approx(h1["supernet_miou"] - h1["argmax_derived_miou"])
    assert "argmax_gap" not in measured.history[1]  # epoch 2 is not listed: not measured
    # the last epoch's argmax network is the network derived at the end: the same gap
    assert s["gap_at_3"] == pytest.approx(s["discretization_gap"])
    assert 0 <= s["derived_miou_lo"] <= s["derived_miou_hi"] <= 1
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["gap_at_1"] == pytest.approx(s["gap_at_1"])
    with pytest.raises(ConfigError, match="gap_epochs"):
        run_search(tiny_cfg(tiny_space, gap_epochs=(4,), **no_shrink), progress=False)


@pytest.mark.slow
def test_ssr_search_on_the_synthetic_config_ends_discrete_by_itself() -> None:
    """SSR + shrinking reach one candidate per group without the argmax fallback.

    The synthetic config at 32x64 input (about 15 s on one quiet core): the test can fail, as it
    would if SSR stopped separating candidates or shrinking stopped firing.
    """
    torch.set_num_threads(1)
    cfg = load_config(
        SearchConfig,
        "ssr/configs/search_synthetic.yaml",
        ["data.height=32", "data.width=64", "stop_when_discrete=true"],
    )
    res = run_search(cfg, progress=False)
    s = res.summary
    assert res.fallback_prunes == 0 and s["fallback_prunes"] == 0
    assert s["discrete_at_epoch"] is not None and s["discrete_at_epoch"] < cfg.epochs
    assert not any(e["reason"] == "argmax" for e in res.events)
    # the gap at discretization: supernet just before the last prune vs the derived net after it
    row = res.history[s["discrete_at_epoch"] - 1]
    assert row["pruned"] > 0 and s["supernet_miou_at_discrete"] == row["supernet_miou"]
    assert s["gap_at_discrete"] == pytest.approx(
        s["supernet_miou_at_discrete"] - s["derived_miou_at_discrete"]
    )
    # stopped when discrete: the end-of-budget gap is the same measurement
    assert s["discretization_gap"] == pytest.approx(s["gap_at_discrete"])
