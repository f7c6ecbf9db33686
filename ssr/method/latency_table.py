"""A per-device latency table: what each block of the search space costs (docs/method.md §4.4).

Hardware-aware NAS (FBNet, Wu et al. 2019; ProxylessNAS, Cai et al. 2019; FasterSeg, Chen et
al. 2020) steers a search by a lookup table of measured per-op latencies instead of FLOPs. This
module is the table as data: its JSON format (``ssr-latency-table/1``), loading with checks,
the table sum of one genotype (:func:`table_sum_ms`) and its corrected prediction
(:func:`predict_ms`). It is built by :mod:`ssr.measure.latency` and read by the search's
expected-latency term (:mod:`ssr.method.latency`), so it sits in ``ssr.method``, below both.

A network is stem + one reduction per stage + the stage's layers + head. What a block costs
depends on the widths the measured form runs it at (its **layout**):

- ``padded``: the ONNX Runtime deploy form (:class:`ssr.deploy.DeployNet`): a stage's residual
  stream keeps the stage's widest width ``P = max(reduction out, layer outs)``; every layer
  reads and writes ``P`` channels, so a layer costs ``g_op(P, c_mid)``, a reduction
  ``r(c_in, P)`` (with the pad to ``P``) and the aggregation head ``h(P_last, c_low)``
  (``c_low``: the first stage's output width);
- ``natural``: each layer at its own widths (eager torch, ``fold_bn`` + channels-last):
  ``g_op(c_in, c_mid, c_out)``, ``r(c_in)``, ``h(c_last, c_low)``.

Every entry is in milliseconds at the table's input size, device, backend, precision and
threads (``bench``). A correction ``scale * sum + offset_ms`` fitted on measured whole networks
covers what a sum of isolated blocks misses (fusion across blocks, memory effects, the slices).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ssr.config import BenchConfig, ConfigError, SpaceConfig, from_dict, to_dict
from ssr.method.genotype import Genotype, GenotypeError

__all__ = [
    "LATENCY_FORMAT",
    "Correction",
    "LatencyTable",
    "Piece",
    "StageGrid",
    "check_bench",
    "check_space",
    "check_table_for",
    "layout_of",
    "op_names",
    "piece_axes",
    "predict_ms",
    "reachable",
    "stage_grids",
    "table_sum_ms",
]

LATENCY_FORMAT = "ssr-latency-table/1"
LAYOUTS = ("padded", "natural")


def layout_of(backend: str) -> str:
    """The layout a backend's measured form runs (``measure(optimize=True)``): ONNX Runtime
    runs the padded deploy form, torch each layer at its own widths."""
    return "padded" if backend == "onnxruntime" else "natural"


def op_names(space: SpaceConfig) -> list[str]:
    """The ops of a layer in the supernet's order (``space.pools x space.dilations``)."""
    return [f"d{d}_p{p}" for p in space.pools for d in space.dilations]


@dataclass(frozen=True)
class StageGrid:
    """The widths stage ``s`` can take: ``options`` in the space's ``channel_remove`` order, the
    widths its stream can have (``values``: options and reduction outputs, ascending), the
    output widths of what feeds it (``prev``) and the reduction's output for each (``r_of``)."""

    width: int
    options: tuple[int, ...]
    values: tuple[int, ...]
    prev: tuple[int, ...]
    r_of: tuple[int, ...]
    c_conv: tuple[int, ...]
    size: tuple[int, int]

    @property
    def p_values(self) -> tuple[int, ...]:
        """Padded stream widths ``max(r, layer outs)`` that can occur."""
        low = max(min(self.r_of), min(self.options))
        return tuple(v for v in self.values if v >= low)


def stage_grids(space: SpaceConfig, height: int, width: int, reduction: str) -> list[StageGrid]:
    """Per stage the widths of :class:`StageGrid`, decoded by ``reduction`` (``exact``: the
    reduction conv keeps the supernet's width; ``official``: it fills the stage width,
    docs/method.md §12.8), and the stage's feature size (every 2x step rounds up, §12.15)."""
    if reduction not in ("exact", "official"):
        raise ConfigError(f"reduction width must be exact or official, got {reduction!r}")
    h, w = (height + 1) // 2, (width + 1) // 2
    prev, prev_max = (space.stem_width,), space.stem_width
    out = []
    for st in space.stages:
        h, w = (h + 1) // 2, (w + 1) // 2
        options = tuple(st.width - r for r in space.channel_remove)
        c_conv = tuple(st.width - (prev_max if reduction == "exact" else c) for c in prev)
        r_of = tuple(c + cc for c, cc in zip(prev, c_conv))
        values = tuple(sorted(set(options) | set(r_of)))
        out.append(StageGrid(st.width, options, values, prev, r_of, c_conv, (h, w)))
        prev, prev_max = tuple(sorted(set(options))), st.width
    return out


