"""Bad input for every command line, as data: one :class:`Case` per input
(docs/architecture.md §6).

Each command line of the repository has a list in :data:`CASES` (``python -m ssr``,
``python -m analysis.report``, ``sweeps/run.py``). A case is the arguments, the exit status
and a piece of the one line the command must print on stderr. :func:`run_case` runs it in a
subprocess and :func:`problems` says what is wrong with the result: a zero or unexpected exit
status, a traceback, more or less than one line, a message that does not name the problem, or
more than :data:`LIMIT_S` seconds.

Arguments may use ``{dir}`` (a folder :func:`make_inputs` filled with damaged files) and
``{port}`` (a local TCP port nobody listens on). To add a command line, add its command to
:data:`COMMANDS` and its list of cases to :data:`CASES`.
"""

from __future__ import annotations

import json
import pickle
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Seconds a bad input may take to be refused (docs/architecture.md §6: "within 10 s").
LIMIT_S = 10.0
#: Seconds after which a case is killed (a hang is reported, not waited for).
KILL_S = 30.0
GENOTYPE = ROOT / "ssr" / "genotypes" / "ssr_cityscapes.json"


@dataclass(frozen=True)
class Case:
    """One bad input: ``argv`` after the command, the expected exit status and a piece of the
    one stderr line that names what is wrong (compared case-insensitively)."""

    name: str
    argv: tuple[str, ...]
    says: str
    status: int = 2


def _cases(*rows: tuple) -> list[Case]:
    """Rows ``(name, argv, says[, status])``; ``argv`` is a string split on spaces, or a tuple
    (for an argument that holds spaces)."""
    return [
        Case(r[0], tuple(r[1].split()) if isinstance(r[1], str) else tuple(r[1]), r[2], *r[3:])
        for r in rows
    ]


#: name -> the command line, before the case's arguments.
COMMANDS: dict[str, list[str]] = {
    "ssr": [sys.executable, "-m", "ssr"],
    "analysis.report": [sys.executable, "-m", "analysis.report"],
    "sweeps/run.py": [sys.executable, str(ROOT / "sweeps" / "run.py")],
}

