"""The commands of ``python -m ssr``, one module each; :mod:`ssr.cli` lists them in its table.

A command module defines ``COMMAND = Command(name, help, description, add_arguments, run)``:
``add_arguments(parser)`` declares its options (``--config``/``--set`` through
:func:`ssr.config.cliargs.add_config_args`) and ``run(args)`` does the work through library calls and
returns the exit status. Heavy imports (torch, the library) happen inside ``run``, so building
the parser stays fast; options can also set ``_precheck`` (``parser.set_defaults``), a check
:func:`ssr.cli.main` runs before ``run``, so that bad input is refused before torch loads. A user error raises :class:`ssr.config.ConfigError` (or
``FileNotFoundError`` / ``ImportError``), which :func:`ssr.cli.main` prints as one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Command"]


@dataclass(frozen=True)
class Command:
    """One row of the command table: its name, help texts, options and what it runs."""

    name: str
    help: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
