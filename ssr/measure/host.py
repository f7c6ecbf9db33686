"""What a measurement ran on, and whether the machine was shared meanwhile (docs/architecture.md §5).

Every latency figure carries the name of its device (:func:`device_name`: the GPU model, or the
CPU model from ``/proc/cpuinfo``) and the share of the machine's CPU that *other* processes used
while the clock ran (:class:`OtherLoad`), so a number measured on a shared machine is marked so.
:func:`cpu_info` adds the CPU's family/model numbers and SIMD flags (AVX-512, VNNI, AMX...), which
decide what a CPU figure means (docs/architecture.md §5; :mod:`ssr.measure.roofline` measures the resulting limit).
"""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path

import torch

__all__ = ["SIMD_FLAGS", "OtherLoad", "cpu_info", "cpu_name", "device_name"]

#: The ``/proc/cpuinfo`` flags that decide conv throughput (fp32 vector width, int8 dot products,
#: bf16/fp16 and matrix units); :func:`cpu_info` lists those present.
SIMD_FLAGS = (
    "avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
    "amx_tile", "amx_int8", "amx_bf16",
)  # fmt: skip


def cpu_name() -> str:
    """CPU model from ``/proc/cpuinfo`` (``lscpu``'s model name), or the platform's guess."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _cpuinfo_fields() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty if unreadable)."""
    out: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0].splitlines():
            key, sep, value = line.partition(":")
            if sep:
                out.setdefault(key.strip(), value.strip())
    return out


def cpu_info() -> dict[str, object]:
    """What a CPU figure needs next to it: model, family/model numbers, cores and SIMD flags.

    ``simd`` lists the :data:`SIMD_FLAGS` this CPU reports (``lscpu`` flags), so a table can say
    whether AVX-512 or VNNI ran; figures from CPUs with different entries are not comparable.
    """
    f = _cpuinfo_fields()
    flags = set(f.get("flags", "").split())
    return {
        "model": cpu_name(),
        "family": f.get("cpu family"),
        "model_number": f.get("model"),
        "cores": os.cpu_count(),
        "simd": [flag for flag in SIMD_FLAGS if flag in flags],
    }


def device_name(device: str) -> str:
    """Human name of ``device``: the GPU model for CUDA, the CPU model otherwise."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    return cpu_name()


def _cpu_busy_seconds() -> float | None:
    """Busy CPU seconds of the whole machine so far (all cores), from ``/proc/stat``."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    vals = [int(v) for v in fields]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
    return (sum(vals[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class OtherLoad:
    """Share of the machine's CPU used by other processes while the block ran (0..1).

    Machine-wide busy time from ``/proc/stat`` minus this process's CPU time, over wall time x
    cores; read ``.value`` after the ``with`` block. ``None`` where ``/proc/stat`` is
    unavailable. 0.0 means the machine was ours.
    """

    def __enter__(self) -> OtherLoad:
        self.value: float | None = None
        self._busy0 = _cpu_busy_seconds()
        self._own0 = time.process_time()
        self._wall0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy1 = _cpu_busy_seconds()
        if self._busy0 is None or busy1 is None:
            return
        wall = time.perf_counter() - self._wall0
        other = (busy1 - self._busy0) - (time.process_time() - self._own0)
        cores = os.cpu_count() or 1
        self.value = round(min(max(other / max(wall * cores, 1e-9), 0.0), 1.0), 3)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[int]:
    """Set torch's intra-op threads to ``n`` (> 0) for the block; yields the count in use."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(old)
