"""python -m ssr: the command table, bench / export / retrain, one-line errors (exit status 2)."""

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import ssr.cli as cli
from ssr.commands import Command

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--genotype", "ssr_cityscapes", "--input", "64x128"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_bench_no_timing_json(capsys) -> None:
    code, out, _ = run_cli(capsys, "bench", *SMALL, "--no-timing", "--json")
    assert code == 0
    row = json.loads(out)
    assert row["params_m"] == pytest.approx(1.0226, abs=1e-4)
    assert row["gmacs"] == pytest.approx(10.898 / 64, rel=0.02)  # 64x128 is 1/64 of 512x1024
    assert row["input"] == "64x128" and row["batch"] == 1 and len(row["genotype_id"]) == 10
    assert "fps_median" not in row


def test_bench_json_has_the_record(capsys) -> None:
    args = ("--warmup", "0", "--iters", "2", "--repeats", "1", "--threads", "1", "--json")
    code, out, _ = run_cli(
        capsys, "bench", "--genotype", "ssr_cityscapes", "--input", "32x64", *args
    )
    assert code == 0
    row = json.loads(out)
    for key in (
        "params_m", "gmacs", "fps_median", "latency_ms_median", "latency_ms_p90", "device",
        "threads", "batch", "input", "backend", "precision", "torch_version",
    ):  # fmt: skip
        assert key in row, key
    assert row["threads"] == 1 and row["backend"] == "torch" and row["fps_median"] > 0


def test_bench_optimize_records_the_form(capsys) -> None:
    args = ("--warmup", "0", "--iters", "1", "--repeats", "1", "--threads", "1", "--optimize")
    args += ("--json",)
    code, out, _ = run_cli(
        capsys, "bench", "--genotype", "ssr_cityscapes", "--input", "32x64", *args
    )
    row = json.loads(out)
    assert code == 0 and row["form"] == "fold_bn+channels_last"
    assert row["params_m"] == pytest.approx(1.0226, abs=1e-4)  # sizes of the network as defined


def test_bench_table(capsys) -> None:
    code, out, _ = run_cli(
        capsys, "bench", *SMALL, "--iters", "1", "--warmup", "0", "--repeats", "1", "--threads", "1"
    )
    assert code == 0 and "fps_median" in out and "params_m" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--genotype", "no_such_genotype"], "does not exist"),
        (["--genotype", "ssr_cityscapes", "--precision", "fp16"], "only measured on CUDA"),
        (["--genotype", "ssr_cityscapes", "--set", "bogus=1"], "unknown key bogus"),
    ],
)
def test_bench_user_errors(capsys, argv, message) -> None:
    code, out, err = run_cli(capsys, "bench", *argv, "--input", "32x64", "--iters", "1")
    assert code == 2 and out == ""
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1


