"""How long a FedScale-sized trace takes to load: 500,000 clients by default.

Usage::

    python benchmarks/bench_traces.py [--clients 500000] [--intervals 10]

Writes, in a temporary folder, a device capacity file as a pickle and as JSON and a
behaviour trace pickle (``--intervals`` online intervals per client, FedScale's format),
then times :func:`~fedsim.fleet.traces.load_device_trace`,
:func:`~fedsim.fleet.traces.load_availability_trace`, building the availability model and
one ``available(t)`` query over the whole fleet. The figures are quoted in docs/traces.md.
"""

from __future__ import annotations

import argparse
import json
import pickle
import tempfile
import time
from pathlib import Path

import numpy as np

from fedsim.fleet.availability import TraceAvailability
from fedsim.fleet.traces import load_availability_trace, load_device_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=500_000)
    ap.add_argument("--intervals", type=int, default=10)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    n, k = args.clients, args.intervals
    ms, kbps = rng.lognormal(np.log(150), 0.6, n).tolist(), rng.lognormal(np.log(6000), 0.8, n).tolist()
    capacity = {i + 1: {"computation": c, "communication": b} for i, (c, b) in enumerate(zip(ms, kbps))}
    edges = np.sort(rng.uniform(0, 172800, (n, 2 * k)), axis=1).round(0) + np.arange(2 * k)
    behave = {i + 1: {"duration": 172800, "active": edges[i, 0::2].tolist(), "inactive": edges[i, 1::2].tolist(),
                      "finish_time": 172900, "model": "x"} for i in range(n)}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "cap.pkl").write_bytes(pickle.dumps(capacity, protocol=4))
        (tmp / "cap.json").write_text(json.dumps(capacity), encoding="utf-8")
        (tmp / "behave.pkl").write_bytes(pickle.dumps(behave, protocol=4))
        rows = []
        for name, fn in (("capacity pickle", lambda: load_device_trace(tmp / "cap.pkl")),
                         ("capacity JSON", lambda: load_device_trace(tmp / "cap.json")),
                         ("behaviour pickle", lambda: load_availability_trace(tmp / "behave.pkl"))):
            t0 = time.perf_counter()
            out = fn()
            rows.append((name, time.perf_counter() - t0))
        t0 = time.perf_counter()
        avail = TraceAvailability(out, n)
        rows.append(("availability model", time.perf_counter() - t0))
        t0 = time.perf_counter()
        share = avail.available(50_000.0).mean()
        rows.append(("available(t), whole fleet", time.perf_counter() - t0))
    print(f"{n:,} clients, {k} intervals each (online share at t=50,000 s: {share:.2f})")
    for name, s in rows:
        print(f"  {name:28s} {s:6.2f} s")


if __name__ == "__main__":
    main()
