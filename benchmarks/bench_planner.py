"""Host time of DropPEFT's planning, this tree against an earlier revision, side by side.

Usage::

    python benchmarks/bench_planner.py                          # minilm-iid, minilm-memstarved; 30 rounds
    python benchmarks/bench_planner.py --baseline b9d9be2       # and the same runs with that commit's code
    python benchmarks/bench_planner.py --rounds 10 --envs minilm-iid --policies kg

Each policy plans a round by weighing many plans under many worths: the posterior
median, Thompson draws and, for the knowledge gradient (``kg``, the default), the 32
worlds of its look-ahead, each plan weighed over 32 draws of the clients' stragglers and
drop-outs (``arrival_draws``). What does not depend on the worths (the candidate round
lengths, and when each plan's updates arrive in every draw) is the same for all of them:
:class:`fedsim.methods.configurator.RoundPlanner` computes it once a round.

Every row is a surrogate run of an environment's scenario (``scenarios/configurator/``,
this tree's) for ``--rounds`` rounds with no target, seed 0, timed whole in a fresh
process (planning is most of it):

* ``this tree``: as the code is now;
* ``baseline`` (with ``--baseline REV``): the same scenario run by the code of git
  revision ``REV`` (its ``fedsim`` and ``device_profiles``, extracted to a temporary
  folder); the speed-up is ``baseline / this tree``, and ``same records`` says whether
  both wrote the same ``rounds.csv`` and ``clients.csv``, byte for byte (for a change
  that keeps the arithmetic, they must);
* ``no draws``: this tree with ``arrival_draws: 0``, plans priced at the cost model's
  times alone (a different plan, for scale: what weighing the draws costs).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
ENV_DIR = ROOT / "scenarios" / "configurator"

CHILD = """
import json, sys, time
from pathlib import Path
root, scenario, out = sys.argv[1:4]
sys.path.insert(0, root)
from fedsim.study.scenario import Scenario
from fedsim.study.simulate import simulate
sc = Scenario.model_validate(json.loads(Path(scenario).read_text()))
t0 = time.perf_counter()
simulate(sc, Path(out))
print(time.perf_counter() - t0)
"""


def scenario(env: str, policy: str, rounds: int, draws: bool = True) -> dict:
    raw = yaml.safe_load((ENV_DIR / f"{env}.yaml").read_text())
    raw["method"] = {"name": "droppeft", "params": {"policy": policy} | ({} if draws else {"arrival_draws": 0})}
    raw["trainer"]["kind"] = "surrogate"
    raw["engine"].update(target_accuracy=None, max_rounds=rounds, max_sim_time_s=None)
    return raw


def timed(root: Path, raw: dict, out: Path) -> float:
    """Wall seconds of one run of ``raw`` by the code under ``root``, in a fresh process."""
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = out.with_suffix(".json")
    spec.write_text(json.dumps(raw))
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(spec), str(out)], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench_planner: the run under {root} failed:\n{done.stderr.strip()[-2000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def extract(rev: str, dest: Path) -> Path:
    """The code of git revision ``rev`` (fedsim and device_profiles) under ``dest``."""
    try:
        blob = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "fedsim", "device_profiles"],
                              capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as exc:
        raise SystemExit(f"bench_planner: --baseline {rev!r}: git archive failed: {exc.stderr.decode().strip()}")
    with tarfile.open(fileobj=BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")
    return dest


def same_records(a: Path, b: Path) -> bool:
    return all(filecmp.cmp(a / f, b / f, shallow=False) for f in ("rounds.csv", "clients.csv"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--envs", default="minilm-iid,minilm-memstarved")
    ap.add_argument("--policies", default="kg,ids,thompson")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--baseline", default=None, help="a git revision whose code runs the same scenarios beside")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be >= 1, got {args.rounds}")
    envs = [e for e in args.envs.split(",") if e]
    for e in envs:
        if not (ENV_DIR / f"{e}.yaml").is_file():
            ap.error(f"--envs: no environment {e!r} in {ENV_DIR}")
    policies = [p for p in args.policies.split(",") if p]
    if not policies or any(p not in ("kg", "ids", "thompson") for p in policies):
        ap.error(f"--policies: kg, ids or thompson, comma-separated; got {args.policies!r}")
    print(f"DropPEFT planning host time, surrogate runs of {args.rounds} rounds, seed 0, each in a fresh process\n")
    base_cols = f" baseline {args.baseline} (s) | speed-up | same records |" if args.baseline else ""
    print(f"| environment | policy | this tree (s) |{base_cols} no draws (s) | with / without draws |")
    print("|---|---|---|" + ("---|---|---|" if args.baseline else "") + "---|---|")
    all_same = True
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        old = extract(args.baseline, tmp / "baseline") if args.baseline else None
        for e in envs:
            for p in policies:
                d = tmp / "runs" / e / p
                t_now = timed(ROOT, scenario(e, p, args.rounds), d / "now")
                cells = [f"{t_now:.2f}"]
                if old is not None:
                    t_old = timed(old, scenario(e, p, args.rounds), d / "baseline")
                    same = same_records(d / "now", d / "baseline")
                    all_same &= same
                    cells += [f"{t_old:.2f}", f"{t_old / t_now:.2f}x", "yes" if same else "no"]
                t_plain = timed(ROOT, scenario(e, p, args.rounds, draws=False), d / "plain")
                cells += [f"{t_plain:.2f}", f"{t_now / t_plain:.2f}x"]
                print(f"| {e} | {p} | " + " | ".join(cells) + " |", flush=True)
    if old is not None:
        print(f"\nthis tree and {args.baseline} wrote the same records: {'yes' if all_same else 'no'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
