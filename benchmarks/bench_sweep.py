"""A what-if sweep with real training: what training reuse and parallel clients save.

Usage::

    python benchmarks/bench_sweep.py                        # fedlora, 5 rounds: ~10 min on 2 busy cores
    python benchmarks/bench_sweep.py --methods fedlora,stld-fixed,droppeft
    python benchmarks/bench_sweep.py --set engine.over_selection=1.0   # no quota: nothing cut by timing
    python benchmarks/bench_sweep.py --part round           # only the 10-client round

**Sweep.** ``scenarios/quickstart.yaml`` (1,000 phones, MiniLM-L6 + LoRA on 20news4, real
training), one method at a time, at 5 uplink bandwidths: every network class's
``uplink_mbps`` distribution scaled by 1, 1/2, 1/4, 1/8, 1/16 (a copy of
``device_profiles/`` per point, the fleet's draws otherwise unchanged). To run in a few
minutes here the run is cut to ``--rounds`` rounds (5; quickstart: 20), the global
evaluation to ``--eval-subsample`` test examples (200; quickstart: 500) and the
personalised one to ``--personal-eval-clients`` clients (50; quickstart: 200); every
point of every method gets the same cut. The 5 points run one after another in this process, three
times after an untimed warm-up (imports, tokenised data):

1. without reuse: each point trains everything (this is running each point alone; the
   median of their wall times is *one point*);
2. with reuse: the same 5 points sharing a fresh cache (``train.reuse.cache_dir``);

and prints the sweep's wall time over one point's for both, the cache's hit rate
(training results and evaluations, over the 4 points after the first, which is what a
timing-only sweep can reuse), whether every reuse point's ``rounds.csv`` and
``clients.csv`` are byte-identical to the point run alone, and per point the first round
whose arrived clients differ from the first point's (from then on the global models
differ, and nothing can be reused): with over-selection (quickstart: 13 selected for a
quota of 10) a slower uplink changes *which* 10 arrive first; DropPEFT's configurator
also picks arms from simulated times.

**Round.** One real-training round of 10 quickstart clients (the base plan, seeded), timed
side by side: one process with 1 torch thread, one process with 2 threads, and
``train.workers: 2`` (two worker processes, one thread each; their start is timed apart,
as a run pays it once). The median of ``--repeats`` rounds after a warm-up round, and a
check that the three give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.engine.records import read_summary  # noqa: E402
from fedsim.fleet.profiles import default_profiles_dir  # noqa: E402
from fedsim.study.scenario import Scenario, load_scenario  # noqa: E402
from fedsim.study.simulate import simulate  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
FACTORS = (1.0, 0.5, 0.25, 0.125, 0.0625)
RECORDS = ("rounds.csv", "clients.csv")
SCALED = ("median", "min", "max", "low", "high", "value", "mean")


def scaled_profiles(dest: Path, factor: float) -> Path:
    """A copy of the shipped profiles with every network's uplink scaled by ``factor``."""
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(default_profiles_dir(), dest)
    path = dest / "networks.yaml"
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    for net in doc["networks"].values():
        up = net["uplink_mbps"]
        if isinstance(up, dict):
            net["uplink_mbps"] = {k: (v * factor if k in SCALED else v) for k, v in up.items()}
        else:
            net["uplink_mbps"] = up * factor
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return dest


def scenario(method: str, args, extra: list[str]) -> Scenario:
    over = [f"engine.max_rounds={args.rounds}", f"data.eval_subsample={args.eval_subsample}",
            f"data.personal_eval_clients={args.personal_eval_clients}",
            f"train.threads={args.threads}", f"train.workers={args.workers}", *args.set, *extra]
    for v in load_scenario(QUICKSTART, overrides=over):
        if v.scenario.method.name == method:
            return v.scenario
    raise SystemExit(f"method {method!r} is not one of quickstart's")


def run_sweep(method: str, args, root: Path, cache: Path | None) -> tuple[float, float, list[dict]]:
    """Wall and CPU time of the 5 points one after another, and each point's summary (with its times)."""
    extra = [f"train.reuse.cache_dir={cache}"] if cache else []
    out = []
    t0, c0 = time.perf_counter(), time.process_time()
    for factor in FACTORS:
        sc = scenario(method, args, [f"fleet.profiles_dir={root.parent / f'profiles-up{factor:g}'}", *extra])
        t, c = time.perf_counter(), time.process_time()
        simulate(sc, root / f"up{factor:g}", existing="overwrite")
        out.append({**read_summary(root / f"up{factor:g}"), "point_wall_s": time.perf_counter() - t,
                    "point_cpu_s": time.process_time() - c})
    return time.perf_counter() - t0, time.process_time() - c0, out


