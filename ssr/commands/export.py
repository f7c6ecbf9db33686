"""``python -m ssr export``: a genotype's network as one ONNX file.

Through :func:`ssr.deploy.onnx_export.export_onnx` (fixed input shape, single file, checked).
"""

from __future__ import annotations

import argparse

from ssr.commands import Command
from ssr.commands.model_args import DEFAULT_INPUT, add_model_args, build_model, positive_int
from ssr.files.atomic import to_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p)
    p.add_argument("--batch", type=positive_int, default=1)
    p.add_argument("--out", required=True, help="path of the .onnx file")
    p.add_argument("--fold-bn", action="store_true", help="fold BatchNorm first")
    p.add_argument(
        "--optimize", action="store_true", help="export the exact inference form (ssr.deploy)"
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime comparison")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Write the file; print nodes, seconds and max |diff| (or one JSON object)."""
    from ssr.deploy import deploy, fold_bn
    from ssr.deploy.onnx_export import export_onnx

    genotype, model = build_model(args)
    if args.fold_bn:
        model = fold_bn(model)
    if args.optimize:
        model = deploy(model)
    h, w = args.input or DEFAULT_INPUT
    res = export_onnx(model, (args.batch, 3, h, w), args.out, verify=not args.no_verify)
    row = {"genotype_id": genotype.id, **res.to_dict()}
    if args.json:
        print(to_json(row))
    else:
        diff = "n/a" if res.max_abs_diff is None else f"{res.max_abs_diff:.2e}"
        print(
            f"wrote {res.path}: {res.nodes} nodes, opset {res.opset}, {res.exporter} exporter, "
            f"{res.seconds:.1f} s, max |onnx - torch| = {diff}"
        )
    return 0


COMMAND = Command(
    name="export",
    help="export a genotype's network to one ONNX file",
    description="Export with ssr.deploy.onnx_export.export_onnx (fixed input shape, single file).",
    add_arguments=add_arguments,
    run=run,
)
