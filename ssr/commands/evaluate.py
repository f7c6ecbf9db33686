"""``python -m ssr evaluate``: the accuracy of trained weights on one split (docs/method.md §8.3).

``--weights`` is the ``.pt`` of a retrained trial (``retrain/best.pt``: a checkpoint whose
``model`` is the state dict and whose ``genotype`` names the network it was trained for; any
state dict is read too) or an ``.onnx`` model (the registered ONNX model of a sweep's front,
``model.onnx`` of a trial), which runs in onnxruntime. The genotype must be the one the weights
were trained for: a checkpoint's recorded genotype, a state dict's tensor shapes and an ONNX
model's convolution shapes are checked against it.

Protocol (the one of :func:`ssr.train.loop.evaluate`, per image through :func:`ssr.method.gap.evaluate_images`):
images resized to ``--input HxW`` (default: the images' own size; an ONNX model's fixed input
size), labels read at their native size (``data.eval_label_size``), logits upsampled bilinearly
to it, void ignored. It prints mIoU with its percentile bootstrap interval over images
(:func:`ssr.train.metrics.bootstrap_miou_interval`, 90 % by default), the IoU of every class by name,
and pixel accuracy; ``--json`` prints one object. Every image of the split is used unless
``--set data.val_size=N`` caps them.

Data and its root come from ``--config`` (a :class:`~ssr.config.RetrainConfig` file, e.g. a
trial's ``config.resolved.yaml``: its ``data`` section is read) and ``--set data.root=DIR``.
"""

from __future__ import annotations

import argparse
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from ssr.commands import Command
from ssr.commands.model_args import input_size, load_genotype, positive_int
from ssr.config.cliargs import add_config_args
from ssr.files.atomic import to_json

WEIGHT_SUFFIXES = (".pt", ".pth", ".onnx")


def _level(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1), got {value}")
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    p.add_argument(
        "--weights", required=True, help="a retrained trial's .pt (or a state dict), or .onnx"
    )
    p.add_argument("--data", default=None, help="dataset name (camvid, cityscapes, synthetic)")
    p.add_argument("--split", default="val", help="train, val, test or trainval (default val)")
    p.add_argument(
        "--input", type=input_size, default=None, metavar="HxW", help="default: the images' size"
    )
    add_config_args(p, config_help="YAML file of RetrainConfig fields; its data section is read")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--level", type=_level, default=0.9, help="interval level (default 0.9)")
    p.add_argument("--resamples", type=positive_int, default=1000, help="bootstrap resamples")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(_precheck=precheck)


