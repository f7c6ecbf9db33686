"""How much one network's latency differs from one ONNX Runtime session to the next.

    python benchmarks/session_noise.py --table tables/default_cpu_ort_t1_256x512.json \\
        [--networks 6] [--sessions 3] [--seed 0] [--json out.json]

Draws ``--networks`` networks of the table's space as ``benchmarks/latency_model.py`` does
(mixed draws, same seed: the same networks as its first ones), and times each in ``--sessions``
fresh sessions of its deploy form, interleaved (every network once per round), with the table's
bench settings. Prints per network the session medians and their spread (max / min - 1). A
spread well above the within-session noise means a network measured in one session carries
that session's luck, which is why ``ssr.measure.latency.measure_networks`` takes a new session
per pass (BENCHMARKS.md, machine D, quiet machine). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main(argv: list[str] | None = None) -> int:
    from latency_model import mixed_genotype

    from ssr.measure.host import OtherLoad
    from ssr.measure.latency import _network_maker, time_block
    from ssr.method.latency_table import LatencyTable, table_sum_ms

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--table", required=True)
    p.add_argument("--networks", type=int, default=6)
    p.add_argument("--sessions", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    table = LatencyTable.load(args.table)
    rng, nets, seen = random.Random(args.seed), [], set()
    while len(nets) < args.networks:
        g = mixed_genotype(table.space, rng, table.reduction, table.head)
        if g.id not in seen:
            seen.add(g.id)
            nets.append(g)
    makers = [_network_maker(g, table.bench, table.num_classes) for g in nets]
    one = dataclasses.replace(table.bench, repeats=1)
    times: list[list[float]] = [[] for _ in nets]
    with OtherLoad() as load:
        for _ in range(args.sessions):
            for i, make in enumerate(makers):
                times[i].append(round(time_block(make(), one, table.clock, "median"), 3))
    rows = [
        {
            "genotype_id": g.id,
            "table_ms": round(table_sum_ms(table, g)["total"], 3),
            "session_ms": t,
            "spread_pct": round(100 * (max(t) / min(t) - 1), 1),
        }
        for g, t in zip(nets, times)
    ]
    for r in rows:
        print(f"{r['genotype_id']}  table {r['table_ms']:6.2f} ms  sessions {r['session_ms']}  "
              f"spread {r['spread_pct']} %")  # fmt: skip
    out = {
        "table": args.table,
        "other_load": load.value,
        "rows": rows,
        "command": " ".join(sys.argv),
    }
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