def arrived_per_round(run: Path) -> list[frozenset]:
    import csv

    by_round: dict[int, set] = {}
    with open(run / "clients.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            by_round.setdefault(int(row["round"]), set())
            if row["outcome"] == "ok":
                by_round[int(row["round"])].add(int(row["device_id"]))
    return [frozenset(by_round[r]) for r in sorted(by_round)]


def first_divergence(a: list[frozenset], b: list[frozenset]) -> int | None:
    for r, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return r
    return None if len(a) == len(b) else min(len(a), len(b))


def bench_sweep(method: str, args, out: Path) -> dict:
    base = out / method
    for factor in FACTORS:
        scaled_profiles(base / f"profiles-up{factor:g}", factor)
    warm = scenario(method, args, ["engine.max_rounds=1", f"fleet.profiles_dir={base / 'profiles-up1'}"])
    simulate(warm, base / "warm-up", existing="overwrite")
    plain_s, plain_cpu_s, plain = run_sweep(method, args, base / "alone", None)
    cache = base / "cache"
    if cache.exists():
        shutil.rmtree(cache)
    reuse_s, reuse_cpu_s, reused = run_sweep(method, args, base / "reuse", cache)
    # One point: the median of the 5 run alone (the same work each; the median is robust
    # to other work on the host slowing one of them).
    one_s = statistics.median(s["point_wall_s"] for s in plain)
    one_cpu_s = statistics.median(s["point_cpu_s"] for s in plain)
    identical = all((base / "reuse" / f"up{f:g}" / name).read_bytes() == (base / "alone" / f"up{f:g}" / name).read_bytes()
                    for f in FACTORS for name in RECORDS)
    later = reused[1:]
    hits = {k: sum(s["reuse"]["hits"].get(k, 0) for s in later) for k in ("train", "eval")}
    looks = {k: hits[k] + sum(s["reuse"]["misses"].get(k, 0) for s in later) for k in ("train", "eval")}
    first = arrived_per_round(base / "alone" / "up1")
    diverge = [first_divergence(first, arrived_per_round(base / "alone" / f"up{f:g}")) for f in FACTORS[1:]]
    return {
        "method": method, "one_point_s": one_s, "sweep_plain_s": plain_s, "sweep_reuse_s": reuse_s,
        "ratio_plain": plain_s / one_s, "ratio_reuse": reuse_s / one_s, "identical": identical,
        "one_point_cpu_s": one_cpu_s, "cpu_ratio_plain": plain_cpu_s / one_cpu_s, "cpu_ratio_reuse": reuse_cpu_s / one_cpu_s,
        "train_hits": hits["train"], "train_lookups": looks["train"], "eval_hits": hits["eval"],
        "eval_lookups": looks["eval"], "diverge": diverge, "rounds": [s["rounds"] for s in plain],
        "point_alone_s": [round(s["point_wall_s"], 1) for s in plain],
        "point_reuse_s": [round(s["point_wall_s"], 1) for s in reused],
    }


def bench_round(args) -> dict:
    """One round of 10 clients: 1 thread, 2 threads, 2 workers; medians over ``repeats`` rounds,
    the set-ups taking turns (so that load from other work on the host hits them alike)."""
    import torch

    from fedsim.core.costmodel import ModelShape
    from fedsim.core.rng import Seeds
    from fedsim.learning.real.trainer import TorchTrainer
    from fedsim.study.simulate import build_base_plan

    sc = scenario("fedlora", args, [])
    rng = np.random.default_rng(11)
    clients = rng.choice(sc.fleet.size, size=10, replace=False)
    seeds = rng.integers(0, 2**63 - 1, size=10)
    setups = {"1 process, 1 thread": (1, 1), "1 process, 2 threads": (2, 1), "2 workers x 1 thread": (1, 2)}
    trainers, first_s, times, deltas = {}, {}, {k: [] for k in setups}, {}
    try:
        for label, (threads, workers) in setups.items():
            train = sc.train.model_copy(update={"threads": threads, "workers": workers})
            trainers[label] = TorchTrainer(sc.data, sc.model, train, sc.fleet.size, Seeds(sc.seed).generator("data"))
        plan = build_base_plan(sc, ModelShape.from_hf_config(trainers["1 process, 1 thread"].model_config))
        for r in range(args.repeats + 1):  # round 0: warm-up (and the workers' start)
            for label, (threads, _) in setups.items():
                torch.set_num_threads(threads)
                t = time.perf_counter()
                results = trainers[label].train(r, clients, [plan] * 10, seeds)
                if r:
                    times[label].append(time.perf_counter() - t)
                else:
                    first_s[label] = time.perf_counter() - t
                deltas[label] = [x.delta for x in results]
    finally:
        for trainer in trainers.values():
            trainer.close()
    ref = deltas["1 process, 1 thread"]
    same = all(a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
               for d in deltas.values() for a, b in zip(ref, d))
    out = {label: {"round_s": statistics.median(times[label]), "first_s": first_s[label], "all_s": times[label]}
           for label in setups}
    return {"rounds": out, "identical": same}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--methods", default="fedlora", help="comma-separated quickstart methods")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--eval-subsample", type=int, default=200)
    ap.add_argument("--personal-eval-clients", type=int, default=50)
    ap.add_argument("--threads", type=int, default=1, help="train.threads of every run (default 1: shared cores)")
    ap.add_argument("--workers", type=int, default=1, help="train.workers of every sweep run")
    ap.add_argument("--repeats", type=int, default=3, help="timed rounds per set-up in the round part")
    ap.add_argument("--part", choices=("all", "sweep", "round"), default="all")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override for every run")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_sweep")
    args = ap.parse_args()
    report: dict = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}}
    if args.part in ("all", "sweep"):
        report["sweeps"] = [bench_sweep(m, args, args.out) for m in args.methods.split(",")]
    if args.part in ("all", "round"):
        report["round"] = bench_round(args)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_sweep.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    print_report(report, args)


