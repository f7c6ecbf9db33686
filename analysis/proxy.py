"""Does a cheap score rank networks like the expensive one? Rank agreement with its uncertainty.

The one-shot NAS question (Bender et al. 2018; Yu et al., "Evaluating the search phase of
neural architecture search", ICLR 2020): a front built on the mIoU a derived network reaches
with weights inherited from the supernet is only useful if that proxy orders networks as they
perform when trained on their own. :func:`rank_agreement` measures it over the complete trials
of a sweep that retrained every derived network: Kendall's tau-b and Spearman's rho between
the proxy and the retrained mIoU, each with a percentile bootstrap interval over trials (the
trials are resampled, so the interval covers which networks happened to be sampled), and the
fraction of resamples in which the correlation is positive. Duplicate networks (one genotype
found by several trials) count once, with their mean, so that a repeated network does not
inflate the agreement. Pure numpy; used by the report and ``benchmarks/proxy_ranking.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

__all__ = ["Agreement", "kendall_tau_b", "rank_agreement", "spearman_rho"]

#: the proxies a sweep records, best first when higher (cost proxies rank by lower cost)
PROXIES: dict[str, bool] = {
    "derived_miou": True,  # the derived network, inherited weights, BN recalibrated
    "supernet_miou": True,  # the supernet at the end of the search
    "gmacs": True,  # bigger networks do better: the cost alone as a predictor
}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share the mean rank), 0-based."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=float)
    ranks[order] = np.arange(len(x), dtype=float)
    for value in np.unique(x):
        tied = x == value
        if tied.sum() > 1:
            ranks[tied] = ranks[tied].mean()
    return ranks


def spearman_rho(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson on average ranks); NaN for < 3 pairs or a constant."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3:
        return float("nan")
    ra, rb = _ranks(a), _ranks(b)
    sa, sb = ra.std(), rb.std()
    if sa == 0 or sb == 0:
        return float("nan")
    return float(((ra - ra.mean()) * (rb - rb.mean())).mean() / (sa * sb))


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b (ties corrected, as ``scipy.stats.kendalltau``); NaN as for Spearman."""
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(a) < 3:
        return float("nan")
    da = np.sign(a[:, None] - a[None, :])
    db = np.sign(b[:, None] - b[None, :])
    iu = np.triu_indices(len(a), 1)
    sa, sb = da[iu], db[iu]
    n0 = len(sa)
    n1, n2 = (sa == 0).sum(), (sb == 0).sum()
    denom = np.sqrt((n0 - n1) * (n0 - n2))
    return float((sa * sb).sum() / denom) if denom > 0 else float("nan")


@dataclass(frozen=True)
class Agreement:
    """How a proxy ranks against the target, over ``n`` unique networks."""

    proxy: str
    target: str
    n: int
    kendall_tau: float
    kendall_lo: float
    kendall_hi: float
    spearman: float
    spearman_lo: float
    spearman_hi: float
    p_positive: float  # fraction of bootstrap resamples with tau > 0
    level: float

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)

    @property
    def verdict(self) -> str:
        """One phrase a reader can act on: the interval decides, not the point estimate."""
        if self.n < 5 or not np.isfinite(self.kendall_tau):
            return "too few networks to say"
        if self.kendall_lo > 0.3:
            return "ranks like the target"
        if self.kendall_lo > 0:
            return "ranks weakly like the target"
        if self.kendall_hi < 0:
            return "ranks against the target"
        return "not distinguishable from a random order"


def _unique_networks(frame: pd.DataFrame, proxy: str, target: str) -> pd.DataFrame:
    cols = [proxy, target]
    data = frame[[*cols, "genotype_id"]] if "genotype_id" in frame else frame[cols]
    data = data.dropna(subset=cols)
    data = data[np.isfinite(data[cols].astype(float)).all(axis=1)]
    if "genotype_id" in data:
        data = data.groupby("genotype_id", sort=True)[cols].mean()
    return data.astype(float)


def rank_agreement(
    frame: pd.DataFrame,
    proxy: str = "derived_miou",
    target: str = "retrained_miou",
    *,
    higher_is_better: bool = True,
    resamples: int = 2000,
    level: float = 0.9,
    seed: int = 0,
) -> Agreement:
    """Kendall's tau-b and Spearman's rho of ``proxy`` against ``target`` over the rows of
    ``frame`` where both are finite (one row per unique ``genotype_id``), with percentile
    bootstrap intervals at ``level`` over ``resamples`` resamples of the networks."""
    data = _unique_networks(frame, proxy, target)
    sign = 1.0 if higher_is_better else -1.0
    x, y = sign * data[proxy].to_numpy(), data[target].to_numpy()
    n = len(x)
    tau, rho = kendall_tau_b(x, y), spearman_rho(x, y)
    taus, rhos = [], []
    if n >= 3:
        rng = np.random.default_rng(seed)
        for _ in range(resamples):
            idx = rng.integers(0, n, n)
            taus.append(kendall_tau_b(x[idx], y[idx]))
            rhos.append(spearman_rho(x[idx], y[idx]))
    t, r = np.asarray(taus, dtype=float), np.asarray(rhos, dtype=float)
    t, r = t[np.isfinite(t)], r[np.isfinite(r)]
    q = [(1 - level) / 2 * 100, (1 + level) / 2 * 100]
    t_lo, t_hi = np.percentile(t, q) if len(t) else (np.nan, np.nan)
    r_lo, r_hi = np.percentile(r, q) if len(r) else (np.nan, np.nan)
    return Agreement(
        proxy=proxy,
        target=target,
        n=n,
        kendall_tau=tau,
        kendall_lo=float(t_lo),
        kendall_hi=float(t_hi),
        spearman=rho,
        spearman_lo=float(r_lo),
        spearman_hi=float(r_hi),
        p_positive=float((t > 0).mean()) if len(t) else float("nan"),
        level=level,
    )
