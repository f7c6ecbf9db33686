"""Interleaved exclusive measurement of several networks, with the spread of each.

Timing networks one after the other lets a change in the machine's load (another tenant, a
thermal step, a background job) land on one network and not the next, and then the ranking
measures the machine, not the architectures. Here every network is timed in each of
``passes`` rounds, in a rotated order, with the one procedure of :func:`ssr.measure.bench.measure`
(one pass of ``cfg.iters`` timed iterations after ``cfg.warmup`` warm-up iterations). A drift
then hits every network alike, and each network keeps its pass medians, so that a front can say
which points are apart and which are tied (docs/architecture.md §5).

The interval of a network is the range of its pass medians (slowest to fastest pass): a point
whose interval overlaps another's is not ranked against it.
"""

from __future__ import annotations

import dataclasses
import statistics
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ssr.config import BenchConfig, ConfigError
from ssr.measure.bench import measure
from ssr.method.complexity import nchw


@dataclass(frozen=True)
class Spread:
    """Latency of one network over interleaved passes (milliseconds; FPS at ``batch``).

    ``pass_p90_ms`` holds each pass's 90th percentile of per-iteration latency (empty when
    unknown); :attr:`latency_ms_p90` is their median.
    """

    pass_medians_ms: tuple[float, ...]
    batch: int
    pass_p90_ms: tuple[float, ...] = ()

    @property
    def latency_ms_median(self) -> float:
        """The median of the pass medians: the headline latency."""
        return statistics.median(self.pass_medians_ms)

    @property
    def latency_ms_lo(self) -> float:
        """The fastest pass median."""
        return min(self.pass_medians_ms)

    @property
    def latency_ms_hi(self) -> float:
        """The slowest pass median."""
        return max(self.pass_medians_ms)

    @property
    def latency_ms_p90(self) -> float:
        """The median over passes of each pass's p90 (NaN when not recorded)."""
        return statistics.median(self.pass_p90_ms) if self.pass_p90_ms else float("nan")

    @property
    def fps(self) -> float:
        return self.batch * 1e3 / self.latency_ms_median

    @property
    def fps_lo(self) -> float:
        """FPS of the slowest pass."""
        return self.batch * 1e3 / self.latency_ms_hi

    @property
    def fps_hi(self) -> float:
        """FPS of the fastest pass."""
        return self.batch * 1e3 / self.latency_ms_lo

    def overlaps(self, other: Spread) -> bool:
        """True when the two latency intervals overlap: the two cannot be ranked."""
        return (
            self.latency_ms_lo <= other.latency_ms_hi and other.latency_ms_lo <= self.latency_ms_hi
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "latency_ms_median": round(self.latency_ms_median, 4),
            "latency_ms_lo": round(self.latency_ms_lo, 4),
            "latency_ms_hi": round(self.latency_ms_hi, 4),
            "latency_ms_p90": round(self.latency_ms_p90, 4),
            "fps": round(self.fps, 3),
            "fps_lo": round(self.fps_lo, 3),
            "fps_hi": round(self.fps_hi, 3),
            "pass_medians_ms": [round(m, 4) for m in self.pass_medians_ms],
        }


def measure_interleaved(
    models: Mapping[str, nn.Module],
    input_shape: Sequence[int],
    cfg: BenchConfig,
    passes: int,
    *,
    optimize: bool = False,
) -> tuple[dict[str, Spread], dict[str, Any]]:
    """Time every model in each of ``passes`` rotated rounds; return spreads and the record.

    ``input_shape`` is ``(C, H, W)`` or ``(N, C, H, W)`` as for :func:`ssr.measure.bench.measure`;
    ``cfg.repeats`` is ignored (each round is one pass). ``optimize`` measures each backend's
    exact inference form (:func:`ssr.measure.bench.measure`; for ONNX Runtime the deploy form). The
    record holds what the procedure ran on (device, threads, backend, form, precision, input,
    batch, passes) from the first measurement.
    """
    if passes < 2:
        raise ConfigError(f"passes must be >= 2 to give a spread, got {passes}")
    if not models:
        raise ConfigError("no models to measure")
    one = dataclasses.replace(cfg, repeats=1)
    with tempfile.TemporaryDirectory(prefix="ssr-interleave-") as tmp:
        runnable, form = _prepare(models, nchw(input_shape, cfg.batch), cfg, optimize, Path(tmp))
        spreads, record = _rounds(runnable, input_shape, one, passes, optimize)
    if form is not None:
        record["form"] = form
    return spreads, record


def _prepare(
    models: Mapping[str, nn.Module],
    shape: tuple[int, ...],
    cfg: BenchConfig,
    optimize: bool,
    tmp: Path,
) -> tuple[dict[str, Any], str | None]:
    """For ONNX Runtime, each model exported once (deploy form with ``optimize``) and opened as
    a session, so that the passes time inference only; other backends take the modules."""
    if cfg.backend != "onnxruntime":
        return dict(models), None
    from ssr.deploy import deploy
    from ssr.deploy.onnx_export import export_onnx, ort_session
    from ssr.method.network import DerivedNet

    sessions: dict[str, Any] = {}
    form = "as given"
    for i, (name, model) in enumerate(models.items()):
        if optimize and isinstance(model, DerivedNet):
            model, form = deploy(model), "deploy"
        path = tmp / f"model{i}.onnx"
        export_onnx(model, shape, path, verify=False)
        sessions[name] = ort_session(path, cfg.threads, cfg.device)
    return sessions, form


def _rounds(
    models: Mapping[str, Any],
    input_shape: Sequence[int],
    one: BenchConfig,
    passes: int,
    optimize: bool,
) -> tuple[dict[str, Spread], dict[str, Any]]:
    """``passes`` rotated rounds of one timing pass per model."""
    names = list(models)
    medians: dict[str, list[float]] = {n: [] for n in names}
    p90s: dict[str, list[float]] = {n: [] for n in names}
    record: dict[str, Any] = {}
    for k in range(passes):
        shift = k % len(names)
        for name in names[shift:] + names[:shift]:
            res = measure(models[name], input_shape, one, optimize=optimize)
            medians[name].append(res.pass_medians_ms[0])
            p90s[name].append(res.latency_ms_p90)
            if not record:
                record = {
                    "device": res.device,
                    "threads": res.threads,
                    "backend": res.backend,
                    "form": res.form,
                    "precision": res.precision,
                    "input": res.input,
                    "batch": res.batch,
                    "iters": res.iters,
                    "warmup": res.warmup,
                    "passes": passes,
                }
    spreads = {n: Spread(tuple(m), one.batch, tuple(p90s[n])) for n, m in medians.items()}
    return spreads, record
