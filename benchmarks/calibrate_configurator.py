"""The configurator's calibration set: synthetic rounds with random truths, no data set, no model.

Usage::

    python benchmarks/calibrate_configurator.py [--truths 40] [--rounds 5,10,30] [--noise 0.3] [--rows ...]

DropPEFT's configurator was designed on this set and on the synthetic tests in
``tests/test_configurator.py`` only; ``benchmarks/bench_configurator.py`` evaluates it on
environments (data sets, models, fleets) that played no part in it.

Each truth draws ``gamma ~ U(-2, 3)`` and ``beta ~ U(0, 4)`` (an arm's worth =
``keep_gamma ** beta``) and, for 30% of the truths, per-arm deviations (log-normal, sd
0.3) that no curve describes. Each round draws a heterogeneous fleet of 13 phones (speed
and uplink log-normal, sd 0.8), the round waits for 10 updates, and every arrived update
reports a gain = worth x 0.93 ** round x log-normal noise (sd ``--noise``, 0.3; 1.0 is
about what an update's client adds at Dirichlet 0.1 in real training). The score of a row is
the progress per second of its rounds over that of the oracle planner (the same paced
planner told the true worths), summed over the rounds: 1.0 = as good as knowing the truth.
Each row prints the mean / 10th percentile / worst over the truths, then the means over
the *ordered* truths (no dropped arm worth more than another dropped arm that runs every
layer it runs at least as often: what ``monotone_worth`` assumes of its draws; 31 of the
first 40) and over the rest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.core.costmodel import CostCoefficients, ModelShape  # noqa: E402
from fedsim.fleet.fleet import Fleet  # noqa: E402
from fedsim.methods.base import RoundContext, RoundReport  # noqa: E402
from fedsim.methods.configurator import ProgressModel, paced_assignment  # noqa: E402
from fedsim.methods.droppeft import DropPEFT, DropPEFTParams, feasible_arms  # noqa: E402
from fedsim.core.plan import ClientPlan, depth_weighted_keep  # noqa: E402
from fedsim.learning.base import ClientResult, EvalResult  # noqa: E402

SHAPE = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
BASE = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64, local_steps=2)
ROWS = {
    "droppeft: knowledge gradient (policy: kg)": {},
    "information-directed sampling (policy: ids)": {"policy": "ids"},
    "Thompson sampling (policy: thompson)": {"policy": "thompson"},
    "learning without exploration": {"explore": False},
    "learning off (prior only)": {"learning": False},
    "flat prior (per-arm learning only)": {"prior": "flat"},
    "one spread for every arm (arm_sd: 1)": {"arm_sd": 1.0},
    "signed worths, pooled harm prior (signed_worth: true)": {"signed_worth": True},
    "signed worths, no harm until seen (harm_prior: helps)": {"signed_worth": True, "harm_prior": "helps"},
    "mean signed gains (worth_scale: mean)": {"worth_scale": "mean"},
    "ordered worths (monotone_worth: true)": {"monotone_worth": True},
    "mean signed gains, ordered": {"worth_scale": "mean", "monotone_worth": True},
    "ordered estimates, unordered draws (monotone_draws: false)": {"monotone_worth": True, "monotone_draws": False},
    "ordered while the gains are noisy (monotone_worth: noisy)": {"monotone_worth": "noisy"},
    "unordered (monotone_worth: false; the default until 2026-11-27)": {"monotone_worth": False},
}


def synthetic_fleet(rng: np.random.Generator, n: int = 13) -> Fleet:
    f32 = lambda v: np.full(n, v, dtype=np.float32)  # noqa: E731
    speed = np.exp(rng.normal(np.log(5e9), 0.8, n))
    up = np.exp(rng.normal(np.log(8e6), 0.8, n))
    return Fleet(["phone"], ["net"], np.zeros(n, np.int16), np.zeros(n, np.int16), speed, np.full(n, 4e9), 4 * up, up,
                 f32(0.02), f32(0), f32(0), f32(1e-9), f32(1e-7), f32(1e-7), f32(0), f32(24), f32(0), f32(0))


def true_worth(truth: int, arms: list[ClientPlan]) -> tuple[np.ndarray, np.random.Generator]:
    """Truth number ``truth``: every arm's worth, and the generator its gains' noise goes on
    drawing from."""
    rng = np.random.default_rng(truth)
    gamma, beta = rng.uniform(-2, 3), rng.uniform(0, 4)
    worth = np.array([depth_weighted_keep(a.keep_prob, gamma) ** beta for a in arms])
    if rng.random() < 0.3:
        worth = worth * np.exp(0.3 * rng.standard_normal(worth.size))
    return worth, rng


def ordered_truths(count: int) -> np.ndarray:
    """Which truths rate no dropped arm above another dropped arm that runs every layer it
    runs at least as often: where ``monotone_worth``'s order of the draws holds (its
    estimates are capped at the full arm too; a truth may rate a dropped arm above it)."""
    method = DropPEFT(DropPEFTParams(), SHAPE, BASE)
    model = ProgressModel([a.keep_prob for a in method.arms], monotone=True)
    out = []
    for k in range(count):
        w = true_worth(k, method.arms)[0]
        out.append(np.array_equal(model.ordered(w, estimate=False), w))
    return np.array(out)


def episode(truth: int, params: dict, rounds: int, lengths: tuple[int, ...] | None = None,
            noise: float = 0.3, swing: float = 0.0) -> np.ndarray:
    """Progress per second of one row on one truth over the oracle's, summed over the first
    ``L`` rounds for each ``L`` in ``lengths`` (default: all ``rounds``). The policies are
    not told the length, so a shorter run is the start of a longer one."""
    method = DropPEFT(DropPEFTParams(**params), SHAPE, BASE)
    worth, rng = true_worth(truth, method.arms)
    got, best = np.zeros(rounds), np.zeros(rounds)
    for r in range(rounds):
        fleet = synthetic_fleet(np.random.default_rng([truth, r]))
        ids = np.arange(fleet.size)
        feasible, _, times = feasible_arms(fleet, ids, SHAPE, method.arms, CostCoefficients(), None)
        ctx = RoundContext(round_idx=r, now_s=0.0, device_ids=ids, fleet=fleet, shape=SHAPE, base_plan=BASE,
                           coefficients=CostCoefficients(), deadline_s=None, rng=np.random.default_rng([truth, r, 1]),
                           quota=10)
        plans = method.configure_round(ctx)
        arms = method._round_arms
        t = times[ids, arms]
        arrived = np.sort(np.argsort(t, kind="stable")[:10])
        got[r] = worth[arms[arrived]].mean() / t[arrived].max()
        oracle, _ = paced_assignment(worth, times, feasible, 10, np.zeros(ids.size, np.int64))
        ot = times[ids, oracle]
        first = np.argsort(ot, kind="stable")[:10]
        best[r] = worth[oracle[first]].mean() / ot[first].max()
        outcome = np.full(ids.size, "surplus", dtype=object)
        outcome[arrived] = "ok"
        results = [ClientResult(int(i), 10, np.zeros(6), 0.0, np.zeros(6)) for i in arrived]
        gains = worth[arms[arrived]] * 0.93**r * np.exp(noise * rng.standard_normal(arrived.size))
        if swing > 0:  # the client's own pull, whatever the arm: it can make the update harm the round
            gains = gains + swing * 0.93**r * rng.standard_normal(arrived.size)
        method.round_finished(RoundReport(round_idx=r, start_s=0.0, end_s=1.0, device_ids=ids, plans=plans,
                                          outcome=outcome, duration_s=np.ones(ids.size), results=results,
                                          evaluation=EvalResult(0.5, 1.0), update_gains=gains))
    ends = np.array(lengths or (rounds,)) - 1
    return np.cumsum(got)[ends] / np.cumsum(best)[ends]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--truths", type=int, default=40)
    ap.add_argument("--rounds", default="5,10,30",
                    help="run lengths scored, comma-separated (each a prefix of the longest)")
    ap.add_argument("--noise", type=float, default=0.3, help="sd of the log-normal noise of a gain")
    ap.add_argument("--swing", type=float, default=0.0,
                    help="sd of a normal term added to every gain, in units of a full update's mean gain (0: none)")
    ap.add_argument("--rows", default=None, help="rows to run (comma-separated numbers from 1; default: all)")
    args = ap.parse_args(argv)
    if not args.noise >= 0:
        ap.error(f"--noise must be >= 0, got {args.noise}")
    if not args.swing >= 0:
        ap.error(f"--swing must be >= 0, got {args.swing}")
    names = list(ROWS)
    try:
        picked = names if args.rows is None else [names[int(i) - 1] for i in args.rows.split(",")]
    except (ValueError, IndexError):
        ap.error(f"--rows: numbers from 1 to {len(names)}, comma-separated; got {args.rows!r}")
    lengths = tuple(sorted({int(x) for x in args.rounds.split(",")}))
    print(f"Progress per second / oracle's, {args.truths} synthetic truths, runs of {', '.join(map(str, lengths))} rounds "
          f"(mean / 10th percentile / worst), gain noise sd {args.noise:g}, swing sd {args.swing:g}\n")
    ordered = ordered_truths(args.truths)
    print("| row | " + " | ".join(f"{L} rounds" for L in lengths) + " | "
          + " | ".join(f"{L} rounds: ordered / unordered truths" for L in lengths) + " |")
    print("|---|" + "---|" * (2 * len(lengths)))
    for name in picked:
        s = np.array([episode(k, ROWS[name], lengths[-1], lengths, args.noise, args.swing) for k in range(args.truths)])
        cells = [f"{c.mean():.3f} / {np.quantile(c, 0.1):.3f} / {c.min():.3f}" for c in s.T]
        split = [f"{c[ordered].mean() if ordered.any() else float('nan'):.3f} / "
                 f"{c[~ordered].mean() if (~ordered).any() else float('nan'):.3f}" for c in s.T]
        print(f"| {name} | " + " | ".join(cells + split) + " |", flush=True)
    print(f"\n{int(ordered.sum())} of {ordered.size} truths are ordered (no dropped arm worth more than another "
          "dropped arm that runs every layer it runs at least as often: what monotone_worth assumes of its draws)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