def piece_axes(
    grids: list[StageGrid], layout: str, head: str
) -> tuple[list[dict[str, tuple[int, ...]]], list[dict[str, tuple[int, ...]]], dict]:
    """The axes of every piece of a table: reductions and ops per stage, and the head.

    ``padded``: op ``(P, mid)``, reduction ``(in, P)``, head ``(P, low)``; ``natural``: op
    ``(in, mid, out)``, reduction ``(in,)``, head ``(out, low)`` (``low``: the first stage's
    output width; the search head has no ``low``).
    """
    reds, ops = [], []
    for g in grids:
        mids = tuple(sorted(set(g.options)))
        if layout == "padded":
            reds.append({"in": g.prev, "P": g.p_values})
            ops.append({"P": g.p_values, "mid": mids})
        else:
            reds.append({"in": g.prev})
            ops.append({"in": g.values, "mid": mids, "out": mids})
    last = grids[-1].p_values if layout == "padded" else tuple(sorted(set(grids[-1].options)))
    heads = {"P" if layout == "padded" else "out": last}
    if head == "aggregation":
        heads["low"] = tuple(sorted(set(grids[0].options)))
    return reds, ops, heads


def reachable(grids: list[StageGrid], layout: str, kind: str, stage: int, key: tuple) -> bool:
    """Whether a padded reduction ``(c_in, P)`` or head ``(P, low)`` can occur: the stream is
    at least as wide as the reduction's output (every other combination can)."""
    if layout != "padded":
        return True
    if kind == "reduction":
        g = grids[stage]
        return key[1] >= g.r_of[g.prev.index(key[0])]
    if kind == "head" and len(key) == 2 and len(grids) == 2:
        g = grids[-1]
        return key[0] >= g.r_of[g.prev.index(key[1])]
    return True


@dataclass(frozen=True)
class Piece:
    """Milliseconds of one block over a grid of widths: ``axes`` names each axis and lists its
    widths; ``ms`` is nested lists of that shape (None: a combination that cannot occur)."""

    axes: dict[str, tuple[int, ...]]
    ms: Any

    def at(self, *values: int) -> float:
        """The entry at these widths (ConfigError if the table has none)."""
        cur = self.ms
        for (name, axis), v in zip(self.axes.items(), values):
            if v not in axis:
                raise ConfigError(f"width {name}={v} is not in the table's {list(axis)}")
            cur = cur[axis.index(v)]
        if cur is None:
            raise ConfigError(f"the table has no entry at {dict(zip(self.axes, values))}")
        return float(cur)

    def to_dict(self) -> dict[str, Any]:
        return {"axes": {k: list(v) for k, v in self.axes.items()}, "ms": self.ms}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> Piece:
        if not isinstance(d, dict) or set(d) != {"axes", "ms"}:
            raise ConfigError(f"{where}: expected {{axes, ms}}")
        axes = {str(k): tuple(int(x) for x in v) for k, v in d["axes"].items()}
        _check_grid(d["ms"], [len(a) for a in axes.values()], where)
        return cls(axes, d["ms"])


def _check_grid(ms: Any, shape: list[int], where: str) -> None:
    if not shape:
        ok = ms is None or (isinstance(ms, (int, float)) and math.isfinite(ms) and ms >= 0)
        if not ok:
            raise ConfigError(f"{where}: entries must be finite milliseconds >= 0, got {ms!r}")
        return
    if not isinstance(ms, list) or len(ms) != shape[0]:
        raise ConfigError(f"{where}: ms does not have the shape of its axes {shape}")
    for row in ms:
        _check_grid(row, shape[1:], where)


@dataclass(frozen=True)
class Correction:
    """``predicted = scale * table sum + offset_ms``, a Theil-Sen line through measured networks
    (``networks``: genotype id, table sum and measured milliseconds of each)."""

    scale: float
    offset_ms: float
    networks: tuple[dict[str, Any], ...] = ()

    def apply(self, table_ms: float) -> float:
        return self.scale * table_ms + self.offset_ms


