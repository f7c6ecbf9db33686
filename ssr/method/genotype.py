"""Genotypes (one concrete architecture) and the size of a search space.

A :class:`Genotype` is the discrete result of a search (docs/method.md §7): per searchable layer
its stage, dilation, pooling factor and the three widths ``c_in -> c_mid -> c_out``, plus the
reduction blocks in front of each stage and the head. It is a frozen value: hashable, exact
JSON round-trip, and a short stable id (:attr:`Genotype.id`) that joins search, retraining,
benchmarks, MLflow runs and analysis rows.

Reductions are ERFNet downsampler blocks (docs/method.md §2.1): a 3x3 stride-2 conv with
``c_conv`` outputs concatenated with a 2x2 max-pool of the ``c_in`` inputs, so
``c_out = c_conv + c_in``. The released paper network fills stage 2 to 128 channels
(``c_conv = 128 - c_in``, docs/method.md §7); networks derived from our supernet keep the
supernet's conv width (an exact sub-network, docs/method.md §12.8).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from ssr.config import ConfigError, SpaceConfig
from ssr.config.validate import MAX_CHANNELS  # the widest layer a space or a genotype may ask for

GENOTYPE_FORMAT = "ssr-genotype/1"
HEADS = ("aggregation", "search")


class GenotypeError(ConfigError):
    """A genotype is malformed: widths that do not chain, unknown op, negative sizes."""


@dataclass(frozen=True)
class LayerGene:
    """One searched layer: a factorized dilated 3x1/1x3 residual op (docs/method.md §2.2, §7)."""

    stage: int
    dilation: int
    pool: int
    c_in: int
    c_mid: int
    c_out: int

    @property
    def op_name(self) -> str:
        """Readable op name, e.g. ``d4_p2`` (dilation 4 at half resolution)."""
        return f"d{self.dilation}_p{self.pool}"


@dataclass(frozen=True)
class ReductionGene:
    """ERFNet downsampler: conv 3x3/2 (``c_in -> c_conv``) concatenated with max-pool."""

    c_in: int
    c_conv: int

    @property
    def c_out(self) -> int:
        return self.c_in + self.c_conv


@dataclass(frozen=True)
class Genotype:
    """A concrete architecture: stem, one reduction per stage, searched layers, head."""

    stem: int
    reductions: tuple[ReductionGene, ...]
    layers: tuple[LayerGene, ...]
    head: str = "aggregation"

    def __post_init__(self) -> None:
        validate_genotype(self)

    # ---- derived views -------------------------------------------------------------------
    @property
    def num_stages(self) -> int:
        return len(self.reductions)

    @property
    def depths(self) -> tuple[int, ...]:
        """Number of searched layers per stage."""
        return tuple(sum(1 for g in self.layers if g.stage == s) for s in range(self.num_stages))

    def stage_layers(self, stage: int) -> tuple[LayerGene, ...]:
        return tuple(g for g in self.layers if g.stage == stage)

    def stage_out(self, stage: int) -> int:
        """Width of the output of ``stage`` (its last layer, or its reduction if empty)."""
        layers = self.stage_layers(stage)
        return layers[-1].c_out if layers else self.reductions[stage].c_out

    def with_head(self, head: str) -> Genotype:
        return Genotype(self.stem, self.reductions, self.layers, head)

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": GENOTYPE_FORMAT,
            "stem": self.stem,
            "reductions": [{"c_in": r.c_in, "c_conv": r.c_conv} for r in self.reductions],
            "layers": [
                {
                    "stage": g.stage,
                    "dilation": g.dilation,
                    "pool": g.pool,
                    "c_in": g.c_in,
                    "c_mid": g.c_mid,
                    "c_out": g.c_out,
                }
                for g in self.layers
            ],
            "head": self.head,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @cached_property
    def id(self) -> str:
        """Short stable id: the first 10 hex digits of SHA-256 over the canonical JSON.

        The head is excluded so that the same searched body has one id whether it is
        evaluated with the search head or retrained with the aggregation head.
        """
        body = self.to_dict()
        body.pop("head")
        canon = json.dumps(body, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:10]

    @classmethod
    def from_dict(cls, data: Any, where: str = "genotype") -> Genotype:
        if not isinstance(data, dict):
            raise GenotypeError(f"{where}: expected a JSON object, got {type(data).__name__}")
        allowed = {"format", "stem", "reductions", "layers", "head", "id", "probabilities"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise GenotypeError(f"{where}: unknown key {unknown[0]!r}; allowed: {sorted(allowed)}")
        fmt = data.get("format", GENOTYPE_FORMAT)
        if fmt != GENOTYPE_FORMAT:
            raise GenotypeError(f"{where}: format {fmt!r} is not {GENOTYPE_FORMAT!r}")
        for key in ("stem", "reductions", "layers"):
            if key not in data:
                raise GenotypeError(f"{where}: missing key {key!r}")
        reductions = tuple(
            ReductionGene(**_fields(r, ("c_in", "c_conv"), f"{where}.reductions[{i}]"))
            for i, r in enumerate(_list(data["reductions"], f"{where}.reductions"))
        )
        layer_keys = ("stage", "dilation", "pool", "c_in", "c_mid", "c_out")
        layers = tuple(
            LayerGene(**_fields(g, layer_keys, f"{where}.layers[{i}]"))
            for i, g in enumerate(_list(data["layers"], f"{where}.layers"))
        )
        stem = data["stem"]
        if not isinstance(stem, int) or isinstance(stem, bool):
            raise GenotypeError(f"{where}.stem: expected an integer, got {stem!r}")
        head = data.get("head", "aggregation")
        geno = cls(stem, reductions, layers, head)
        if "id" in data and data["id"] != geno.id:
            raise GenotypeError(
                f"{where}: id {data['id']!r} does not match its content ({geno.id})"
            )
        return geno

    @classmethod
    def from_json(cls, text: str, where: str = "genotype") -> Genotype:
        try:
            data = json.loads(text, object_pairs_hook=_unique_keys)
        except json.JSONDecodeError as exc:
            raise GenotypeError(f"{where}: not valid JSON ({exc})") from None
        except _DuplicateKey as exc:
            raise GenotypeError(f"{where}: duplicate key {exc.args[0]!r}") from None
        return cls.from_dict(data, where)

    def save(self, path: str | Path) -> None:
        d = self.to_dict()
        d["id"] = self.id
        Path(path).write_text(json.dumps(d, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Genotype:
        """Load a genotype file, or a shipped one by name (``ssr_cityscapes``)."""
        p = Path(path)
        if not p.is_file():
            shipped = Path(__file__).parents[1] / "genotypes" / f"{p.stem}.json"
            if p.suffix in ("", ".json") and p.parent == Path(".") and shipped.is_file():
                p = shipped
            else:
                names = sorted(
                    q.stem for q in (Path(__file__).parents[1] / "genotypes").glob("*.json")
                )
                raise GenotypeError(
                    f"genotype file {path} does not exist (shipped genotypes: {', '.join(names)})"
                )
        try:
            text = p.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise GenotypeError(f"genotype file {p} cannot be read as JSON text: {exc}") from None
        return cls.from_json(text, where=str(p))


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a JSON object, refusing a key given twice (JSON keeps the last)."""
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _DuplicateKey(key)
        out[key] = value
    return out


