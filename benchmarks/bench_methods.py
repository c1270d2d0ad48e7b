"""Every method on the paper scenarios (``scenarios/paper/``), then ``fedsim compare``.

Usage::

    python benchmarks/bench_methods.py --trainer surrogate          # minutes: timing model + analytic curve
    python benchmarks/bench_methods.py                              # real training (hours on a CPU)
    python benchmarks/bench_methods.py --set engine.max_rounds=8 --set 'sweep.seed=[0]' --only fedlora,caesar

Incremental: a run whose ``summary.json`` says ``status: ok`` is skipped, so an
interrupted benchmark resumes where it stopped. Run folders are named by method, method
parameters and seed (not by sweep index), so a run keeps its folder when the sweep grows
or shrinks: ``<out>/<trainer>/<scenario>/<method[params]>_seed-<n>/``. After the runs,
one table per scenario is written to ``<out>/<trainer>/<scenario>/compare.{csv,md}``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.compare import compare_runs, group_key, to_markdown, write_csv  # noqa: E402
from fedsim.scenario import load_scenario  # noqa: E402
from fedsim.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_dir_name(variant) -> str:
    sc = variant.scenario
    key = group_key({}, {"method": {"name": sc.method.name, "params": sc.method.params}})
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "-", key).strip("-") + f"_seed-{sc.seed}"


def done(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "summary.json").read_text())["status"] == "ok"
    except (OSError, ValueError, KeyError):
        return False


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", type=Path, help="scenario files (default: scenarios/paper/*.yaml)")
    ap.add_argument("--trainer", choices=("torch", "surrogate"), default="torch")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_methods")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value (repeatable)")
    ap.add_argument("--only", default="", help="comma-separated method names to run (default: all)")
    args = ap.parse_args(argv)

    files = args.scenarios or sorted((ROOT / "scenarios" / "paper").glob("*.yaml"))
    only = {m for m in args.only.split(",") if m}
    overrides = [f"trainer.kind={args.trainer}", *args.overrides]
    for file in files:
        variants = load_scenario(file, overrides=overrides)
        root = args.out / args.trainer / variants[0].scenario.name
        dirs = []
        for v in variants:
            if only and v.scenario.method.name not in only:
                continue
            run_dir = root / run_dir_name(v)
            dirs.append(run_dir)
            if done(run_dir):
                print(f"skip {run_dir.relative_to(args.out)} (done)", flush=True)
                continue
            t0 = time.perf_counter()
            try:
                res = simulate(v.scenario, run_dir, label=run_dir.name)
                acc = "-" if res.final_accuracy is None else f"{res.final_accuracy:.3f}"
                print(f"ran  {run_dir.relative_to(args.out)}: {res.rounds} rounds, acc {acc}, "
                      f"{res.sim_time_s / 3600:.2f} h simulated, {time.perf_counter() - t0:.1f} s wall", flush=True)
            except Exception as exc:  # the records say what happened; go on with the others
                print(f"FAIL {run_dir.relative_to(args.out)}: {exc}", flush=True)
        ok = [d for d in dirs if (d / "summary.json").is_file() and (d / "rounds.csv").is_file()]
        if not ok:
            continue
        rows = compare_runs(ok)
        md = to_markdown(rows)
        write_csv(rows, root / "compare.csv")
        (root / "compare.md").write_text(md, encoding="utf-8")
        print(f"\n## {variants[0].scenario.name} ({args.trainer}, {len(ok)} runs)\n\n{md}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