@dataclass(frozen=True)
class LatencyTable:
    """A latency table (see the module doc); :meth:`load` and :meth:`save` read and write it."""

    space: SpaceConfig
    bench: BenchConfig
    layout: str
    num_classes: int
    head: str
    reduction: str
    stem_ms: float
    reductions: tuple[Piece, ...]
    ops: tuple[dict[str, Piece], ...]
    head_piece: Piece
    device_name: str = ""
    clock: str = "wall"
    statistic: str = "median"
    correction: Correction | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def input_size(self) -> str:
        return f"{self.bench.height}x{self.bench.width}"

    def grids(self) -> list[StageGrid]:
        return stage_grids(self.space, self.bench.height, self.bench.width, self.reduction)

    def to_dict(self) -> dict[str, Any]:
        c = self.correction
        return {
            "format": LATENCY_FORMAT,
            "layout": self.layout,
            "device_name": self.device_name,
            "bench": to_dict(self.bench),
            "clock": self.clock,
            "statistic": self.statistic,
            "num_classes": self.num_classes,
            "head": self.head,
            "reduction": self.reduction,
            "space": to_dict(self.space),
            "stem_ms": self.stem_ms,
            "stages": [
                {"reduction": r.to_dict(), "ops": {k: p.to_dict() for k, p in ops.items()}}
                for r, ops in zip(self.reductions, self.ops)
            ],
            "head_ms": self.head_piece.to_dict(),
            "correction": None
            if c is None
            else {"scale": c.scale, "offset_ms": c.offset_ms, "networks": list(c.networks)},
            "meta": self.meta,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "latency table") -> LatencyTable:
        if not isinstance(d, dict) or d.get("format") != LATENCY_FORMAT:
            raise ConfigError(f"{where}: not a latency table (format {LATENCY_FORMAT!r})")
        try:
            space = from_dict(SpaceConfig, d["space"], "space")
            stages = d["stages"]
            if len(stages) != len(space.stages):
                raise ConfigError(f"{len(stages)} stages but the space has {len(space.stages)}")
            corr = d.get("correction")
            table = cls(
                space=space,
                bench=from_dict(BenchConfig, d["bench"], "bench"),
                layout=_one_of(d["layout"], LAYOUTS, "layout"),
                num_classes=int(d["num_classes"]),
                head=_one_of(d["head"], ("aggregation", "search"), "head"),
                reduction=_one_of(d["reduction"], ("exact", "official"), "reduction"),
                stem_ms=float(d["stem_ms"]),
                reductions=tuple(
                    Piece.from_dict(s["reduction"], f"stages[{i}].reduction")
                    for i, s in enumerate(stages)
                ),
                ops=tuple(
                    {k: Piece.from_dict(p, f"stages[{i}].ops.{k}") for k, p in s["ops"].items()}
                    for i, s in enumerate(stages)
                ),
                head_piece=Piece.from_dict(d["head_ms"], "head_ms"),
                device_name=str(d.get("device_name", "")),
                clock=str(d.get("clock", "wall")),
                statistic=str(d.get("statistic", "median")),
                correction=None if corr is None else _correction(corr),
                meta=dict(d.get("meta") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            msg = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ConfigError(f"{where}: {msg}") from None
        missing = [
            f"stages[{s}].ops.{o}"
            for s in range(len(table.ops))
            for o in op_names(space)
            if o not in table.ops[s]
        ]
        if missing:
            raise ConfigError(f"{where}: no entries for {missing[0]}")
        return table

    def save(self, path: str | Path) -> None:
        from ssr.files.atomic import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        """Read a table file; a missing or malformed file is a :class:`ConfigError`."""
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"latency table {path} does not exist")
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"latency table {path} is not JSON ({exc})") from None
        return cls.from_dict(data, where=f"latency table {path}")


def _one_of(value: Any, allowed: tuple[str, ...], key: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}")
    return str(value)


def _correction(d: Any) -> Correction:
    scale, offset = float(d["scale"]), float(d["offset_ms"])
    if not (math.isfinite(scale) and math.isfinite(offset) and scale > 0):
        raise ConfigError(f"correction must have a finite scale > 0, got {scale}, {offset}")
    return Correction(scale, offset, tuple(d.get("networks") or ()))


# --------------------------------------------------------------------------------------------
# Checks against a space, a benchmark and a genotype


def _space_key(space: SpaceConfig) -> tuple[Any, ...]:
    """What the table's entries depend on: stem, stage widths, ops and width options (depth
    ranges and dropout do not change what one block costs)."""
    return (
        space.stem_width,
        tuple(st.width for st in space.stages),
        tuple(space.dilations),
        tuple(space.pools),
        tuple(space.channel_remove),
    )


def check_space(table: LatencyTable, space: SpaceConfig, where: str = "latency.table") -> None:
    """Refuse a table built for another space (stem, stage widths, ops or width options)."""
    if _space_key(table.space) != _space_key(space):
        names = ("stem_width", "stage widths", "dilations", "pools", "channel_remove")
        diff = [
            f"{n} {a} vs {b}"
            for n, a, b in zip(names, _space_key(table.space), _space_key(space))
            if a != b
        ]
        raise ConfigError(f"{where}: the table was built for another space ({diff[0]})")