G = "--genotype {dir}/"  # a genotype file of make_inputs
B = "bench --no-timing --input 64x128 "
SSR = _cases(
    ("unknown command", "bogus", "invalid choice"),
    ("missing genotype option", "bench", "required: --genotype"),
    ("input not HxW", "bench --genotype ssr_cityscapes --input 12", "expected HxW"),
    ("input zero", "bench --genotype ssr_cityscapes --input 0x64", "must be positive"),
    ("num-classes 0", "bench --genotype ssr_cityscapes --num-classes 0", "--num-classes"),
    ("num-classes text", "bench --genotype ssr_cityscapes --num-classes abc", "--num-classes"),
    ("batch 0", B + "--genotype ssr_cityscapes --batch 0", "batch"),
    ("unknown genotype", B + "--genotype no_such_genotype", "does not exist"),
    ("genotype not JSON", B + G + "broken.json", "not valid JSON"),
    ("genotype duplicate key", B + G + "duplicate.json", "duplicate key 'stem'"),
    ("genotype 1e9 channels", B + G + "huge.json", "more than 8192"),
    ("genotype float channels", B + G + "float.json", "expected an integer"),
    ("one-stage genotype", B + G + "one_stage.json", "at least two stages"),
    ("genotype does not chain", B + G + "no_chain.json", "does not chain"),
    ("genotype negative width", B + G + "negative.json", "must be positive"),
    ("genotype unknown head", B + G + "head.json", "unknown head"),
    ("genotype binary file", B + G + "binary.json", "cannot be read"),
    ("genotype id mismatch", B + G + "wrong_id.json", "does not match"),
    ("genotype a list", B + G + "list.json", "expected a JSON object"),
    ("input 99999x99999", "bench --no-timing --genotype ssr_cityscapes --input 99999x99999",
     "GiB free"),
    ("input of zero rows", "bench --no-timing --genotype ssr_cityscapes --input 0x65",
     "input"),
    ("batch past memory", B + "--genotype ssr_cityscapes --batch 1000000", "GiB free"),
    ("weights not torch", B + "--genotype ssr_cityscapes --weights {dir}/text.pt",
     "not a torch file"),
    ("weights malicious pickle", B + "--genotype ssr_cityscapes --weights {dir}/evil.pt",
     "refused"),
    ("weights a list", B + "--genotype ssr_cityscapes --weights {dir}/list.pt",
     "not a state dict"),
    ("weights of another net", B + "--genotype ssr_cityscapes --weights {dir}/other.pt",
     "does not fit"),
    ("weights missing", B + "--genotype ssr_cityscapes --weights {dir}/absent.pt",
     "does not exist"),
    ("device unknown", B + "--genotype ssr_cityscapes --device bogus", "not valid"),
    ("fp16 on cpu", "bench --genotype ssr_cityscapes --input 64x128 --precision fp16",
     "only measured on CUDA"),
    ("unknown --set key", B + "--genotype ssr_cityscapes --set bogus=1", "unknown key bogus"),
    ("--set without =", B + "--genotype ssr_cityscapes --set iters", "key=value"),
    ("config missing", B + "--genotype ssr_cityscapes --config {dir}/absent.yaml",
     "does not exist"),
    ("config duplicate key", B + "--genotype ssr_cityscapes --config {dir}/duplicate.yaml",
     "duplicate key 'iters'"),
    ("config not a mapping", B + "--genotype ssr_cityscapes --config {dir}/list.yaml",
     "expected a mapping"),
    ("config not YAML", B + "--genotype ssr_cityscapes --config {dir}/broken.yaml",
     "not valid YAML"),
    ("search epochs 0", "search --out {dir}/run --set epochs=0", "epochs must be >= 1"),
    ("search inf lr", "search --out {dir}/run --set weight_optim.lr=.inf", "finite"),
    ("search nan SSR weight", "search --out {dir}/run --set ssr.op=.nan", "ssr.op"),
    ("search train_size 0", "search --out {dir}/run --set data.train_size=0", "train_size"),
    ("search height under 16", "search --out {dir}/run --set data.height=8", ">= 16"),
    ("search one stage", ("search", "--out", "{dir}/run", "--set",
     "space.stages=[{width: 64, max_depth: 2, min_depth: 1, dropout: 0}]"), "two stages"),
    ("search device unknown", "search --out {dir}/run --device tpu", "not valid"),
    ("search too large", "search --out {dir}/run --set data.height=99984", "GiB free"),
    ("search 1e30 epochs", "search --out {dir}/run --set epochs=1e30", "expected an integer"),
    ("search duplicate --set key", ("search", "--out", "{dir}/run", "--set",
     "shrink={every: 1, every: 2}"), "duplicate key 'every'"),
    ("search unknown dataset", "search --out {dir}/run --set data.name=nope",
     "unknown dataset"),
    ("search --out is a file", "search --out {dir}/list.yaml --set epochs=1 "
     "--set data.train_size=4 --set data.val_size=2 --set data.height=32 --set data.width=64",
     "is a file, not a folder"),
    ("pipeline bench.iters 0", "pipeline --out {dir}/run --set bench.iters=0", "bench.iters"),
    ("pipeline camvid split unknown", "pipeline --out {dir}/run --set search.data.name=camvid "
     "--set search.data.root={dir} --set search.data.eval_split=testing", "eval_split must be one of"),
    ("pipeline retrain epochs -1", "pipeline --out {dir}/run --set retrain.epochs=-1",
     "retrain.epochs"),
    ("retrain epochs 0", "retrain --genotype ssr_cityscapes --out {dir}/run --epochs 0",
     "--epochs"),
    ("retrain batch 0", "retrain --genotype ssr_cityscapes --out {dir}/run "
     "--set data.batch_size=0", "batch_size"),
    ("retrain one stage", "retrain " + G + "one_stage.json --out {dir}/run", "two stages"),
    ("export batch 0", "export --genotype ssr_cityscapes --out {dir}/m.onnx --batch 0",
     "--batch"),
)  # fmt: skip

P = "--out {dir}/report --parquet {dir}/"  # a results file of make_inputs
REPORT = _cases(
    ("no source", "", "one of the arguments"),
    ("unknown option", "--parquet {dir}/results.parquet --bogus 1", "unrecognized"),
    ("parquet missing", P + "absent.parquet", "no results file"),
    ("parquet truncated", P + "truncated.parquet", "cannot read"),
    ("parquet is text", P + "text.parquet", "cannot read"),
    ("parquet empty file", P + "empty.parquet", "cannot read"),
    ("folder without results", P + "empty_dir", "no results file"),
    ("parquet without rows", P + "no_rows.parquet", "0 rows"),
    ("parquet of another table", P + "other.parquet", "analysis.schema"),
    ("unknown objective", P + "results.parquet --objectives nope:max", "unknown objective"),
    ("reference not numbers", P + "results.parquet --reference a,b", "--reference"),
    ("out is a file", "--parquet {dir}/results.parquet --out {dir}/text.parquet",
     "output folder"),
    ("tracking uri without experiment", "--tracking-uri http://127.0.0.1:{port}",
     "needs --experiment"),
    ("dead tracking server", "--tracking-uri http://127.0.0.1:{port} --experiment x",
     "unreachable", 3),
    ("absent sqlite store", "--tracking-uri sqlite:///{dir}/absent.db --experiment x",
     "no MLflow database"),
    ("unknown uri scheme", "--tracking-uri bogus://x --experiment x", "scheme"),
    ("uri without scheme", "--tracking-uri {dir}/mlruns --experiment x", "no scheme"),
    ("host without scheme", "--tracking-uri localhost:5000 --experiment x", "scheme"),
)  # fmt: skip

