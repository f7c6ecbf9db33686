"""A picture of a derived architecture, drawn from its genotype JSON (docs/architecture.md §4).

One box per block, left to right: the stem, then per stage its reduction (grey) and its searched
layers (docs/method.md §7). A layer's box is coloured by its dilation, its height is its output
width ``c_out`` and an inner bar shows the mid width ``c_mid`` (the channel dimensions SSR
searches); layers run at half (or lower) resolution are hatched and labelled ``/2``. Stages are
separated by a dashed line. Only the genotype JSON is needed (no torch). A trial draws its own
among its final files (:func:`draw_final`, about 70 ms of CPU that the sweep's one driver would
otherwise spend per trial); the driver draws it only for a checkpoint without one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DILATION_COLOURS = {1: "#4C72B0", 2: "#55A868", 4: "#C44E52", 8: "#8172B2", 16: "#CCB974"}
_OTHER = "#64B5CD"
#: The drawing's name among a trial's final files and its run's artifacts.
DRAWING = "architecture.png"


def _load(genotype: str | dict[str, Any] | Path) -> dict[str, Any]:
    if isinstance(genotype, dict):
        return genotype
    if isinstance(genotype, Path):
        return json.loads(genotype.read_text())
    return json.loads(genotype)


def _blocks(g: dict[str, Any]) -> list[dict[str, Any]]:
    """The stem, then per stage its reduction and its layers, in network order."""
    blocks: list[dict[str, Any]] = [{"kind": "stem", "c_out": g["stem"], "stage": -1}]
    for s, red in enumerate(g["reductions"]):
        blocks.append({"kind": "red", "c_out": red["c_in"] + red["c_conv"], "stage": s})
        blocks.extend({"kind": "layer", **layer} for layer in g["layers"] if layer["stage"] == s)
    return blocks


def _draw_block(ax: Any, b: dict[str, Any], x: float, width: float, top: int) -> str | None:
    """One bar: grey for the stem and reductions, coloured by dilation (hatched when pooled) with
    an inner c_mid bar for a layer. Returns the layer's colour (None for the fixed blocks)."""
    from matplotlib.patches import Rectangle

    h = b["c_out"] / top
    if b["kind"] != "layer":
        ax.add_patch(Rectangle((x, 0), width, h, fc="0.8", ec="0.3", lw=0.8))
        name = "stem" if b["kind"] == "stem" else "red"
        ax.text(x + width / 2, h + 0.02, name, ha="center", va="bottom", fontsize=6, rotation=90)
        ax.text(x + width / 2, -0.03, str(b["c_out"]), ha="center", va="top", fontsize=6)
        return None
    colour = DILATION_COLOURS.get(b["dilation"], _OTHER)
    pooled = b["pool"] > 1
    ax.add_patch(Rectangle((x, 0), width, h, fc=colour, ec="0.2", lw=0.8,
                           hatch="//" if pooled else None, alpha=0.9))  # fmt: skip
    mid = b["c_mid"] / top
    ax.add_patch(
        Rectangle((x + width * 0.35, 0), width * 0.3, mid, fc="white", ec="0.2", lw=0.5, alpha=0.6)
    )
    label = f"d{b['dilation']}" + (f" /{b['pool']}" if pooled else "")
    ax.text(x + width / 2, h + 0.02, label, ha="center", va="bottom", fontsize=6, rotation=90)
    ax.text(
        x + width / 2, -0.03, f"{b['c_mid']}\n{b['c_out']}", ha="center", va="top", fontsize=5.5
    )
    return colour


def _decorate(ax: Any, g: dict[str, Any], used: dict[int, str], n: int, title: str | None,
              width: float, gap: float) -> None:  # fmt: skip
    """Axes limits, the legend of the dilations used and the title with the stage depths."""
    from matplotlib.patches import Patch

    ax.set_xlim(-gap, n * (width + gap))
    ax.set_ylim(-0.22, 1.25)
    ax.set_yticks([])
    ax.set_xticks([])
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    handles = [Patch(fc=c, ec="0.2", label=f"dilation {d}") for d, c in sorted(used.items())]
    handles.append(Patch(fc="white", ec="0.2", hatch="//", label="pooled (/2)"))
    handles.append(Patch(fc="white", ec="0.2", alpha=0.6, label="inner bar: c_mid"))
    ax.legend(
        handles=handles, loc="upper left", fontsize=6, ncol=min(4, len(handles)), frameon=False
    )
    depths = [
        sum(1 for lay in g["layers"] if lay["stage"] == s) for s in range(len(g["reductions"]))
    ]
    ax.set_title(
        title
        or f"genotype {g.get('id', '')}  depths {'+'.join(map(str, depths))}  "
        f"(height: c_out, labels below: c_mid / c_out)",
        fontsize=8,
    )


def draw_genotype(
    genotype: str | dict[str, Any] | Path, path: str | Path, title: str | None = None
) -> Path:
    """Draw ``genotype`` (JSON text, dict or a genotype.json path) into a PNG at ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    g = _load(genotype)
    blocks = _blocks(g)
    top = max(b["c_out"] for b in blocks)
    fig = Figure(figsize=(max(6.0, 0.55 * len(blocks) + 1.5), 3.6), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width, gap = 0.8, 0.2
    used: dict[int, str] = {}
    prev_stage = -1
    for i, b in enumerate(blocks):
        x = i * (width + gap)
        if b["stage"] != prev_stage and i > 0:
            ax.axvline(x - gap / 2, color="0.6", lw=0.8, ls="--")
            prev_stage = b["stage"]
        colour = _draw_block(ax, b, x, width, top)
        if colour is not None:
            used[b["dilation"]] = colour
    _decorate(ax, g, used, len(blocks), title, width, gap)
    out = Path(path)
    fig.savefig(out, bbox_inches="tight")
    return out


def trial_title(trial_id: Any, genotype_id: Any) -> str:
    """The title of a trial's drawing: its id and its genotype's."""
    return f"{trial_id}  genotype {genotype_id}"


def draw_final(final: Path, trial_id: Any, genotype_id: Any) -> Path | None:
    """Draw ``final/genotype.json`` into ``final/architecture.png`` (None: no genotype)."""
    geno = Path(final) / "genotype.json"
    if not geno.is_file():
        return None
    return draw_genotype(geno, Path(final) / DRAWING, title=trial_title(trial_id, genotype_id))
