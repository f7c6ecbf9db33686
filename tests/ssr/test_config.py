"""Typed configs: YAML + dotted overrides, unknown keys and wrong types named, field defaults."""

import pytest

from ssr.config import (
    ConfigError,
    PipelineConfig,
    RetrainConfig,
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
        ("data.height=8", "data.height and width must be >= 16"),
        ("space.stages=[{width: 8, max_depth: 2, min_depth: 1, dropout: 0}]", "must exceed"),
        ("seed", "key=value"),
        ("gap_epochs=[0]", "gap_epochs"),
        ("gap_epochs=[201]", "gap_epochs"),
        ("reduction_width=nearest", "not one of"),
        ("weight_optim.lr=.inf", "weight_optim.lr must be a finite number"),
        ("weight_optim.lr=1e400", "weight_optim.lr must be a finite number"),  # overflows
        ("ssr.depth=.nan", "ssr.depth must be a finite number"),
        ("flops.target=.nan", "flops.target must be a finite number"),
        (
            "space.stages=[{width: 64, max_depth: 5, min_depth: 3, dropout: .inf}]",
            r"space.stages\[0\].dropout must be a finite number",
        ),
        ("epochs=0", "epochs must be >= 1"),
        ("epochs=1e3", "epochs: expected an integer, got 1000.0"),  # a number, not a string
        ("data.train_size=0", "data.train_size must be >= 1"),
        ("data.val_size=-1", "data.val_size must be >= 1"),
        ("data.train_size=null", "train_size must be set for the synthetic dataset"),
        ("data.batch_size=0", "data.batch_size must be >= 1"),
        ("shrink.every=0", "shrink.every must be >= 1"),
        ("shrink.max_per_decision=0", "shrink.max_per_decision must be >= 1"),
        ("checkpoint_every=0", "checkpoint_every must be >= 1"),
        ("arch_optim.grad_clip=0", "arch_optim.grad_clip must be > 0"),
        ("weight_optim.betas=[0.9, 1.0]", "weight_optim.betas"),
        ("space.stages=[{width: 64, max_depth: 5, min_depth: 3, dropout: 0}]", "two stages"),
        ("data.train_split=test", "data.train_split must be one of train, val for synthetic"),
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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("bench.iters=0", "bench.iters must be >= 1"),
        ("bench.repeats=0", "bench.repeats must be >= 1"),
        ("bench.batch=0", "bench.batch must be >= 1"),
        ("bench.warmup=-1", "bench.warmup must be >= 0"),
        ("bench.threads=-1", "bench.threads must be >= 0"),
        ("bench.height=0", "bench.height"),
        ("search.data.train_size=0", "search.data.train_size must be >= 1"),
        ("search.ssr.op=.inf", "search.ssr.op must be a finite number"),
        ("retrain.epochs=-1", "retrain.epochs must be >= 0"),
        ("retrain.epochs=2", None),  # 0 skips retraining; >0 is a whole retraining config
        ("retrain.epochs=2 retrain.optim.lr=0", "retrain.optim.lr must be > 0"),
    ],
)
def test_a_pipeline_is_checked_whole(override: str, message: str | None) -> None:
    """Bench and retraining settings are checked with the search, before hours of search."""
    if message is None:
        load_config(PipelineConfig, None, override.split())
        return
    with pytest.raises(ConfigError, match=message):
        load_config(PipelineConfig, None, override.split())


def test_scientific_notation_is_a_number() -> None:
    """YAML 1.1 reads 1e30 and 5e-4 as strings; the strict loader reads them as floats."""
    from ssr.config import load_yaml_text

    d = parse_overrides(["a=1e30", "b=5e-4", "c=1.5e3", "d=-2E+2", "e=.5e1", "f=1e", "g=e5"])
    assert d == {"a": 1e30, "b": 5e-4, "c": 1500.0, "d": -200.0, "e": 5.0, "f": "1e", "g": "e5"}
    assert load_yaml_text("lr: 5e-4\nn: 10\nname: 1e3x\n", "t") == {
        "lr": 5e-4, "n": 10, "name": "1e3x"
    }  # fmt: skip
    cfg = load_config(SearchConfig, None, ["weight_optim.lr=5e-4", "ssr.op=1e1"])
    assert cfg.weight_optim.lr == 5e-4 and cfg.ssr.op == 10.0


def test_duplicate_yaml_keys_are_an_error(tmp_path) -> None:
    from ssr.config import load_yaml, load_yaml_text

    p = tmp_path / "c.yaml"
    p.write_text("epochs: 3\nssr:\n  op: 1\n  op: 2\n")
    with pytest.raises(ConfigError, match=r"duplicate key 'op' \(line 4"):
        load_config(SearchConfig, p)
    with pytest.raises(ConfigError, match="duplicate key 'x'"):
        parse_overrides(["ssr={x: 1, x: 2}"])
    # a merge key may be overridden on purpose; the error message is one line
    assert load_yaml_text("a: &b {x: 1}\nc: {<<: *b, x: 2}\n", "t")["c"] == {"x": 2}
    p.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError) as err:
        load_yaml(p)
    assert "not valid YAML" in str(err.value) and "\n" not in str(err.value)


