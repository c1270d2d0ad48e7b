"""Engine benchmarks: throughput against bare SimPy, and a 1,000,000-device fleet.

    python benchmarks/bench_engine.py            # both, default sizes
    python benchmarks/bench_engine.py --quick    # smaller, for a smoke test

1. Throughput: a 100,000-device fleet, 1,000 clients per round (over-selection 1.3, so
   1,300 client processes a round), 200 rounds, surrogate trainer, records written.
   Measured side by side with a bare SimPy loop that runs the same number of rounds and
   client processes, each yielding three timeouts (download, compute, upload), with no
   cost model, sampling, records or training. Goal: ratio >= 0.5.
2. Scale: sampling a 1,000,000-device fleet and running one round, in a fresh process:
   wall time and peak RSS. Goal: under 10 s and 1.5 GB.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import simpy

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def scenario_dict(size: int, clients: int, rounds: int) -> dict:
    return {
        "name": "bench-engine",
        "seed": 1,
        "fleet": {
            "size": size,
            "devices": {"phone-low": 0.3, "phone-mid": 0.45, "phone-high": 0.2, "tablet": 0.05},
            "networks": {"wifi": 0.5, "4g": 0.3, "5g": 0.15, "3g": 0.05},
        },
        "model": {"name_or_path": "tiny-bert"},
        "local": {"batch_size": 16, "local_steps": 10},
        "trainer": {"kind": "surrogate", "surrogate": {"rate": 1e-9}},  # never reaches a target
        "method": {"name": "stld-fixed", "params": {"mean_drop": 0.5}},
        "engine": {
            "clients_per_round": clients,
            "over_selection": 1.3,
            "round_deadline_s": 600,
            "max_rounds": rounds,
            "eval_every": 10,
            "start_hour_utc": 0.0,
        },
    }


def bare_simpy(rounds: int, per_round: int, rng: np.random.Generator) -> float:
    """The same process structure as the engine, nothing else: returns wall seconds."""
    durations = rng.uniform(1.0, 100.0, size=(per_round, 3)).tolist()

    def client(env, st, d):
        yield env.timeout(d[0])
        yield env.timeout(d[1])
        yield env.timeout(d[2])
        st[0] += 1
        if st[0] == per_round:
            st[1].succeed()

    def server(env):
        for _ in range(rounds):
            st = [0, env.event()]
            for i in range(per_round):
                env.process(client(env, st, durations[i]))
            yield st[1]

    t0 = time.perf_counter()
    env = simpy.Environment()
    env.run(until=env.process(server(env)))
    return time.perf_counter() - t0


def engine_throughput(size: int, clients: int, rounds: int) -> dict:
    from fedsim.study.scenario import Scenario
    from fedsim.study.simulate import simulate

    sc = Scenario.model_validate(scenario_dict(size, clients, rounds))
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = simulate(sc, Path(tmp) / "run")
        wall = time.perf_counter() - t0
        n_rows = sum(1 for _ in open(Path(tmp) / "run" / "clients.csv")) - 1
    per_round = int(np.ceil(clients * 1.3))
    base = bare_simpy(res.rounds, per_round, np.random.default_rng(0))
    return {
        "rounds": res.rounds,
        "client_rounds": n_rows,
        "engine_wall_s": wall,
        "engine_client_rounds_per_s": n_rows / wall,
        "bare_wall_s": base,
        "bare_client_rounds_per_s": res.rounds * per_round / base,
    }


def scale_child(size: int, clients: int) -> None:
    """Runs in a fresh interpreter; prints JSON."""
    t0 = time.perf_counter()
    from fedsim.study.scenario import Scenario
    from fedsim.study.simulate import simulate

    t_import = time.perf_counter() - t0
    sc = Scenario.model_validate(scenario_dict(size, clients, 1))
    with tempfile.TemporaryDirectory() as tmp:
        t1 = time.perf_counter()
        simulate(sc, Path(tmp) / "run")
        t_run = time.perf_counter() - t1
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"import_s": t_import, "sample_and_round_s": t_run, "peak_rss_bytes": rss}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="10x smaller, for a smoke test")
    ap.add_argument("--scale-child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.scale_child:
        scale_child(args.scale_child, 1000)
        return
    size, clients, rounds, big = (100_000, 1000, 200, 1_000_000)
    if args.quick:
        size, clients, rounds, big = (10_000, 100, 20, 100_000)

    print(f"== engine throughput: {size:,} devices, {clients:,} clients/round (x1.3 selected), {rounds} rounds")
    r = engine_throughput(size, clients, rounds)
    ratio = r["engine_client_rounds_per_s"] / r["bare_client_rounds_per_s"]
    print(f"{'':28s}{'wall s':>10s}{'client-rounds/s':>18s}")
    print(f"{'fedsim engine (records on)':28s}{r['engine_wall_s']:10.2f}{r['engine_client_rounds_per_s']:18,.0f}")
    print(f"{'bare SimPy, 3 timeouts each':28s}{r['bare_wall_s']:10.2f}{r['bare_client_rounds_per_s']:18,.0f}")
    print(f"ratio engine / bare = {ratio:.2f}  (goal >= 0.5: {'met' if ratio >= 0.5 else 'MISSED'})")

    print(f"\n== scale: {big:,} devices, sampling + one round of 1,000 clients, fresh process")
    out = subprocess.run([sys.executable, __file__, "--scale-child", str(big)], capture_output=True, text=True, check=True)
    s = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"import {s['import_s']:.2f} s; sample + round {s['sample_and_round_s']:.2f} s; peak RSS {s['peak_rss_bytes'] / 1e9:.2f} GB")
    ok = s["sample_and_round_s"] < 10 and s["peak_rss_bytes"] < 1.5e9
    print(f"goal < 10 s and < 1.5 GB: {'met' if ok else 'MISSED'}")


if __name__ == "__main__":
    main()
