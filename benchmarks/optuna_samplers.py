#!/usr/bin/env python
"""What the sweep driver's Optuna path costs per trial as the study grows, per sampler.

The driver's searcher (:func:`sweeps.schedule.searchers.final_record_optuna`: Ray's OptunaSearch
on a SQLite study, read from memory and mirrored to the file by a writer process whose CPU is
not counted here, :mod:`sweeps.schedule.study_mirror`; told only final records) over the smoke sweep's five parameters, called as
``benchmarks/scale_loop.py`` calls it: two trials running at a time, 35 % told COMPLETE with
random objectives, the rest PRUNED. Prints the CPU milliseconds (``time.thread_time``) per trial
in each tenth of the trials: flat for a sampler whose cost per suggestion does not grow with the
study, rising for one that scans every finished trial per suggestion (O(n) per trial).

    nice -n 5 python benchmarks/optuna_samplers.py --trials 2000 --sampler tpe tpe-independent nsga2
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SAMPLERS = ("tpe", "tpe-independent", "nsga2", "random")


def searcher(kind: str, folder: Path) -> Any:
    """The driver's searcher with ``kind``'s sampler on a new SQLite study in ``folder``
    (``tpe``: the sweep's multivariate TPE; ``tpe-independent``: Optuna's default TPE, one
    estimator per parameter, which the sweep used before)."""
    from sweeps.schedule import searchers

    tpe = searchers.tpe_sampler
    if kind == "tpe-independent":  # NOTE: not a sweep-file choice; Optuna's default
        searchers.tpe_sampler = lambda seed: searchers.optuna.samplers.TPESampler(seed=seed)
    try:
        return searchers.final_record_optuna(
            [("derived_miou", "max"), ("fps_shared", "max")],
            "tpe" if kind == "tpe-independent" else kind,
            0,
            storage=f"sqlite:///{folder / 'optuna.db'}",
            study_name="s",
        )
    finally:
        searchers.tpe_sampler = tpe


def run(kind: str, trials: int) -> list[float]:
    """CPU ms per trial in each tenth of ``trials``."""
    from sweeps.define.spec import CONFIG_DIR, load_sweep

    sweep = load_sweep(CONFIG_DIR / "smoke.yaml")
    search = searcher(kind, Path(tempfile.mkdtemp(prefix="ssr-optuna-")))
    search.set_search_properties(None, None, sweep.param_space())
    rng = random.Random(0)
    running: list[tuple[str, dict]] = []
    tenth, out, last = max(1, trials // 10), [], time.thread_time()
    for i in range(trials):
        running.append((f"t{i:05d}", search.suggest(f"t{i:05d}")))
        if len(running) >= 2:
            trial_id, config = running.pop(0)
            result: dict[str, Any] = {"final_record": 0.0, "config": config}
            if rng.random() < 0.35:
                result.update(final_record=1.0, derived_miou=rng.random(),
                              fps_shared=rng.uniform(20, 200), genotype_id="g")  # fmt: skip
            search.on_trial_complete(trial_id, result=result)
        if (i + 1) % tenth == 0:
            now = time.thread_time()
            out.append(round(1000 * (now - last) / tenth, 1))
            last = now
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=2000)
    p.add_argument("--sampler", nargs="+", choices=SAMPLERS, default=["tpe", "nsga2"])
    p.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    figures = {}
    for kind in args.sampler:
        figures[kind] = run(kind, args.trials)
        print(kind, "CPU ms per trial by tenth:", *figures[kind], flush=True)
    if args.json:
        args.json.write_text(json.dumps({"trials": args.trials, "cpu_ms_by_tenth": figures}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
