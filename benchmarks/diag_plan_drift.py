"""Why a DropPEFT run's plans drift from the prior's: its gains, arm by arm, and the plans they lead to.

Usage::

    python benchmarks/diag_plan_drift.py runs/gpu-1127/torch/minilm-dir01/droppeft [--scale mean] [--monotone true|false|noisy]

Reads the runs of one ``bench_configurator.py`` row that were made with ``--log-gains``
(``seed*/gains.jsonl`` beside ``scenario.yaml`` and ``clients.csv``) and prints

1. per arm, pooled over the seeds, each update's gain over its round's median size: the
   mean (with its standard error), the share at or below zero (harmful), and three ratios
   to the full arm: of the mean signed gains (what adds up in the aggregate), of the
   geometric mean sizes ``|gain|`` (what ``worth_scale: log`` with ``signed_worth: true``
   learns before the harm shares) and of the floored gains (``worth_scale: log``, the
   default: a gain at or below zero counted at a tenth of its round's median);
2. per seed, the mean dropout of the arriving updates in the first 10 rounds: what the run
   did, what the posterior median's plan would have been for the same devices (the gains
   of the rounds before replayed into a fresh model with the row's parameters, or
   ``--scale`` / ``--monotone``), and the prior's plan (learning off). Where the median's
   plan is as far from the prior's as the run, the drift is the model's estimates, not
   its exploration.

With ``--compare ROW [ROW ...]`` (rows of one environment, ``--log-gains`` or not) it
prints instead, per row, over its seeds' rounds 1 to ``--first`` (7): the mean round
length, the drop in evaluated loss per round and per simulated second, the gain in
accuracy per second and the mean dropout of the arriving updates: what a plan buys,
round by round, where the time to target says only which run crossed first::

    python benchmarks/diag_plan_drift.py --compare runs/gpu-1127/torch/minilm-dir01/{droppeft-no-learning,droppeft}
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def arm_table(seeds: list[Path], names: list[str]) -> None:
    signed = {a: [] for a in range(len(names))}
    for sd in seeds:
        for d in map(json.loads, (sd / "gains.jsonl").read_text().splitlines()):
            g, arms = np.array(d["gains"], dtype=float), np.array(d["arms"])
            ok = np.isfinite(g)
            size = float(np.median(np.abs(g[ok]))) if ok.any() else 0.0
            if size > 0:
                for a, x in zip(arms[ok], g[ok]):
                    signed[int(a)].append(x / size)
    full = np.array(signed[0])
    if full.size == 0:
        print("no gains of the full arm: no ratios")
        return

    def floored(x: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(x, 0.1))  # the round's median size is 1 here

    print("| arm | updates | mean gain (se) | harmful | mean / full | size / full (geometric) | floored / full (geometric) |")
    print("|---|---|---|---|---|---|---|")
    for a, name in enumerate(names):
        x = np.array(signed[a])
        if x.size == 0:
            continue
        se = x.std(ddof=1) / np.sqrt(x.size) if x.size > 1 else float("nan")
        nz = x[x != 0]
        size = np.exp(np.mean(np.log(np.abs(nz))) - np.mean(np.log(np.abs(full[full != 0])))) if nz.size else float("nan")
        print(f"| {name} | {x.size} | {x.mean():+.2f} ({se:.2f}) | {np.mean(x <= 0):.2f} | {x.mean() / full.mean():+.2f} "
              f"| {size:.2f} | {np.exp(floored(x).mean() - floored(full).mean()):.2f} |")


def plan_table(seeds: list[Path], scale: str | None, monotone: bool | str | None = None) -> None:
    from fedsim.core.costmodel import CostCoefficients
    from fedsim.core.rng import Seeds
    from fedsim.fleet.fleet import sample_fleet
    from fedsim.fleet.profiles import load_profiles
    from fedsim.methods.configurator import paced_assignment
    from benchmarks.bench_configurator import recorded_method
    from fedsim.methods.droppeft import DropPEFT, DropPEFTParams, feasible_arms
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import build_base_plan, model_shape_for

    print("\n| seed | rounds | run | posterior median's plan | prior's plan | order on, evaluations 1-12 |")
    print("|---|---|---|---|---|---|")
    for sd in seeds:
        wanted = yaml.safe_load((sd / "scenario.yaml").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "input.yaml"
            path.write_text(yaml.safe_dump(wanted["scenario"], sort_keys=False))
            overrides = [o for o in wanted.get("overrides", []) if not o.startswith("train.device")]
            sc = load_scenario(path, overrides=overrides)[0].scenario
        fleet = sample_fleet(sc.fleet, load_profiles(sc.fleet.profiles_dir), Seeds(sc.seed).generator("fleet"))
        shape = model_shape_for(sc)
        # The parameters the run was made with (a default may have changed since).
        params = recorded_method(wanted, {})
        params = {k: v for k, v in params.items() if k in DropPEFTParams.model_fields and k != "learning"}
        if scale is not None:
            params["worth_scale"] = scale
        if monotone is not None:
            params["monotone_worth"] = monotone
        base = build_base_plan(sc, shape)
        method = DropPEFT(DropPEFTParams(**params), shape, base)
        prior = DropPEFT(DropPEFTParams(**params, learning=False), shape, base).model
        logs = {d["round"]: d for d in map(json.loads, (sd / "gains.jsonl").read_text().splitlines())}
        by_round: dict[int, list[dict]] = {}
        with open(sd / "clients.csv", newline="") as f:
            for r in csv.DictReader(f):
                by_round.setdefault(int(r["round"]), []).append(r)
        q = sc.engine.clients_per_round
        ran, median, prior_d, order = [], [], [], []
        for rnd in sorted(by_round):
            rows = by_round[rnd]
            ids = np.array([int(r["device_id"]) for r in rows])
            ok, _, times = feasible_arms(fleet, ids, shape, method.arms, CostCoefficients(), sc.engine.round_deadline_s)

            def drop(worth: np.ndarray) -> float:
                choice, _ = paced_assignment(worth, times, ok, q, np.zeros(ids.size, np.int64))
                t = np.where(ok.any(axis=1), times[np.arange(ids.size), choice], np.inf)
                return float(np.mean([method.arms[choice[i]].mean_drop for i in np.argsort(t, kind="stable")[:q]]))

            if rnd < 10:
                median.append(drop(method.model.worth()))
                prior_d.append(drop(prior.worth()))
                ran.append(np.mean([float(r["mean_drop"]) for r in rows if r["outcome"] == "ok"] or [np.nan]))
            if rnd in logs:
                method.model.observe(np.array(logs[rnd]["arms"]), np.array(logs[rnd]["gains"]))
                order.append(str(int(method.model.order_on())))
        print(f"| {sd.name} | {len(by_round)} | {np.nanmean(ran):.2f} | {np.mean(median):.2f} | {np.mean(prior_d):.2f} "
              f"| {''.join(order[:12])} |")


def progress_table(rows: list[Path], first: int = 7) -> None:
    """Per row, pooled over its finished seeds' rounds 1..``first``: round length, loss drop
    per round and per second, accuracy gain per second, mean dropout of arriving updates."""
    print("| row | seeds | round (s) | loss drop / round | loss drop / s | accuracy gain / s | mean dropout |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        dur, drop, gain, md, n = [], [], [], [], 0
        for sd in sorted(row.glob("seed*")):
            if not sd.name[4:].isdigit() or not (sd / "rounds.csv").is_file() or not (sd / "clients.csv").is_file():
                continue
            with open(sd / "rounds.csv", newline="") as f:
                rounds = list(csv.DictReader(f))
            ok: dict[int, list[float]] = {}
            with open(sd / "clients.csv", newline="") as f:
                for r in csv.DictReader(f):
                    if r["outcome"] == "ok":
                        ok.setdefault(int(r["round"]), []).append(float(r["mean_drop"]))
            n += 1
            for prev, cur in zip(rounds[:first], rounds[1:first + 1]):
                if "" in (prev["loss"], cur["loss"], prev["accuracy"], cur["accuracy"]):
                    continue  # a round without an evaluation
                dur.append(float(cur["duration_s"]))
                drop.append(float(prev["loss"]) - float(cur["loss"]))
                gain.append(float(cur["accuracy"]) - float(prev["accuracy"]))
                md.extend(ok.get(int(cur["round"]), []))
        name = f"{row.parent.name}/{row.name}"
        if not dur:
            print(f"| {name} | {n} | - | - | - | - | - |")
            continue
        t = float(np.mean(dur))
        print(f"| {name} | {n} | {t:.1f} | {np.mean(drop):.4f} | {np.mean(drop) / t:.5f} | {np.mean(gain) / t:.5f} "
              f"| {np.mean(md) if md else float('nan'):.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("row", type=Path, nargs="?", help="a row's folder of runs made with bench_configurator.py --log-gains")
    ap.add_argument("--compare", type=Path, nargs="+", default=None, metavar="ROW",
                    help="instead: rows' progress per round and per second in their first rounds")
    ap.add_argument("--first", type=int, default=7, help="--compare: rounds 1 to this (default 7)")
    ap.add_argument("--scale", choices=["log", "mean"], default=None,
                    help="replay into a model of this worth_scale (default: the row's own)")
    ap.add_argument("--monotone", choices=["true", "false", "noisy"], default=None,
                    help="replay into a model with this monotone_worth (default: the row's own)")
    args = ap.parse_args(argv)
    if args.compare is not None:
        if args.row is not None:
            ap.error("give a row or --compare ROW ..., not both")
        if args.first < 1:
            ap.error(f"--first must be >= 1, got {args.first}")
        missing = [str(r) for r in args.compare if not r.is_dir()]
        if missing:
            ap.error(f"--compare: no such folder: {', '.join(missing)}")
        progress_table(args.compare, args.first)
        return 0
    if args.row is None:
        ap.error("give a row's folder (or --compare ROW ...)")
    seeds = sorted(p for p in args.row.glob("seed*") if (p / "gains.jsonl").is_file() and (p / "clients.csv").is_file())
    if not seeds:
        ap.error(f"{args.row}: no seed*/ with gains.jsonl and clients.csv (run the benchmark with --log-gains)")
    from fedsim.core.plan import ClientPlan
    from fedsim.methods.droppeft import DropPEFTParams, make_arms

    names = [a.name for a in make_arms(ClientPlan.uniform(6), DropPEFTParams())]
    print(f"{args.row}: {len(seeds)} runs\n")
    arm_table(seeds, names)
    monotone = {"true": True, "false": False}.get(args.monotone, args.monotone)
    plan_table(seeds, args.scale, monotone)
    return 0


if __name__ == "__main__":
    sys.exit(main())
