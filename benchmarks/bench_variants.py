"""Time to target of a scenario's sweep variants over seeds: mean, std, min and max.

    python benchmarks/bench_variants.py scenarios/async/quickstart-async.yaml --seeds 10
    python benchmarks/bench_variants.py scenarios/links/server-link.yaml --seeds 5 --set engine.server_link.up_mbps=100

Runs every variant of the scenario for seeds 0..N-1 (records under --out) and prints a
Markdown table per variant: simulated time to target in minutes, rounds, how many seeds
reached the target. ``fedsim compare`` groups by method; this groups by sweep variant.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fedsim.study.scenario import load_scenario  # noqa: E402
from fedsim.study.simulate import simulate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("scenario", type=Path)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-variants-"))
    table: dict[str, list] = {}
    for seed in range(args.seeds):
        for v in load_scenario(args.scenario, overrides=args.overrides, seed=seed):
            r = simulate(v.scenario, out / f"s{seed}" / (v.label or "run"), label=v.label, existing="overwrite")
            table.setdefault(v.label or "run", []).append((r.time_to_target_s, r.rounds))
    print(f"records: {out}\n")
    print("| variant | time to target, min (mean ± std) | min–max | rounds | reached |")
    print("|---|---|---|---|---|")
    for label, rows in table.items():
        t = np.array([np.nan if x is None else x / 60 for x, _ in rows])
        ok = t[~np.isnan(t)]
        span = f"{ok.min():.2f}–{ok.max():.2f}" if ok.size else "–"
        mean = f"{ok.mean():.2f} ± {ok.std(ddof=1) if ok.size > 1 else 0:.2f}" if ok.size else "–"
        print(f"| {label} | {mean} | {span} | {np.mean([n for _, n in rows]):.1f} | {ok.size}/{len(rows)} |")


if __name__ == "__main__":
    main()
