"""The SSR search: first-order bi-level optimisation with progressive shrinking (docs/method.md §4-§6).

Per iteration one weight step (CE on a weight batch, gradients for weights only) and one
architecture step (``ce_scale * CE + SSR terms + FLOPs term`` on an architecture batch,
gradients for architecture parameters only, clipped): :class:`ssr.method.search_step.SearchStep`, with
the configured ``precision`` and ``channels_last`` (ssr/train/precision.py; recorded in the summary;
evaluation always runs in fp32, so mIoU and the gap do not depend on the precision).
On CUDA, ``cudnn.benchmark`` is on for the search, batches are pinned and copied without
blocking, and no step reads a value on the host. After each epoch the shrinking policy
(:mod:`ssr.method.shrink`) drops weak candidates; every decision is recorded before it is applied.
Once discrete, the architecture step is skipped (``skip_arch_when_discrete``). At the end the
genotype is read off the alive masks (if the budget ran out, the undecided groups are decided by
argmax or, with a latency target, by :mod:`ssr.method.derive_target`), the derived
network inherits the supernet's weights, its BN statistics are recalibrated, and both are
evaluated: their mIoU difference is the discretization gap. The gap is also measured at the
epoch the net becomes discrete and at ``gap_epochs`` (definitions: :mod:`ssr.method.gap`), and the
derived mIoU comes with a bootstrap interval over validation images
(:func:`ssr.train.metrics.bootstrap_miou_interval`).

A non-finite loss, gradient norm, architecture parameter or weight stops the search with
:class:`DivergenceError` (one line: epoch, quantity, what to change) before anything is
derived or written.

Checkpoints hold weights, architecture parameters, alive masks, both optimizers (and their fp16
gradient scalers), the history,
the prune events and the RNG state, so an interrupted search resumes to the same result.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ssr.config import SearchConfig, dump_yaml
from ssr.config.errors import DivergenceError
from ssr.data import build_dataset, build_loader, class_weights, dataset_info
from ssr.files.atomic import write_json, write_jsonl
from ssr.method.derive import genotype_from_supernet
from ssr.method.derive_target import Derivation, derive, discretize_to
from ssr.method.gap import discretize_by_argmax, gap_summary, measure_derived
from ssr.method.genotype import Genotype, space_log10_size
from ssr.method.network import DerivedNet
from ssr.method.search_step import SearchStep, ssr_terms
from ssr.method.search_step import labels_at_stride as _labels  # noqa: F401  (tests import it here)
from ssr.method.shrink import Decision, apply, decide
from ssr.method.supernet import DIMENSIONS, Supernet
from ssr.train.device import resolve_device
from ssr.train.epochs import EpochDriver
from ssr.train.loop import Reporter, evaluate, run_epoch
from ssr.train.metrics import bootstrap_miou_interval
from ssr.train.optim import poly_lr
from ssr.train.precision import cuda_habits, memory_format

__all__ = ["DivergenceError", "SearchResult", "run_search"]

log = logging.getLogger(__name__)
CHECKPOINT = "checkpoints/search_last.pt"


@dataclass
class SearchResult:
    """What a search returns: the genotype, its summary, history and prune events.

    ``fallback_prunes`` counts the candidates the end-of-budget argmax had to drop (0 when
    shrinking reached a discrete net by itself).
    """

    genotype: Genotype
    summary: dict[str, Any]
    history: list[dict[str, float]]
    events: list[dict[str, Any]]
    fallback_prunes: int
    supernet: Supernet = field(repr=False)
    derived: DerivedNet = field(repr=False)


def describe(net: Supernet, d: Decision) -> dict[str, Any]:
    """A prune decision as a readable record (stage/layer/op/width of the candidate)."""
    rec: dict[str, Any] = d.to_dict()
    n_ops = len(net.ops)
    if d.dimension == "depth":
        rec.update(stage=d.group, name=f"depth={d.candidate + 1}")
        return rec
    layer = d.group if d.dimension == "op" else d.group // n_ops
    ref = net.layer_refs[layer]
    rec.update(stage=ref.stage, layer=layer, layer_in_stage=ref.index)
    if d.dimension == "op":
        dil, pool = net.ops[d.candidate]
        rec["name"] = f"d{dil}_p{pool}"
    else:
        dil, pool = net.ops[d.group % n_ops]
        width = net.widths[ref.stage] - net.space.channel_remove[d.candidate]
        rec.update(op=f"d{dil}_p{pool}", name=f"{d.dimension}_width={width}")
    return rec


def arch_stats(net: Supernet) -> dict[str, float]:
    """Per dimension: mean entropy and max probability over active groups, alive count."""
    out: dict[str, float] = {}
    with torch.no_grad():
        for dim in DIMENSIONS:
            p = net.probs(dim).reshape(-1, net.arch[dim].shape[-1])
            alive = net.alive(dim).reshape(p.shape)
            active = net.active_groups(dim)
            p, alive = p[active], alive[active]
            ent = -(torch.where(alive, p * torch.log(p.clamp_min(1e-12)), 0.0)).sum(-1)
            out[f"entropy_{dim}"] = float(ent.mean()) if len(ent) else 0.0
            out[f"maxprob_{dim}"] = float(p.max(-1).values.mean()) if len(p) else 1.0
            out[f"alive_{dim}"] = float(alive.sum())
    return out


def run_search(
    cfg: SearchConfig,
    out_dir: str | Path | None = None,
    reporter: Reporter | None = None,
    resume: bool = False,
    progress: bool = True,
) -> SearchResult:
    """Run one SSR search; writes genotype, summary, history and checkpoints to ``out_dir``."""
    device = resolve_device(cfg.device)
    with cuda_habits(device):
        return _search(cfg, device, Path(out_dir) if out_dir is not None else None, reporter,
                       resume, progress)  # fmt: skip


@dataclass
class _SearchRun:
    """One search in progress: its config, data, supernet and step, and what it decided so far
    (prune events, the epoch it became discrete). The epochs around it are
    :class:`ssr.train.epochs.EpochDriver`'s; :func:`_finish` derives from it."""

    cfg: SearchConfig
    device: torch.device
    out: Path | None
    progress: bool
    train_set: Any
    w_idx: list[int]
    a_idx: list[int]
    val_loader: Any
    net: Supernet
    step: SearchStep
    events: list[dict[str, Any]] = field(default_factory=list)
    discrete_at: int | None = None

    @classmethod
    def build(
        cls, cfg: SearchConfig, device: torch.device, out: Path | None, progress: bool
    ) -> _SearchRun:
        """Data (split into weight and architecture halves with ``arch_split``), supernet, step."""
        torch.manual_seed(cfg.seed)
        pin = device.type == "cuda"  # pinned batches: non-blocking copies (ssr/train/precision.py)
        train_set = build_dataset(cfg.data, "train")
        n = len(train_set)
        if cfg.arch_split:  # docs/method.md §12.2: held-out architecture data (train-A / train-B)
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed)).tolist()
            w_idx, a_idx = sorted(perm[: n // 2]), sorted(perm[n // 2 :])
        else:
            w_idx = a_idx = list(range(n))
        val_loader = build_loader(cfg.data, "val", shuffle=False, pin_memory=pin)
        weights = class_weights(cfg.data, train_set).to(device)
        net = Supernet(cfg.space, dataset_info(cfg.data.name).num_classes).to(
            device, memory_format=memory_format(cfg.channels_last)
        )
        step = SearchStep(net, cfg, weights, device)
        return cls(cfg, device, out, progress, train_set, w_idx, a_idx, val_loader, net, step)

    def loader(self, subset: list[int], seed: int) -> Any:
        """Shuffled training batches of ``subset``, keyed by ``seed``."""
        return build_loader(
            self.cfg.data, "train", shuffle=True, seed=seed, subset=subset,
            dataset=self.train_set, pin_memory=self.device.type == "cuda",
        )  # fmt: skip

    def recal_batches(self) -> Iterator[Tensor]:
        """The same training batches for every BN recalibration of a derived network."""
        loader = build_loader(
            self.cfg.data, "train", shuffle=True, seed=self.cfg.seed, subset=self.w_idx,
            dataset=self.train_set,
        )  # fmt: skip
        return (x for x, _ in itertools.islice(loader, self.cfg.bn_recalibration_batches))

    def restore(self, state: dict[str, Any]) -> None:
        """The supernet, optimisers and decisions of a checkpoint (:meth:`state`)."""
        self.net.load_state_dict(state["model"])
        self.net.refresh_alive()
        self.step.load_state_dict(state)
        self.events, self.discrete_at = list(state["events"]), state["discrete_at"]

    def state(self) -> dict[str, Any]:
        """What a checkpoint holds of this search (the driver adds epoch, history, RNG)."""
        return {
            "model": self.net.state_dict(),
            **self.step.state_dict(),
            "events": self.events,
            "discrete_at": self.discrete_at,
        }

    def epoch(self, epoch: int) -> dict[str, float]:
        """One search epoch (0-based): weight and architecture steps, evaluation, shrinking, the
        gap where it is measured; returns the history row."""
        cfg, net, t0 = self.cfg, self.net, time.perf_counter()
        lr = poly_lr(self.step.w.optimizer, cfg.weight_optim.lr, epoch, cfg.epochs,
                     cfg.weight_optim.poly_power)  # fmt: skip
        search_arch = not (self.discrete_at is not None and cfg.skip_arch_when_discrete)
        seed = cfg.seed * 100_003 + epoch
        batches = zip(self.loader(self.w_idx, seed), self.loader(self.a_idx, seed + 50_000))
        self.step.start_epoch(epoch)
        stats = run_epoch(batches, lambda batch, arch=search_arch: self.step(batch, arch),
                          desc=f"search {epoch + 1}/{cfg.epochs}", progress=self.progress)  # fmt: skip
        self.step.end_epoch()
        supernet_miou = evaluate(net, self.val_loader, net.num_classes, self.device,
                                 channels_last=cfg.channels_last)["miou"]  # fmt: skip
        with torch.no_grad():
            terms = {f"ssr_{k}": float(v) for k, v in ssr_terms(net, cfg).items()}
            e_gmacs = float(net.expected_macs(cfg.flops.height, cfg.flops.width)) / 1e9
            latency = (
                {}
                if self.step.latency is None
                else {"expected_latency_ms": float(self.step.expected_latency_ms())}
            )  # docs/method.md §4.4
        row: dict[str, float] = {
            "epoch": float(epoch + 1), "phase": 0.0, "lr": lr, "val_miou": supernet_miou,
            "supernet_miou": supernet_miou, "expected_gmacs": e_gmacs,
            "arch_step": float(search_arch), **{k: float(v) for k, v in stats.items()},
            **terms, **arch_stats(net), **latency,
        }  # fmt: skip
        pruned = self.shrink(epoch + 1) if search_arch else 0
        if self.discrete_at is None and net.is_discrete():
            self.discrete_at = epoch + 1
        if self.discrete_at == epoch + 1 or epoch + 1 in cfg.gap_epochs:
            # the gap at discretization / at a common epoch (ssr.method.gap): supernet evaluated just
            # before this epoch's prunes vs the argmax network right after them
            m = measure_derived(net, self.recal_batches, self.val_loader, self.device)
            row.update(argmax_derived_miou=m.miou, argmax_gap=supernet_miou - m.miou)
        row.update(pruned=float(pruned), discrete=float(self.discrete_at is not None))
        row["seconds"] = time.perf_counter() - t0
        return row

    def shrink(self, done: int) -> int:
        """Hierarchical progressive shrinking after epoch ``done`` (docs/method.md §5), when it
        is due: decide, record, then apply, one dimension after another; returns the prunes."""
        sh, net = self.cfg.shrink, self.net
        if not (sh.enabled and done > sh.warmup and (done - sh.warmup) % sh.every == 0):
            return 0
        pruned = 0
        for dim in sh.order:
            decisions = decide(
                dim, net.probs(dim), net.alive(dim), sh.threshold, net.active_groups(dim).cpu(),
                sh.max_per_decision,
            )  # fmt: skip
            self.events.extend({"epoch": done, **describe(net, d)} for d in decisions)
            apply(net.alive(dim), decisions)
            net.refresh_alive()
            pruned += len(decisions)
        if pruned:
            self.step.after_prune()  # compiled: replan (and recompile) when it pays
        return pruned


def _search(
    cfg: SearchConfig,
    device: torch.device,
    out: Path | None,
    reporter: Reporter | None,
    resume: bool,
    progress: bool,
) -> SearchResult:
    run = _SearchRun.build(cfg, device, out, progress)
    driver = EpochDriver(
        cfg.epochs,
        cfg.checkpoint_every,
        checkpoint=out / CHECKPOINT if out is not None else None,
        reporter=reporter,  # history.jsonl: written by _finish, with the genotype (none if diverged)
    )
    if resume:
        driver.resume(run.restore)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        dump_yaml(cfg, out / "config.resolved.yaml")
    history = driver.run(
        run.epoch, run.state, stop=lambda: run.discrete_at is not None and cfg.stop_when_discrete
    )
    return _finish(run, history)


def _derivation(run: _SearchRun) -> Derivation:
    """How the groups still undecided are decided: ``latency.derive`` resolved
    (:attr:`ssr.config.LatencyConfig.derive_rule`), with the search's table if it has one."""
    lat = run.cfg.latency
    table = run.step.latency.table if run.step.latency is not None else None
    return derive(run.net, lat.derive_rule, table, lat.target_ms, lat.derive_tolerance,
                  run.cfg.reduction_width)  # fmt: skip


def latency_summary(
    run: _SearchRun,
    history: list[dict[str, float]],
    genotype: Genotype,
    derivation: Derivation | None = None,
) -> dict[str, Any]:
    """With a latency table (docs/method.md §4.4): the expected latency the search ended at
    (last epoch, before any argmax fallback), the table's prediction for the derived genotype,
    the target and the table; with ``derivation``, how the undecided groups were decided (its
    rule, the argmax network's prediction, the groups changed and the log-probability given
    up, :mod:`ssr.method.derive_target`)."""
    lat = run.cfg.latency
    if run.step.latency is None:
        return {}
    from ssr.method.latency_table import predict_ms

    table = run.step.latency.table
    return {
        "expected_latency_ms": history[-1]["expected_latency_ms"] if history else None,
        "predicted_latency_ms": predict_ms(table, genotype.with_head(table.head)),
        "latency_target_ms": lat.target_ms,
        "latency_table": lat.table,
        "latency_table_device": f"{table.device_name} ({table.bench.backend}, "
        f"{table.bench.threads} threads, {table.bench.precision}, {table.input_size})",
        **(derivation.summary() if derivation is not None else {}),
    }


def _finish(run: _SearchRun, history: list[dict[str, float]]) -> SearchResult:
    """Derive the genotype and network, recalibrate BN, measure the gaps and the interval."""
    cfg, net, out = run.cfg, run.net, run.out
    supernet_miou = (
        history[-1]["supernet_miou"]
        if history
        else evaluate(net, run.val_loader, net.num_classes, run.device)["miou"]
    )
    epochs_run = int(history[-1]["epoch"]) if history else 0
    # budget over before shrinking finished: argmax fallback (docs/method.md §12.12), or the
    # target-aware choice of the undecided groups (ssr.method.derive_target, §4.4)
    derivation = _derivation(run)
    fallback = []
    if not net.is_discrete():
        target = derivation.rule == "target"
        fallback = discretize_to(net, derivation) if target else discretize_by_argmax(net)
    events = run.events
    events.extend({"epoch": epochs_run, **describe(net, d)} for _, d in fallback)
    genotype = genotype_from_supernet(net, reduction=cfg.reduction_width)
    final = measure_derived(net, run.recal_batches, run.val_loader, run.device)
    derived, derived_miou = final.model, final.miou
    lo, hi = bootstrap_miou_interval(final.per_image)
    from ssr.method.complexity import count_macs, count_params

    full = DerivedNet(genotype, net.num_classes)
    summary: dict[str, Any] = {
        "genotype_id": genotype.id,
        "supernet_miou": supernet_miou,
        "derived_miou": derived_miou,
        "derived_miou_lo": lo,
        "derived_miou_hi": hi,
        "val_images": int(final.per_image.shape[0]),
        "discretization_gap": supernet_miou - derived_miou,
        "discrete_at_epoch": run.discrete_at,
        **gap_summary(history, run.discrete_at, cfg.gap_epochs),
        "fallback_prunes": len(fallback),
        "reduction_width": cfg.reduction_width,
        "precision": cfg.precision,
        "channels_last": cfg.channels_last,
        **run.step.forward.stats(),  # compile, compiles, compile_seconds, replans
        "epochs": epochs_run,
        "params_m": count_params(full) / 1e6,
        "gmacs": count_macs(full, (1, 3, cfg.flops.height, cfg.flops.width)) / 1e9,
        "gmacs_input": f"{cfg.flops.height}x{cfg.flops.width}",
        "space_log10_size": space_log10_size(cfg.space),
        "probabilities": {d: net.probs(d).detach().cpu().tolist() for d in DIMENSIONS},
    }
    summary.update(latency_summary(run, history, genotype, derivation))
    if out is not None:
        genotype.save(out / "genotype.json")
        write_json(out / "summary.json", summary)
        write_jsonl(out / "history.jsonl", history)
        write_jsonl(out / "prune_events.jsonl", events)
    if not math.isfinite(supernet_miou):
        log.warning("supernet mIoU is not finite")
    return SearchResult(genotype, summary, history, events, len(fallback), net, derived)