def test_the_split_modules_are_one_api() -> None:
    """Every name importers use is still in ssr.config, and the modules import in one direction."""
    import ast
    from pathlib import Path

    import ssr.config as config

    for name in config.__all__:
        assert hasattr(config, name), name
    root = Path(config.__file__).parent
    ours = {
        "ssr.config.errors",
        "ssr.config.yamlload",
        "ssr.config.configload",
        "ssr.config.validate",
        "ssr.config",
    }
    order = [
        "ssr.config.errors",
        "ssr.config.yamlload",
        "ssr.config.configload",
        "ssr.config.validate",
        "ssr.config",
    ]
    for module in ours:
        name = "__init__" if module == "ssr.config" else module.rpartition(".")[2]
        tree = ast.parse((root / f"{name}.py").read_text())
        imported = {
            n.module
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)
            and n.module in ours
            and not any(isinstance(p, ast.If) for p in ast.walk(tree) if n in ast.walk(p))
        }
        assert all(order.index(m) < order.index(module) for m in imported), (module, imported)


@pytest.fixture(params=[True, False], ids=["sound", "unsound"])
def bf16_cl_sound(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """This CPU's bf16 channels-last kernels, as the probe of ssr/config/kernels.py would find them
    (sound: AMX; unsound: the AVX-512 path whose weight gradients are wrong)."""
    from ssr.config import kernels

    monkeypatch.setattr(kernels, "bf16_channels_last_sound", lambda: request.param)
    return request.param


def test_bf16_with_channels_last_on_cpu_is_refused_where_its_kernels_are_wrong(
    bf16_cl_sound: bool,
) -> None:
    """Wrong weight gradients diverge (BENCHMARKS.md); either setting alone is accepted, and a
    CUDA device is never refused."""
    from ssr.config import SearchConfig, load_config

    both = ["precision=bf16", "channels_last=true"]
    if bf16_cl_sound:
        assert load_config(SearchConfig, None, both).channels_last is True
    else:
        with pytest.raises(ConfigError, match=r"kernels\.py.*set channels_last: false"):
            load_config(SearchConfig, None, both)
    load_config(SearchConfig, None, ["precision=bf16"])
    load_config(SearchConfig, None, ["channels_last=true"])
    assert SearchConfig(device="cuda", precision="bf16", channels_last=True).channels_last


def test_a_cpu_search_is_channels_last_unless_told(bf16_cl_sound: bool) -> None:
    """``channels_last`` left None: on for CPU fp32 (measured faster, BENCHMARKS.md) and for CPU
    bf16 where its kernels are sound, off for fp16 and on GPUs; a retraining inheriting it into
    bf16 keeps it only where the kernels are sound."""
    from ssr.config import RetrainConfig, SearchConfig, load_config

    assert SearchConfig().channels_last is True
    assert load_config(SearchConfig, None, ["precision=bf16"]).channels_last is bf16_cl_sound
    assert SearchConfig(precision="fp16").channels_last is False
    assert SearchConfig(device="cuda").channels_last is False
    assert SearchConfig(channels_last=False).channels_last is False
    assert RetrainConfig(precision="bf16").inherit().channels_last is bf16_cl_sound
    assert RetrainConfig().inherit(SearchConfig(precision="fp16", channels_last=True)).channels_last


def test_a_config_that_exists_is_valid() -> None:
    """Each config checks itself when built (direct, replaced or nested), so no caller has to."""
    import dataclasses

    from ssr.config import OptimConfig, RetrainConfig

    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        SearchConfig(epochs=0)
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        dataclasses.replace(SearchConfig(), epochs=0)
    with pytest.raises(ConfigError, match="lr must be > 0"):
        OptimConfig(lr=-1.0)
    with pytest.raises(ConfigError, match=r"retrain\.eval_every must be >= 1"):
        load_config(PipelineConfig, None, ["retrain.eval_every=0"])  # even at 0 epochs
    # the retraining that runs is checked with what it inherits: bf16 from the search plus
    # channels_last of its own diverges on a CPU whose bf16 channels-last kernels are wrong
    from ssr.config import kernels

    search = SearchConfig(precision="bf16", channels_last=False)
    retrain = RetrainConfig(epochs=1, channels_last=True)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernels, "bf16_channels_last_sound", lambda: False)
        with pytest.raises(ConfigError, match=r"retrain\.precision bf16 with channels_last"):
            PipelineConfig(search=search, retrain=retrain)


def test_retraining_inherits_what_it_leaves_none() -> None:
    """None means the search's; a value given for retraining is kept, even the default one."""
    from ssr.config import DataConfig, RetrainConfig

    search = SearchConfig(data=DataConfig(height=64, width=64), device="cuda", precision="bf16")
    r = PipelineConfig(search=search, retrain=RetrainConfig(epochs=1)).resolved_retrain
    assert (r.data, r.device, r.precision, r.channels_last) == (search.data, "cuda", "bf16", False)
    given = RetrainConfig(epochs=1, data=DataConfig(), device="cpu", precision="fp32")
    r = PipelineConfig(search=search, retrain=given).resolved_retrain
    assert (r.data, r.device, r.precision) == (DataConfig(), "cpu", "fp32")
    alone = load_config(RetrainConfig, None, ["epochs=2"])  # no search: the default search's
    assert (alone.data, alone.device, alone.precision) == (DataConfig(), "cpu", "fp32")
    resolved = load_config(PipelineConfig, None, ["search.data.height=64"]).resolved()
    assert to_dict(resolved)["retrain"]["data"]["height"] == 64


def test_camvid_configs_follow_the_published_protocol() -> None:
    search = load_config(SearchConfig, "ssr/configs/search_camvid.yaml", ["data.root=/d"])
    assert (search.data.train_split, search.data.eval_split) == ("train", "val")  # no test
    retrain = load_config(RetrainConfig, "ssr/configs/retrain_camvid.yaml", ["data.root=/d"])
    d = retrain.data
    assert (d.train_split, d.eval_split, d.height, d.width) == ("trainval", "test", 360, 480)
    assert d.scale_range == (0.5, 2.0) and d.crop == (360, 480) and d.augment
    assert d.class_weights == "enet"