def test_broken_genotype_exits_2_without_traceback(tmp_path) -> None:
    bad = tmp_path / "broken.json"
    bad.write_text('{"stem": 16, "reductions": [')
    proc = subprocess.run(
        [sys.executable, "-m", "ssr", "bench", "--genotype", str(bad), "--no-timing"],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "not valid JSON" in proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_genotype_that_does_not_chain(capsys, tmp_path) -> None:
    from ssr.method.genotype import Genotype

    d = Genotype.load("ssr_cityscapes").to_dict()
    d["layers"][1]["c_in"] = 63
    path = tmp_path / "g.json"
    path.write_text(json.dumps(d))
    code, _, err = run_cli(capsys, "bench", "--genotype", str(path), "--no-timing")
    assert code == 2 and "does not chain" in err


@pytest.mark.slow  # the dynamo exporter takes ~10 s
def test_export_writes_one_file(capsys, tmp_path) -> None:
    out = tmp_path / "m.onnx"
    code, text, _ = run_cli(capsys, "export", *SMALL, "--out", str(out), "--json")
    assert code == 0 and out.is_file() and list(tmp_path.iterdir()) == [out]
    row = json.loads(text)
    assert row["nodes"] <= 400 and row["max_abs_diff"] < 1e-4 and row["path"] == str(out)


@pytest.mark.slow
def test_export_optimized_form(capsys, tmp_path) -> None:
    out = tmp_path / "d.onnx"
    code, text, _ = run_cli(capsys, "export", *SMALL, "--out", str(out), "--optimize", "--fold-bn")
    assert code == 0 and out.is_file() and "nodes" in text


def test_export_missing_weights(capsys, tmp_path) -> None:
    code, _, err = run_cli(
        capsys, "export", *SMALL, "--out", str(tmp_path / "m.onnx"), "--weights", "nope.pt"
    )
    assert code == 2 and "nope.pt does not exist" in err


@pytest.mark.slow
def test_retrain_synthetic_writes_summary(capsys, tmp_path) -> None:
    sets = [
        "data.height=64", "data.width=128", "data.train_size=4", "data.val_size=2",
        "data.batch_size=2",
    ]  # fmt: skip
    argv = ["retrain", "--genotype", "ssr_cityscapes", "--data", "synthetic", "--epochs", "1"]
    argv += ["--out", str(tmp_path)] + [a for s in sets for a in ("--set", s)]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0, out
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("miou", "per_class_iou", "params_m", "gmacs", "config"):
        assert key in summary, key
    assert summary["config"]["epochs"] == 1 and summary["config"]["data"]["height"] == 64
    assert summary["params_m"] == pytest.approx(1.02, abs=0.05)
    assert (tmp_path / "config.resolved.yaml").is_file()


def test_retrain_bad_override(capsys, tmp_path) -> None:
    argv = ["retrain", "--genotype", "ssr_cityscapes", "--out", str(tmp_path), "--set", "epochs=x"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "epochs" in err


def test_the_command_table_is_the_parser() -> None:
    assert list(cli.COMMANDS) == [
        "search", "retrain", "bench", "export", "pipeline", "evaluate", "data", "latency",
    ]  # fmt: skip
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(cli.COMMANDS)
    for name, cmd in cli.COMMANDS.items():
        assert cmd.name == name and cmd.help and cmd.description


@pytest.mark.parametrize("name", ["search", "retrain", "bench", "pipeline"])
def test_config_and_set_are_declared_the_same_way(name: str, tmp_path) -> None:
    required = {
        "search": ["--out", "o"],
        "pipeline": ["--out", "o"],
        "retrain": ["--genotype", "g", "--out", "o"],
        "bench": ["--genotype", "g"],
    }[name]
    argv = [name, *required, "--config", "c.yaml", "--set", "a=1", "--set", "b.c=2"]
    args = cli.build_parser().parse_args(argv)
    assert args.set == ["a=1", "b.c=2"] and args.config == Path("c.yaml")
    assert not hasattr(args, "overrides")


def test_main_dispatches_through_the_table(capsys) -> None:
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("--name", default="world")

    def run(args: argparse.Namespace) -> int:
        print("hello", args.name)
        return 3

    hello = Command("hello", "say hello", "Say hello.", add_arguments, run)
    code = cli.main(["hello", "--name", "ssr"], commands={"hello": hello})
    out, _ = capsys.readouterr()
    assert code == 3 and out.strip() == "hello ssr"


def test_a_diverged_run_is_one_line_and_exit_1(capsys) -> None:
    from ssr.config.errors import DivergenceError

    def run(args: argparse.Namespace) -> int:
        raise DivergenceError("retraining diverged at epoch 2: training loss is nan; lower x")

    boom = Command("boom", "diverge", "Diverge.", lambda p: None, run)
    code = cli.main(["boom"], commands={"boom": boom})
    out, err = capsys.readouterr()
    assert (
        code == 1
        and out == ""
        and err == ("error: retraining diverged at epoch 2: training loss is nan; lower x\n")
    )


def test_no_command_prints_help_and_exits_2(capsys) -> None:
    code, out, _ = run_cli(capsys)
    assert code == 2 and "search" in out and "pipeline" in out


def test_help_runs_without_ray_mlflow_or_optuna() -> None:
    code = (
        "import sys, ssr.cli; ssr.cli.build_parser().format_help();"
        "print(sorted(n for n in ('ray', 'mlflow', 'optuna', 'torch') if n in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_bench_loads_weights(capsys, tmp_path) -> None:
    import torch

    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    path = tmp_path / "best.pt"
    torch.save({"model": DerivedNet(Genotype.load("ssr_cityscapes"), 19).state_dict()}, path)
    code, _, _ = run_cli(capsys, "bench", *SMALL, "--no-timing", "--weights", str(path))
    assert code == 0
    code, _, err = run_cli(
        capsys, "bench", *SMALL, "--no-timing", "--weights", str(path), "--num-classes", "5"
    )
    assert code == 2 and "does not fit" in err


def test_bench_reads_a_config_file(capsys, tmp_path) -> None:
    cfg = tmp_path / "bench.yaml"
    cfg.write_text("height: 64\nwidth: 128\nbatch: 2\n")
    code, out, _ = run_cli(
        capsys,
        "bench",
        "--genotype",
        "ssr_cityscapes",
        "--config",
        str(cfg),
        "--no-timing",
        "--json",
    )
    row = json.loads(out)
    assert code == 0 and row["input"] == "64x128" and row["batch"] == 2


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (MemoryError(), 2, "error: out of memory (the allocator refused); use a smaller"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
        (PermissionError("[Errno 13] Permission denied: '/x'"), 2, "error: [Errno 13]"),
        (ValueError("a\nmulti-line\n"), None, None),  # not bad input: a bug keeps its traceback
    ],
)
def test_failures_become_one_line(capsys, exc, code, line) -> None:
    from ssr.config.errors import ConfigError

    def run(args: argparse.Namespace) -> int:
        raise exc

    boom = Command("boom", "fail", "Fail.", lambda p: None, run)
    if code is None:
        with pytest.raises(type(exc)):
            cli.main(["boom"], commands={"boom": boom})
        return
    assert cli.main(["boom"], commands={"boom": boom}) == code
    _, err = capsys.readouterr()
    assert err.startswith(line) and err.count("\n") == 1
    multi = Command("multi", "fail", "Fail.", lambda p: None, lambda a: _raise(ConfigError("a\nb")))
    assert cli.main(["multi"], commands={"multi": multi}) == 2
    assert capsys.readouterr()[1] == "error: a; b\n"


def _raise(exc: BaseException) -> int:
    raise exc


def test_usage_errors_are_one_line(capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["bench", "--genotype", "ssr_cityscapes", "--num-classes", "0"])
    _, err = capsys.readouterr()
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith("error: python -m ssr bench: argument --num-classes: must be >= 1")


@pytest.mark.parametrize(
    "argv",
    [
        ["bench", "--genotype", "ssr_cityscapes", "--input", "99999x99999"],
        ["bench", "--genotype", "ssr_cityscapes", "--batch", "0"],
        ["export", "--genotype", "ssr_cityscapes", "--input", "99999x99999", "--out", "m.onnx"],
        ["search", "--out", "o", "--set", "epochs=0"],
        ["retrain", "--genotype", "no_such_genotype", "--out", "o"],
        ["pipeline", "--out", "o", "--set", "bench.iters=0"],
    ],
)
def test_bad_input_is_refused_before_torch_loads(argv: list[str], tmp_path) -> None:
    """Options that are wrong on their own are checked before a command imports torch, so the
    answer comes in a fraction of a second."""
    code = (
        "import sys; from ssr.cli import main; rc = main(sys.argv[1:]);"
        "print(rc, 'torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path,
        timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1
