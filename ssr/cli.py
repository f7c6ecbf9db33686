"""The command line of the library: ``python -m ssr <command>`` (docs/architecture.md §2).

Thin entry points over library calls. :data:`COMMANDS` is the table of commands (one module
each under :mod:`ssr.commands`); :func:`build_parser` is the one place the parser is built and
:func:`main` the one entry point. ``main`` is also the only place in ``ssr`` that configures
logging: the library's modules only log through ``logging.getLogger(__name__)``.

User errors (a bad option, config or genotype, an input that does not fit in memory, a missing
or unreadable file, a weights file that is not tensors, a missing optional package) print one
``error: ...`` line on stderr and exit with status 2, without a traceback; a run that diverged
(:class:`ssr.config.errors.DivergenceError`) prints its one line and exits with status 1; Ctrl-C exits
with 130 (the statuses: :mod:`ssr.config.errors`).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from ssr.commands import Command, bench, data, evaluate, export, latency, pipeline, retrain, search
from ssr.config.cliargs import OneLineParser
from ssr.config.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE

__all__ = [
    "COMMANDS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "OneLineParser",
    "build_parser",
    "configure_logging",
    "main",
]

# name -> command, in the order ``--help`` lists them.
COMMANDS: Mapping[str, Command] = MappingProxyType(
    {
        c.name: c
        for c in (
            search.COMMAND,
            retrain.COMMAND,
            bench.COMMAND,
            export.COMMAND,
            pipeline.COMMAND,
            evaluate.COMMAND,
            data.COMMAND,
            latency.COMMAND,
        )
    }
)


def build_parser(commands: Mapping[str, Command] | None = None) -> argparse.ArgumentParser:
    """The parser of ``python -m ssr``: one sub-parser per row of ``commands`` (default table)."""
    parser = OneLineParser(
        prog="python -m ssr", description="SSR: search, derived networks, retraining, measurement."
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in (COMMANDS if commands is None else commands).items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.description)
        cmd.add_arguments(p)
        p.set_defaults(_command=cmd)
    return parser


def configure_logging() -> None:
    """INFO lines of ``ssr`` (one per epoch) and warnings of everything else, on stderr."""
    logging.basicConfig(
        format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.WARNING
    )
    logging.getLogger("ssr").setLevel(logging.INFO)


def main(argv: Sequence[str] | None = None, commands: Mapping[str, Command] | None = None) -> int:
    """Entry point; returns the exit status (0 ok, 1 the run diverged, 2 user error)."""
    # GenotypeError, DatasetError: Config
    from ssr.config.errors import ConfigError, DivergenceError

    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    configure_logging()
    try:
        precheck = getattr(args, "_precheck", None)
        if precheck is not None:  # what options alone can show wrong, before heavy imports
            precheck(args)
        return int(args._command.run(args) or EXIT_OK)
    except (ConfigError, OSError, ImportError) as exc:  # bad input, a file, a package
        _error(exc)
        return EXIT_USAGE
    except DivergenceError as exc:
        _error(exc)
        return EXIT_FAILED
    except MemoryError as exc:  # what the estimate of ssr.measure.footprint did not foresee
        _error(
            f"out of memory ({str(exc) or 'the allocator refused'}); use a smaller input or batch"
        )
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _error(exc: BaseException | str) -> None:
    """One ``error: ...`` line on stderr, whatever line breaks the message holds."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    print(f"error: {'; '.join(lines) or type(exc).__name__}", file=sys.stderr)
