"""Typed configs: YAML + dotted overrides, unknown keys and wrong types named, field defaults."""

import pytest

from ssr.config import (
    ConfigError,
    PipelineConfig,
    SearchConfig,
    load_config,
    parse_overrides,
    to_dict,
)


def test_partial_block_keeps_the_fields_own_defaults() -> None:
    cfg = load_config(SearchConfig, None, ["arch_optim.lr=0.05"])
    assert cfg.arch_optim.lr == 0.05
    assert cfg.arch_optim.weight_decay == 1e-3 and cfg.arch_optim.grad_clip == 5.0
    p = load_config(PipelineConfig, None, ["retrain.optim.weight_decay=0.001"])
    assert p.retrain.optim.lr == 5e-4


def test_overrides_are_yaml_scalars_and_lists() -> None:
    d = parse_overrides(["ssr.op=30", "shrink.order=[op, out]", "data.root=null", "seed=3"])
    assert d == {"ssr": {"op": 30}, "shrink": {"order": ["op", "out"]}, "data": {"root": None},
                 "seed": 3}  # fmt: skip
    cfg = load_config(SearchConfig, None, ["shrink.order=[op, out]", "ssr.op=30"])
    assert cfg.shrink.order == ("op", "out") and cfg.ssr.op == 30.0


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("ssr.opp=1", "unknown key ssr.opp"),
        ("epochs=ten", "epochs: expected an integer"),
        ("ssr.averaging=median", "not one of"),
        ("shrink.threshold=1.5", "shrink.threshold must be in"),
        ("shrink.order=[op, width]", "unknown dimension"),
        ("data.height=100", "multiples of 16"),
        ("space.stages=[{width: 8, max_depth: 2, min_depth: 1, dropout: 0}]", "must exceed"),
        ("seed", "key=value"),
        ("gap_epochs=[0]", "gap_epochs"),
        ("gap_epochs=[201]", "gap_epochs"),
        ("reduction_width=nearest", "not one of"),
        ("weight_optim.lr=.inf", "weight_optim.lr must be a finite number"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(SearchConfig, None, [override])


def test_yaml_round_trip_and_missing_file(tmp_path) -> None:
    import yaml

    cfg = load_config(SearchConfig, "ssr/configs/search_cityscapes.yaml")
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(SearchConfig, p) == cfg
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(SearchConfig, tmp_path / "nope.yaml")


def test_the_paper_config_uses_the_official_choices() -> None:
    cfg = load_config(SearchConfig, "ssr/configs/search_cityscapes.yaml")
    assert cfg.ssr.averaging == "all" and cfg.reduction_width == "official"
    assert (cfg.arch_optim.lr, cfg.arch_optim.weight_decay) == (2e-3, 1e-3)
    assert SearchConfig().reduction_width == "exact" and SearchConfig().gap_epochs == ()
