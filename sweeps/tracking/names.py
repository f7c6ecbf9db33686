"""Short names of a sweep's trials: the baseline, the values the sweep varied, the trial number.

Tune names a trial by a hex id (``6f1e2_00007``) and the full config; a person browsing runs
wants to see which method and which settings a trial tried. :func:`trial_label` gives
``ssr op=32 out=12 thr=.15 #08``: the baseline first, then only the sampled values under short
keys, then the trial's number in the sweep. It names the MLflow child runs
(:mod:`sweeps.tracking.runs`) and the console lines (:mod:`sweeps.progress`).
:func:`defining_params` picks the few config values that define a run (the MLflow params).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sweeps.contract.protocol import SAMPLED_KEY

#: Short forms of config key components (the last component names a key on its own).
ABBREVIATIONS = {
    "threshold": "thr",
    "warmup": "wu",
    "every": "ev",
    "weight": "w",
    "target": "tgt",
    "flops": "fl",
    "arch_optim": "arch",
    "weight_optim": "wopt",
    "retrain": "rt",
}
#: Parents whose children are named by their last component alone (``ssr.op`` -> ``op``).
PLAIN_PARENTS = ("", "ssr", "shrink", "search")
#: Config values (as ``cfg.<key>`` of :func:`sweeps.contract.params.flat_params`) that define any run.
DEFINING = (
    "cfg.baseline",
    "cfg.seed",
    "cfg.data.name",
    "cfg.data.height",
    "cfg.data.width",
    "cfg.epochs",
    "cfg.retrain.epochs",
)
_TUNE_ID = re.compile(r"_(\d+)$")


def short_value(v: Any) -> str:
    """A value in a few characters: ``32``, ``3.1``, ``.15``, ``.031``, ``1.2e-05``, ``ssr``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 10:
        text = f"{v:.0f}"
    elif a >= 1e-3:
        text = f"{v:.2g}"
    else:
        text = f"{v:.1e}"
    if text.startswith("0."):
        text = text[1:]
    elif text.startswith("-0."):
        text = "-" + text[2:]
    return text


def short_keys(keys: Iterable[str]) -> dict[str, str]:
    """Short names of sweep keys: the last component (abbreviated), with its parent when the
    parent is not a plain one (``flops.weight`` -> ``flops.w``) or two keys would collide."""
    keys = list(keys)

    def abbr(part: str) -> str:
        return ABBREVIATIONS.get(part, part)

    def parent(key: str) -> str:
        parts = key.split(".")
        return parts[-2] if len(parts) > 1 else ""

    def name(key: str, long: bool) -> str:
        last = abbr(key.split(".")[-1])
        return f"{abbr(parent(key))}.{last}" if (long and parent(key)) else last

    short = {k: name(k, parent(k) not in PLAIN_PARENTS) for k in keys}
    taken = list(short.values())
    return {k: name(k, True) if taken.count(v) > 1 else v for k, v in short.items()}


def trial_number(trial_id: str, tag: str | None = None) -> str:
    """The trial's number in the sweep, from 1: ``#08``.

    Tune's random and grid generators number their trial ids (``<prefix>_00007``, from 0);
    Optuna's trials have random ids but an ``experiment_tag`` that starts with their number
    (``8_dims=...``, from 1). Without either, the trial id itself.
    """
    m = _TUNE_ID.search(trial_id or "")
    if m:
        return f"#{int(m.group(1)) + 1:02d}"
    head = str(tag or "").split("_", 1)[0]
    return f"#{int(head):02d}" if head.isdigit() else str(trial_id)


def sampled_values(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values a Tune trial config sampled for the sweep's parameters."""
    values = dict((config or {}).get(SAMPLED_KEY) or {})
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in values.items()}


def varied_values(config: Mapping[str, Any] | None, varied: Sequence[str] | None) -> dict:
    """The sampled values of the keys the sweep varies (all sampled keys when ``varied`` is None),
    without ``baseline``."""
    values = sampled_values(config)
    keys = [k for k in values if (varied is None or k in varied) and k != "baseline"]
    return {k: values[k] for k in keys}


def baseline_of(config: Mapping[str, Any] | None) -> str:
    """The trial's baseline (``ssr`` unless the sweep sets another)."""
    return str(sampled_values(config).get("baseline", "ssr"))


def settings_text(config: Mapping[str, Any] | None, varied: Sequence[str] | None) -> str:
    """``ssr op=32 out=12 thr=.15``: the baseline and the varied values under short keys."""
    values = varied_values(config, varied)
    names = short_keys(values)
    return " ".join(
        [baseline_of(config), *(f"{names[k]}={short_value(v)}" for k, v in values.items())]
    )


def trial_label(
    config: Mapping[str, Any] | None, number: str, varied: Sequence[str] | None = None
) -> str:
    """``ssr op=32 out=12 thr=.15 #08``: the MLflow run name of a trial (``number`` from
    :func:`trial_number`)."""
    return f"{settings_text(config, varied)} {number}"


def stopped_label(label: str, epoch: int) -> str:
    """``stopped@6 · ssr op=32 out=12 thr=.15 #08``: the run name of a trial the scheduler
    stopped after ``epoch`` epochs. The mark comes first because the MLflow runs table shows a
    name's beginning, and a stopped trial ends FINISHED like a complete one."""
    return f"stopped@{epoch} · {label}"


def defining_params(flat: Mapping[str, Any], varied: Sequence[str] | None) -> dict[str, Any]:
    """The MLflow params of a trial: the config values the sweep varied and those that define
    any run (baseline, seed, dataset and its size, epoch budgets), from ``cfg.*`` of
    :func:`sweeps.contract.params.flat_params`. The whole config is the ``config.resolved.yaml`` artifact.
    """
    wanted = list(DEFINING)
    for key in varied or ():
        wanted.append(f"cfg.{key.removeprefix('search.')}")
    return {k: flat[k] for k in dict.fromkeys(wanted) if k in flat}
