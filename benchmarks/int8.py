"""INT8 against fp32: validation mIoU, prediction agreement and latency (docs/architecture.md §5).

    python -m ssr retrain --genotype ssr_cityscapes --data synthetic --epochs 12 \\
        --out runs/paper_256 --set data.height=256 --set data.width=512 ...   # brief training
    python benchmarks/int8.py --genotype ssr_cityscapes --weights runs/paper_256/best.pt \\
        --eval-inputs 256x512,512x1024 --threads 2 --json

For every evaluation size the network (weights from ``--weights``; an untrained network's mIoU
means nothing, so the weights are required) is exported in fp32 and quantized by
:func:`ssr.deploy.quantize.quantize_model`, calibrated on ``--calibration-images`` *training* images of
the synthetic set rendered at that size; both ONNX Runtime sessions then predict every
*validation* image. Reported per size: fp32 and int8 mIoU (:class:`ssr.train.metrics.ConfusionMatrix`,
logits upsampled to the label size as :func:`ssr.train.loop.evaluate` does), their difference in
points, and the share of pixels whose predicted class is the same in both.

Latency at ``--latency-input`` (batch 1): the fp32 network as exported, the exact fp32 deploy
form (:func:`ssr.deploy.deploy`) and the int8 form, timed in rotated passes
(:func:`ssr.measure.interleave.measure_interleaved`, so a change in the machine's load hits all three
alike) with the one procedure of :func:`ssr.measure.bench.measure`; each with the rate achieved against
this machine's probe (:mod:`ssr.measure.roofline`, int8 against the int8 probe). ``--exclude`` keeps
named ONNX nodes in fp32 (see :func:`ssr.deploy.quantize.node_names`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_size(text: str) -> tuple[int, int]:
    h, w = (int(v) for v in text.lower().split("x"))
    return h, w


def evaluate_pair(
    fp32_path: str, int8_path: str, data: Any, num_classes: int, threads: int
) -> dict[str, Any]:
    """mIoU of both ONNX files on ``data``'s validation split, and their argmax agreement."""
    import torch
    import torch.nn.functional as F

    from ssr.data import build_loader
    from ssr.deploy.onnx_export import ort_session
    from ssr.train.metrics import ConfusionMatrix

    sessions = {"fp32": ort_session(fp32_path, threads), "int8": ort_session(int8_path, threads)}
    conf = {k: ConfusionMatrix(num_classes) for k in sessions}
    agree = total = 0
    for x, y in build_loader(data, "val", shuffle=False):
        preds = {}
        for k, s in sessions.items():
            logits = torch.from_numpy(s.run(None, {s.get_inputs()[0].name: x.numpy()})[0])
            if logits.shape[-2:] != y.shape[-2:]:
                logits = F.interpolate(logits, y.shape[-2:], mode="bilinear", align_corners=False)
            preds[k] = logits.argmax(1)
            conf[k].update(preds[k], y)
        agree += int((preds["fp32"] == preds["int8"]).sum())
        total += preds["fp32"].numel()
    miou = {k: c.miou() for k, c in conf.items()}
    return {
        "miou_fp32": round(miou["fp32"], 4),
        "miou_int8": round(miou["int8"], 4),
        "miou_change_points": round(100 * (miou["int8"] - miou["fp32"]), 2),
        "pixel_agreement": round(agree / total, 4),
        "val_images": len(build_loader(data, "val", shuffle=False).dataset),
    }