def precheck(args: argparse.Namespace) -> None:
    """Before torch loads: the weights file exists and has a known suffix, the genotype loads."""
    from ssr.config.errors import ConfigError
    from ssr.config.validate import check_device

    check_device(args.device, "--device")
    path = Path(args.weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    if path.suffix.lower() not in WEIGHT_SUFFIXES:
        raise ConfigError(
            f"weights file {path}: expected a .pt/.pth state dict or checkpoint, or an .onnx model"
        )
    load_genotype(args.genotype)


# --------------------------------------------------------------------------------------------
# Weights


def _check_recorded_genotype(path: Path, genotype: Any) -> None:
    """A checkpoint that records its genotype (``retrain/best.pt``) must record this one."""
    import torch

    from ssr.config.errors import ConfigError
    from ssr.method.genotype import Genotype

    state = torch.load(path, map_location="cpu", weights_only=True)
    recorded = state.get("genotype") if isinstance(state, dict) else None
    other = Genotype.from_json(recorded, str(path)).id if isinstance(recorded, str) else None
    if other is not None and other != genotype.id:
        raise ConfigError(
            f"{path} was trained for genotype {other}, not {genotype.id}; pass that genotype "
            "(the trial's genotype.json)"
        )


def torch_model(path: Path, genotype: Any, num_classes: int) -> Any:
    """The genotype's :class:`~ssr.method.network.DerivedNet` with the weights of ``path`` (eval mode)."""
    from ssr.commands.model_args import load_weights
    from ssr.method.network import DerivedNet

    model = DerivedNet(genotype, num_classes).eval()
    load_weights(model, path)  # refuses non-tensors and shapes that do not fit, in one line
    _check_recorded_genotype(path, genotype)
    return model


def _conv_shapes(shapes: Any) -> list[tuple[int, ...]]:
    return sorted(tuple(int(d) for d in s) for s in shapes if len(s) == 4)


def _check_onnx_fits(path: Path, genotype: Any, num_classes: int) -> None:
    """The ONNX model's convolution weights have the shapes of the genotype's network (as
    exported, or in its deployment form, :func:`ssr.deploy.deploy`) and it scores
    ``num_classes`` classes."""
    from ssr.config.errors import ConfigError
    from ssr.deploy import deploy
    from ssr.deploy.onnx_export import require
    from ssr.method.network import DerivedNet

    onnx = require("onnx")
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # not protobuf, truncated, ...: bad input
        raise ConfigError(f"{path} is not an ONNX model ({type(exc).__name__})") from None
    found = _conv_shapes(list(i.dims) for i in proto.graph.initializer)
    net = DerivedNet(genotype, num_classes).eval()
    forms = [net.state_dict(), deploy(net).state_dict()]
    if not any(found == _conv_shapes(v.shape for v in sd.values()) for sd in forms):
        raise ConfigError(
            f"{path} does not fit genotype {genotype.id} with {num_classes} classes: its "
            f"{len(found)} convolution weights differ from the network's; pass the genotype it "
            "was exported from"
        )


class OnnxModel:
    """An onnxruntime session called like a module: ``[N, 3, H, W]`` tensor -> logits tensor.

    ``input_hw`` is the model's fixed input size (None where the graph leaves it free).
    """

    training = False

    def __init__(self, path: Path, device: str):
        from ssr.config.errors import ConfigError
        from ssr.deploy.onnx_export import ort_session

        self.session = ort_session(path, device=device)
        inp = self.session.get_inputs()[0]
        self.input_name, shape = inp.name, list(inp.shape)
        if len(shape) != 4:
            raise ConfigError(f"{path}: input {inp.name} has shape {shape}, expected N x 3 x H x W")
        if isinstance(shape[0], int) and shape[0] != 1:
            raise ConfigError(
                f"{path} takes a fixed batch of {shape[0]}; export it with --batch 1 to evaluate"
            )
        fixed = all(isinstance(d, int) for d in shape[2:])
        self.input_hw = (int(shape[2]), int(shape[3])) if fixed else None

    def eval(self) -> OnnxModel:
        return self

    def train(self, mode: bool = True) -> OnnxModel:
        return self

    def __call__(self, x: Any) -> Any:
        import torch

        out = self.session.run(None, {self.input_name: x.detach().cpu().contiguous().numpy()})
        return torch.from_numpy(out[0]).to(x.device)


# --------------------------------------------------------------------------------------------
# Data and scores


def _native_sizes(data: Any, split: str) -> tuple[tuple[int, int], tuple[int, int] | None]:
    """``(image HxW, label HxW)`` of the split's first pair on disk; for a generated dataset,
    the configured input size and None (its labels exist at the input size only)."""
    from PIL import Image

    from ssr.data import build_dataset

    quiet = logging.getLogger("ssr.data")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # no aspect warning about a size that is not evaluated
    try:
        base = build_dataset(data, split).base  # type: ignore[arg-type]
    finally:
        quiet.setLevel(level)
    pairs = getattr(base, "pairs", None)
    if not pairs:
        return (data.height, data.width), None
    image, label = pairs[0]
    with Image.open(image) as im, Image.open(label) as lb:
        return (im.size[1], im.size[0]), (lb.size[1], lb.size[0])


def scores(per_image: Any, class_names: tuple[str, ...], level: float, resamples: int) -> dict:
    """mIoU, its bootstrap interval, per-class IoU by name and pixel accuracy of ``[N, K, K]``
    per-image confusion matrices (the definitions of :mod:`ssr.train.metrics`)."""
    from ssr.train.metrics import ConfusionMatrix, bootstrap_miou_interval

    conf = ConfusionMatrix(len(class_names))
    conf.matrix = per_image.sum(0)
    lo, hi = bootstrap_miou_interval(per_image, level=level, resamples=resamples)
    return {
        "miou": conf.miou(),
        "miou_lo": lo,
        "miou_hi": hi,
        "level": level,
        "resamples": resamples,
        "miou_official": conf.miou(absent="zero"),
        "per_class_iou": dict(zip(class_names, (float(v) for v in conf.per_class_iou()))),
        "pixel_acc": conf.pixel_accuracy(),
    }


def _load(args: argparse.Namespace) -> Any:
    """The data config: RetrainConfig defaults <- --config <- --set <- --data; a real dataset's
    split is read whole (``val_size`` None) unless ``--set data.val_size=N`` caps it (a trial's
    config caps what its training evaluated, not what this evaluates)."""
    from ssr.config import RetrainConfig, load_config

    items = [*args.set, *([f"data.name={args.data}"] if args.data is not None else [])]
    data = load_config(RetrainConfig, args.config, items).data
    capped = any(item.split("=", 1)[0].strip() == "data.val_size" for item in args.set)
    generated = data.name == "synthetic"  # generated images: val_size is how many to make
    return data if capped or generated else replace(data, val_size=None)


def run(args: argparse.Namespace) -> int:
    """Evaluate; print the scores (or one JSON object)."""
    from ssr.config.errors import ConfigError
    from ssr.data import build_loader, dataset_info
    from ssr.method.gap import evaluate_images

    data = _load(args)
    info = dataset_info(data.name)
    genotype = load_genotype(args.genotype)
    path = Path(args.weights)
    image_hw, label_hw = _native_sizes(data, args.split)
    onnx = path.suffix.lower() == ".onnx"
    if onnx:
        _check_onnx_fits(path, genotype, info.num_classes)
        model: Any = OnnxModel(path, args.device)
        fixed = model.input_hw
        if fixed and args.input and tuple(args.input) != fixed:
            h, w = args.input
            raise ConfigError(
                f"--input {h}x{w}, but {path} was exported for {fixed[0]}x{fixed[1]}; drop "
                "--input or export the model at that size"
            )
        hw = fixed or args.input or image_hw
    else:
        from ssr.commands.model_args import check_model_fits

        hw = args.input or image_hw
        check_model_fits(genotype, info.num_classes, hw, data.batch_size, args.device)
        model = torch_model(path, genotype, info.num_classes).to(args.device)
    data = replace(
        data, height=hw[0], width=hw[1], eval_label_size=label_hw, augment=False,
        batch_size=1 if onnx else data.batch_size,
    )  # fmt: skip
    t0 = time.perf_counter()
    per_image = evaluate_images(
        model, build_loader(data, args.split), info.num_classes, args.device
    )
    row = {
        "genotype_id": genotype.id,
        "weights": str(path),
        "format": "onnx" if onnx else "torch",
        "dataset": data.name,
        "split": args.split,
        "images": int(per_image.shape[0]),
        "input_size": f"{hw[0]}x{hw[1]}",
        "label_size": f"{label_hw[0]}x{label_hw[1]}" if label_hw else f"{hw[0]}x{hw[1]}",
        **scores(per_image, info.class_names, args.level, args.resamples),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    print(to_json(row) if args.json else _text(row))
    return 0


def _text(row: dict[str, Any]) -> str:
    pct = round(100 * row["level"])
    lines = [
        f"{row['genotype_id']} ({row['format']} weights {row['weights']}) on {row['dataset']} "
        f"{row['split']}: {row['images']} images, input {row['input_size']}, labels "
        f"{row['label_size']}",
        f"mIoU {row['miou']:.4f} ({pct} % interval {row['miou_lo']:.4f}-{row['miou_hi']:.4f} "
        f"over images); pixel accuracy {row['pixel_acc']:.4f}",
    ]
    width = max(len(n) for n in row["per_class_iou"])
    lines += [f"  {n:<{width}}  {v:.4f}" for n, v in row["per_class_iou"].items()]
    return "\n".join(lines)


COMMAND = Command(
    name="evaluate",
    help="mIoU (with its interval), per-class IoU and pixel accuracy of trained weights",
    description="Evaluate a .pt or .onnx network on one split; labels at their native size.",
    add_arguments=add_arguments,
    run=run,
)
