"""Write a small, seeded example trace set in FedScale's formats into this folder.

    python scenarios/traces/make_traces.py [--clients 1000] [--seed 0] [--out scenarios/traces]

* ``device_capacity.json``: client id -> {'computation': ms per sample, 'communication':
  kbit/s}, as FedScale's ``client_device_capacity`` (lognormal around 150 ms per sample
  and 6 Mbit/s, the medians of FedScale's trace as docs/traces.md quotes them);
* ``behave_trace.pkl``: FedScale's ``client_behave_trace`` (a pickle of client id ->
  {'active', 'inactive', 'finish_time', 'duration', 'model'}): each client comes online
  a few times a day, mostly in the evening and at night, over a two-day period.

The numbers are synthetic; they only have the shape of the real files. A study points
``fleet.trace`` at FedScale's own files on disk instead (nothing is downloaded).
"""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path

import numpy as np

DAY_S = 86400.0


def capacity(rng: np.random.Generator, n: int) -> dict:
    ms = rng.lognormal(np.log(150.0), 0.6, n)
    kbps = rng.lognormal(np.log(6000.0), 0.8, n)
    return {int(i + 1): {"computation": round(float(c), 1), "communication": round(float(b), 1)} for i, (c, b) in enumerate(zip(ms, kbps))}


def behaviour(rng: np.random.Generator, n: int, days: int = 2) -> dict:
    out = {}
    finish = days * DAY_S
    for i in range(n):
        active, inactive = [], []
        t = float(rng.uniform(0, 1800))
        while True:
            hour = (t % DAY_S) / 3600.0
            evening = hour >= 19 or hour < 7
            # Online stays are longer and gaps shorter at night (on the charger).
            stay = rng.exponential(3 * 3600 if evening else 1800)
            if t + stay >= finish:
                break
            active.append(round(t))
            inactive.append(round(t + stay))
            t = inactive[-1] + 60 + rng.exponential(1800 if evening else 4 * 3600)
            if active[-1] >= inactive[-1]:
                active.pop(), inactive.pop()
        out[int(i + 1)] = {"duration": finish, "inactive": inactive, "finish_time": int(finish), "active": active, "model": "synthetic"}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "device_capacity.json").write_text(json.dumps(capacity(rng, args.clients)) + "\n", encoding="utf-8")
    with open(args.out / "behave_trace.pkl", "wb") as fh:
        pickle.dump(behaviour(rng, args.clients), fh, protocol=4)
    print(f"wrote {args.out / 'device_capacity.json'} and {args.out / 'behave_trace.pkl'} ({args.clients} clients)")


if __name__ == "__main__":
    main()