def latency(model: Any, q: Any, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """fp32 as exported, fp32 deploy form and int8, in rotated passes, with the roofline."""
    import dataclasses

    from ssr.config import BenchConfig
    from ssr.deploy import deploy
    from ssr.deploy.onnx_export import export_onnx
    from ssr.measure.interleave import measure_interleaved
    from ssr.measure.roofline import achieved, probe
    from ssr.method.complexity import count_macs

    h, w = args.latency_input
    shape = (1, 3, h, w)
    dep = tmp / "deploy.onnx"
    export_onnx(deploy(model), shape, dep, verify=False)
    paths = {"fp32": q.fp32_path, "fp32-deploy": str(dep), "int8": q.path}
    cfg = BenchConfig(warmup=args.warmup, iters=args.iters, threads=args.threads)
    cfg = dataclasses.replace(cfg, backend="onnxruntime")
    spreads, record = measure_interleaved(paths, shape, cfg, args.passes)
    macs = count_macs(model, (3, h, w))
    out: dict[str, Any] = {"record": record, "gmacs": round(macs / 1e9, 3)}
    for name, sp in spreads.items():
        precision = "int8" if name == "int8" else "fp32"
        out[name] = {
            **sp.to_dict(),
            **achieved(macs, sp.latency_ms_median / 1e3, record["threads"], precision),
        }
    out["probe"] = probe(record["threads"]).to_dict()
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--genotype", default="ssr_cityscapes")
    p.add_argument("--weights", required=True, help="trained state dict or checkpoint")
    p.add_argument("--eval-inputs", default="256x512,512x1024", help="comma-separated HxW")
    p.add_argument("--latency-input", type=parse_size, default=(512, 1024))
    p.add_argument("--train-images", type=int, default=96, help="synthetic training set size")
    p.add_argument("--val-images", type=int, default=16, help="synthetic validation set size")
    p.add_argument("--calibration-images", type=int, default=16)
    p.add_argument("--method", default="minmax", help="minmax, entropy or percentile")
    p.add_argument("--exclude", default="", help="comma-separated ONNX node names kept fp32")
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=10, help="timed iterations per pass")
    p.add_argument("--passes", type=int, default=5, help="rotated passes (latency spread)")
    p.add_argument("--no-latency", action="store_true")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    import torch

    from ssr.commands.model_args import load_genotype, load_weights
    from ssr.config import DataConfig
    from ssr.deploy.quantize import quantize_model
    from ssr.measure.host import cpu_info
    from ssr.method.network import DerivedNet

    if args.threads:
        torch.set_num_threads(args.threads)
    genotype = load_genotype(args.genotype)
    model = DerivedNet(genotype, 19).eval()
    load_weights(model, Path(args.weights))
    exclude = [s for s in args.exclude.split(",") if s]
    out: dict[str, Any] = {
        "cpu": cpu_info(),
        "genotype_id": genotype.id,
        "weights": args.weights,
        "threads": args.threads or torch.get_num_threads(),
        "accuracy": [],
    }
    with tempfile.TemporaryDirectory(prefix="ssr-int8-") as tmp_dir:
        tmp = Path(tmp_dir)
        quantized: dict[tuple[int, int], Any] = {}
        for size in [parse_size(s) for s in args.eval_inputs.split(",")]:
            data = DataConfig(
                height=size[0],
                width=size[1],
                train_size=args.train_images,
                val_size=args.val_images,
                batch_size=1,
            )
            t0 = time.perf_counter()
            q = quantize_model(
                model,
                (1, 3, *size),
                tmp / f"{size[0]}x{size[1]}.int8.onnx",
                data,
                n_images=args.calibration_images,
                exclude=exclude,
                method=args.method,
            )
            row = {
                "input": f"{size[0]}x{size[1]}",
                **evaluate_pair(q.fp32_path, q.path, data, 19, args.threads),
                "calibration": f"{q.calibration}, {q.method}",
                "excluded": q.excluded,
                "int8_nodes": q.nodes,
                "seconds": round(time.perf_counter() - t0, 1),
            }
            quantized[size] = q
            out["accuracy"].append(row)
            if not args.json:
                print(
                    f"{row['input']:>9}: mIoU fp32 {row['miou_fp32']:.4f} int8 "
                    f"{row['miou_int8']:.4f} ({row['miou_change_points']:+.2f} points), "
                    f"argmax agreement {100 * row['pixel_agreement']:.2f} % "
                    f"({row['val_images']} val images; {row['calibration']})",
                    flush=True,
                )
        if not args.no_latency:
            h, w = args.latency_input
            q = quantized.get((h, w)) or quantize_model(
                model,
                (1, 3, h, w),
                tmp / f"latency-{h}x{w}.int8.onnx",
                DataConfig(train_size=args.train_images),
                n_images=args.calibration_images,
                exclude=exclude,
                method=args.method,
            )
            out["latency"] = latency(model, q, args, tmp)
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    if "latency" in out:
        lat = out["latency"]
        r = lat["record"]
        print(f"\nlatency {r['input']}, batch 1, {r['threads']} threads, {r['passes']} passes:")
        for name in ("fp32", "fp32-deploy", "int8"):
            v = lat[name]
            print(
                f"  {name:>12}: {v['latency_ms_median']:7.1f} ms "
                f"[{v['latency_ms_lo']:.1f}-{v['latency_ms_hi']:.1f}]  "
                f"{v['gmacs_per_s']:6.1f} GMAC/s = {v['pct_of_probe']:5.1f} % of "
                f"{v['probe_gmacs_per_s']:.0f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
