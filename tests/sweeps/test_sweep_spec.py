"""Sweep definitions, validation, the trial <-> config mapping, rows and the architecture plot."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from ssr.config import ConfigError
from sweeps.contract.params import flat_params, resolve_path, trial_pipeline
from sweeps.contract.protocol import FINAL_KEY
from sweeps.define.spec import CONFIG_DIR, apply_overrides, build_sweep, load_sweep


def smoke_raw() -> dict:
    from ssr.config import load_yaml

    return load_yaml(CONFIG_DIR / "smoke.yaml")


@pytest.mark.parametrize("name", ["smoke", "default", "paper", "camvid"])
def test_shipped_configs_validate(name: str) -> None:
    sweep = load_sweep(CONFIG_DIR / f"{name}.yaml")
    assert sweep.spec.name == name
    assert sweep.params
    space = sweep.param_space()
    assert set(space) == {"sweep", "base", "dims", "run"}
    assert space["base"]["search"]["epochs"] == sweep.spec.budget.search_epochs
    assert sweep.max_t == sweep.spec.budget.search_epochs + sweep.spec.budget.retrain_epochs + 1


def test_camvid_sweep_searches_small_retrains_larger_and_times_the_native_size() -> None:
    sweep = load_sweep(CONFIG_DIR / "camvid.yaml", ["dataset.root=/data/CamVid"])
    cfg = sweep.base_config
    search, retrain = cfg.search.data, cfg.resolved_retrain.data
    assert (search.name, search.root, search.height, search.width) == (
        "camvid",
        "/data/CamVid",
        96,
        128,
    )
    assert (retrain.name, retrain.root, retrain.height, retrain.width) == (
        "camvid",
        "/data/CamVid",
        120,
        160,
    )
    assert retrain.train_size is None and retrain.val_size is None  # every train and val image
    assert (cfg.bench.height, cfg.bench.width) == (360, 480)
    assert cfg.resolved_retrain.epochs == sweep.spec.budget.retrain_epochs >= 1
    assert sweep.spec.objectives[0].metric == "retrained_miou"


def test_default_is_the_embedded_default() -> None:
    assert load_sweep().spec.name == "default"


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("bogus=1", "bogus"),  # unknown top-level key
        ("searcher.bogus=1", "searcher.bogus"),
        ("num_samples=abc", "num_samples"),  # wrong type
        ("num_samples=0", "num_samples"),  # out of range
        ("resources.cpus_per_trial=-1", "resources.cpus_per_trial"),
        ("scheduler.kind=hyperband", "scheduler.kind"),
        ("objectives=[{metric: accuracy, mode: max}]", "objectives[0].metric"),
        ("base.search.bogus=1", "base.search.bogus"),
        ("base.search.epochs=5", "budget.search_epochs"),
        ("dataset.bogus=1", "dataset.bogus"),
        ("space.nonexistent.knob={uniform: [0, 1]}", "space.nonexistent.knob"),
        ("space.shrink.threshold={uniform: [0.05, 1.5]}", "shrink.threshold"),
        ("space.ssr.op={loguniform: [0, 10]}", "space.ssr.op"),
        ("space.shrink.every={uniform: [1, 3]}", "space.shrink.every"),  # float for an int
        ("space.baseline={choice: [ssr, magic]}", "baseline"),
        ("space.seed={grid: [0, 1]}", "space.seed"),  # grid with optuna
        ("scheduler={kind: asha, metric: derived_miou}", "scheduler.metric"),
        ("scheduler={kind: asha, metric: val_mIoU}", "scheduler.metric"),  # not reported
        ("scheduler={kind: asha, grace_period: 1, reduction_factor: 3}", "whole budget"),
        ("scheduler={kind: moasha, cost_metric: gmacs}", "scheduler.cost_metric"),
        ("scheduler={kind: moasha, cost_metric: val_miou}", "scheduler.cost_metric"),
        ("scheduler={kind: asha, grace_period: 9}", "scheduler.grace_period"),
        ("base.search.device=cuda", "gpus_per_trial"),
        ("base.bench.precision=int8", "base.bench.precision"),
    ],
)
def test_validation_names_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace(".", r"\.")):
        build_sweep(apply_overrides(smoke_raw(), [override]))


def test_paths_and_baselines() -> None:
    assert resolve_path("ssr.op") == "search.ssr.op"
    assert resolve_path("retrain.epochs") == "retrain.epochs"
    assert resolve_path("seed") == "seed"
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    base = sweep.param_space()
    cfg = trial_pipeline({**base, "dims": {"ssr.op": 40.0, "baseline": "darts_pruning", "seed": 3}})
    assert (cfg.search.ssr.op, cfg.search.ssr.out, cfg.search.ssr.mid, cfg.search.ssr.depth) == (
        0,
    ) * 4
    assert cfg.search.seed == cfg.retrain.seed == 3
    cfg = trial_pipeline({**base, "dims": {"baseline": "no_shrink", "arch_optim.lr": 0.01}})
    assert not cfg.search.shrink.enabled
    # a partly given block keeps the field's own defaults (arch_optim: wd 1e-3, clip 5)
    assert cfg.search.arch_optim.lr == 0.01 and cfg.search.arch_optim.grad_clip == 5.0
    flat = flat_params({**base, "dims": {"ssr.op": 12.5, "baseline": "ssr"}})
    assert flat["cfg.ssr.op"] == 12.5 and flat["cfg.baseline"] == "ssr"
    assert flat["cfg.retrain.epochs"] == 1 and flat["cfg.bench.height"] == 64
    assert all(not isinstance(v, (list, dict)) for v in flat.values())


def test_numpy_samples_are_accepted() -> None:
    np = pytest.importorskip("numpy")
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    cfg = trial_pipeline(
        {**sweep.param_space(), "dims": {"seed": np.int64(1), "ssr.op": np.float64(2)}}
    )
    assert cfg.search.seed == 1 and cfg.search.ssr.op == 2.0


def test_searchers_and_scheduler() -> None:
    sweep = load_sweep(CONFIG_DIR / "default.yaml")
    moasha = sweep.scheduler()  # the default: (val_miou max, expected_gmacs min) at each rung
    assert type(moasha).__name__ == "MOASHAScheduler"
    assert moasha.metrics == ("val_miou", "expected_gmacs") and moasha.modes == ("max", "min")
    assert moasha.milestones == [6, 12]  # rungs before the last epoch (16)
    asha = build_sweep(apply_overrides(smoke_raw(), ["scheduler={kind: asha}"])).scheduler()
    assert type(asha).__name__ == "AsyncHyperBandScheduler"
    searcher = sweep.searcher()
    assert searcher.metric == ["derived_miou", "fps_shared"]
    grid = build_sweep(
        apply_overrides(smoke_raw(), ["searcher.kind=grid", "space={seed: {grid: [0, 1]}}"])
    )
    generator = grid.searcher()
    assert type(generator).__name__ == "BasicVariantGenerator"
    assert generator.max_concurrent == grid.spec.max_concurrent  # Tune would not set it
    # the front ranks the exclusive re-measurement of the in-trial FPS objective
    assert sweep.report_objectives() == [("derived_miou", True), ("fps_exclusive", True)]


def test_optuna_is_told_final_records_only() -> None:
    """An early-stopped trial (no final record) is PRUNED in Optuna, a final one COMPLETE."""
    from ray import tune

    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    searcher = sweep.searcher()
    searcher.set_search_properties(None, None, {"dims": {"ssr.op": tune.uniform(1, 2)}})
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete(
        "a", {"derived_miou": float("nan"), "fps_shared": float("nan"), FINAL_KEY: 0.0}
    )
    searcher.on_trial_complete("b", {"derived_miou": 0.3, "fps_shared": 50.0, FINAL_KEY: 1.0})
    states = [t.state.name for t in searcher._ot_study.trials]
    assert states == ["PRUNED", "COMPLETE"]


def test_results_rows_and_table(tmp_path: Path) -> None:
    from sweeps.record.results import ResultsCallback, ResultsTable, build_row

    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    config = {**sweep.param_space(), "dims": {"ssr.op": 10.0, "baseline": "ssr"}}
    table = ResultsTable(tmp_path / "results.parquet")
    cb = ResultsCallback(table, "s")
    geno = json.loads((Path(__file__).parents[2] / "ssr/genotypes/ssr_cityscapes.json").read_text())
    final = {
        FINAL_KEY: 1.0, "genotype_id": "0123456789", "genotype": json.dumps(geno),
        "derived_miou": 0.3, "fps_shared": 20.0, "step": 4, "node": "127.0.0.2",
    }  # fmt: skip
    done = SimpleNamespace(trial_id="t1", config=config, last_result=final, status="TERMINATED")
    stopped = SimpleNamespace(
        trial_id="t2", config=config, status="TERMINATED",
        last_result={FINAL_KEY: 0.0, "derived_miou": float("nan"), "supernet_miou": 0.1, "step": 1},
    )  # fmt: skip
    failed = SimpleNamespace(
        trial_id="t3", config=config, status="ERROR", last_result={}, node_ip="127.0.0.3",
        get_error=lambda: "Traceback (most recent call last):\n  ...\nRuntimeError: boom",
    )  # fmt: skip
    cb.on_trial_complete(0, [], done)
    cb.on_trial_complete(0, [], stopped)
    cb.on_trial_error(0, [], failed)
    again = ResultsTable(tmp_path / "results.parquet")  # what a resumed driver reads
    rows = {r["trial_id"]: r for r in again.rows()}
    assert [rows[t]["status"] for t in ("t1", "t2", "t3")] == [
        "complete",
        "early_stopped",
        "failed",
    ]
    assert (
        rows["t3"]["error"].startswith("RuntimeError: boom") and rows["t3"]["node"] == "127.0.0.3"
    )
    assert "derived_miou" not in rows["t2"]  # no NaN placeholder becomes a value
    assert [rows[t]["completion_order"] for t in ("t1", "t2", "t3")] == [1, 2, 3]
    frame = again.frame()
    assert str(frame["fps_shared_device"].dtype) == "boolean"
    assert build_row("s", "t9", config, {}, "failed")["cfg.ssr.op"] == 10.0
    assert not list(tmp_path.glob(".*.tmp"))


def test_archplot(tmp_path: Path) -> None:
    from sweeps.record.archplot import draw_genotype

    src = Path(__file__).parents[2] / "ssr/genotypes/ssr_cityscapes.json"
    out = draw_genotype(src, tmp_path / "a.png")
    assert out.stat().st_size > 5000
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_trial_reports() -> None:
    from sweeps.trial import epoch_result, final_result

    res = epoch_result({"val_miou": 0.2, "supernet_miou": 0.2, "phase": 0.0}, 3,
                       ["supernet_miou", "fps_shared"], "val_miou", "n")  # fmt: skip
    assert res["supernet_miou_epoch"] == 0.2 and res["supernet_miou"] != res["supernet_miou"]
    assert res[FINAL_KEY] == 0.0 and res["step"] == 3.0
    rec = {"genotype_id": "abc", "derived_miou": 0.3, "retrained_miou": None, "fps_shared": 9.0}
    res = final_result(rec, 5, ["derived_miou", "retrained_miou"], "val_miou", 0.1, "n")
    assert res[FINAL_KEY] == 1.0 and res["genotype_id"] == "abc" and res["val_miou"] == 0.1
    assert res["retrained_miou"] != res["retrained_miou"]  # NaN: Optuna marks it failed


def test_a_trial_config_is_resolved_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """The trial, the rows and the runs share one frozen value per trial config: the
    PipelineConfig is built once however often its params are read."""
    import sweeps.contract.params as params

    built = []
    real = params.build_pipeline
    monkeypatch.setattr(params, "build_pipeline", lambda *a, **k: built.append(1) or real(*a, **k))
    params._resolve.cache_clear()
    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    config = {**sweep.param_space(), "dims": {"ssr.op": 7.5, "baseline": "no_shrink"}}
    trial = params.resolve_trial(config)
    for _ in range(3):
        assert flat_params(dict(config))["cfg.ssr.op"] == 7.5
    assert trial_pipeline(config) is trial.pipeline and len(built) == 1
    assert trial.baseline == "no_shrink" and not trial.pipeline.search.shrink.enabled
    assert trial.params["cfg.baseline"] == "no_shrink" and trial.values["ssr.op"] == 7.5
    with pytest.raises(TypeError):
        trial.params["cfg.ssr.op"] = 1.0  # type: ignore[index]
    # the params show the retraining as it runs: the search's data where it inherits it
    assert trial.params["cfg.retrain.data.height"] == trial.pipeline.search.data.height
