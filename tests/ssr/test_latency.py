"""The latency table and the latency term (docs/method.md §4.4): format, exact expectation,
gradients, the ONNX graph of a padded layer, the command line, config and sweep refusals."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
import torch

from ssr.cli import main
from ssr.config import (
    BenchConfig,
    ConfigError,
    LatencyConfig,
    SearchConfig,
    SpaceConfig,
    StageSpace,
)
from ssr.method.derive import sample_genotype
from ssr.method.genotype import Genotype, LayerGene, ReductionGene
from ssr.method.latency import LatencyModel
from ssr.method.latency_table import (
    LatencyTable,
    Piece,
    check_bench,
    op_names,
    piece_axes,
    predict_ms,
    reachable,
    stage_grids,
    table_sum_ms,
)
from ssr.method.supernet import Supernet

SPACE2 = SpaceConfig(
    stem_width=8,
    stages=(StageSpace(16, 3, 1, 0.0), StageSpace(32, 4, 2, 0.0)),
    dilations=(1, 2),
    pools=(1, 2),
    channel_remove=(8, 4, 0),
)
SPACE3 = SpaceConfig(
    stem_width=8,
    stages=(StageSpace(16, 2, 1, 0.0), StageSpace(32, 3, 1, 0.0), StageSpace(48, 2, 1, 0.0)),
    dilations=(1, 2),
    pools=(1, 2),
    channel_remove=(8, 0),
)


def fake_table(
    space: SpaceConfig, layout: str, head: str = "aggregation", reduction: str = "exact",
    seed: int = 0,
) -> LatencyTable:  # fmt: skip
    """A table of random milliseconds with the axes and holes a built one has."""
    rng, hw = random.Random(seed), (64, 128)
    grids = stage_grids(space, *hw, reduction)
    reds, ops, heads = piece_axes(grids, layout, head)

    def grid(axes, fn, prefix=()):
        vals = list(axes.values())
        if len(prefix) == len(vals):
            return fn(prefix)
        return [grid(axes, fn, (*prefix, v)) for v in vals[len(prefix)]]

    def entry(kind, s, lo, hi):
        return lambda k: rng.uniform(lo, hi) if reachable(grids, layout, kind, s, k) else None

    backend = "onnxruntime" if layout == "padded" else "torch"
    return LatencyTable(
        space, BenchConfig(height=hw[0], width=hw[1], backend=backend, threads=1), layout, 5,
        head, reduction, 0.7,
        tuple(Piece(a, grid(a, entry("reduction", s, 0.1, 1))) for s, a in enumerate(reds)),
        tuple({n: Piece(a, grid(a, entry("op", s, 0.5, 3))) for n in op_names(space)}
              for s, a in enumerate(ops)),
        Piece(heads, grid(heads, entry("head", 0, 1, 2))),
    )  # fmt: skip


def random_probs(space: SpaceConfig, seed: int) -> dict[str, torch.Tensor]:
    net = Supernet(space, 5)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.arch_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 1.5)
    return {d: net.probs(d).detach() for d in ("depth", "op", "out", "mid")}


def sample_from(space, probs, gen, reduction, head) -> Genotype:
    """A genotype drawn from the factorised distribution ``probs`` (docs/method.md §3)."""
    ops = [(d, p) for p in space.pools for d in space.dilations]

    def pick(p):
        return int(torch.multinomial(p, 1, generator=gen))

    reds, layers, prev, pmax, first = [], [], space.stem_width, space.stem_width, 0
    for s, st in enumerate(space.stages):
        red = ReductionGene(prev, st.width - (pmax if reduction == "exact" else prev))
        reds.append(red)
        c_in = red.c_out
        for i in range(pick(probs["depth"][s, : st.max_depth]) + 1):
            li = first + i
            o = pick(probs["op"][li])
            c_mid = st.width - space.channel_remove[pick(probs["mid"][li, o])]
            c_out = st.width - space.channel_remove[pick(probs["out"][li, o])]
            layers.append(LayerGene(s, *ops[o], c_in, c_mid, c_out))
            c_in = c_out
        first, prev, pmax = first + st.max_depth, c_in, st.width
    return Genotype(space.stem_width, tuple(reds), tuple(layers), head)


def one_hot(space: SpaceConfig, g: Genotype) -> dict[str, torch.Tensor]:
    """Probabilities that put all mass on ``g``."""
    ops = [(d, p) for p in space.pools for d in space.dilations]
    probs = {k: torch.zeros_like(v) for k, v in random_probs(space, 0).items()}
    first = 0
    for s, st in enumerate(space.stages):
        layers = g.stage_layers(s)
        probs["depth"][s, len(layers) - 1] = 1
        for i in range(st.max_depth):
            li, x = first + i, layers[min(i, len(layers) - 1)]
            probs["op"][li, ops.index((x.dilation, x.pool))] = 1
            probs["out"][li, :, space.channel_remove.index(st.width - x.c_out)] = 1
            probs["mid"][li, :, space.channel_remove.index(st.width - x.c_mid)] = 1
        first += st.max_depth
    return probs


CASES = list(itertools.product((SPACE2, SPACE3), ("padded", "natural"), ("aggregation", "search"),
                               ("exact", "official")))  # fmt: skip


def test_table_round_trip_and_bad_files(tmp_path: Path) -> None:
    table = fake_table(SPACE2, "padded")
    table.save(tmp_path / "t.json")
    again = LatencyTable.load(tmp_path / "t.json")
    assert again.to_dict() == table.to_dict()
    g = sample_genotype(SPACE2, random.Random(0))
    assert predict_ms(again, g) == predict_ms(table, g) == table_sum_ms(table, g)["total"]
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ConfigError, match="not a latency table"):
        LatencyTable.load(tmp_path / "bad.json")
    d = table.to_dict()
    d["stages"][1]["ops"]["d1_p1"]["ms"][0] = [1.0]  # wrong shape
    (tmp_path / "shape.json").write_text(json.dumps(d))
    with pytest.raises(ConfigError, match="shape"):
        LatencyTable.load(tmp_path / "shape.json")


@pytest.mark.parametrize(("space", "layout", "head", "reduction"), CASES)
def test_one_hot_expectation_is_the_table_sum(space, layout, head, reduction) -> None:
    table = fake_table(space, layout, head, reduction)
    model = LatencyModel(table, space)
    rng = random.Random(1)
    for _ in range(4):
        g = sample_genotype(space, rng, reduction, head)
        got = float(model.expected_ms(one_hot(space, g), corrected=False))
        assert got == pytest.approx(table_sum_ms(table, g)["total"], abs=1e-4)


@pytest.mark.parametrize(("space", "layout", "head", "reduction"),
                         [(SPACE2, "padded", "aggregation", "exact"),
                          (SPACE3, "natural", "search", "official"),
                          (SPACE3, "padded", "aggregation", "exact")])  # fmt: skip
def test_expectation_is_the_mean_over_sampled_networks(space, layout, head, reduction) -> None:
    """Exact under the factorised distribution: the Monte Carlo mean of the table sums of
    sampled sub-networks agrees within 4 standard errors (a product of expected widths, as
    the FLOPs term uses, would not for the padded stream's max)."""
    table = fake_table(space, layout, head, reduction)
    probs = random_probs(space, 3)
    expected = float(LatencyModel(table, space).expected_ms(probs))
    gen = torch.Generator().manual_seed(0)
    sums = torch.tensor([
        table_sum_ms(table, sample_from(space, probs, gen, reduction, head))["total"]
        for _ in range(1500)
    ])  # fmt: skip
    stderr = float(sums.std()) / len(sums) ** 0.5
    assert abs(float(sums.mean()) - expected) < 4 * stderr


def test_latency_term_has_gradients_for_every_dimension() -> None:
    table = fake_table(SPACE2, "padded")
    net = Supernet(SPACE2, 5)
    model = LatencyModel(table, SPACE2)
    e = model.expected_ms({d: net.probs(d) for d in ("depth", "op", "out", "mid")})
    e.backward()
    for dim in ("depth", "op", "out", "mid"):
        grad = net.arch[dim].grad
        assert grad is not None and float(grad.abs().sum()) > 0, dim
        assert torch.isfinite(grad).all()


def test_check_bench_names_every_difference() -> None:
    table = fake_table(SPACE2, "padded")
    assert check_bench(table, table.bench) == ""
    other = BenchConfig(height=64, width=128, backend="torch", threads=2, device="cpu")
    why = check_bench(table, other)
    assert "backend onnxruntime (table) vs torch (bench)" in why and "threads 1" in why
    assert "\n" not in why


def test_padded_layer_graph_computes_the_deploy_op() -> None:
    """The table's hand-written ONNX graph is ssr.deploy.PaddedOp, node for node."""
    ort = pytest.importorskip("onnxruntime")
    from ssr.deploy import PaddedOp, fold_bn
    from ssr.measure.latency_blocks import padded_layer_graph
    from ssr.method.ops import FactorizedOp

    for pool in (1, 2):
        op = fold_bn(FactorizedOp(24, 12, 20, 2, pool, 0.0).eval())
        padded = PaddedOp(op, 24).eval()
        weights = {k: getattr(padded, c).__getattr__(p).detach().numpy()
                   for k, c, p in (("w1", "conv1", "weight"), ("b1", "conv1", "bias"),
                                   ("w2", "conv2", "weight"), ("b2", "conv2", "bias"))}  # fmt: skip
        graph = padded_layer_graph(24, 12, 2, pool, (9, 14), weights=weights)
        x = torch.randn(1, 24, 9, 14).relu()
        sess = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        out = sess.run(None, {"x": x.numpy()})[0]
        with torch.no_grad():
            ref = padded(x).numpy()
        assert abs(out - ref).max() < 1e-4


def test_config_refuses_a_weight_without_a_table_and_a_missing_table(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs a table"):
        LatencyConfig(weight=1.0, target_ms=10.0)
    with pytest.raises(ConfigError, match="does not exist"):
        LatencyConfig(weight=1.0, target_ms=10.0, table=str(tmp_path / "none.json"))
    path = tmp_path / "t.json"
    path.write_text("{}")
    with pytest.raises(ConfigError, match="target_ms must be > 0"):
        LatencyConfig(weight=1.0, target_ms=0.0, table=str(path))
    with pytest.raises(ConfigError, match="needs a target"):
        LatencyConfig(weight=1.0, table=str(path))
    assert LatencyConfig(weight=1.0, target_ms=5.0, table=str(path)).form == "l2"


def tiny_build(tmp_path: Path, fit: int = 0, *extra: str) -> tuple[list[str], Path]:
    """``latency build`` of a tiny space at a tiny input in eager torch (no exporter), one
    timed run per block, ``fit`` networks for the correction: its arguments and table file."""
    space = tmp_path / "space.yaml"
    space.write_text(
        "space: {stem_width: 8, stages: [{width: 16, max_depth: 1, min_depth: 1, dropout: 0}, "
        "{width: 24, max_depth: 2, min_depth: 1, dropout: 0}], dilations: [1], pools: [1, 2], "
        "channel_remove: [4, 0]}\n"
    )
    out = tmp_path / "t.json"
    argv = ["latency", "build", "--config", str(space), "--backend", "torch", "--input", "32x64",
            "--warmup", "0", "--iters", "1", "--repeats", "1", "--fit", str(fit), "--out",
            str(out), "--num-classes", "3", "--json", *extra]  # fmt: skip
    return argv, out


def test_cli_build_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A table of a tiny space at a tiny input, built in eager torch (no exporter), then
    predicted; a genotype of another space and a missing table are one line, status 2."""
    argv, out = tiny_build(tmp_path)
    assert main(argv) == 0
    built = json.loads(capsys.readouterr().out)
    assert built["input"] == "32x64" and built["backend"] == "torch" and built["threads"] == 1
    table = LatencyTable.load(out)
    g = sample_genotype(table.space, random.Random(0))
    g.save(tmp_path / "g.json")
    assert main(["latency", "predict", "--table", str(out), "--genotype", str(tmp_path / "g.json"),
                 "--json"]) == 0  # fmt: skip
    row = json.loads(capsys.readouterr().out)
    assert (
        row["predicted_ms"] == pytest.approx(predict_ms(table, g), abs=1e-3)
        and row["predicted_ms"] > 0
    )
    assert row["input"] == "32x64" and row["device"]
    assert main(["latency", "predict", "--table", str(out), "--genotype", "ssr_cityscapes"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "does not fit" in err and len(err.strip().splitlines()) == 1
    assert main(["latency", "predict", "--table", str(tmp_path / "no.json"), "--genotype",
                 str(tmp_path / "g.json")]) == 2  # fmt: skip


def test_sweep_refuses_a_table_of_another_benchmark(tmp_path: Path) -> None:
    from ssr.config import load_yaml
    from sweeps.define.spec import CONFIG_DIR, build_sweep

    raw = load_yaml(CONFIG_DIR / "smoke.yaml")
    table = fake_table(SpaceConfig(**{**_space_of(raw)}), "padded")
    table.save(tmp_path / "t.json")
    raw["base"]["search"]["latency"] = {"weight": 1.0, "target_ms": 5.0,
                                        "table": str(tmp_path / "t.json")}  # fmt: skip
    raw["base"]["bench"].update(backend="torch", threads=1, height=64, width=128)
    with pytest.raises(ConfigError) as err:
        build_sweep(raw)
    msg = str(err.value)
    assert "backend onnxruntime (table) vs torch (bench)" in msg and "\n" not in msg


def _space_of(raw: dict) -> dict:
    from ssr.config import from_dict

    s = from_dict(SpaceConfig, raw["base"]["search"]["space"])
    return {
        f: getattr(s, f) for f in ("stem_width", "stages", "dilations", "pools", "channel_remove")
    }


def test_search_step_adds_the_latency_term(tmp_path: Path) -> None:
    from ssr.method.search_step import SearchStep

    table = fake_table(SPACE2, "padded")
    table.save(tmp_path / "t.json")
    cfg = SearchConfig(space=SPACE2, latency=LatencyConfig(weight=2.0, target_ms=5.0,
                                                           table=str(tmp_path / "t.json")))  # fmt: skip
    net = Supernet(SPACE2, 5)
    step = SearchStep(net, cfg, torch.ones(5), torch.device("cpu"))
    x, y = torch.rand(1, 3, 16, 32), torch.randint(0, 5, (1, 16, 32))
    out = step.arch_step(x, y)
    e = float(step.expected_latency_ms().detach())
    assert float(out["latency_loss"]) == pytest.approx((e / 5.0 - 1) ** 2, rel=1e-3)
    assert sum(float(p.grad.abs().sum()) for p in net.arch_parameters() if p.grad is not None) > 0


def test_search_logs_and_steers_by_expected_latency(tiny_space, tmp_path: Path) -> None:
    """A search with a target far below the start's expected latency lowers it epoch after
    epoch, logs it per epoch and records the derived genotype's prediction."""
    from ssr.config import DataConfig, OptimConfig, ShrinkConfig
    from ssr.method.search import run_search

    torch.set_num_threads(1)
    table = fake_table(tiny_space, "padded", seed=2)
    table.save(tmp_path / "t.json")
    uniform = Supernet(tiny_space, 5)  # the search's start: every logit 0
    probs = {d: uniform.probs(d).detach() for d in ("depth", "op", "out", "mid")}
    start = float(LatencyModel(table, tiny_space).expected_ms(probs))
    cfg = SearchConfig(
        space=tiny_space, data=DataConfig(height=32, width=64, train_size=4, val_size=2,
                                          batch_size=2),
        flops=SearchConfig().flops.__class__(weight=0.0), epochs=2, bn_recalibration_batches=1,
        arch_optim=OptimConfig(lr=0.2, weight_decay=0.0, poly_power=0.0, grad_clip=5.0),
        shrink=ShrinkConfig(enabled=False),
        latency=LatencyConfig(weight=1000.0, target_ms=0.3 * start, table=str(tmp_path / "t.json")),
    )  # fmt: skip
    res = run_search(cfg, tmp_path / "search", progress=False)
    lat = [row["expected_latency_ms"] for row in res.history]
    assert start > lat[0] > lat[1], (start, lat)
    assert res.summary["predicted_latency_ms"] == pytest.approx(predict_ms(table, res.genotype))
    assert res.summary["expected_latency_ms"] == lat[-1]
    assert res.summary["latency_target_ms"] == pytest.approx(0.3 * start)


def test_shipped_latency_sweep_validates_and_refuses_other_threads(monkeypatch) -> None:
    """sweeps/configs/latency.yaml with its shipped table; the same sweep benchmarked at two
    threads is refused in one line before anything starts."""
    from sweeps.define.spec import CONFIG_DIR, load_sweep

    monkeypatch.chdir(CONFIG_DIR.parents[1])  # the table's path is relative to the repository
    sweep = load_sweep(CONFIG_DIR / "latency.yaml")
    lat = sweep.base_config.search.latency
    assert (
        Path(lat.table).is_absolute()
        and lat.weight > 0
        and sweep.base_config.search.flops.weight == 0
    )
    assert any(p.key == "latency.target_ms" for p in sweep.params)
    with pytest.raises(ConfigError) as err:
        load_sweep(CONFIG_DIR / "latency.yaml", ["base.bench.threads=2"])
    assert "threads 1 (table) vs 2 (bench)" in str(err.value) and "\n" not in str(err.value)


def test_correction_is_a_robust_line() -> None:
    """The correction recovers ``measured = 0.9 * sum + 2`` from ten networks, one of them
    measured 40 % slow (another process on the core): least squares would tilt, medians do not."""
    from ssr.measure.latency import fit_correction

    table = fake_table(SPACE2, "padded")
    rng = random.Random(4)
    nets = [sample_genotype(SPACE2, rng) for _ in range(10)]
    measured = [0.9 * table_sum_ms(table, g)["total"] + 2.0 for g in nets]
    measured[3] *= 1.4
    corr = fit_correction(table, nets, measured).correction
    assert corr.scale == pytest.approx(0.9, abs=1e-6) and corr.offset_ms == pytest.approx(
        2.0, abs=1e-4
    )
    assert len(corr.networks) == 10 and corr.networks[3]["measured_ms"] == pytest.approx(
        measured[3], abs=1e-3
    )
    with pytest.raises(ConfigError, match="at least two"):
        fit_correction(table, nets[:1], measured[:1])


def test_networks_are_measured_in_interleaved_passes() -> None:
    from ssr.measure.latency import measure_networks

    cfg = BenchConfig(height=32, width=64, warmup=0, iters=1, repeats=2, backend="torch", threads=1)
    rng = random.Random(0)
    nets = [sample_genotype(SPACE2, rng, head="search") for _ in range(2)]
    ms = measure_networks(nets, cfg, 3, clock="thread", statistic="min", passes=3)
    assert len(ms) == 2 and all(0 < m < 1e4 for m in ms)
