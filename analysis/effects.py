"""What each swept setting bought: its effect on every objective and on the gap, with an interval.

A sweep samples all its settings at once (TPE, tens of trials at most), so a setting's effect is
estimated one setting at a time, **within baselines**, with a bootstrap interval over trials:

- **Numeric settings** (SSR weights, shrink threshold / cadence / warm-up, FLOPs weight and
  target, architecture lr): the least-squares slope of the outcome on the setting after each
  baseline's own mean is removed from both (a fixed effect per baseline, so a baseline's level is
  never read as a setting's effect). Settings that span a decade or more (all positive) are taken
  on a log scale. The **effect** is the slope times the span of the values tried: how much the
  outcome moved from the lowest to the highest value the sweep tried.
- **The baseline**: each baseline's mean minus the reference baseline's (``ssr`` when present).
- **Interval**: the 5th to 95th percentile of the same estimate over :data:`BOOTSTRAP` resamples
  of the trials (Efron & Tibshirani 1993, percentile bootstrap). A setting is **distinguishable
  from noise** when that 90 % interval excludes 0, at least :data:`MIN_TRIALS` trials carry it
  (:data:`MIN_GROUP` per baseline for the baseline), and its bootstrap p-value survives the
  false-discovery control over all the report's estimates (:func:`false_discoveries`): tens of
  90 % intervals would otherwise exclude 0 by chance a few times. With fewer trials nothing is
  claimed.
- **Settings that do not apply** to a trial are left out of its estimate: the SSR weights under
  ``darts_pruning`` (which fixes them at 0) and the shrinking schedule under ``no_shrink``
  (which turns shrinking off), docs/method.md §10. The seed is not a setting: its variation is
  part of the noise the intervals measure.
- **Correlated samples**: TPE samples settings together, so a setting that moved with another in
  the trials used (|Spearman r| >= :data:`CONFOUNDED_R`) is flagged: its effect may be the other's.

Only complete trials with finite values enter (early-stopped ones carry low-fidelity values).
mIoU outcomes and the gap are in percentage points, FPS in frames per second.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

#: Bootstrap resamples per estimate, and the seed that makes the intervals reproducible.
BOOTSTRAP = 1000
SEED = 0
#: Fewest trials behind a numeric setting's estimate before it may be called distinguishable.
MIN_TRIALS = 6
#: Fewest trials per baseline behind a baseline comparison.
MIN_GROUP = 3
#: False-discovery rate over all estimates of a report (Benjamini & Hochberg 1995).
FDR = 0.10
#: |Spearman r| between two settings' sampled values from which an effect is flagged as shared.
CONFOUNDED_R = 0.6
#: Setting prefix -> baselines under which the setting does not act (docs/method.md §10).
NOT_APPLICABLE = {"cfg.ssr.": ("darts_pruning",), "cfg.shrink.": ("no_shrink",)}
#: Varied config columns that are not settings (noise, or the baseline handled on its own);
#: any ``*.seed`` column is noise too.
NOT_SETTINGS = ("cfg.seed", "cfg.baseline")
GAP = "discretization_gap"


@dataclass(frozen=True)
class Curve:
    """What a plot of one (setting, outcome) draws: the trials (outcome adjusted to a common
    baseline level) and the fitted line with its 90 % bootstrap band, in stored units."""

    x: np.ndarray  # the setting's values
    y: np.ndarray  # outcome minus its baseline's mean plus the pool's mean
    baseline: np.ndarray  # each point's baseline
    grid: np.ndarray  # x values of the line and band
    line: np.ndarray
    band_lo: np.ndarray | None  # None: no interval (too few trials)
    band_hi: np.ndarray | None
    log: bool


@dataclass(frozen=True)
class SettingEffects:
    """The estimates: one row per (setting, outcome), and what the sweep allowed."""

    table: (
        pd.DataFrame
    )  # setting, outcome, kind, n, low, high, log, effect, lo, hi, p, verdict, note
    outcomes: list[str]
    trials: int  # complete trials with finite objectives (the pool)
    too_small: bool  # no setting reaches MIN_TRIALS trials for any outcome
    curves: dict[tuple[str, str], Curve] = field(default_factory=dict)  # (setting, outcome)
    spread: dict[str, float] = field(default_factory=dict)  # outcome -> its sd over the pool

    def ranking(self) -> list[str]:
        """Settings, strongest first: those distinguishable from noise for more outcomes, then
        by their largest effect in units of the outcome's spread over the trials (|effect| / sd);
        settings with too few trials last."""
        spread = self.table["outcome"].map(self.spread).astype(float)
        table = self.table.assign(
            size=(self.table["effect"].astype(float).abs() / spread).fillna(0.0),
            found=self.table["verdict"] == "distinguishable",
            usable=~self.table["verdict"].str.startswith("too few"),
        )
        score = table.groupby("setting", sort=False).agg(
            found=("found", "sum"), usable=("usable", "any"), size=("size", "max")
        )
        score["size"] = score["size"].fillna(0.0)
        order = score.sort_values(["usable", "found", "size"], ascending=False, kind="stable")
        return list(order.index)


def _floats(series: pd.Series) -> np.ndarray:
    return pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)


def applies(setting: str, baselines: pd.Series) -> np.ndarray:
    """True where ``setting`` acts in a trial of that baseline (see :data:`NOT_APPLICABLE`)."""
    names = baselines.astype(object).fillna("")
    off = next((b for p, b in NOT_APPLICABLE.items() if setting.startswith(p)), ())
    return ~names.isin(off).to_numpy(dtype=bool)


def swept_settings(trials: pd.DataFrame) -> list[str]:
    """The ``cfg.*`` columns the sweep varied (numeric, two or more values): seeds excluded, and
    columns the baseline sets (constant within every baseline, e.g. ``shrink.enabled``)."""
    out = []
    names = trials["baseline"].astype(object).fillna("?")
    for column in (c for c in trials.columns if c.startswith("cfg.") and c not in NOT_SETTINGS):
        if column.endswith(".seed"):
            continue
        values = pd.Series(_floats(trials[column]), index=trials.index)
        present = values.notna()
        if present.sum() < 2 or values[present].nunique() < 2:
            continue
        if values[present].groupby(names[present]).nunique().max() <= 1:
            continue  # the baseline's doing, not a setting of its own
        out.append(column)
    return out


def _within(values: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """``values`` (..., n) minus the mean of their group (``onehot`` (..., n, g))."""
    sums = np.einsum("...ng,...n->...g", onehot, values)
    counts = onehot.sum(axis=-2)
    means = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    return values - np.einsum("...ng,...g->...n", onehot, means)


def _slopes(x: np.ndarray, y: np.ndarray, onehot: np.ndarray) -> np.ndarray:
    """Within-group least-squares slopes of y on x (NaN where x does not vary in a resample)."""
    xt, yt = _within(x, onehot), _within(y, onehot)
    sxx = (xt * xt).sum(axis=-1)
    ok = sxx > 1e-12 * np.maximum(1.0, (x * x).sum(axis=-1))
    return np.where(ok, (xt * yt).sum(axis=-1) / np.where(ok, sxx, 1.0), np.nan)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    """5th and 95th percentile of the finite resampled estimates (NaN when most are missing)."""
    good = samples[np.isfinite(samples)]
    if len(good) < 0.8 * len(samples):
        return float("nan"), float("nan")
    lo, hi = np.percentile(good, [5.0, 95.0])
    return float(lo), float(hi)


def _p_value(samples: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "the effect is 0": twice the smaller share of resampled
    estimates on either side of 0 (NaN when most resamples failed)."""
    good = samples[np.isfinite(samples)]
    if len(good) < 0.8 * len(samples):
        return float("nan")
    return float(min(1.0, 2.0 * min(np.mean(good <= 0), np.mean(good >= 0))))


