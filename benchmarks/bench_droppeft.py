"""DropPEFT vs FedLoRA vs every fixed dropout arm: time to accuracy, memory, traffic.

Usage::

    python benchmarks/bench_droppeft.py --trainer surrogate            # every row, 3 seeds, ~1 min
    python benchmarks/bench_droppeft.py                                # real training (long; resumable)
    python benchmarks/bench_droppeft.py --rows core,noniid --seeds 0   # DropPEFT vs FedLoRA only, 1 seed
    python benchmarks/bench_droppeft.py --rows noniid --jobs 5 --set data.personal_eval_clients=100
    python benchmarks/bench_droppeft.py --jobs 16 --set train.device=cuda --out runs/gpu/bench_droppeft  # a GPU

Every row runs ``scenarios/droppeft/base.yaml`` with only the method changed (and, for the
``noniid`` rows, the partition set to Dirichlet alpha = 0.1), for the same seeds: the same
fleet of 1,000 phones, data, availability and client selection. Rows:

* ``core``: ``fedlora``; ``droppeft`` as shipped;
* ``arms``: ``stld-fixed`` with each arm of DropPEFT's default arm set run alone;
* ``noniid`` (Dirichlet alpha = 0.1): ``fedlora``; ``fedlora-ft`` (FedLoRA, then at
  evaluation each evaluated client fine-tunes the 2 layers nearest the output and the
  head on its own data for one round's local steps); ``droppeft`` without PTLS;
  ``droppeft-ptls`` (2 personal layers and the personal head); ``droppeft-ptls-layers``
  (2 personal layers). Every row reports the global accuracy and the personalised one,
  on the same local test shards (``local_test: test_split``: 20 test-split examples a
  client with its train label mix) of the same seeded sample of clients
  (``data.personal_eval_clients``). These rows run for the same ``NONIID_TIME_S``
  simulated seconds (no early stop at the target: with PTLS the global model is not the
  one to stop on), and compare the means over the last ``TAIL_FRACTION`` of it, as
  accuracy under label skew swings from round to round.

``--set dotted.key=value`` (repeatable) changes every row's scenario after the row's own
settings (e.g. ``--set train.threads=2``); it is part of the scenario a finished run is
compared with, so changing it runs the rows again.

Each run writes to ``OUT/<trainer>/<row>/seed<k>/``; a run whose ``summary.json`` says
``ok`` and whose ``scenario.yaml`` is the one the benchmark would write now is not run
again, so the command can be stopped and resumed (a changed set-up runs again). The table is computed
from the runs' ``rounds.csv`` / ``clients.csv`` only: time to target = simulated time of
the first evaluation at or above ``--target``; peak memory = the largest predicted peak
among the clients that trained; traffic = bytes up + down until the target (or the whole
run when it is not reached).
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.core.configio import apply_overrides  # noqa: E402
from fedsim.study.parallel import run_all  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "scenarios" / "droppeft" / "base.yaml"
# DropPEFT's default arms; the mean-0 arm is FedLoRA itself, so the ``fedlora`` row stands for it.
NONIID_TIME_S = 300.0  # simulated seconds every non-IID row runs (FedLoRA: about 15 rounds)
NONIID_MAX_ROUNDS = 100
TAIL_FRACTION = 1 / 3  # "late" accuracy: mean of the evaluations in this last share of the run
ARMS = [(m, p) for m in (0.25, 0.5, 0.75) for p in ("uniform", "rising", "falling")]
# The non-IID rows: label skew, and local test shards of 20 test-split examples a client
# with its label mix (the same for every row of a seed).
NONIID_PARTITION = {"scheme": "dirichlet", "alpha": 0.1, "local_test": "test_split", "local_test_examples": 20}
PERSONAL = {"personal_layers": 2, "personal_head": True}  # what PTLS keeps personal, and the baseline fine-tunes


def rows(groups: set[str]) -> list[tuple[str, dict, dict]]:
    """(label, method block, partition override or {}) of every benchmark row."""
    out = []
    if "core" in groups:
        out += [
            ("fedlora", {"name": "fedlora"}, {}),
            ("droppeft", {"name": "droppeft"}, {}),
        ]
    if "arms" in groups:
        for mean, prof in ARMS:
            label = f"stld-{prof}-{mean:g}"
            out.append((label, {"name": "stld-fixed", "params": {"mean_drop": mean, "profile": prof}}, {}))
    if "noniid" in groups:
        skew = NONIID_PARTITION
        finetune = {"layers": PERSONAL["personal_layers"], "head": PERSONAL["personal_head"]}
        out += [
            ("a0.1-fedlora", {"name": "fedlora"}, skew),
            ("a0.1-fedlora-ft", {"name": "fedlora", "params": {"local_finetune": finetune}}, skew),
            ("a0.1-droppeft", {"name": "droppeft"}, skew),
            ("a0.1-droppeft-ptls", {"name": "droppeft", "params": {"ptls": True, **PERSONAL}}, skew),
            ("a0.1-droppeft-ptls-layers", {"name": "droppeft", "params": {
                "ptls": True, "personal_layers": PERSONAL["personal_layers"]}}, skew),
        ]
    return out


def run_one(out_dir: Path, method: dict, partition: dict, seed: int, trainer: str, max_rounds: int | None,
            overrides: list[str] = ()) -> dict:
    """Run (or reuse) one row x seed; returns its summary. ``overrides`` (``dotted.key=value``)
    apply last."""
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    summary_path = out_dir / "summary.json"
    raw = yaml.safe_load(BASE.read_text())
    raw["method"] = method
    raw["seed"] = seed
    raw["trainer"]["kind"] = trainer
    if partition:
        raw["data"]["partition"] = partition
    if max_rounds:
        raw["engine"]["max_rounds"] = max_rounds
    if partition:
        # Same simulated time for every row (DropPEFT's rounds are shorter), no early stop.
        raw["engine"]["target_accuracy"] = None
        raw["engine"]["max_rounds"] = NONIID_MAX_ROUNDS
        raw["engine"]["max_sim_time_s"] = NONIID_TIME_S
    if overrides:
        raw = apply_overrides(raw, list(overrides), file="--set")
    scenario_file = out_dir / "scenario.yaml"
    if summary_path.exists() and scenario_file.exists():
        summary = json.loads(summary_path.read_text())
        if summary.get("status") == "ok" and _same_setup(yaml.safe_load(scenario_file.read_text()), raw):
            return summary
    out_dir.mkdir(parents=True, exist_ok=True)
    scenario_file.write_text(yaml.safe_dump(raw, sort_keys=False))
    variant = load_scenario(scenario_file)[0]
    t0 = time.perf_counter()
    try:
        simulate(variant.scenario, out_dir, label=out_dir.parent.name, existing="overwrite")
    except Exception as exc:  # recorded in summary.json by simulate; keep benchmarking
        print(f"  failed: {exc}", file=sys.stderr)
    print(f"  {out_dir.relative_to(out_dir.parents[2])}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    return json.loads(summary_path.read_text())


def _same_setup(old: dict, new: dict) -> bool:
    """Whether a finished run was made from the scenario the benchmark would write now
    (the surrogate's curve is ignored for real-training runs, which do not use it)."""
    old, new = copy.deepcopy(old), copy.deepcopy(new)
    for raw in (old, new):
        if raw.get("trainer", {}).get("kind") == "torch":
            raw["trainer"].pop("surrogate", None)
    return old == new


def _read_csv(path: Path) -> dict[str, list[str]]:
    with open(path, newline="") as f:
        rows_ = list(csv.DictReader(f))
    return {k: [r[k] for r in rows_] for k in (rows_[0] if rows_ else {})}


def _col(table_: dict[str, list[str]], key: str) -> np.ndarray:
    return np.array([float(v) if v not in ("", "None", "nan") else np.nan for v in table_.get(key, [])], dtype=float)


def metrics(run_dir: Path, target: float) -> dict | None:
    """Time to target, final accuracies, peak memory and traffic of one finished run."""
    if not (run_dir / "rounds.csv").exists() or not (run_dir / "summary.json").exists():
        return None  # not run, or still running
    summary = json.loads((run_dir / "summary.json").read_text())
    if summary.get("status") != "ok":
        return None
    rounds = _read_csv(run_dir / "rounds.csv")
    clients = _read_csv(run_dir / "clients.csv")
    acc = _col(rounds, "accuracy")
    hit = np.flatnonzero(np.nan_to_num(acc, nan=-1.0) >= target)
    upto = hit[0] + 1 if hit.size else len(acc)
    ok = np.array([o == "ok" for o in clients["outcome"]])
    mem = _col(clients, "peak_mem_bytes")[ok]
    up = _col(clients, "bytes_up")[ok]
    pers_all = _col(rounds, "personal_accuracy")
    pers = pers_all[np.isfinite(pers_all)]
    sim = _col(rounds, "sim_time_s")
    # The last third of the run's simulated time: rows with shorter rounds evaluate more
    # often, so a window in time, not a count of evaluations, compares them fairly.
    late = sim >= sim[-1] * (1.0 - TAIL_FRACTION) if sim.size else np.zeros(0, dtype=bool)
    tail = lambda x: float(np.mean(x[late & np.isfinite(x)])) if (late & np.isfinite(x)).any() else None  # noqa: E731
    round_mb = (_col(rounds, "bytes_up") + _col(rounds, "bytes_down")) / 1e6
    fail = np.isin(np.array(clients["outcome"]), ["oom", "straggler"])
    accs = acc[np.isfinite(acc)]
    return {
        "ttt_s": float(sim[hit[0]]) if hit.size else None,
        "final_acc": float(accs[-1]) if accs.size else float("nan"),
        "best_acc": float(accs.max()) if accs.size else float("nan"),
        "personal_acc": float(pers[-1]) if pers.size else None,
        "last_acc": tail(acc),
        "last_personal_acc": tail(pers_all),
        "peak_mem_gb": float(mem.max()) / 1e9 if mem.size else float("nan"),
        "mean_mem_gb": float(mem.mean()) / 1e9 if mem.size else float("nan"),
        "traffic_mb": float(round_mb[:upto].sum()),
        "traffic_total_mb": float(round_mb.sum()),
        # Until the model a user runs (the personalised accuracy where recorded, else the
        # global one) first reaches the target.
        "traffic_to_own_target_mb": _traffic_to(round_mb, pers_all if np.isfinite(pers_all).any() else acc, target),
        "up_mb_per_client": float(up.mean()) / 1e6 if up.size else float("nan"),
        "fail_rate": float(fail.mean()) if fail.size else 0.0,
        "rounds": int(acc.size),
        "sim_h": float(sim[-1]) / 3600,
    }


def _traffic_to(round_mb: np.ndarray, acc: np.ndarray, target: float) -> float | None:
    """MB up + down until ``acc`` first reaches ``target`` (None if it never does)."""
    hit = np.flatnonzero(np.nan_to_num(acc, nan=-1.0) >= target)
    return float(round_mb[: hit[0] + 1].sum()) if hit.size else None


def _ms(values: list[float | None], fmt: str, scale: float = 1.0) -> str:
    vals = [v * scale for v in values if v is not None and np.isfinite(v)]
    if not vals:
        return "-"
    miss = len(values) - len(vals)
    text = fmt.format(statistics.fmean(vals))
    if len(vals) > 1:
        text += " ± " + fmt.format(statistics.stdev(vals))
    return text + (f" ({len(vals)}/{len(values)})" if miss else "")


def table(out: Path, trainer: str, labels: list[str], seeds: list[int], target: float) -> str:
    head = ("| row | seeds | time to {t:g} (s) | final acc | late acc | late personal acc "
            "| peak mem (GB) | mean mem (GB) "
            "| traffic to target (MB) | up/client (MB) | oom+straggler | rounds |").format(t=target)
    lines = [head, "|" + "|".join(["---"] * (head.count("|") - 1)) + "|"]
    for label in labels:
        ms = [metrics(out / trainer / label / f"seed{s}", target) for s in seeds]
        ms = [m for m in ms if m is not None]
        if not ms:
            continue
        col = lambda k: [m[k] for m in ms]  # noqa: E731
        lines.append("| " + " | ".join([
            label, str(len(ms)), _ms(col("ttt_s"), "{:.0f}"), _ms(col("final_acc"), "{:.3f}"), _ms(col("last_acc"), "{:.3f}"),
            _ms(col("last_personal_acc"), "{:.3f}"), _ms(col("peak_mem_gb"), "{:.2f}"), _ms(col("mean_mem_gb"), "{:.2f}"),
            _ms(col("traffic_mb"), "{:.1f}"), _ms(col("up_mb_per_client"), "{:.3f}"), _ms(col("fail_rate"), "{:.1%}"),
            _ms(col("rounds"), "{:.0f}"),
        ]) + " |")
    return "\n".join(lines)


def goals(out: Path, trainer: str, seeds: list[int], target: float) -> str:
    """The issue's goals, checked on the finished runs (a row needs every seed, except the
    fixed arms, which count with the seeds they have: say which in the docs)."""
    def get(label: str, partial: bool = False) -> list[dict] | None:
        ms = [metrics(out / trainer / label / f"seed{s}", target) for s in seeds]
        if partial:
            ms = [m for m in ms if m is not None]
            return ms or None
        return ms if all(m is not None for m in ms) else None

    def mean_ttt(ms: list[dict]) -> float:  # a seed that never reached the target counts as never
        v = [m["ttt_s"] for m in ms]
        return float("inf") if any(x is None for x in v) else statistics.fmean(v)

    lines = []
    fed = get("fedlora")
    arms = {f"stld-{p}-{m:g}": get(f"stld-{p}-{m:g}", partial=True) for m, p in ARMS}
    arm_ttt = {k: mean_ttt(v) for k, v in arms.items() if v is not None}
    if fed is not None:
        arm_ttt["fedlora (no drop)"] = mean_ttt(fed)
    for label in ("droppeft",):
        d = get(label)
        if d is None or fed is None:
            continue
        t = mean_ttt(d)
        lines.append(f"{label}: {mean_ttt(fed) / t:.2f}x faster than fedlora to {target:g} (goal >= 1.5x)")
        if len(arm_ttt) == len(ARMS) + 1:
            best = min(arm_ttt, key=arm_ttt.get)
            med = statistics.median(arm_ttt.values())
            lines.append(f"  vs best fixed arm {best} ({arm_ttt[best]:.0f} s): {t / arm_ttt[best] - 1:+.1%} "
                         f"(goal <= +10%); vs median arm ({med:.0f} s): {t / med - 1:+.1%} (goal < 0)")
        mem = 1 - statistics.fmean(m["mean_mem_gb"] for m in d) / statistics.fmean(m["mean_mem_gb"] for m in fed)
        peak = 1 - statistics.fmean(m["peak_mem_gb"] for m in d) / statistics.fmean(m["peak_mem_gb"] for m in fed)
        lines.append(f"  device memory: mean {mem:.0%} below fedlora, largest {peak:.0%} below (goal >= 40%)")
        traffic = statistics.fmean(m["traffic_mb"] for m in d) / statistics.fmean(m["traffic_mb"] for m in fed) - 1
        lines.append(f"  traffic to target: {traffic:+.0%} vs fedlora (PTLS off)")
    lines += noniid_goals(get, target)
    return "\n".join(lines)


def noniid_goals(get, target: float) -> list[str]:
    """The non-IID rows, like for like: every row's personalised accuracy on the same
    local test shards of the same clients, and PTLS against FedLoRA then local fine-tuning."""
    labels = ("fedlora", "fedlora-ft", "droppeft", "droppeft-ptls", "droppeft-ptls-layers")
    runs = {k: get(f"a0.1-{k}") for k in labels}
    mean = lambda ms, key: statistics.fmean(m[key] for m in ms)  # noqa: E731
    has_personal = lambda k: runs[k] is not None and all(m["last_personal_acc"] is not None for m in runs[k])  # noqa: E731
    lines = []
    if any(has_personal(k) for k in labels):
        lines.append(f"non-IID alpha 0.1, late means (last {TAIL_FRACTION:.0%} of each run's simulated time), "
                     "personalised = the same clients' local test shards:")
        for k in labels:
            if has_personal(k):
                lines.append(f"  {k}: personalised {mean(runs[k], 'last_personal_acc'):.3f}, "
                             f"global {mean(runs[k], 'last_acc'):.3f}")
    pt, ft, fed = runs["droppeft-ptls"], runs["fedlora-ft"], runs["fedlora"]
    if has_personal("droppeft-ptls") and has_personal("fedlora-ft"):
        diffs = [100 * (p["last_personal_acc"] - f["last_personal_acc"]) for p, f in zip(pt, ft)]
        gain = statistics.fmean(diffs)
        lines.append(f"PTLS at least 2 points above the FedLoRA-then-local-fine-tuning baseline in personalised "
                     f"accuracy at Dirichlet 0.1: {gain:+.1f} points (per seed "
                     + ", ".join(f"{d:+.1f}" for d in diffs) + f"): {'met' if gain >= 2 else 'missed'}")
    if pt is not None and fed is not None:
        traffic = mean(pt, "traffic_total_mb") / mean(fed, "traffic_total_mb") - 1
        per_update = mean(pt, "up_mb_per_client") / mean(fed, "up_mb_per_client") - 1
        lines.append(f"non-IID alpha 0.1: PTLS traffic in the same simulated time {traffic:+.0%} "
                     f"vs fedlora, per update {per_update:+.0%} up")
        own = lambda ms: [m["traffic_to_own_target_mb"] for m in ms]  # noqa: E731
        if has_personal("droppeft-ptls") and has_personal("fedlora") and all(v is not None for v in own(pt) + own(fed)):
            lines.append(f"  traffic until the personalised accuracy reaches {target:g}: PTLS "
                         f"{statistics.fmean(own(pt)):.1f} vs fedlora {statistics.fmean(own(fed)):.1f} MB")
    return lines


def memory_context() -> str:
    """Peak training memory the uniform arms save, by the cost model, on the benchmark's
    model and on the paper's (BERT-large, 24 layers): how much of the 40% goal dropout can
    reach at all when weights and runtime do not shrink."""
    from fedsim.core.costmodel import ModelShape, plan_cost
    from fedsim.methods.stld_fixed import profile_ratios
    from fedsim.core.models import model_config_dict
    from fedsim.core.plan import ClientPlan

    minilm = ModelShape.from_hf_config(model_config_dict("minilm-l6"), num_labels=4)
    # BERT-large ships in no package here: its published architecture figures.
    bert_large = ModelShape("bert", 24, 1024, 16, 4096, 30522, 512, 2, 4)
    models = {"MiniLM-L6, seq 64, batch 16": (minilm, 64), "BERT-large, seq 128, batch 16": (bert_large, 128)}
    lines = ["peak training memory saved by a fixed mean drop (cost model, LoRA r8):"]
    for name, (shape, seq) in models.items():
        base = ClientPlan.uniform(shape.num_layers, lora_rank=8, batch_size=16, seq_len=seq, local_steps=2)
        full = plan_cost(shape, base).peak_mem_bytes
        saved = [1 - plan_cost(shape, base.with_(drop_prob=tuple(profile_ratios(shape.num_layers, m, "uniform"))))
                 .peak_mem_bytes / full for m in (0.25, 0.5, 0.75)]
        lines.append(f"  {name}: {full / 1e9:.2f} GB; drop 0.25 / 0.5 / 0.75: "
                     + " / ".join(f"-{x:.0%}" for x in saved))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trainer", choices=["torch", "surrogate"], default="torch")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated simulation seeds")
    ap.add_argument("--rows", default=None,
                    help="comma-separated groups: core, arms, noniid (default: all)")
    ap.add_argument("--target", type=float, default=None, help="accuracy target (default 0.8)")
    ap.add_argument("--max-rounds", type=int, default=None, help="override engine.max_rounds")
    ap.add_argument("--only", default=None, help="comma-separated row labels to run (default: every row of --rows)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "bench_droppeft")
    ap.add_argument("--table-only", action="store_true", help="print the table of the runs already finished")
    ap.add_argument("--jobs", type=int, default=1, help="runs side by side (each uses train.threads = 1 torch thread)")
    ap.add_argument("--set", dest="overrides", action="append", default=[],
                    help="dotted.key=value applied to every row's scenario last (repeatable), e.g. train.threads=2")
    args = ap.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    target = args.target if args.target is not None else 0.8
    if args.rows is None:
        args.rows = "core,arms,noniid"
    todo = rows(set(args.rows.split(",")))
    if args.only:
        todo = [r for r in todo if r[0] in set(args.only.split(","))]
    if not args.table_only:
        # Seed by seed: an interrupted benchmark has whole seeds.
        tasks = [(args.out / args.trainer / label / f"seed{seed}", method, partition, seed, args.trainer, args.max_rounds,
                  args.overrides) for seed in seeds for label, method, partition in todo]
        for task, result in run_all(run_one, tasks, args.jobs):
            if isinstance(result, Exception):
                print(f"  {task[0]}: {result}", file=sys.stderr, flush=True)
    print(f"trainer={args.trainer} target={target} seeds={seeds} out={args.out}")
    print(table(args.out, args.trainer, [label for label, _, _ in todo], seeds, target))
    print()
    print(goals(args.out, args.trainer, seeds, target))
    print(memory_context())


if __name__ == "__main__":
    main()