S = "--storage {dir}/runs --config sweeps/configs/smoke.yaml "  # a good sweep file, then one fault
R = "--storage {dir}/runs --resume --name "  # a run folder of make_inputs
SWEEPS = _cases(
    ("sweep unknown key", S + "--set bogus=1", "bogus"),
    ("sweep num_samples 0", S + "--num-samples 0", "num_samples"),
    ("sweep num_samples 1e30", S + "--set num_samples=1e30", "num_samples"),
    ("sweep num_samples text", S + "--num-samples abc", "--num-samples"),
    ("sweep cpus 0", S + "--cpus-per-trial 0", "cpus_per_trial"),
    ("sweep inf lr", S + "--set base.search.arch_optim.lr=.inf", "finite"),
    ("sweep nan SSR weight", S + "--set base.search.ssr.op=.nan", "ssr.op"),
    ("sweep inf range", (*S.split(), "--set", "space.ssr.op={loguniform: [5, .inf]}"),
     "finite numbers"),
    ("sweep log range from 0", (*S.split(), "--set", "space.ssr.op={loguniform: [0, 5]}"),
     "> 0"),
    ("sweep bench.iters 0", S + "--set base.bench.iters=0", "bench.iters"),
    ("sweep train_size 0", S + "--set dataset.train_size=0", "train_size"),
    ("sweep scheduler metric", S + "--set scheduler.metric=val_mIoU", "scheduler.metric"),
    ("sweep unknown objective", (*S.split(), "--set", "objectives=[nope:max]"), "nope"),
    ("sweep study storage", S + "--set searcher.storage=bogus://x", "searcher.storage"),
    ("sweep max_resumes -1", S + "--set max_resumes=-1", "max_resumes must be >= 0"),
    ("sweep preemptible text", S + "--set preemptible=sometimes", "preemptible"),
    ("sweep file missing", "--storage {dir}/runs --config {dir}/absent.yaml", "does not exist"),
    ("sweep duplicate key", "--storage {dir}/runs --config {dir}/duplicate.yaml",
     "duplicate key 'iters'"),
    ("sweep not a mapping", "--storage {dir}/runs --config {dir}/list.yaml", "expected a mapping"),
    ("sweep not YAML", "--storage {dir}/runs --config {dir}/broken.yaml", "not valid YAML"),
    ("sweep bad --name", S + "--name a/b", "--name"),
    ("sweep unknown option", S + "--bogus", "unrecognized"),
    ("retry without resume", S + "--retry-failed", "--resume"),
    ("resume of nothing", R + "nothing", "holds no sweep"),
    ("resume damaged run.json", R + "broken-json", "run.json cannot be read"),
    ("resume damaged sweep.yaml", R + "broken-yaml", "not valid YAML"),
    ("sweep dead tracking server", S + "--tracking-uri http://127.0.0.1:{port}", "unreachable",
     3),
    ("sweep file tracking store", S + "--tracking-uri file:///{dir}/mlruns", "file stores", 3),
    ("sweep relative sqlite", S + "--tracking-uri sqlite:///rel.db", "absolute path", 3),
    ("sweep dead Ray address", S + "--address 127.0.0.1:{port}", "unreachable", 3),
    ("sweep unwritable storage", "--config sweeps/configs/smoke.yaml --storage /proc/ssr-runs "
     "--tracking-uri sqlite:///{dir}/t.db", "cannot be created"),
)  # fmt: skip

# Cases run at once: each new sweep gets its own storage, so that two default run names
# (<sweep>-<date>-<time>, one-second resolution) started in the same second cannot collide.
SWEEPS = [
    replace(c, argv=(c.argv[0], f"{{dir}}/runs-{i}", *c.argv[2:]))
    if c.argv[:3] == ("--storage", "{dir}/runs", "--config")
    else c
    for i, c in enumerate(SWEEPS)
]

