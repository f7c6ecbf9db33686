"""Reading YAML strictly: the one loader of every config file, sweep file and ``--set`` value.

PyYAML's ``safe_load`` reads YAML 1.1, which has two traps for configs (docs/architecture.md §6):

- a key given twice silently keeps its last value (``lr: 0.1`` ... ``lr: 0.01``);
- a number in scientific notation without a dot or without an exponent sign (``1e30``,
  ``5e-4``, ``1.5e3``) is a *string*, so ``lr: 5e-4`` is refused as "not a number".

:class:`StrictLoader` is ``SafeLoader`` with both fixed: a duplicate key in any mapping is an
error that names the key and its line, and every decimal in scientific notation is a float.
:func:`load_yaml_text` parses a text with it and turns a YAML error into a one-line
:class:`~ssr.config.errors.ConfigError` naming where it came from; :func:`load_yaml` reads a file that
must hold a mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode

from ssr.config.errors import ConfigError

__all__ = ["StrictLoader", "load_yaml", "load_yaml_text"]

_MERGE_TAG = "tag:yaml.org,2002:merge"
#: Scientific notation YAML 1.1 leaves a string: no dot, or no sign after the ``e``.
SCIENTIFIC = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+
        |[-+]?\.[0-9_]+[eE][-+]?[0-9]+)$""",
    re.X,
)


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate mapping keys and reads ``1e30`` as a float."""

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:  # ``<<: *base`` may be overridden on purpose
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key: the base class says so
                continue
            if duplicate:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {key!r}",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver("tag:yaml.org,2002:float", SCIENTIFIC, list("-+.0123456789"))


def _one_line(exc: yaml.YAMLError) -> str:
    """A YAML error as one line: what is wrong and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem is None:
        return " ".join(str(exc).split())
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    return f"{problem}{where}"


def load_yaml_text(text: str, where: str) -> Any:
    """Parse ``text`` with :class:`StrictLoader`; ``where`` (a file name, an override) names it
    in the one-line :class:`~ssr.config.errors.ConfigError` a malformed text raises."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {_one_line(exc)}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML file that holds a mapping (an empty file is ``{}``), with one-line errors for a
    missing, unreadable or malformed file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc}") from None
    data = load_yaml_text(text, f"config file {p}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"config file {p}: expected a mapping (key: value) at the top level, "
            f"got {type(data).__name__}"
        )
    return data
