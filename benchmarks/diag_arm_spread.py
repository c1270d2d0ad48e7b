"""What DropPEFT's configurator makes of a run's gains, with one spread for every arm or each arm's learnt.

Usage::

    python benchmarks/diag_arm_spread.py --replay docs/bench/gains-minilm-dir01-seed1.jsonl
    python benchmarks/diag_arm_spread.py --env minilm-dir01 --seed 1 --rounds 14 --trainer torch --log gains.jsonl

The first replays a log of gains (one JSON line per round: ``round``, ``arms``, ``gains``,
``accuracy``) into ``ProgressModel`` twice, with ``arm_sd=1`` (one prior spread of each
arm's correction, as before 2026-11-26) and with each arm's spread learnt (the default),
and prints, after the given numbers of rounds, every arm's posterior median worth
relative to the full arm's, the prior's, the spreads chosen and, from the log itself,
each arm's mean gain over the median size of its round's gains. The second runs one of
``bench_configurator.py``'s environments with DropPEFT (``arm_sd: 1``, as the benchmark's
``droppeft-one-spread`` row) for ``--rounds`` rounds, writes that log (the gains are what
the method observed), then replays it. The log in ``docs/bench/`` is minilm-dir01 seed 1,
real training, 14 rounds (about 12 minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


@contextmanager
def gains_logged(log: Path):
    """While inside, every DropPEFT run of this process appends to ``log`` the gains its
    updates report, one JSON line a round (``round``, ``arms``, ``gains``, ``accuracy``), as
    the method sees them, ``left_out``, the devices its plan left out of the round, and where
    it closes rounds early ``round_gain`` (the whole aggregate's gain), ``quota`` (the
    updates the round waited for) and ``returns`` (the elasticity it was planned with). A
    run that does not learn measures no gains and logs nothing."""
    from fedsim.methods.droppeft import DropPEFT

    finished = DropPEFT.round_finished
    out = None
    def round_finished(self, report):
        nonlocal out
        if report.update_gains is not None:
            ok = np.asarray(report.outcome) == "ok"
            arms = np.array([self._arm_of[d][0] for d in report.device_ids.tolist()], dtype=np.int64)[ok]
            out = out or open(log, "a")
            out.write(json.dumps({"round": report.round_idx, "arms": arms.tolist(),
                                  "gains": np.asarray(report.update_gains, dtype=float).tolist(),
                                  "accuracy": report.evaluation.accuracy if report.evaluation else None,
                                  "left_out": self.left_out, "round_gain": report.round_gain,
                                  "quota": getattr(self, "_round_quota", None),
                                  "returns": self.returns.elasticity if hasattr(self, "returns") else None}) + "\n")
            out.flush()
        return finished(self, report)

    DropPEFT.round_finished = round_finished
    try:
        yield
    finally:
        DropPEFT.round_finished = finished
        if out is not None:
            out.close()


def record(env: str, seed: int, rounds: int, trainer: str, log: Path) -> None:
    """Run ``env`` with DropPEFT (``arm_sd: 1``) and write the gains it observes to ``log``."""
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    raw = yaml.safe_load((ROOT / "scenarios" / "configurator" / f"{env}.yaml").read_text())
    raw.update(seed=seed, name=f"{env}-arm-spread", method={"name": "droppeft", "params": {"arm_sd": 1.0}})
    raw["trainer"]["kind"] = trainer
    if trainer == "torch":
        raw["trainer"].pop("surrogate", None)
    raw["engine"]["max_rounds"] = rounds
    raw["engine"].pop("target_accuracy", None)
    log.unlink(missing_ok=True)
    with gains_logged(log), tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.yaml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        simulate(load_scenario(path)[0].scenario, Path(tmp) / "run", label="droppeft-one-spread")


def replay(log: Path, after: list[int]) -> None:
    from fedsim.core.costmodel import ModelShape
    from fedsim.core.plan import ClientPlan
    from fedsim.methods.configurator import ProgressModel
    from fedsim.methods.droppeft import DropPEFT, DropPEFTParams

    shape = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
    arms = DropPEFT(DropPEFTParams(), shape, ClientPlan.uniform(6)).arms
    keeps = [a.keep_prob for a in arms]
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    names = [a.name for a in arms]
    print(f"{log}: {len(rows)} rounds; arms: " + ", ".join(f"{i} {n}" for i, n in enumerate(names)) + "\n")
    prior = ProgressModel(keeps).worth()
    print("| after rounds | model | " + " | ".join(str(i) for i in range(len(arms))) + " | spreads |")
    print("|---|---|" + "---|" * len(arms) + "---|")
    print("| 0 | prior | " + " | ".join(f"{w:.2f}" for w in prior / prior[0]) + " | |")
    for r in after:
        for label, sd in (("one spread (arm_sd 1)", 1.0), ("learnt spreads", None)):
            model = ProgressModel(keeps, arm_sd=sd)
            for d in rows[:r]:
                model.observe(np.array(d["arms"]), np.array(d["gains"]))
            w = model.worth()
            spreads = " ".join(f"{x:g}" for x in model.arm_sd_fit) if sd is None else "1"
            print(f"| {r} | {label} | " + " | ".join(f"{x:.2f}" for x in w / w[0]) + f" | {spreads} |")
    sums = np.zeros(len(arms))
    counts = np.zeros(len(arms))
    for d in rows:
        g = np.array(d["gains"], dtype=float)
        scale = np.median(np.abs(g[np.isfinite(g)])) if np.isfinite(g).any() else 0.0
        if scale > 0:
            for a, x in zip(d["arms"], g):
                if np.isfinite(x):
                    sums[a] += x / scale
                    counts[a] += 1
    print("\nmean gain over its round's median size, per arm (updates): "
          + ", ".join(f"{i} {s / c:+.2f} ({c:.0f})" for i, (s, c) in enumerate(zip(sums, counts)) if c))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--replay", type=Path, help="a log of gains to replay (no training)")
    ap.add_argument("--env", default="minilm-dir01", help="bench_configurator.py environment to run and log")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=14)
    ap.add_argument("--trainer", choices=["torch", "surrogate"], default="torch")
    ap.add_argument("--log", type=Path, default=Path("gains.jsonl"), help="where a run writes its log")
    ap.add_argument("--after", default="2,4,8,14", help="rounds after which to print the worths")
    args = ap.parse_args(argv)
    try:
        after = [int(x) for x in args.after.split(",")]
    except ValueError:
        ap.error(f"--after: whole numbers, comma-separated; got {args.after!r}")
    if args.replay is None:
        if not (ROOT / "scenarios" / "configurator" / f"{args.env}.yaml").exists():
            ap.error(f"--env: no scenarios/configurator/{args.env}.yaml")
        if args.rounds < 1:
            ap.error(f"--rounds must be >= 1, got {args.rounds}")
        record(args.env, args.seed, args.rounds, args.trainer, args.log)
        args.replay = args.log
    elif not args.replay.is_file():
        ap.error(f"--replay: no file {args.replay}")
    replay(args.replay, after)
    return 0


if __name__ == "__main__":
    sys.exit(main())
