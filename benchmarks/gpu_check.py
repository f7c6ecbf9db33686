#!/usr/bin/env python3
"""One prepared check of the GPU path (docs/architecture.md §6): speed, memory and agreement with the CPU.

Runs with nothing but PyTorch, numpy and PyYAML (onnx/onnxruntime optional; no Ray, MLflow,
Optuna or tqdm), from the repository root without installing it::

    python3 benchmarks/gpu_check.py [--device cuda] [--out benchmarks/results/gpu_check.json]
    python benchmarks/gpu_check.py --device cpu --tiny      # the same code at a tiny size

Sections (each one's failure is recorded and the others still run; the JSON is rewritten after
every section, so a run cut short keeps what it measured):

- ``search``: one iteration of the search (:class:`ssr.method.search_step.SearchStep`) of the paper's
  space (ssr/configs/search_cityscapes.yaml) at its batch and size (6 x 512x1024): at the start
  (whole supernet, weight + architecture step) and once discrete (the supernet restricted to the
  paper's genotype, weight step only, as the search does then), in fp32 and bf16, with peak
  memory (CUDA: ``max_memory_allocated``);
- ``retrain``: a retraining step of the paper network (:class:`ssr.run.retrain.TrainStep`, recipe of
  ssr/configs/retrain_cityscapes.yaml), fp32 and bf16;
- ``fps``: the paper network at batch 1, 512x1024 and 1024x2048, fp32 and fp16, eager
  (:func:`ssr.measure.bench.measure`: warm-up, synchronised per-iteration timing) and as a CUDA graph
  (captured once, replayed: the launch overhead of ~200 small kernels goes away), with the
  GPU's name;
- ``onnxruntime``: the exported network on ONNX Runtime's CUDA provider, if it is present;
- ``latency``: a latency table of the paper's space on the GPU in fp16 and bf16
  (:func:`ssr.measure.latency.build_table`, eager torch: docs/method.md §4.4), its correction
  fitted on 10 networks measured whole and its predictions checked on 30 more, beside GMACs
  (CUDA only);
- ``compiled``: eager against ``torch.compile`` (ssr/train/compiled.py) for the search's start
  iteration, a discrete search's weight step and a retraining step, fp32, with the first call's
  seconds (the compile) and the graphs compiled; where shapes and plan are static (discrete
  weight step, retraining) also as CUDA graphs (inductor's ``reduce-overhead``). CUDA only;
- ``agreement``: the supernet, the derived network with inherited weights, and a weight
  gradient, computed on the device and on the CPU from the same weights and input (fp32, TF32
  off): the largest difference relative to the largest value must be below 1e-3.

Targets on an H100/H200: the paper network at 512x1024, batch 1, fp16 >= 1000 FPS
(the paper: 175 FPS fp32 on a 2080 Ti); a start search iteration at batch 6 well under a second.
``--tiny``: 64x128 inputs, batch 2, a few iterations: every code path in seconds (CUDA graphs
and half precision FPS need CUDA and are reported as skipped on a CPU).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout, not installed
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402
from torch import nn  # noqa: E402

SEARCH_CONFIG = REPO / "ssr" / "configs" / "search_cityscapes.yaml"
RETRAIN_CONFIG = REPO / "ssr" / "configs" / "retrain_cityscapes.yaml"
GIB = 2**30


def _sizes(tiny: bool) -> dict[str, Any]:
    if tiny:
        return {"batch": 2, "hw": (64, 128), "fps_hw": [(64, 128), (128, 256)], "warmup": 1,
                "steps": 1, "iters": 5, "repeats": 1}  # fmt: skip
    return {"batch": 6, "hw": (512, 1024), "fps_hw": [(512, 1024), (1024, 2048)], "warmup": 3,
            "steps": 5, "iters": 100, "repeats": 3}  # fmt: skip


def _batch(n: int, hw: tuple[int, int], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    x, y = torch.rand(n, 3, *hw, generator=g), torch.randint(0, 19, (n, *hw), generator=g)
    return (x.pin_memory(), y.pin_memory()) if device.type == "cuda" else (x, y)


def _gib(n: int | None) -> float | None:
    return None if n is None else round(n / GIB, 3)


# --------------------------------------------------------------------------------------------
# Sections


def check_search(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    from ssr.config import SearchConfig, load_config
    from ssr.data.cityscapes import ERFNET_WEIGHTS
    from ssr.method.derive import restrict_to
    from ssr.method.genotype import Genotype
    from ssr.method.search_step import SearchStep
    from ssr.method.supernet import Supernet
    from ssr.run.trialcost import time_step
    from ssr.train.precision import cuda_habits

    rows = []
    for state in ("start", "discrete"):
        for precision in ("fp32", "bf16"):
            cfg = load_config(SearchConfig, SEARCH_CONFIG, [f"device={device}",
                                                            f"precision={precision}"])  # fmt: skip
            torch.manual_seed(0)
            net = Supernet(cfg.space, 19)
            if state == "discrete":
                restrict_to(net, Genotype.load("ssr_cityscapes"))
            net = net.to(device)
            weights = torch.tensor(ERFNET_WEIGHTS, device=device)
            step = SearchStep(net, cfg, weights, device)
            step.start_epoch(0)
            xy = _batch(sz["batch"], sz["hw"], device)
            arch = state == "start"  # once discrete the architecture step is skipped
            with cuda_habits(device):
                secs, peak, reserved = time_step(
                    lambda step=step, xy=xy, arch=arch: step((xy, xy), arch), device,
                    warmup=sz["warmup"],
                    steps=sz["steps"], params=list(net.parameters()), optimizer=step.w.optimizer,
                )  # fmt: skip
                step.end_epoch()  # the deferred divergence checks: a NaN step fails here
            rows.append({"section": "search", "state": state, "precision": precision,
                         "batch": sz["batch"], "input": "x".join(map(str, sz["hw"])),
                         "steps": "weight+arch" if arch else "weight",
                         "seconds_per_iteration": round(secs, 4), "peak_gib": _gib(peak),
                         "reserved_gib": _gib(reserved)})  # fmt: skip
            del step, net
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return rows


def check_retrain(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    from ssr.config import RetrainConfig, load_config
    from ssr.data.cityscapes import ERFNET_WEIGHTS
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet
    from ssr.run.retrain import TrainStep
    from ssr.run.trialcost import time_step
    from ssr.train.precision import cuda_habits

    rows = []
    for precision in ("fp32", "bf16"):
        cfg = load_config(RetrainConfig, RETRAIN_CONFIG, [f"device={device}",
                                                          f"precision={precision}"])  # fmt: skip
        torch.manual_seed(0)
        model = DerivedNet(Genotype.load("ssr_cityscapes"), 19).to(device)
        step = TrainStep(model, cfg, device)
        step.weights = torch.tensor(ERFNET_WEIGHTS, device=device)
        batch = _batch(sz["batch"], sz["hw"], device)
        step.checks.start(1)
        with cuda_habits(device):
            secs, peak, reserved = time_step(
                lambda step=step, batch=batch: step(batch), device, warmup=sz["warmup"],
                steps=sz["steps"],
                params=list(model.parameters()), optimizer=step.optimizer,
            )  # fmt: skip
        step.checks.flush()
        rows.append({"section": "retrain", "precision": precision, "batch": sz["batch"],
                     "input": "x".join(map(str, sz["hw"])), "seconds_per_step": round(secs, 4),
                     "peak_gib": _gib(peak), "reserved_gib": _gib(reserved)})  # fmt: skip
    return rows


def _compiled_steps(state: str, device: torch.device, sz: dict[str, Any]) -> dict[str, Any]:
    """``{form: (step, call, params, optimizer)}`` of one state, forms eager / compiled /
    compiled+CUDA graphs, each from the same seed."""
    from ssr.config import RetrainConfig, SearchConfig, load_config
    from ssr.data.cityscapes import ERFNET_WEIGHTS
    from ssr.method.derive import restrict_to
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet
    from ssr.method.search_step import SearchStep
    from ssr.method.supernet import Supernet
    from ssr.run.retrain import TrainStep
    from ssr.train.compiled import CompiledForward

    forms = ("eager", "compiled") + (("cuda_graphs",) if state != "start" else ())
    xy, weights, out = _batch(sz["batch"], sz["hw"], device), None, {}
    weights = torch.tensor(ERFNET_WEIGHTS, device=device)
    for form in forms:
        sets = [f"device={device}", f"compile={str(form != 'eager').lower()}"]
        torch.manual_seed(0)
        if state == "retrain":
            model = DerivedNet(Genotype.load("ssr_cityscapes"), 19).to(device)
            step = TrainStep(model, load_config(RetrainConfig, RETRAIN_CONFIG, sets), device)
            step.weights = weights
            if form == "cuda_graphs":
                step.forward = CompiledForward(model, True, cudagraphs=True)
            out[form] = (step, lambda s=step: s(xy), list(model.parameters()), step.optimizer)
            continue
        cfg = load_config(SearchConfig, SEARCH_CONFIG, sets)
        net = Supernet(cfg.space, 19)
        if state == "discrete":
            restrict_to(net, Genotype.load("ssr_cityscapes"))
        step = SearchStep(net.to(device), cfg, weights, device)
        step.start_epoch(0)
        if form == "cuda_graphs":
            step.forward = CompiledForward(step.net, True, cudagraphs=True)
        arch = state == "start"
        out[form] = (step, lambda s=step, a=arch: s((xy, xy), a), list(net.parameters()),
                     step.w.optimizer)  # fmt: skip
    return out


def check_compiled(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    """Eager against compiled (and CUDA graphs where static), see the module docstring."""
    if device.type != "cuda":
        return [
            {"section": "compiled", "skipped": "needs CUDA (CPU: benchmarks/compiled_steps.py)"}
        ]
    from ssr.run.trialcost import time_step
    from ssr.train.precision import cuda_habits

    rows = []
    for state in ("start", "discrete", "retrain"):
        for form, (step, call, params, opt) in _compiled_steps(state, device, sz).items():
            with cuda_habits(device):
                t0 = time.perf_counter()
                call()  # the first call compiles
                torch.cuda.synchronize(device)
                first = time.perf_counter() - t0
                secs, peak, _ = time_step(call, device, warmup=sz["warmup"], steps=sz["steps"],
                                          params=params, optimizer=opt)  # fmt: skip
            rows.append({"section": "compiled", "state": state, "form": form, "precision": "fp32",
                         "batch": sz["batch"], "input": "x".join(map(str, sz["hw"])),
                         "seconds_per_step": round(secs, 4), "first_call_seconds": round(first, 1),
                         "graphs": step.forward.compiles, "peak_gib": _gib(peak)})  # fmt: skip
            del step, call, params, opt
            torch.cuda.empty_cache()
    return rows


def cuda_graph(model: nn.Module, shape: tuple[int, ...], device: torch.device, dtype) -> nn.Module:
    """``model`` captured once as a CUDA graph; the returned module replays it (same input)."""
    model = model.to(device=device, dtype=dtype).eval()
    static_x = torch.randn(shape, device=device, dtype=dtype)
    torch.backends.cudnn.benchmark = True  # the captured kernels are the tuned ones
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.inference_mode(), torch.cuda.stream(side):
        for _ in range(3):
            model(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.inference_mode(), torch.cuda.graph(graph):
        static_y = model(static_x)

    class Replay(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:  # x is ignored: a fixed input
            graph.replay()
            return static_y

    return Replay()


def check_fps(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    import dataclasses

    from ssr.config import BenchConfig
    from ssr.measure.bench import measure
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    rows = []
    for h, w in sz["fps_hw"]:
        for precision in ("fp32", "fp16"):
            for form in ("eager", "cuda_graph"):
                row: dict[str, Any] = {"section": "fps", "input": f"{h}x{w}", "batch": 1,
                                       "precision": precision, "form": form}  # fmt: skip
                if device.type != "cuda" and (precision != "fp32" or form != "eager"):
                    rows.append({**row, "skipped": "needs CUDA"})
                    continue
                cfg = BenchConfig(height=h, width=w, batch=1, warmup=20 if sz["repeats"] > 1
                                  else 2, iters=sz["iters"], repeats=sz["repeats"],
                                  precision=precision, device=str(device))  # fmt: skip
                torch.manual_seed(0)
                model = DerivedNet(Genotype.load("ssr_cityscapes"), 19).eval()
                shape = (1, 3, h, w)
                if form == "cuda_graph":
                    dtype = torch.float16 if precision == "fp16" else torch.float32
                    model = cuda_graph(model, shape, device, dtype)
                    cfg = dataclasses.replace(cfg, precision="fp32")  # the graph holds the dtype
                res = measure(model, shape, cfg)
                rows.append({**row, "fps": res.fps_median, "latency_ms": res.latency_ms_median,
                             "latency_ms_p90": res.latency_ms_p90, "gpu": res.device,
                             "cv_between_passes": res.cv_between_passes})  # fmt: skip
    return rows


def check_onnxruntime(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    if device.type != "cuda":
        return [{"section": "onnxruntime", "skipped": "checks the CUDA provider: needs CUDA"}]
    try:
        import onnxruntime as ort
    except ImportError:
        return [{"section": "onnxruntime", "skipped": "onnxruntime is not installed"}]
    providers = ort.get_available_providers()
    if "CUDAExecutionProvider" not in providers:
        return [{"section": "onnxruntime", "skipped": f"no CUDA provider ({providers})"}]
    from ssr.config import BenchConfig
    from ssr.measure.bench import measure
    from ssr.method.genotype import Genotype
    from ssr.method.network import DerivedNet

    h, w = sz["fps_hw"][0]
    cfg = BenchConfig(height=h, width=w, warmup=10 if sz["repeats"] > 1 else 2,
                      iters=sz["iters"], repeats=sz["repeats"], backend="onnxruntime",
                      device=str(device))  # fmt: skip
    model = DerivedNet(Genotype.load("ssr_cityscapes"), 19).eval()
    res = measure(model, (1, 3, h, w), cfg)
    return [{"section": "onnxruntime", "input": f"{h}x{w}", "batch": 1, "precision": "fp32",
             "provider": "CUDA", "fps": res.fps_median,
             "latency_ms": res.latency_ms_median, "ort_version": ort.__version__}]  # fmt: skip


def _compare(name: str, ref: torch.Tensor, out: torch.Tensor, tol: float) -> dict[str, Any]:
    ref, out = ref.detach().double().cpu(), out.detach().double().cpu()
    diff = float((ref - out).abs().max())
    scale = float(ref.abs().max()) or 1.0
    return {"section": "agreement", "what": name, "max_abs_diff": diff,
            "relative": diff / scale, "tolerance": tol, "ok": diff / scale < tol}  # fmt: skip


def check_agreement(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    """Device vs CPU on the same weights and input: supernet, derived net, a weight gradient."""
    from ssr.config import SpaceConfig
    from ssr.method.derive import derive_network, restrict_to
    from ssr.method.genotype import Genotype
    from ssr.method.supernet import Supernet
    from ssr.train.loss import weighted_ce

    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        torch.manual_seed(0)
        net = Supernet(SpaceConfig(), 19).eval()  # eval: no dropout, BN running statistics
        x = torch.rand(2, 3, 64, 128, generator=torch.Generator().manual_seed(1))
        y = torch.randint(0, 19, (2, 8, 16), generator=torch.Generator().manual_seed(2))
        rows, tol = [], 1e-3
        on_dev = Supernet(SpaceConfig(), 19).eval()
        on_dev.load_state_dict(net.state_dict())
        on_dev.to(device)
        rows.append(_compare("supernet logits", net(x), on_dev(x.to(device)), tol))
        grads = []
        for model, inp in ((net, x), (on_dev, x.to(device))):
            model.zero_grad()
            weighted_ce(model(inp), y.to(inp.device)).backward()
            grads.append(model.stem.conv.weight.grad)
        rows.append(_compare("supernet stem weight gradient", grads[0], grads[1], tol))
        paper = Genotype.load("ssr_cityscapes")
        restrict_to(net, paper)
        restrict_to(on_dev, paper)
        ref, out = derive_network(net).eval(), derive_network(on_dev).eval()
        with torch.inference_mode():
            rows.append(
                _compare("derived network (inherited weights)", ref(x), out(x.to(device)), tol)
            )
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
    return rows


def check_latency(device: torch.device, sz: dict[str, Any]) -> list[dict[str, Any]]:
    """A latency table of the paper's space on the GPU (docs/method.md §4.4), in fp16 and bf16:
    eager torch, folded BN, channels-last (the ``natural`` layout), ``max_widths`` widths per
    axis timed; its correction fitted on ``fit`` random networks measured whole, then its
    predictions against ``held`` more, beside GMACs (as benchmarks/latency_model.py)."""
    if device.type != "cuda":
        return [{"section": "latency", "skipped": "needs CUDA"}]
    sys.path.insert(0, str(REPO / "benchmarks"))
    import random

    from latency_model import line, scores

    from ssr.config import BenchConfig, SpaceConfig
    from ssr.measure.latency import build_table, fit_correction, measure_networks
    from ssr.method.complexity import count_macs
    from ssr.method.derive import sample_genotype
    from ssr.method.latency_table import predict_ms
    from ssr.method.network import DerivedNet

    tiny = sz["repeats"] == 1
    (h, w), fit, held = sz["fps_hw"][0], (2 if tiny else 10), (3 if tiny else 30)
    rows = []
    for precision in ("fp16", "bf16"):
        cfg = BenchConfig(height=h, width=w, warmup=2 if tiny else 5, iters=sz["iters"] // 5 or 1,
                          repeats=sz["repeats"], backend="torch", precision=precision,
                          device=str(device))  # fmt: skip
        t0 = time.perf_counter()
        table = build_table(SpaceConfig(), cfg, max_widths=2 if tiny else 5, fit=0)
        build_s = time.perf_counter() - t0
        rng = random.Random(0)
        nets = [sample_genotype(table.space, rng) for _ in range(fit + held)]
        ms = measure_networks(nets, cfg, 19)
        table = fit_correction(table, nets[:fit], ms[:fit])
        table.save(
            REPO / "benchmarks" / "results" / f"latency_table_{device.type}_{precision}.json"
        )
        gm = [count_macs(DerivedNet(g, 19), (1, 3, h, w)) / 1e9 for g in nets]
        a, b = line(gm[:fit], ms[:fit])
        rows.append({"section": "latency", "precision": precision, "input": f"{h}x{w}",
                     "what": f"table ({table.meta['blocks_timed']} blocks) vs {held} networks",
                     "build_seconds": round(build_s, 1),
                     "table": scores([predict_ms(table, g) for g in nets[fit:]], ms[fit:]),
                     "gmacs": scores([a * x + b for x in gm[fit:]], ms[fit:]),
                     "measured_ms": [min(ms), max(ms)]})  # fmt: skip
    return rows


SECTIONS: dict[str, Callable[[torch.device, dict[str, Any]], list[dict[str, Any]]]] = {
    "agreement": check_agreement,
    "compiled": check_compiled,
    "fps": check_fps,
    "latency": check_latency,
    "onnxruntime": check_onnxruntime,
    "retrain": check_retrain,
    "search": check_search,
}


# --------------------------------------------------------------------------------------------
# Report


def machine(device: torch.device) -> dict[str, Any]:
    from ssr.measure.host import device_name

    info = {"device": device_name(str(device)), "torch": torch.__version__,
            "python": platform.python_version(), "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}  # fmt: skip
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu_memory_gib"] = round(props.total_memory / GIB, 1)
    return info


def table(rows: list[dict[str, Any]]) -> str:
    """One line per row: section, its settings, its figures."""
    keys = ("state", "what", "precision", "form", "input", "batch", "steps", "provider")
    figures = ("seconds_per_iteration", "seconds_per_step", "first_call_seconds", "graphs", "fps",
               "latency_ms", "peak_gib",
               "relative", "ok", "skipped", "error")  # fmt: skip
    lines = ["| section | settings | figures |", "| --- | --- | --- |"]
    for r in rows:
        settings = ", ".join(f"{r[k]}" for k in keys if r.get(k) is not None)
        figs = ", ".join(f"{k}={r[k]}" for k in figures if r.get(k) is not None)
        lines.append(f"| {r['section']} | {settings} | {figs} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--tiny", action="store_true", help="64x128, batch 2: every path in seconds")
    p.add_argument("--out", default=None, help="JSON file (a .md table is written next to it)")
    p.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run only these sections")
    args = p.parse_args(argv)
    from ssr.config import ConfigError
    from ssr.train.device import resolve_device

    try:
        device = resolve_device(args.device)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sz = _sizes(args.tiny)
    name = f"gpu_check_{device.type}{'_tiny' if args.tiny else ''}.json"
    out = Path(args.out) if args.out else REPO / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {"machine": machine(device), "tiny": args.tiny, "sizes": sz,
                              "rows": [], "seconds": {}}  # fmt: skip
    t_all = time.perf_counter()
    order = ("agreement", "search", "retrain", "compiled", "fps", "onnxruntime", "latency")
    for section in [s for s in order if not args.only or s in args.only]:
        t0 = time.perf_counter()
        try:
            report["rows"] += SECTIONS[section](device, sz)
        except Exception as exc:  # one section failing must not lose the others
            report["rows"].append({"section": section, "error": f"{type(exc).__name__}: {exc}",
                                   "traceback": traceback.format_exc()[-2000:]})  # fmt: skip
        report["seconds"][section] = round(time.perf_counter() - t0, 1)
        report["seconds"]["total"] = round(time.perf_counter() - t_all, 1)
        out.write_text(json.dumps(report, indent=1, default=str))
        print(f"{section}: {report['seconds'][section]} s", file=sys.stderr, flush=True)
    text = table(report["rows"])
    out.with_suffix(".md").write_text(
        f"{report['machine']}\n\n{text}\n\nseconds: {report['seconds']}\n"
    )
    print(report["machine"])
    print(text)
    print(f"written: {out} ({report['seconds']['total']} s)")
    bad = [r for r in report["rows"] if "error" in r or r.get("ok") is False]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