#: command name -> its bad inputs.
CASES: dict[str, list[Case]] = {"ssr": SSR, "analysis.report": REPORT, "sweeps/run.py": SWEEPS}


def free_port() -> int:
    """A local TCP port that nobody listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _genotype(**change: object) -> dict:
    g = json.loads(GENOTYPE.read_text())
    g.pop("id", None)
    g.update(change)
    return g


def make_inputs(folder: Path, results: Path) -> None:
    """Damaged genotypes, weights, configs and result files in ``folder``; ``results`` is a good
    ``results.parquet`` the damaged ones are cut from."""
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    g = _genotype()
    files: dict[str, str | bytes] = {
        "broken.json": '{"stem": 16, "reductions": [',
        "duplicate.json": json.dumps(g)[:-1] + ', "stem": 16}',
        "binary.json": b"\xff\xfe\x00\x81" * 16,
        "list.json": "[1, 2]",
        "text.pt": "hello",
        "duplicate.yaml": "iters: 5\nwarmup: 1\niters: 6\n",
        "list.yaml": "- 1\n- 2\n",
        "broken.yaml": "iters: [1, 2\n",
        "text.parquet": "hello",
        "empty.parquet": "",
    }
    layers = g["layers"]
    variants = {
        "huge.json": {"layers": [{**layers[0], "c_mid": 10**9}, *layers[1:]]},
        "float.json": {"layers": [{**layers[0], "c_mid": 1e9}, *layers[1:]]},
        "one_stage.json": {
            "reductions": g["reductions"][:1],
            "layers": [x for x in layers if x["stage"] == 0],
        },
        "no_chain.json": {"layers": [layers[0], {**layers[1], "c_in": 63}, *layers[2:]]},
        "negative.json": {"layers": [{**layers[0], "c_mid": -4}, *layers[1:]]},
        "head.json": {"head": "softmax"},
        "wrong_id.json": {"id": "0123456789"},
    }
    for name, change in variants.items():
        files[name] = json.dumps(_genotype(**change))
    for name, content in files.items():
        path = folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())

    class Evil:  # unpickling it would call a function: weights_only must refuse it
        def __reduce__(self) -> tuple:
            return (print, ("unpickled: this must never run",))

    (folder / "evil.pt").write_bytes(pickle.dumps({"model": Evil()}))
    torch.save([1, 2], folder / "list.pt")
    torch.save({"conv.weight": torch.zeros(2, 2)}, folder / "other.pt")
    (folder / "empty_dir").mkdir(exist_ok=True)
    data = results.read_bytes()
    (folder / "results.parquet").write_bytes(data)
    (folder / "truncated.parquet").write_bytes(data[: len(data) // 2])
    import pandas as pd

    frame = pd.read_parquet(results)
    frame.iloc[:0].to_parquet(folder / "no_rows.parquet")
    pd.DataFrame({"a": [1, 2], "status": ["done", "done"]}).to_parquet(folder / "other.parquet")
    smoke = (ROOT / "sweeps" / "configs" / "smoke.yaml").read_text()
    for run, damaged in (("broken-json", ("run.json", "{")), ("broken-yaml", ("sweep.yaml", "["))):
        (folder / "runs" / run).mkdir(parents=True, exist_ok=True)
        (folder / "runs" / run / "sweep.yaml").write_text(smoke)
        (folder / "runs" / run / damaged[0]).write_text(damaged[1])


def run_case(command: str, case: Case, folder: Path, port: int) -> tuple[int, str, float]:
    """Run one case; its exit status, stderr and seconds (a hang is killed at :data:`KILL_S`)."""
    argv = [a.replace("{dir}", str(folder)).replace("{port}", str(port)) for a in case.argv]
    start = time.monotonic()
    try:
        proc = subprocess.run(
            [*COMMANDS[command], *argv],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=KILL_S,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else exc.stderr or ""
        return -9, err, time.monotonic() - start
    return proc.returncode, proc.stderr, time.monotonic() - start


def problems(case: Case, status: int, stderr: str, seconds: float) -> list[str]:
    """What is wrong with a case's result (empty: it behaved)."""
    out = []
    lines = [line for line in stderr.splitlines() if line.strip()]
    if status != case.status:
        out.append(f"exit status {status}, expected {case.status}")
    if "Traceback" in stderr:
        out.append("a traceback")
    if len(lines) != 1:
        out.append(f"{len(lines)} stderr lines, expected 1")
    elif case.says.lower() not in lines[0].lower():
        out.append(f"the line does not say {case.says!r}")
    if seconds > LIMIT_S:
        out.append(f"{seconds:.1f} s, more than {LIMIT_S:.0f} s")
    return out
