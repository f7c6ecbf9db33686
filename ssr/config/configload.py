"""Configs as data: a nested dict -> a frozen dataclass, typed, with dotted overrides.

:func:`from_dict` builds any config dataclass of :mod:`ssr.config` from a nested dict (a YAML
file, a sweep's base block, a Tune trial config), checking every key and type: unknown keys and
wrong types raise a :class:`~ssr.config.errors.ConfigError` that names the key (``ssr.opp``,
``epochs``) and, for an unknown key, the keys that exist. Fields may be typed ``int``, ``float``,
``bool``, ``str``, ``X | None``, ``tuple[X, ...]``, ``Literal[...]`` or a nested dataclass.

:func:`parse_overrides` turns ``--set`` items (``ssr.op=30``) into a nested dict whose values
are YAML-typed (read with the strict loader of :mod:`ssr.config.yamlload`, so ``lr=5e-4`` is a
number); :func:`deep_merge`, :func:`set_dotted`, :func:`flatten` and :func:`to_dict` move
between nested and dotted views; :func:`dump_yaml` writes a config as YAML (the
``config.resolved.yaml`` next to every output).

Range checks are the config classes' own (each checks itself when it is built, with the
functions of :mod:`ssr.config.validate`); their messages name keys relative to the class, and
:func:`from_dict` puts the path of a nested block in front (``data.height`` inside ``search``
reads ``search.data.height``).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ssr.config.errors import ConfigError
from ssr.config.yamlload import load_yaml, load_yaml_text

__all__ = [
    "dataclass_type",
    "deep_merge",
    "flatten",
    "from_dict",
    "load_config",
    "parse_overrides",
    "set_dotted",
    "to_dict",
]

T = TypeVar("T")


def from_dict(cls: type[T], data: dict[str, Any] | None, where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, checking keys and types.

    Missing keys take their defaults; unknown keys raise :class:`ConfigError` naming the key
    and the keys that exist. A partly given nested block starts from that field's own default
    (``arch_optim: {lr: 0.01}`` keeps the architecture optimiser's weight decay).
    """
    if data is None:
        data = {}
    if isinstance(data, cls):
        return data
    if not isinstance(data, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted((k for k in data if k not in fields), key=str)
    if unknown:
        raise ConfigError(
            f"unknown key {where + '.' if where else ''}{unknown[0]!s}; "
            f"valid keys here: {', '.join(sorted(fields))}"
        )
    kwargs = {}
    for name, value in data.items():
        key = f"{where}.{name}" if where else name
        tp = hints[name]
        if dataclass_type(tp) is not None and isinstance(value, dict):
            default = _field_default(fields[name])
            if dataclasses.is_dataclass(default):
                value = deep_merge(to_dict(default), value)
        kwargs[name] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # missing required fields of nested dataclasses
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None
    except ConfigError as exc:  # the class's own range check: name the key from the top
        raise ConfigError(f"{where}.{exc}" if where else str(exc)) from None


def dataclass_type(tp: Any) -> type | None:
    """The dataclass a field holds: ``tp`` itself, the ``X`` of ``X | None``, or None."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _coerce(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)  # type: ignore[arg-type]
    if tp is Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true/false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a config (tuples become lists), ready for YAML or JSON."""

    def conv(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: conv(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        return v

    return conv(cfg)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted-key view of a nested dict: ``{'ssr': {'op': 30}} -> {'ssr.op': 30}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def set_dotted(d: dict[str, Any], key: str, value: Any) -> None:
    """Set ``d['a']['b'] = value`` for ``key='a.b'``, creating levels as needed."""
    parts = key.split(".")
    cur = d
    for p in parts[:-1]:
        nxt = cur.get(p)
        if not isinstance(nxt, dict):
            nxt = {}
            cur[p] = nxt
        cur = nxt
    cur[parts[-1]] = value


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Turn ``['ssr.op=30', 'shrink.order=[op,out]']`` into a nested dict (YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part.strip() for part in key.split(".")):
            raise ConfigError(f"override {item!r} has an empty key")
        value = load_yaml_text(raw, f"override {item!r}") if raw.strip() else ""
        set_dotted(out, key, value)
    return out


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict merge; values of ``over`` win."""
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def dump_yaml(cfg: Any, path: str | Path) -> None:
    """Write a config as YAML (the ``config.resolved.yaml`` next to every output)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load_config(
    cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None
) -> T:
    """Defaults <- YAML file <- ``key=value`` overrides, as ``cls`` (which checks itself).

    A config that inherits (:meth:`ssr.config.RetrainConfig.inherit`) loaded on its own has no
    search to inherit from: its None fields take the default search's values.
    """
    data = load_yaml(path) if path else {}
    data = deep_merge(data, parse_overrides(overrides))
    cfg = from_dict(cls, data)
    inherit = getattr(cfg, "inherit", None)  # RetrainConfig's (this module is below its class)
    return inherit() if callable(inherit) else cfg
