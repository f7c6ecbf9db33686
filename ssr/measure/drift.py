"""Measuring networks against a latency table, with the machine's drift since the table was
built (docs/method.md §4.4, "The drift reference").

A table is a snapshot of one machine's speed. On a shared or virtual machine that speed moves
by the hour (networks re-measured on the development VM hours apart kept their ranks while
their level against the table moved, issue 20). No predictor can know that level, so a
measurement taken long after the table was built is off by the machine's drift. The remedy is
the one of measurement practice with a reference standard (a control measured beside the
samples): the table keeps the random networks its correction was fitted on (``build_table``
measured them whole; :attr:`ssr.method.latency_table.Correction.networks` holds their genotypes
and milliseconds), and :func:`measure_against_table` measures them again in the *same*
interleaved passes as the networks of interest (:func:`ssr.measure.latency.measure_networks`:
a new ONNX Runtime session per pass, median of the passes), so the level both see is the same.

- the **drift** is the median over the references of ``measured now / measured at build``
  (a median: one disturbed reference does not move it), their spread the smallest and largest
  ratio;
- a network's **drift-adjusted** milliseconds are ``raw / drift``: what it would have measured
  when the table was built, comparable with the table's predictions.

Tables built before the references' genotypes were stored can get them back without timing
anything (:func:`with_reference_genotypes`): the fit networks are redrawn from the build's seed
(:func:`ssr.method.derive.sample_genotype`) and each must have the recorded genotype id.
"""

from __future__ import annotations

import dataclasses
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ssr.config import ConfigError
from ssr.measure.latency import measure_networks
from ssr.method.derive import sample_genotype
from ssr.method.genotype import Genotype, GenotypeError
from ssr.method.latency_table import Correction, LatencyTable

__all__ = [
    "AgainstTable",
    "measure_against_table",
    "reference_networks",
    "with_reference_genotypes",
]


def reference_networks(
    table: LatencyTable, k: int | None = None, where: str = "latency table"
) -> list[tuple[Genotype, float]]:
    """The table's reference networks (genotype, milliseconds measured at build): all of them,
    or ``k`` spread evenly over their measured range (fastest and slowest kept). A table
    without them is a one-line :class:`ConfigError` saying what to do."""
    nets = table.correction.networks if table.correction is not None else ()
    if not nets:
        raise ConfigError(f"{where} has no reference networks (built with --fit 0): no drift")
    if any("genotype" not in n for n in nets):
        raise ConfigError(
            f"{where} does not store its reference networks' genotypes (built before they were "
            "kept): no drift reference; rebuild it, or add them with "
            "ssr.measure.drift.with_reference_genotypes and the build's seed"
        )
    out = []
    for i, n in enumerate(nets):
        try:
            g = Genotype.from_dict(n["genotype"], f"{where}: correction.networks[{i}].genotype")
        except GenotypeError as exc:
            raise ConfigError(str(exc)) from None
        if g.id != n.get("genotype_id"):
            raise ConfigError(
                f"{where}: correction.networks[{i}] has genotype id {g.id}, "
                f"recorded {n.get('genotype_id')}"
            )
        out.append((g.with_head(table.head), float(n["measured_ms"])))
    if k is None or k >= len(out):
        return out
    if k < 1:
        raise ConfigError(f"references must be >= 1, got {k}")
    ranked, n = sorted(out, key=lambda x: x[1]), len(out) - 1
    picks = [n // 2] if k == 1 else sorted({round(i * n / (k - 1)) for i in range(k)})
    return [ranked[i] for i in picks]


@dataclass(frozen=True)
class AgainstTable:
    """Networks measured against a table: ``raw_ms`` (as measured now), ``drift`` (median of
    the references' now / at-build ratios; None without references), ``adjusted_ms`` (raw /
    drift) and, per reference, its id, milliseconds at build and now, and their ratio."""

    raw_ms: list[float]
    drift: float | None
    adjusted_ms: list[float] | None
    references: list[dict[str, Any]] = field(default_factory=list)

    @property
    def spread(self) -> tuple[float, float] | None:
        """The smallest and largest reference ratio (None without references)."""
        ratios = [r["ratio"] for r in self.references]
        return (min(ratios), max(ratios)) if ratios else None

    def summary(self) -> dict[str, Any]:
        """The drift, its spread and the references, as plain values."""
        lo, hi = self.spread or (None, None)
        return {"drift": self.drift, "drift_min": lo, "drift_max": hi,
                "references": len(self.references)}  # fmt: skip


def measure_against_table(
    genotypes: Sequence[Genotype],
    table: LatencyTable,
    references: int | None = None,
    passes: int | None = None,
) -> AgainstTable:
    """Measure ``genotypes`` (with the table's head) on the table's bench, and ``references``
    of the table's reference networks (None: all; 0: none, no drift) in the same interleaved
    passes; see the module doc."""
    refs = [] if references == 0 else reference_networks(table, references)
    nets = [g.with_head(table.head) for g in genotypes] + [g for g, _ in refs]
    ms = measure_networks(
        nets, table.bench, table.num_classes, table.clock, table.statistic, passes=passes
    )
    raw, now = [float(x) for x in ms[: len(genotypes)]], ms[len(genotypes) :]
    rows = [
        {"genotype_id": g.id, "built_ms": built, "now_ms": float(m), "ratio": float(m) / built}
        for (g, built), m in zip(refs, now)
    ]
    if not rows:
        return AgainstTable(raw, None, None, [])
    drift = statistics.median(r["ratio"] for r in rows)
    return AgainstTable(raw, drift, [x / drift for x in raw], rows)


def with_reference_genotypes(table: LatencyTable, seed: int = 0) -> LatencyTable:
    """``table`` with its reference networks' genotypes stored, redrawn as ``build_table``
    drew them (``seed``, the table's space, reduction and head; nothing is timed). Every
    redrawn genotype must have the recorded id: otherwise a :class:`ConfigError` and nothing
    changes."""
    c = table.correction
    if c is None or not c.networks:
        raise ConfigError("the table has no reference networks (built with --fit 0)")
    rng = random.Random(seed)
    drawn = [sample_genotype(table.space, rng, table.reduction, table.head) for _ in c.networks]
    bad = [
        f"networks[{i}]: drew {g.id}, recorded {n.get('genotype_id')}"
        for i, (g, n) in enumerate(zip(drawn, c.networks))
        if g.id != n.get("genotype_id")
    ]
    if bad:
        raise ConfigError(
            f"seed {seed} does not redraw the table's reference networks ({bad[0]}; "
            f"{len(bad)} of {len(drawn)} differ): another seed, space or reduction"
        )
    nets = tuple({**n, "genotype": g.to_dict()} for g, n in zip(drawn, c.networks))
    return dataclasses.replace(table, correction=Correction(c.scale, c.offset_ms, nets))