def false_discoveries(p: np.ndarray, q: float = FDR) -> np.ndarray:
    """True where an estimate survives Benjamini & Hochberg's (1995) false-discovery control at
    rate ``q`` over all finite ``p``: with tens of estimates at 90 %, a few intervals exclude 0
    by chance, and this keeps those from being called findings."""
    p = np.asarray(p, dtype=float)
    keep = np.zeros(len(p), dtype=bool)
    finite = np.flatnonzero(np.isfinite(p))
    if len(finite) == 0:
        return keep
    order = finite[np.argsort(p[finite], kind="stable")]
    passed = p[order] <= q * np.arange(1, len(order) + 1) / len(order)
    if passed.any():
        keep[order[: np.flatnonzero(passed).max() + 1]] = True
    return keep


def _verdict(n: int, need: int, lo: float, hi: float) -> str:
    if n < need:
        return f"too few trials ({n} < {need})"
    if not np.isfinite(lo):
        return "no interval (the setting hardly varied)"
    return "distinguishable" if lo > 0 or hi < 0 else "within noise"


def _confounded(pool: pd.DataFrame, setting: str, settings: Sequence[str]) -> str:
    """Other settings whose sampled values moved with ``setting`` in ``pool``."""
    ranks = pool[list(settings)].apply(lambda s: pd.Series(_floats(s), index=s.index)).rank()
    corr = ranks.corr()[setting].drop(setting).dropna()
    close = corr[corr.abs() >= CONFOUNDED_R]
    return ", ".join(f"{c.removeprefix('cfg.')} (r={r:+.2f})" for c, r in close.items())