def _list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise GenotypeError(f"{where}: expected a list, got {type(value).__name__}")
    return value


def _fields(obj: Any, keys: tuple[str, ...], where: str) -> dict[str, int]:
    if not isinstance(obj, dict):
        raise GenotypeError(f"{where}: expected an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(keys) - {"index", "op"})
    if unknown:
        raise GenotypeError(f"{where}: unknown key {unknown[0]!r}; expected {list(keys)}")
    out = {}
    for k in keys:
        if k not in obj:
            raise GenotypeError(f"{where}: missing key {k!r}")
        v = obj[k]
        if not isinstance(v, int) or isinstance(v, bool):
            raise GenotypeError(f"{where}.{k}: expected an integer, got {v!r}")
        out[k] = v
    return out


def validate_genotype(g: Genotype) -> None:
    """Check that the network can be built: sizes positive and at most :data:`MAX_CHANNELS`,
    ops known, widths chaining through the network, and enough stages for the head (the
    aggregation head fuses the first stage's output with the last's: two stages at least)."""
    if g.stem < 4:
        raise GenotypeError(f"stem width {g.stem} must be >= 4 (3 input channels + conv)")
    if g.head not in HEADS:
        raise GenotypeError(f"unknown head {g.head!r}; expected one of {HEADS}")
    if not g.reductions:
        raise GenotypeError("a genotype needs at least one reduction/stage")
    if g.head == "aggregation" and len(g.reductions) < 2:
        raise GenotypeError(
            f"the aggregation head needs at least two stages, this genotype has "
            f"{len(g.reductions)}; use head 'search' or add a stage"
        )
    widths = [("stem", g.stem)]
    widths += [(f"reductions[{i}].c_conv", r.c_conv) for i, r in enumerate(g.reductions)]
    widths += [
        (f"layers[{i}].{k}", getattr(layer, k))
        for i, layer in enumerate(g.layers)
        for k in ("c_mid", "c_out")
    ]
    for where, width in widths:
        if width > MAX_CHANNELS:
            raise GenotypeError(
                f"{where}={width} channels is more than {MAX_CHANNELS}: not a network this "
                "library builds (the paper's widest layer has 128)"
            )
    prev = g.stem
    stage_of_prev = -1
    for i, r in enumerate(g.reductions):
        if r.c_in <= 0 or r.c_conv <= 0:
            raise GenotypeError(f"reductions[{i}]: widths must be positive, got {r}")
        layers = g.stage_layers(i)
        if r.c_in != prev:
            raise GenotypeError(
                f"reductions[{i}].c_in={r.c_in} but the previous "
                f"{'stage' if stage_of_prev >= 0 else 'stem'} outputs {prev} channels"
            )
        prev = r.c_out
        for j, layer in enumerate(layers):
            where = f"stage {i} layer {j}"
            for k in ("c_in", "c_mid", "c_out"):
                if getattr(layer, k) <= 0:
                    raise GenotypeError(f"{where}: {k} must be positive, got {getattr(layer, k)}")
            if layer.dilation < 1 or layer.dilation > 64:
                raise GenotypeError(f"{where}: unknown op, dilation {layer.dilation} not in 1..64")
            if layer.pool not in (1, 2, 3, 4):
                raise GenotypeError(f"{where}: unknown op, pool {layer.pool} not in (1, 2, 3, 4)")
            if layer.c_in != prev:
                raise GenotypeError(
                    f"{where}: c_in={layer.c_in} does not chain: the previous block outputs {prev}"
                )
            prev = layer.c_out
        stage_of_prev = i
    stages = [layer.stage for layer in g.layers]
    if stages != sorted(stages) or (stages and (stages[0] < 0 or stages[-1] >= len(g.reductions))):
        raise GenotypeError(
            f"layer stages {stages} must be sorted and within 0..{len(g.reductions) - 1}"
        )


# ------------------------------------------------------------------------------------------
# Search-space size


def space_log10_size(space: SpaceConfig) -> float:
    """log10 of the number of distinct architectures in ``space``.

    Per layer there are ``|dilations| * |pools|`` ops and, per op, independent mid and output
    widths (docs/method.md §2.3): ``n_op * n_ch^2`` choices. With depth search a stage of depth
    ``d`` contributes ``(n_op * n_ch^2)^d`` and the stage total is the sum over allowed depths
    (docs/method.md §2.6 explains why the paper's 2.78e324 could not be reproduced; we count
    our own).
    """
    per_layer = math.log10(len(space.dilations) * len(space.pools) * len(space.channel_remove) ** 2)
    total = 0.0
    for st in space.stages:
        lo = st.min_depth if space.search_depth else st.max_depth
        exps = [d * per_layer for d in range(lo, st.max_depth + 1)]
        m = max(exps)
        total += m + math.log10(sum(10 ** (e - m) for e in exps))
    return total
