"""Every method on the paper scenarios (``scenarios/paper/``), then ``fedsim compare``.

Usage::

    python benchmarks/bench_methods.py --trainer surrogate          # minutes: timing model + analytic curve
    python benchmarks/bench_methods.py                              # real training (hours on a CPU)
    python benchmarks/bench_methods.py --set engine.max_rounds=8 --set 'sweep.seed=[0]' --only fedlora,caesar
    python benchmarks/bench_methods.py --only 'droppeft,droppeft[compression=caesar]'   # rows by their table name

Incremental: a run whose ``summary.json`` says ``status: ok`` and whose ``config.yaml``
matches the scenario as resolved now is skipped, so an interrupted benchmark resumes
where it stopped, and a changed scenario is run again. Run folders are named by method, method
parameters and seed (not by sweep index), so a run keeps its folder when the sweep grows
or shrinks: ``<out>/<trainer>/<scenario>/<method[params]>_seed-<n>/``. After the runs,
one table per scenario is written to ``<out>/<trainer>/<scenario>/compare.{csv,md}``.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.study.compare import compare_runs, group_key, to_markdown, write_csv  # noqa: E402
from fedsim.study.parallel import run_all  # noqa: E402
from fedsim.study.scenario import load_scenario  # noqa: E402
from fedsim.study.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def run_dir_name(variant) -> str:
    sc = variant.scenario
    key = group_key({}, {"method": {"name": sc.method.name, "params": sc.method.params}})
    return re.sub(r"[^A-Za-z0-9_.=,-]+", "-", key).strip("-") + f"_seed-{sc.seed}"


def done(run_dir: Path, variant) -> bool:
    """The run finished, from the same resolved scenario (else it is stale: run it again)."""
    try:
        if json.loads((run_dir / "summary.json").read_text())["status"] != "ok":
            return False
        stored = yaml.safe_load((run_dir / "config.yaml").read_text())
    except (OSError, ValueError, KeyError, yaml.YAMLError):
        return False
    stored.pop("variant", None)
    return stored == json.loads(json.dumps(variant.scenario.model_dump(mode="json", exclude={"sweep"})))


def run_variant(scenario, run_dir: Path, root: Path) -> str:
    """Run one variant into ``run_dir``; a line for the log (failures are in its records)."""
    t0 = time.perf_counter()
    try:
        res = simulate(scenario, run_dir, label=run_dir.name, existing="overwrite")
    except Exception as exc:  # the records say what happened; go on with the others
        return f"FAIL {run_dir.relative_to(root)}: {exc}"
    acc = "-" if res.final_accuracy is None else f"{res.final_accuracy:.3f}"
    return (f"ran  {run_dir.relative_to(root)}: {res.rounds} rounds, acc {acc}, "
            f"{res.sim_time_s:.0f} s simulated, {time.perf_counter() - t0:.1f} s wall")


def goals(rows: list[dict]) -> str:
    """The issue's goals on one scenario's table (a method that missed the target in any
    seed counts as not reaching it)."""
    by = {r["group"]: r for r in rows}

    def ttt(r: dict) -> float:
        return r["time_to_target"] if r["reached"] == r["n"] else math.inf

    def traffic(r: dict) -> float:
        return r["traffic_up_gb"] + r["traffic_down_gb"]

    lines = []
    d, f = by.get("droppeft"), by.get("fedlora")
    others = {g: ttt(r) for g, r in by.items() if not g.startswith("droppeft")}
    if d is not None and others:
        best = min(others, key=others.get)
        verdict = "yes" if ttt(d) < others[best] else "no"
        lines.append(f"droppeft {ttt(d):.0f} s to target; fastest other method {best} {others[best]:.0f} s: "
                     f"droppeft beats every other method: {verdict}")
    if f is not None and "legend" in by:
        lines.append(f"legend vs fedlora, time to target: {ttt(f) / ttt(by['legend']):.2f}x (papers: 1.5-2.8x)")
    if f is not None and "caesar" in by:
        same = ttt(by["caesar"]) < math.inf and ttt(f) < math.inf
        lines.append(f"caesar vs fedlora, traffic up+down to the target: {1 - traffic(by['caesar']) / traffic(f):.0%} less"
                     + ("" if same else " (not both at the target in every seed)") + " (papers: 25-38%)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenarios", nargs="*", type=Path, help="scenario files (default: scenarios/paper/*.yaml)")
    ap.add_argument("--trainer", choices=("torch", "surrogate"), default="torch")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_methods")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="dotted.key=value (repeatable)")
    ap.add_argument("--only", default="",
                    help="comma-separated runs to run, as the table names them: a method without parameters "
                    "(fedlora) or with them (droppeft[compression=caesar]); default: all")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (the scenarios use one torch thread each)")
    args = ap.parse_args(argv)

    files = args.scenarios or sorted((ROOT / "scenarios" / "paper").glob("*.yaml"))
    only = set(re.findall(r"[^,\[]+(?:\[[^\]]*\])?", args.only))
    overrides = [f"trainer.kind={args.trainer}", *args.overrides]
    scenario_dirs = []
    tasks = []
    for file in files:
        variants = load_scenario(file, overrides=overrides)
        root = args.out / args.trainer / variants[0].scenario.name
        dirs = []
        for v in variants:
            label = group_key({}, {"method": {"name": v.scenario.method.name, "params": v.scenario.method.params}})
            if only and label not in only:
                continue
            run_dir = root / run_dir_name(v)
            dirs.append(run_dir)
            if done(run_dir, v):
                print(f"skip {run_dir.relative_to(args.out)} (done)", flush=True)
                continue
            tasks.append((v.scenario, run_dir, args.out))
        scenario_dirs.append((variants[0].scenario.name, root, dirs))
    for _, line in run_all(run_variant, tasks, args.jobs):
        print(line, flush=True)
    for name, root, dirs in scenario_dirs:
        ok = [d for d in dirs if (d / "summary.json").is_file() and (d / "rounds.csv").is_file()]
        if not ok:
            continue
        rows = compare_runs(ok)
        md = to_markdown(rows)
        write_csv(rows, root / "compare.csv")
        (root / "compare.md").write_text(md, encoding="utf-8")
        print(f"\n## {name} ({args.trainer}, {len(ok)} runs)\n\n{md}\n{goals(rows)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
