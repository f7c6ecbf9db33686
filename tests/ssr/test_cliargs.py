"""The shared ``--config/--set`` declaration and its KEY=VALUE parser."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from ssr.config import ConfigError, parse_overrides, set_dotted
from ssr.config.cliargs import add_config_args, parse_set


def test_add_config_args_declares_config_and_repeatable_set() -> None:
    p = argparse.ArgumentParser()
    add_config_args(p, config_help="a file", default_config="x.yaml")
    args = p.parse_args(["--set", "a=1", "--set", "b.c=[1, 2]"])
    assert args.config == Path("x.yaml")
    assert args.set == ["a=1", "b.c=[1, 2]"]
    assert p.parse_args(["--config", "y.yaml"]).config == Path("y.yaml")
    q = argparse.ArgumentParser()
    add_config_args(q, config_help="a file")
    assert q.parse_args([]).config is None
    assert q.parse_args([]).set == []


def test_parse_set_keeps_dotted_keys_and_yaml_types() -> None:
    got = parse_set(["ssr.op=30", "shrink.order=[op, out]", "data.root=null", "name=abc", "x="])
    assert got == {
        "ssr.op": 30,
        "shrink.order": ["op", "out"],
        "data.root": None,
        "name": "abc",
        "x": "",
    }
    assert parse_set(["space.ssr.op={loguniform: [5, 60]}"]) == {
        "space.ssr.op": {"loguniform": [5, 60]}
    }
    assert parse_set(None) == {}


def test_parse_set_agrees_with_parse_overrides_when_nested() -> None:
    items = ["a.b=1", "a={c: 2}", "a.b=3", "d=4"]
    nested: dict = {}
    for k, v in parse_set(items).items():
        set_dotted(nested, k, v)
    assert nested == parse_overrides(items) == {"a": {"c": 2, "b": 3}, "d": 4}


@pytest.mark.parametrize("item", ["novalue", "=3", "a=[1, 2"])
def test_parse_set_rejects_bad_items(item: str) -> None:
    with pytest.raises(ConfigError, match="override"):
        parse_set([item])
