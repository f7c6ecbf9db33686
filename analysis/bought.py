"""The section "What each setting bought" of report.md and of the notebook (one rendering of
:class:`analysis.effects.SettingEffects`): a table with each setting's effect on each objective
and on the gap, its 90 % interval and verdict, the findings in words, and the figure's link.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.effects import (
    BOOTSTRAP,
    CONFOUNDED_R,
    FDR,
    MIN_GROUP,
    MIN_TRIALS,
    SettingEffects,
)
from analysis.labels import display_scale, is_miou

TITLE = "What each setting bought"
DISTINCT = "distinguishable"


def unit(outcome: str) -> str:
    """The unit an effect on ``outcome`` is given in: percentage points for mIoU and the gap."""
    if is_miou(outcome):
        return "pts"
    return "FPS" if outcome.startswith("fps") else ""


def signed(value: float, outcome: str) -> str:
    """An effect in display units with its sign, e.g. ``+1.23``."""
    if value is None or not np.isfinite(value):
        return "-"
    return f"{value * display_scale(outcome):+.3g}"


def effect_cell(row: pd.Series) -> str:
    """``+1.2 [-0.3, +2.8]``; bold with a check mark when distinguishable from noise, the reason
    in brackets when no claim can be made."""
    value = signed(row["effect"], row["outcome"])
    if row["verdict"].startswith("too few"):
        return f"{value} ({row['verdict']})"
    span = f"[{signed(row['lo'], row['outcome'])}, {signed(row['hi'], row['outcome'])}]"
    if row["verdict"] == DISTINCT:
        return f"**{value}** {span} ✔"
    if row["verdict"].endswith("(FDR)"):
        return f"{value} {span} (FDR)"
    return f"{value} {span}" if np.isfinite(row["lo"]) else f"{value} ({row['verdict']})"


def setting_name(setting: str) -> str:
    return setting.removeprefix("cfg.")


def _tried(row: pd.Series) -> str:
    if not np.isfinite(row["low"]):
        return ""
    scale = " (log)" if row["log"] else ""
    return f"{row['low']:.3g} to {row['high']:.3g}{scale}"


def effects_table(effects: SettingEffects) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the table: setting, values tried, trials, one column per outcome;
    strongest setting first (:meth:`analysis.effects.SettingEffects.ranking`)."""
    table = effects.table
    head = ["setting", "values tried", "trials", *(f"{o} ({unit(o)})" for o in effects.outcomes)]
    rows = []
    for setting in effects.ranking():
        group = table[table["setting"] == setting]
        by = group.set_index("outcome", drop=False)
        first = group.iloc[0]
        cells = [effect_cell(by.loc[o]) if o in by.index else "" for o in effects.outcomes]
        rows.append([setting_name(str(setting)), _tried(first), str(first["n"]), *cells])
    return head, rows


def findings(effects: SettingEffects) -> list[str]:
    """The distinguishable effects in words, or plainly that there are none."""
    found = effects.table[effects.table["verdict"] == DISTINCT]
    if effects.too_small:
        return [
            f"**This sweep is too small to say what any setting bought**: {effects.trials} "
            f"complete trial(s); an estimate needs at least {MIN_TRIALS} trials that carry the "
            f"setting ({MIN_GROUP} per baseline for the baseline). The numbers above are shown "
            "for the record; none of them is a finding."
        ]
    if not len(found):
        return [
            f"No setting's effect is distinguishable from noise in these {effects.trials} "
            "complete trials: every 90 % interval includes 0 (or too few trials carry it)."
        ]
    out = ["Distinguishable from noise (90 % interval excludes 0):"]
    for setting, group in found.groupby("setting", sort=False):
        parts = [
            f"{r.outcome} {signed(r.effect, r.outcome)} {unit(r.outcome)} "
            f"[{signed(r.lo, r.outcome)}, {signed(r.hi, r.outcome)}]"
            for r in group.itertuples()
        ]
        out.append(f"- {setting_name(str(setting))}: " + "; ".join(parts))
    return out


def confounding(effects: SettingEffects) -> list[str]:
    """Settings whose sampled values moved together (their effects cannot be told apart)."""
    notes = effects.table[effects.table["note"].str.startswith("moved with")]
    notes = notes.drop_duplicates("setting")
    return [f"- {setting_name(r.setting)} {r.note}" for r in notes.itertuples()]


def method_text() -> str:
    return (
        "Strongest first (distinguishable for more outcomes, then the largest effect in units of "
        "the outcome's spread). Each row: how much each objective and the discretization gap "
        "moved when the setting "
        "went from the lowest to the highest value the sweep tried (a least-squares slope within "
        "baselines, times that span; log scale for settings spanning a decade), and for the "
        "baseline the difference of means against `ssr`. Brackets: 90 % percentile bootstrap "
        f"interval over trials ({BOOTSTRAP} resamples). ✔: the interval excludes 0, at least "
        f"{MIN_TRIALS} trials carry the setting, and it survives a false-discovery control at "
        f"{FDR:.0%} over all the estimates (Benjamini-Hochberg; `(FDR)`: excluded 0, but no more "
        "often than chance across this many estimates). Only complete trials enter; SSR weights are left "
        "out of `darts_pruning` trials (fixed at 0 there) and the shrinking schedule out of "
        "`no_shrink` trials (no shrinking). The seed is noise, not a setting. mIoU and the gap "
        "in percentage points (pts), FPS in frames per second. Method: analysis/effects.py. "
        "(optuna-dashboard's importance ranks every parameter over every trial, SSR weights "
        "included where `darts_pruning` fixes them at 0; this table does not.)"
    )


def bought_lines(effects: SettingEffects | None, figure: str | None = None) -> list[str]:
    """The whole section as markdown lines (``figure``: the file name of the effects plot)."""
    from analysis.tables import md_table  # NOTE: here: analysis.tables imports this module

    out = [f"## {TITLE}", ""]
    if effects is None or not len(effects.table):
        return [*out, "Nothing to estimate: the sweep varied no setting among complete trials."]
    head, rows = effects_table(effects)
    out += [method_text(), "", md_table(head, rows), "", *findings(effects)]
    shared = confounding(effects)
    if shared:
        out += ["", f"Sampled together (|Spearman r| >= {CONFOUNDED_R}): their effects may be "
                "each other's.", *shared]  # fmt: skip
    if figure:
        out += ["", f"![{TITLE}]({figure}) (points: trials as partial residuals, their baseline's "
                "level removed; line and band: the slope and its 90 % bootstrap band, drawn only "
                f"where at least {MIN_TRIALS} trials carry the setting)"]  # fmt: skip
    return out