def _curve(
    x: np.ndarray,
    y: np.ndarray,
    names: np.ndarray,
    onehot: np.ndarray,
    slope: float,
    samples: np.ndarray | None,
    log: bool,
) -> Curve:
    """The fitted line through the pool's centre and the trials as partial residuals around it
    (each trial's residual from its baseline's fit, added to the line at its own value), so the
    points scatter about the line exactly as the estimate saw them."""
    xs = np.log10(x) if log else x
    residual = _within(y, onehot) - slope * _within(xs, onehot)
    y_adj = residual + y.mean() + slope * (xs - xs.mean())
    grid = np.linspace(xs.min(), xs.max(), 30)
    line = y.mean() + slope * (grid - xs.mean())
    band = None
    good = samples[np.isfinite(samples)] if samples is not None else np.zeros(0)
    if len(good):
        offsets = good[:, None] * (grid - xs.mean())[None, :]
        band = y.mean() + np.percentile(offsets, [5.0, 95.0], axis=0)
    shown = 10**grid if log else grid
    lo, hi = (None, None) if band is None else (band[0], band[1])
    return Curve(x, y_adj, names, shown, line, lo, hi, log)


def numeric_effect(
    pool: pd.DataFrame,
    setting: str,
    outcome: str,
    settings: Sequence[str],
    rng: np.random.Generator,
) -> tuple[dict[str, object], Curve | None]:
    """The effect of one numeric ``setting`` on ``outcome`` over the trials where it applies,
    and the curve a plot draws (None with fewer than two trials)."""
    rows = pool[applies(setting, pool["baseline"])]
    x, y = _floats(rows[setting]), _floats(rows[outcome])
    keep = np.isfinite(x) & np.isfinite(y)
    rows, x, y = rows[keep], x[keep], y[keep]
    n = len(x)
    log = bool(n and x.min() > 0 and x.max() >= 10 * x.min())
    out: dict[str, object] = {"kind": "log slope" if log else "slope", "n": n, "log": log,
                              "low": float(x.min()) if n else np.nan,
                              "high": float(x.max()) if n else np.nan}  # fmt: skip
    out.update(effect=np.nan, lo=np.nan, hi=np.nan, p=np.nan,
               verdict=_verdict(n, MIN_TRIALS, np.nan, np.nan))  # fmt: skip
    if n < 2:
        return {**out, "note": ""}, None
    xs = np.log10(x) if log else x
    names = rows["baseline"].astype(object).fillna("?").to_numpy()
    groups = pd.factorize(names)[0]
    onehot = np.eye(groups.max() + 1)[groups]
    span = float(xs.max() - xs.min())
    slope = float(_slopes(xs, y, onehot))
    samples = None
    if n >= 3:
        idx = rng.integers(0, n, size=(BOOTSTRAP, n))
        samples = _slopes(xs[idx], y[idx], onehot[idx])
        lo, hi = _interval(samples * span)
        out.update(lo=lo, hi=hi, p=_p_value(samples), verdict=_verdict(n, MIN_TRIALS, lo, hi))
    out["effect"] = slope * span
    note = _confounded(rows, setting, settings) if n >= 4 else ""
    fitted = n >= MIN_TRIALS and np.isfinite(slope)  # else: points only, their level removed
    curve = _curve(x, y, names, onehot, slope if fitted else 0.0, samples, log)
    return {**out, "note": f"moved with {note}" if note else ""}, curve