def print_report(report: dict, args) -> None:
    over = f"; overrides: {' '.join(args.set)}" if args.set else ""
    if "sweeps" in report:
        print(f"\n5-point uplink sweep (x{', x'.join(f'{f:g}' for f in FACTORS)}) of quickstart, {args.rounds} rounds, "
              f"eval on {args.eval_subsample} examples and {args.personal_eval_clients} clients, "
              f"{args.threads} torch thread(s), {args.workers} worker(s){over}")
        print(f"{'method':<11} {'1 point':>8} {'sweep':>8} {'ratio':>6} {'reuse':>8} {'ratio':>6} {'CPU ratios':>11} "
              f"{'train hits':>11} {'eval hits':>10} {'same bytes':>10}  first round arriving differently (x1/2..x1/16)")
        for s in report["sweeps"]:
            print(f"{s['method']:<11} {s['one_point_s']:>7.1f}s {s['sweep_plain_s']:>7.1f}s {s['ratio_plain']:>6.2f} "
                  f"{s['sweep_reuse_s']:>7.1f}s {s['ratio_reuse']:>6.2f} "
                  f"{s['cpu_ratio_plain']:>5.2f}/{s['cpu_ratio_reuse']:<5.2f} "
                  f"{s['train_hits']:>4}/{s['train_lookups']:<4} {s['eval_hits']:>3}/{s['eval_lookups']:<4}"
                  f"{'yes' if s['identical'] else 'NO':>10}  {['-' if d is None else d for d in s['diverge']]}")
        print("(ratio = sweep wall / one point's wall (median of the 5 alone), same run; CPU ratios: the same with "
              "this process's CPU time, without / with reuse; hits over the 4 points after the first; '-': the same "
              "clients arrived in every round)")
        for s in report["sweeps"]:
            print(f"  {s['method']}: points alone {s['point_alone_s']} s, with reuse {s['point_reuse_s']} s, "
                  f"rounds {s['rounds']}")
    if "round" in report:
        r = report["round"]["rounds"]
        base1, base2 = r["1 process, 1 thread"]["round_s"], r["1 process, 2 threads"]["round_s"]
        print(f"\nOne real-training round of 10 quickstart clients (median of {args.repeats}){over}")
        for label, v in r.items():
            print(f"  {label:<22} {v['round_s']:6.2f} s   x{base1 / v['round_s']:.2f} vs 1 thread, "
                  f"x{base2 / v['round_s']:.2f} vs 2 threads   (first round {v['first_s']:.1f} s)")
        print(f"  same bytes: {'yes' if report['round']['identical'] else 'NO'}")


if __name__ == "__main__":
    main()
