"""Why a DropPEFT run's plans drift from the prior's: its gains, arm by arm, and the plans they lead to.

Usage::

    python benchmarks/diag_plan_drift.py runs/gpu-1127/torch/minilm-dir01/droppeft [--scale mean]

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
   ``--scale``), and the prior's plan (learning off). Where the median's plan is as far from
   the prior's as the run, the drift is the model's estimates, not its exploration.
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


def plan_table(seeds: list[Path], scale: str | None) -> None:
    from fedsim.core.costmodel import CostCoefficients
    from fedsim.core.rng import Seeds
    from fedsim.fleet.fleet import sample_fleet
    from fedsim.fleet.profiles import load_profiles
    from fedsim.methods.configurator import paced_assignment
    from fedsim.methods.droppeft import DropPEFT, DropPEFTParams, feasible_arms
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import build_base_plan, model_shape_for

    print("\n| seed | rounds | run | posterior median's plan | prior's plan |")
    print("|---|---|---|---|---|")
    for sd in seeds:
        wanted = yaml.safe_load((sd / "scenario.yaml").read_text())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "input.yaml"
            path.write_text(yaml.safe_dump(wanted["scenario"], sort_keys=False))
            overrides = [o for o in wanted.get("overrides", []) if not o.startswith("train.device")]
            sc = load_scenario(path, overrides=overrides)[0].scenario
        fleet = sample_fleet(sc.fleet, load_profiles(sc.fleet.profiles_dir), Seeds(sc.seed).generator("fleet"))
        shape = model_shape_for(sc)
        params = dict(sc.method.params or {})
        if scale is not None:
            params["worth_scale"] = scale
        base = build_base_plan(sc, shape)
        method = DropPEFT(DropPEFTParams(**params), shape, base)
        prior = DropPEFT(DropPEFTParams(**params, learning=False), shape, base).model
        logs = {d["round"]: d for d in map(json.loads, (sd / "gains.jsonl").read_text().splitlines())}
        by_round: dict[int, list[dict]] = {}
        with open(sd / "clients.csv", newline="") as f:
            for r in csv.DictReader(f):
                by_round.setdefault(int(r["round"]), []).append(r)
        q = sc.engine.clients_per_round
        ran, median, prior_d = [], [], []
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
        print(f"| {sd.name} | {len(by_round)} | {np.nanmean(ran):.2f} | {np.mean(median):.2f} | {np.mean(prior_d):.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("row", type=Path, help="a row's folder of runs made with bench_configurator.py --log-gains")
    ap.add_argument("--scale", choices=["log", "mean"], default=None,
                    help="replay into a model of this worth_scale (default: the row's own)")
    args = ap.parse_args(argv)
    seeds = sorted(p for p in args.row.glob("seed*") if (p / "gains.jsonl").is_file() and (p / "clients.csv").is_file())
    if not seeds:
        ap.error(f"{args.row}: no seed*/ with gains.jsonl and clients.csv (run the benchmark with --log-gains)")
    from fedsim.core.plan import ClientPlan
    from fedsim.methods.droppeft import DropPEFTParams, make_arms

    names = [a.name for a in make_arms(ClientPlan.uniform(6), DropPEFTParams())]
    print(f"{args.row}: {len(seeds)} runs\n")
    arm_table(seeds, names)
    plan_table(seeds, args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())
