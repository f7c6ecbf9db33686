"""Does the one-shot ranking predict the retrained one? (BENCHMARKS.md, "CamVid").

Reads a sweep run that retrained every derived network (``sweeps/configs/camvid.yaml``) and
measures, over its complete trials (one row per unique genotype), how each proxy a search
records ranks the networks against their retrained mIoU: Kendall's tau-b and Spearman's rho with
90 % bootstrap intervals over networks (:func:`analysis.proxy.rank_agreement`). Proxies:

- ``derived_miou``: the derived network with weights inherited from the supernet, BN
  recalibrated: what a front without retraining ranks by;
- ``supernet_miou``: the supernet at the end of the search;
- ``gmacs``: the network's cost alone (a bigger network does better), the baseline any proxy
  must beat to be worth its evaluation.

It also gives the retrained mIoU's own noise where the run has it (the 90 % interval over
validation images), so a reader can tell how much of a weak correlation is the target's noise.

Usage::

    python benchmarks/proxy_ranking.py --run runs/<camvid sweep> [--json out.json]

Prints a table and one JSON object (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis.load import from_parquet  # noqa: E402
from analysis.proxy import PROXIES, rank_agreement  # noqa: E402


def measure(run: Path, target: str = "retrained_miou", resamples: int = 2000) -> dict:
    """Every proxy's agreement with ``target`` over the complete trials of ``run``."""
    df = from_parquet(run)
    done = df[df["usable"]] if "usable" in df else df
    if target not in done or done[target].notna().sum() == 0:
        raise SystemExit(f"error: {run}: no complete trial has {target} (retraining off?)")
    rows = []
    for proxy, higher in PROXIES.items():
        if proxy in done and done[proxy].notna().any():
            rows.append(
                rank_agreement(done, proxy, target, higher_is_better=higher, resamples=resamples)
            )
    lo, hi = f"{target}_lo", f"{target}_hi"
    width = (done[hi] - done[lo]).dropna() if lo in done and hi in done else None
    return {
        "run": str(run),
        "target": target,
        "trials_complete": len(done),
        "unique_networks": rows[0].n if rows else 0,
        "target_range_pts": float(100 * (done[target].max() - done[target].min())),
        "target_interval_width_pts": float(100 * width.median())
        if width is not None and len(width)
        else None,
        "agreement": [{**r.as_dict(), "verdict": r.verdict} for r in rows],
    }


def _nan_to_null(value: object) -> object:
    """JSON has no NaN: an undefined correlation is written as null."""
    if isinstance(value, dict):
        return {k: _nan_to_null(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_nan_to_null(v) for v in value]
    return None if isinstance(value, float) and value != value else value


def table(result: dict) -> str:
    lines = [
        f"run {result['run']}: {result['trials_complete']} complete trials, "
        f"{result['unique_networks']} unique networks; {result['target']} spans "
        f"{result['target_range_pts']:.1f} pts"
        + (
            f", median 90 % interval width {result['target_interval_width_pts']:.1f} pts"
            if result["target_interval_width_pts"] is not None
            else ""
        ),
        "",
        "| proxy | n | Kendall tau [90 %] | Spearman rho [90 %] | P(tau > 0) | verdict |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for a in result["agreement"]:
        lines.append(
            f"| {a['proxy']} | {a['n']} | {a['kendall_tau']:.2f} [{a['kendall_lo']:.2f}, "
            f"{a['kendall_hi']:.2f}] | {a['spearman']:.2f} [{a['spearman_lo']:.2f}, "
            f"{a['spearman_hi']:.2f}] | {a['p_positive']:.2f} | {a['verdict']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, required=True, help="a sweep's run folder")
    ap.add_argument("--target", default="retrained_miou")
    ap.add_argument("--resamples", type=int, default=2000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if not (args.run / "results.parquet").is_file() and not args.run.is_file():
        ap.error(f"{args.run} holds no results.parquet")
    result = measure(args.run, args.target, args.resamples)
    print(table(result))
    text = json.dumps(_nan_to_null(result), indent=2)
    print(text)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
