"""Options shared by the commands that build a genotype's network (``bench``, ``export``).

``--genotype`` (a JSON file or a shipped name), ``--input HxW``, ``--num-classes`` and
``--weights`` (a state dict or a checkpoint holding one), and the network they describe.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

__all__ = ["add_model_args", "build_model", "input_size", "load_genotype", "load_weights"]


def input_size(text: str) -> tuple[int, int]:
    """``'512x1024'`` -> ``(512, 1024)`` (an argparse ``type``)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"input size must be positive, got {text!r}")
    return h, w


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--genotype``, ``--input``, ``--num-classes`` and ``--weights``."""
    p.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    p.add_argument("--input", type=input_size, default=None, metavar="HxW", help="default 512x1024")
    p.add_argument("--num-classes", type=int, default=19)
    p.add_argument("--weights", default=None, help="state dict / checkpoint to load (optional)")


def load_genotype(name: str) -> Any:
    """A :class:`ssr.genotype.Genotype` from a file or a shipped name."""
    from ssr.genotype import Genotype

    return Genotype.load(name)


def build_model(args: argparse.Namespace) -> tuple[Any, Any]:
    """Genotype and its DerivedNet (eval mode), with ``--weights`` loaded."""
    from ssr.network import DerivedNet

    genotype = load_genotype(args.genotype)
    model = DerivedNet(genotype, args.num_classes).eval()
    if args.weights:
        load_weights(model, Path(args.weights))
    return genotype, model


def load_weights(model: Any, path: Path) -> None:
    """Load a state dict, or a checkpoint holding one under ``model`` / ``state_dict``."""
    import torch

    from ssr.config import ConfigError

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(f"{path} does not fit this genotype/num-classes: {first}") from None