def check_bench(table: LatencyTable, bench: BenchConfig, num_classes: int | None = None) -> str:
    """Why ``table`` cannot predict what ``bench`` measures, in one line ('' when it can):
    another device kind, runtime, thread count, precision, input size or batch."""
    t = table.bench
    kind_t, kind_b = t.device.split(":")[0], bench.device.split(":")[0]
    pairs = [
        ("device", kind_t, kind_b),
        ("backend", t.backend, bench.backend),
        ("threads", t.threads, bench.threads),
        ("precision", t.precision, bench.precision),
        ("input", table.input_size, f"{bench.height}x{bench.width}"),
        ("batch", t.batch, bench.batch),
    ]
    if num_classes is not None:
        pairs.append(("num_classes", table.num_classes, num_classes))
    bad = [f"{k} {a} (table) vs {b} (bench)" for k, a, b in pairs if a != b]
    return "; ".join(bad)


def check_table_for(
    path: str, bench: BenchConfig, space: SpaceConfig, num_classes: int | None = None
) -> LatencyTable:
    """The table at ``path`` if it predicts what ``bench`` measures for ``space``; otherwise a
    one-line :class:`ConfigError` (a table of another device kind, runtime, thread count,
    precision, input size or space steers a search towards the wrong target)."""
    table = LatencyTable.load(path)
    check_space(table, space, f"latency.table {path}")
    why = check_bench(table, bench, num_classes)
    if why:
        raise ConfigError(f"latency.table {path} was not built for this benchmark: {why}")
    return table


def _check_genotype(table: LatencyTable, g: Genotype) -> None:
    space = table.space
    if g.stem != space.stem_width or g.num_stages != len(space.stages):
        raise GenotypeError(
            f"genotype {g.id} does not fit the table's space: stem {g.stem} and "
            f"{g.num_stages} stages vs {space.stem_width} and {len(space.stages)}"
        )
    if g.head != table.head:
        raise GenotypeError(f"genotype {g.id} has head {g.head!r}, the table {table.head!r}")
    names = set(op_names(space))
    for s, grid in enumerate(table.grids()):
        red = g.reductions[s]
        if red.c_in in grid.prev and red.c_conv != grid.c_conv[grid.prev.index(red.c_in)]:
            raise GenotypeError(
                f"genotype {g.id}: reduction {s} has {red.c_conv} conv channels; the table's "
                f"{table.reduction!r} decoding gives {grid.c_conv[grid.prev.index(red.c_in)]}"
            )
        for layer in g.stage_layers(s):
            if layer.op_name not in names:
                raise GenotypeError(f"genotype {g.id}: op {layer.op_name} is not in the table")


def table_sum_ms(table: LatencyTable, g: Genotype) -> dict[str, float]:
    """The table's milliseconds of each part of ``g`` (stem, reductions, layers, head) and their
    ``total``, uncorrected. A genotype the table does not cover is a :class:`GenotypeError`."""
    _check_genotype(table, g)
    padded = table.layout == "padded"
    parts = {"stem": table.stem_ms, "reductions": 0.0, "layers": 0.0, "head": 0.0}
    try:
        for s in range(g.num_stages):
            red, layers = g.reductions[s], g.stage_layers(s)
            p = max([red.c_out] + [x.c_out for x in layers])
            parts["reductions"] += table.reductions[s].at(
                *((red.c_in, p) if padded else (red.c_in,))
            )
            for x in layers:
                widths = (p, x.c_mid) if padded else (x.c_in, x.c_mid, x.c_out)
                parts["layers"] += table.ops[s][x.op_name].at(*widths)
        last = max([g.reductions[-1].c_out] + [x.c_out for x in g.stage_layers(g.num_stages - 1)])
        first = last if padded else g.stage_out(g.num_stages - 1)
        key = (first, g.stage_out(0)) if table.head == "aggregation" else (first,)
        parts["head"] = table.head_piece.at(*key)
    except ConfigError as exc:
        raise GenotypeError(f"genotype {g.id} does not fit the table: {exc}") from None
    parts["total"] = sum(parts.values())
    return parts


def predict_ms(table: LatencyTable, g: Genotype) -> float:
    """Predicted latency of ``g``: the table sum with the table's correction (if fitted)."""
    total = table_sum_ms(table, g)["total"]
    return total if table.correction is None else table.correction.apply(total)
