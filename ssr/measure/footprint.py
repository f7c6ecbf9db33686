"""Memory a network needs, estimated from its genotype before anything is allocated.

A command given ``--input 99999x99999`` or a genotype of enormous widths must say so in one
line, in seconds, instead of asking the allocator for 120 GB and dying with a traceback (or
swapping the machine to a halt). :func:`check_fits` estimates, from the genotype and the input
size alone, the bytes of the parameters and of the activations a forward pass holds, and
compares them with the memory this machine has free (:func:`available_bytes`: the kernel's
``MemAvailable`` within any cgroup limit, or the free memory of a CUDA device).

The estimate counts the float32 tensors each block produces (docs/method.md §2.1-§2.2, §8.1):
at inference the tensors kept for the head (the input, the stem and stage outputs) plus the
largest block's working set; in training every block's tensors (autograd keeps them for the
backward pass). It leaves out allocator overhead, workspace and the gradients themselves, so it
is a lower bound: a run it refuses cannot fit, and a run it passes may still be tight.
:func:`supernet_genotypes` gives the widest network of a search space with every candidate op
of each layer, the lower bound used for a search.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ssr.config.errors import ConfigError
from ssr.method.genotype import Genotype, LayerGene, ReductionGene

if TYPE_CHECKING:
    from ssr.config import RetrainConfig, SearchConfig

__all__ = [
    "Footprint",
    "available_bytes",
    "check_fits",
    "check_input_size",
    "check_retrain_fits",
    "check_search_fits",
    "estimate",
    "supernet_genotypes",
]

GIB = 2**30
FLOAT_BYTES = 4
#: The share of the tensors counted per block that autograd keeps for the backward pass
#: (measured on the paper network, 128x256: 0.70; in-place ReLUs and views keep no copy).
TRAINING_KEPT = 0.6
# the aggregation head's widths (ssr.method.network): PSP branches, fused features, low path
_PSP_BINS, _PSP_WIDTH, _AGG_WIDTH, _LOW_WIDTH = 5, 40, 128, 64


@dataclass(frozen=True)
class Footprint:
    """Estimated bytes of one network at one input: parameters and activations."""

    params: int
    activations: int

    @property
    def total(self) -> int:
        return self.params + self.activations


def check_input_size(genotype: Genotype, height: int, width: int, what: str = "input") -> None:
    """``height`` and ``width`` are positive. Any such size runs: the stem and each reduction
    round an odd side up (``ceil(h / 2)``, docs/method.md §8.3), so CamVid's 360x480 needs no
    padding."""
    if height < 1 or width < 1:
        raise ConfigError(
            f"{what} {height}x{width}: height and width must be positive (a "
            f"{genotype.num_stages}-stage network takes any size from 1x1)"
        )


def _down(n: int, times: int) -> int:
    """A side after ``times`` stride-2 steps that round up, as the network's reductions do."""
    for _ in range(times):
        n = -(-n // 2)
    return n


def _layer_tensors(g: LayerGene, h: int, w: int, branch_only: bool = False) -> list[int]:
    """Element counts of the tensors one factorized op produces (per image); ``branch_only``:
    without the residual sum and ReLU (a supernet's candidate ops share those)."""
    ph, pw = -(-h // g.pool), -(-w // g.pool)
    inner = [g.c_mid * ph * pw] * 2 + [g.c_out * ph * pw] * 2  # conv1, bn1, conv2, bn2
    if g.pool > 1:
        inner += [g.c_in * ph * pw, g.c_out * h * w]  # pooled input, upsampled output
    return inner if branch_only else [*inner, g.c_out * h * w, g.c_out * h * w]  # sum, ReLU


def _blocks(
    genotype: Genotype, num_classes: int, height: int, width: int, branches: bool = False
) -> tuple[list[list[int]], list[int]]:
    """Per block (stem, reductions, layers, head), the element counts of its tensors; and the
    outputs kept for the head (stem and stage outputs). ``branches``: only the layers' op
    branches (another candidate op of a supernet, which shares all else)."""
    if branches:
        sizes = [(_down(height, s + 2), _down(width, s + 2)) for s in range(genotype.num_stages)]
        return [_layer_tensors(g, *sizes[g.stage], branch_only=True) for g in genotype.layers], []
    h, w = _down(height, 1), _down(width, 1)
    stem = genotype.stem * h * w
    blocks = [[(genotype.stem - 3) * h * w, stem, stem]]  # conv, BN, ReLU
    kept = [stem]
    for s, red in enumerate(genotype.reductions):
        h, w = _down(h, 1), _down(w, 1)
        out = red.c_out * h * w
        blocks.append([red.c_conv * h * w, out, out, out])  # conv, concat, BN, ReLU
        blocks += [_layer_tensors(g, h, w) for g in genotype.stage_layers(s)]
        kept.append(genotype.stage_out(s) * h * w)
    c_last = genotype.stage_out(genotype.num_stages - 1)
    if genotype.head == "aggregation":
        q = _down(height, 2) * _down(width, 2)
        cat = (c_last + _PSP_BINS * _PSP_WIDTH) * h * w
        low_in = (genotype.stem + genotype.stage_out(0)) * q
        blocks.append([cat, _AGG_WIDTH * h * w, _AGG_WIDTH * q])  # PSP, fuse, upsample
        blocks.append([genotype.stem * q, low_in, 2 * _LOW_WIDTH * q])  # the low path
        fused = (_AGG_WIDTH + _LOW_WIDTH) * q
        blocks.append([fused, 2 * _AGG_WIDTH * q, num_classes * q])  # fuse, classifier
        blocks.append([num_classes * height * width])  # logits at the input size
    else:
        blocks.append([num_classes * h * w])
    return blocks, kept


def _layer_params(g: LayerGene) -> int:
    return g.c_in * g.c_mid * 3 + g.c_mid * g.c_out * 3 + 5 * (g.c_mid + g.c_out)


def _params(genotype: Genotype, num_classes: int, branches: bool = False) -> int:
    """Weights of the network (convs, biases and BatchNorm), counted from the genotype;
    ``branches``: of its layers only."""
    if branches:
        return sum(map(_layer_params, genotype.layers))
    n = 3 * (genotype.stem - 3) * 9 + (genotype.stem - 3) + 4 * genotype.stem
    for red in genotype.reductions:
        n += red.c_in * red.c_conv * 9 + red.c_conv + 4 * red.c_out
    n += sum(map(_layer_params, genotype.layers))
    c_last = genotype.stage_out(genotype.num_stages - 1)
    if genotype.head == "aggregation":
        n += _PSP_BINS * c_last * _PSP_WIDTH + (c_last + _PSP_BINS * _PSP_WIDTH) * _AGG_WIDTH
        n += (genotype.stem + genotype.stage_out(0)) * _LOW_WIDTH * 9
        n += (_AGG_WIDTH + _LOW_WIDTH) * _AGG_WIDTH + _AGG_WIDTH * num_classes
    else:
        n += c_last * num_classes
    return n + num_classes


def estimate(
    genotypes: Genotype | Iterable[Genotype],
    num_classes: int,
    batch: int,
    height: int,
    width: int,
    *,
    training: bool = False,
) -> Footprint:
    """Bytes of the parameters and activations of one network on a ``batch x 3 x height x
    width`` input; or of a supernet given as its candidate ops (:func:`supernet_genotypes`):
    the first whole, the others' op branches only (they share stem, reductions, residuals and
    head)."""
    nets = [genotypes] if isinstance(genotypes, Genotype) else list(genotypes)
    params = sum(_params(g, num_classes, i > 0) for i, g in enumerate(nets))
    parts = [_blocks(g, num_classes, height, width, i > 0) for i, g in enumerate(nets)]
    blocks = [b for bs, _ in parts for b in bs]
    image = 3 * height * width
    if training:  # autograd keeps most of every block's tensors for the backward pass
        per_image = image + int(TRAINING_KEPT * sum(map(sum, blocks)))
        params *= 4  # weights, gradients, Adam's two moments
    else:  # the head's inputs stay alive; blocks run one at a time
        per_image = image + sum(sum(k) for _, k in parts) + max(map(sum, blocks))
    return Footprint(params * FLOAT_BYTES, per_image * batch * FLOAT_BYTES)


def supernet_genotypes(
    stem: int, widths: Iterable[int], depths: Iterable[int], ops: Iterable[tuple[int, int]]
) -> list[Genotype]:
    """A supernet as networks side by side, one per candidate op ``(dilation, pool)``: each at
    full width and depth, with the search head (for :func:`estimate` of a search, which counts
    what they share once)."""
    widths, depths, ops = list(widths), list(depths), list(ops)
    nets = []
    for dilation, pool in ops:
        prev, reductions, layers = stem, [], []
        for s, (width, depth) in enumerate(zip(widths, depths)):
            reductions.append(ReductionGene(prev, width - prev))
            layers += [LayerGene(s, dilation, pool, width, width, width) for _ in range(depth)]
            prev = width
        nets.append(Genotype(stem, tuple(reductions), tuple(layers), "search"))
    return nets


def _cgroup_free() -> int | None:
    """Bytes left under this process's cgroup memory limit (v2 or v1), None without a limit."""
    for limit_file, usage_file in (
        ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
        (
            "/sys/fs/cgroup/memory/memory.limit_in_bytes",
            "/sys/fs/cgroup/memory/memory.usage_in_bytes",
        ),
    ):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 2**60:
            return max(int(limit) - usage, 0)
    return None


def available_bytes(device: str = "cpu") -> int | None:
    """Free memory for tensors on ``device``: a CUDA device's free memory, or for the CPU the
    kernel's ``MemAvailable`` (within any cgroup limit). None when it cannot be read."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free)
    free = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None and hasattr(os, "sysconf"):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError):
            free = None
    limit = _cgroup_free()
    return limit if free is None else (free if limit is None else min(free, limit))


def check_fits(
    footprint: Footprint, what: str, device: str = "cpu", free: int | None = None
) -> None:
    """Raise a one-line :class:`~ssr.config.errors.ConfigError` when ``footprint`` is more than the
    memory free on ``device``; ``what`` names the run (``"input 512x1024 (batch 8)"``)."""
    free = available_bytes(device) if free is None else free
    if free is None or footprint.total <= free:
        return
    where = "this machine" if device == "cpu" else device
    if footprint.params > free:
        need = f"~{footprint.params / GIB:.1f} GiB for its parameters"
    else:
        need = f"~{footprint.activations / GIB:.1f} GiB for activations"
        if footprint.params >= GIB / 10:
            need += f" and {footprint.params / GIB:.1f} GiB for parameters"
    raise ConfigError(f"{what} needs {need}, {where} has {free / GIB:.1f} GiB free")


def _num_classes(dataset: str) -> int:
    from ssr.data import dataset_info

    return dataset_info(dataset).num_classes


def check_search_fits(cfg: SearchConfig) -> None:
    """A search's lower bound (the supernet at full width and depth, every candidate op) in
    training on ``cfg.device``, before the supernet or a batch exists."""
    space, data = cfg.space, cfg.data
    nets = supernet_genotypes(
        space.stem_width,
        [st.width for st in space.stages],
        [st.max_depth for st in space.stages],
        [(d, p) for p in space.pools for d in space.dilations],
    )
    footprint = estimate(
        nets, _num_classes(data.name), data.batch_size, data.height, data.width, training=True
    )
    what = f"a search at data {data.height}x{data.width} (batch_size {data.batch_size})"
    check_fits(footprint, what, cfg.device)


def check_retrain_fits(cfg: RetrainConfig, genotype: Genotype) -> None:
    """A retraining of ``genotype`` in training on ``cfg.device``, before the network exists."""
    data = cfg.data
    check_input_size(genotype, data.height, data.width, "data")
    footprint = estimate(
        genotype, _num_classes(data.name), data.batch_size, data.height, data.width, training=True
    )
    what = f"retraining at data {data.height}x{data.width} (batch_size {data.batch_size})"
    check_fits(footprint, what, cfg.device)