def baseline_effects(pool: pd.DataFrame, outcome: str, rng: np.random.Generator) -> list[dict]:
    """Each baseline's mean ``outcome`` minus the reference baseline's (``ssr`` when present)."""
    names = pool["baseline"].astype(object).fillna("unknown")
    y = _floats(pool[outcome])
    names, y = names[np.isfinite(y)], y[np.isfinite(y)]
    present = list(dict.fromkeys(sorted(names, key=lambda b: (b != "ssr", b))))
    if len(present) < 2:
        return []
    ref = present[0]
    y_ref = y[(names == ref).to_numpy()]
    out = []
    for other in present[1:]:
        y_other = y[(names == other).to_numpy()]
        n = min(len(y_ref), len(y_other))
        diff = float(y_other.mean() - y_ref.mean())
        a = y_ref[rng.integers(0, len(y_ref), size=(BOOTSTRAP, len(y_ref)))].mean(axis=1)
        b = y_other[rng.integers(0, len(y_other), size=(BOOTSTRAP, len(y_other)))].mean(axis=1)
        lo, hi = _interval(b - a) if n >= 2 else (float("nan"), float("nan"))
        p = _p_value(b - a) if n >= 2 else float("nan")
        out.append({"setting": f"baseline: {other} vs {ref}", "kind": "difference of means",
                    "n": len(y_ref) + len(y_other), "log": False, "low": np.nan, "high": np.nan,
                    "effect": diff, "lo": lo, "hi": hi, "p": p,
                    "verdict": _verdict(n, MIN_GROUP, lo, hi),
                    "note": f"{len(y_other)} {other} against {len(y_ref)} {ref} trials"})  # fmt: skip
    return out


def setting_effects(trials: pd.DataFrame, objectives: Sequence[tuple[str, bool]]) -> SettingEffects:
    """Every swept setting's effect on each objective and on the discretization gap, over the
    complete trials with finite objectives (``trials`` as :func:`analysis.front.analyze_front`
    leaves them: ``excluded_reason`` NA for those)."""
    pool = trials[trials["excluded_reason"].isna()]
    outcomes = [c for c, _ in objectives]
    if GAP in pool.columns and GAP not in outcomes and np.isfinite(_floats(pool[GAP])).any():
        outcomes.append(GAP)
    settings = swept_settings(pool)
    pool = pool[["baseline", *settings, *outcomes]]  # narrow: the estimates slice it often
    rng = np.random.default_rng(SEED)
    rows, curves = [], {}
    for outcome in outcomes:
        for setting in settings:
            effect, curve = numeric_effect(pool, setting, outcome, settings, rng)
            rows.append({"setting": setting, "outcome": outcome, **effect})
            if curve is not None:
                curves[setting, outcome] = curve
        rows += [{**r, "outcome": outcome} for r in baseline_effects(pool, outcome, rng)]
    columns = ["setting", "outcome", "kind", "n", "low", "high", "log", "effect", "lo", "hi",
               "p", "verdict", "note"]  # fmt: skip
    table = pd.DataFrame(rows, columns=columns)
    tested = ~table["verdict"].str.startswith("too few").to_numpy(dtype=bool)
    chance = (table["verdict"] == "distinguishable").to_numpy() & ~false_discoveries(
        np.where(tested, table["p"].to_numpy(dtype=float), np.nan)
    )
    table.loc[chance, "verdict"] = "within noise (FDR)"
    too_small = not (~table["verdict"].str.startswith("too few")).any() if len(table) else True
    spread = {o: float(np.nanstd(_floats(pool[o]), ddof=1)) if len(pool) > 1 else float("nan")
              for o in outcomes}  # fmt: skip
    return SettingEffects(table, outcomes, len(pool), too_small, curves, spread)
