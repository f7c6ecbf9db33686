"""The one way a command line declares and reads ``--config FILE`` and ``--set KEY=VALUE``, and
its parser whose usage errors are one line (:class:`OneLineParser`).

Every entry point (``python -m ssr <command>``, ``sweeps/run.py``) layers its configuration the
same way: defaults <- ``--config`` YAML file <- ``--set`` items in order. :func:`add_config_args`
declares both options (``--set`` is repeatable and always stored as ``args.set``);
:func:`parse_set` turns the items into a dotted-key dict with YAML-typed values, using the one
parser of :func:`ssr.config.parse_overrides`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, NoReturn

from ssr.config import ConfigError, parse_overrides
from ssr.config.errors import EXIT_USAGE


class OneLineParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one line on stderr (exit status 2), like
    every other error of the command line, instead of the usage block and the message."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def add_config_args(
    parser: argparse.ArgumentParser,
    *,
    config_help: str,
    default_config: str | Path | None = None,
) -> None:
    """Add ``--config FILE`` (a :class:`~pathlib.Path`) and ``--set KEY=VALUE`` (``dest='set'``)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=Path(default_config) if default_config is not None else None,
        help=config_help,
    )
    parser.add_argument(
        "--set",
        dest="set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one config value, YAML-typed (repeatable; later wins), e.g. --set seed=3",
    )


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``['ssr.op=30', 'shrink.order=[op, out]']`` -> ``{'ssr.op': 30, 'shrink.order': [...]}``.

    Keys stay dotted (ready for :func:`ssr.config.set_dotted`), values are YAML scalars, lists
    or mappings. A repeated key keeps its last value at its last position, so applying the items
    in dict order gives the same result as applying them one by one. A malformed item raises
    :class:`ssr.config.ConfigError` naming it.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        nested = parse_overrides([item])  # the one KEY=VALUE parser; raises on a bad item
        key = item.split("=", 1)[0].strip()
        value: Any = nested
        for part in key.split("."):
            value = value[part]
        out.pop(key, None)
        out[key] = value
    return out


__all__ = ["ConfigError", "OneLineParser", "add_config_args", "parse_set"]
