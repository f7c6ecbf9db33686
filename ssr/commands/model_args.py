"""Options shared by the commands that build a genotype's network (``bench``, ``export``).

``--genotype`` (a JSON file or a shipped name), ``--input HxW``, ``--num-classes`` and
``--weights`` (a state dict or a checkpoint holding one), and the network they describe.
"""

from __future__ import annotations

import argparse
import pickle
import warnings
from pathlib import Path
from typing import Any

__all__ = [
    "add_model_args",
    "build_model",
    "check_model_fits",
    "input_size",
    "load_genotype",
    "load_weights",
    "positive_int",
    "precheck",
]

DEFAULT_INPUT = (512, 1024)


def input_size(text: str) -> tuple[int, int]:
    """``'512x1024'`` -> ``(512, 1024)`` (an argparse ``type``)."""
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW such as 512x1024, got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"input size must be positive, got {text!r}")
    return h, w


def positive_int(text: str) -> int:
    """An integer >= 1 (an argparse ``type``: ``--num-classes``, ``--batch``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def add_model_args(p: argparse.ArgumentParser) -> None:
    """``--genotype``, ``--input``, ``--num-classes`` and ``--weights``."""
    p.add_argument("--genotype", required=True, help="genotype JSON file or shipped name")
    p.add_argument("--input", type=input_size, default=None, metavar="HxW", help="default 512x1024")
    p.add_argument("--num-classes", type=positive_int, default=19)
    p.add_argument("--weights", default=None, help="state dict / checkpoint to load (optional)")
    p.set_defaults(_precheck=precheck)


def precheck(args: argparse.Namespace) -> None:
    """What :func:`ssr.cli.main` checks before a command's heavy imports (torch): the genotype,
    the input, batch and memory (:func:`check_model_fits`) and that ``--weights`` exists, so a
    bad input is refused in a fraction of a second."""
    device = getattr(args, "device", None)
    if device is not None:
        from ssr.config.validate import check_device

        check_device(device, "--device")
    _genotype_of(args)
    if args.weights and not Path(args.weights).is_file():
        raise FileNotFoundError(f"weights file {args.weights} does not exist")


def _genotype_of(args: argparse.Namespace) -> Any:
    """The genotype of ``--genotype``, loaded and checked against the input once per run."""
    cached = getattr(args, "_genotype", None)
    if cached is not None:
        return cached
    genotype = load_genotype(args.genotype)
    hw = getattr(args, "input", None) or DEFAULT_INPUT
    n = getattr(args, "batch", None)
    device = getattr(args, "device", None) or "cpu"
    check_model_fits(genotype, args.num_classes, hw, 1 if n is None else n, device)
    args._genotype = genotype
    return genotype


def load_genotype(name: str) -> Any:
    """A :class:`ssr.method.genotype.Genotype` from a file or a shipped name."""
    from ssr.method.genotype import Genotype

    return Genotype.load(name)


def check_model_fits(
    genotype: Any,
    num_classes: int,
    input_hw: tuple[int, int],
    batch: int = 1,
    device: str = "cpu",
) -> None:
    """Refuse, in one line, an input the network's stride does not divide or a network and input
    whose estimated memory (:mod:`ssr.measure.footprint`) is more than ``device`` has free."""
    from ssr.config.errors import ConfigError
    from ssr.measure.footprint import check_fits, check_input_size, estimate

    if batch < 1:
        raise ConfigError(f"batch (--batch) must be >= 1, got {batch}")
    h, w = input_hw
    what = f"input {h}x{w}" + (f" (batch {batch})" if batch > 1 else "")
    if device != "cpu":  # the network is built and its MACs counted on the host first
        check_fits(estimate(genotype, num_classes, 1, h, w), f"input {h}x{w}", "cpu")
    check_fits(estimate(genotype, num_classes, batch, h, w), what, device)
    check_input_size(genotype, h, w)


def build_model(
    args: argparse.Namespace,
    input_hw: tuple[int, int] | None = None,
    batch: int | None = None,
) -> tuple[Any, Any]:
    """Genotype and its DerivedNet (eval mode), with ``--weights`` loaded.

    Before anything is allocated the input (``input_hw``, default ``--input`` or 512x1024) and
    ``batch`` (default ``--batch`` or 1) are checked against the network
    (:func:`check_model_fits`).
    """
    genotype = _genotype_of(args)
    if input_hw is not None or batch is not None:  # sizes other than the options' own
        hw = input_hw or getattr(args, "input", None) or DEFAULT_INPUT
        n = batch if batch is not None else getattr(args, "batch", None)
        device = getattr(args, "device", None) or "cpu"
        check_model_fits(genotype, args.num_classes, hw, 1 if n is None else n, device)
    from ssr.method.network import DerivedNet  # torch loads once the input is known to be good

    model = DerivedNet(genotype, args.num_classes).eval()
    if args.weights:
        load_weights(model, Path(args.weights))
    return genotype, model


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_weights(model: Any, path: Path) -> None:
    """Load a state dict, or a checkpoint holding one under ``model`` / ``state_dict``.

    Read with ``weights_only=True``: a file that is not a torch file, or whose pickle asks for
    anything but tensors and plain containers, is refused with one line.
    """
    import torch

    from ssr.config.errors import ConfigError

    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol it then refuses
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"weights file {path} holds objects other than tensors and plain containers; "
            "refused, since unpickling them could run code; save a state_dict instead"
        ) from None
    except Exception as exc:  # zip, EOF, magic number, ...: all bad input
        raise ConfigError(
            f"weights file {path} is not a torch file ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"weights file {path} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError, ValueError) as exc:
        raise ConfigError(
            f"{path} does not fit this genotype/num-classes: {_first_line(exc)}"
        ) from None
