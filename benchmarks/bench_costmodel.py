"""Cost-model fidelity: predicted vs measured local-step time and training memory.

Usage::

    python benchmarks/bench_costmodel.py                        # 8 grid configs + 1 LoRA-depth plan
    python benchmarks/bench_costmodel.py --drops 0,0.5 --seqs 64,128 --batches 8,16 --steps 8
    python benchmarks/bench_costmodel.py --top-layers 0         # no LoRA-on-top-layers-only plan

Model and training: the packaged MiniLM-L6 (``ModelSpec(name_or_path="minilm-l6")``),
LoRA rank ``--rank`` (8) on query/value, classifier head trained, AdamW, ``--threads``
(2) torch threads. Configurations: drop ratio x sequence length x batch size (every
layer carries LoRA), plus one plan with LoRA on the top ``--top-layers`` layers only
(rank 0 below, no layer dropout) at the largest seq / batch.

Every configuration runs in a fresh subprocess, one after another. A worker builds the
model, applies the plan's trainable set exactly like :func:`fedsim.learning.real.local.train_client`
(:func:`~fedsim.learning.real.local.plan_trainable`; frozen LoRA below the top layers), creates
AdamW, then trains ``warmup + steps`` steps on batches of random full-length token ids
(every example is ``seq_len`` real tokens, attention mask all ones, so the trainer's
padding trim changes nothing and the measured work is the cost model's ``seq_len``).
Layers are dropped with the trainer's own draw (:func:`fedsim.learning.real.stld.draw_schedule`,
systematic sampling: at drop 0.5 on 6 layers every step runs exactly 3 layers). One
timed step is ``zero_grad -> forward (kept layers) -> backward -> per-layer grad norms ->
AdamW step``, the body of ``train_client``'s loop.

What is compared:

* Time. Predicted step time = ``plan_cost(shape, plan).flops / plan.local_steps /
  host_flops_per_s``. The host throughput is ONE scalar for the whole table, fitted by
  least squares on relative errors across all configurations:
  ``F = argmin sum_i (flops_i / F / t_i - 1)^2``, i.e. ``1/F = sum(x_i) / sum(x_i^2)``
  with ``x_i = flops_i / t_i``. ``--calibrate first`` uses the first configuration only.
  Measured = median step time after warm-up; with ``--repeats N`` (default 2) the
  configurations run in N interleaved passes and the lowest of the N medians is kept, so a
  burst of other work on a shared host spoils one pass, not the row. The ``cpu`` column is
  this process's CPU time / wall time / threads over the run (about 1 on an idle host).
* Memory. Measured "training memory" = peak RSS during training minus RSS after the model
  is loaded, the plan applied and the optimiser created (before the first step: no
  gradients, no AdamW state, no activations yet). The peak is the kernel's high-water
  mark (``VmHWM``), reset to the baseline through ``/proc/self/clear_refs`` just before
  training, so it sees every page and costs nothing during the timed steps (a 1 ms RSS
  sampling thread is the fallback where ``clear_refs`` is unavailable). Predicted = the
  cost model's ``grads_bytes + optimizer_bytes + activations_bytes``: what training
  adds on top of the loaded model. Excluded: ``weights_bytes`` (resident before the
  baseline) and ``runtime_overhead_bytes`` (a device runtime's constant, not this
  process). Like with like: training in a fresh process also adds a constant that is no
  activation (code pages the first backward touches, thread pools, allocator arenas),
  this host's share of a runtime overhead. It is measured once per pass with a
  near-empty step (batch 1, 16 tokens, all layers) as ``measured - predicted`` of that
  probe, and ``err_m`` compares the prediction with ``raw - constant`` ("net");
  ``err_raw`` compares it with the raw difference. Memory is the median over passes.
  Both still hold allocator slack (glibc's dynamic mmap threshold keeps freed activation
  blocks in its heaps; ``--malloc-mmap-threshold 131072`` makes RSS track live tensors
  instead, roughly 40% lower for the big rows) and autograd temporaries, as did the RSS
  peaks the coefficients were fitted to (measured on the 2-core development host).

``--fit`` also prints the activation coefficients that would fit these measurements:
per back-propagated layer and token, ``y = (net measured - grads - optimizer - embedding
output) / (4 * n_layers * batch * seq)`` is regressed on ``heads * seq`` (slope =
``act_attn``, intercept = ``act_h * h + act_ffn * ffn``, split in the current
``act_h : act_ffn`` proportion since one model cannot separate them).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fedsim.study.calibrate import PeakRss, _rss_bytes  # noqa: E402  (the path above first)

NUM_LABELS = 4


def make_plan(num_layers: int, drop: float, seq_len: int, batch_size: int, rank: int, top_layers: int, steps: int):
    """The plan of one configuration: uniform drop, LoRA on every layer or the top ``top_layers``."""
    from fedsim.core.plan import ClientPlan

    ranks = (rank,) * num_layers if top_layers <= 0 else (0,) * (num_layers - top_layers) + (rank,) * top_layers
    return ClientPlan(
        drop_prob=(float(drop),) * num_layers,
        lora_rank=ranks,
        lora_targets=("query", "value"),
        train_head=True,
        batch_size=batch_size,
        seq_len=seq_len,
        local_steps=steps,
    )


def worker(args: argparse.Namespace) -> dict:
    """Train ``warmup + steps`` steps of one configuration; return timings and memory."""
    import torch

    from fedsim.learning.real.config import ModelSpec
    from fedsim.learning.real.data import TokenizedSplit
    from fedsim.learning.real.local import make_batch, plan_trainable
    from fedsim.learning.real.model import build_model
    from fedsim.learning.real.stld import draw_schedule, kept_layers

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    fm = build_model(ModelSpec(name_or_path=args.model, lora_rank=args.rank), num_labels=NUM_LABELS, seed=args.seed)
    model = fm.model
    total = args.warmup + args.steps
    plan = make_plan(fm.num_layers, args.drop, args.seq_len, args.batch_size, args.rank, args.top, total)

    # Trainable set of the plan, as train_client applies it.
    params = dict(model.named_parameters())
    names, masks = plan_trainable(fm, plan)
    for name, p in params.items():
        p.requires_grad_(name in names)
    by_layer: list[list[torch.nn.Parameter]] = [[] for _ in range(fm.num_layers)]
    for n in names:
        if fm.param_layer[n] is not None:
            by_layer[fm.param_layer[n]].append(params[n])
    optim = torch.optim.AdamW([params[n] for n in names], lr=1e-3, weight_decay=0.0)

    # Full-length random token ids: no padding, nothing for make_batch to trim.
    n = args.batch_size * 4
    vocab = fm.config.vocab_size
    data = TokenizedSplit(
        input_ids=rng.integers(1000, vocab, size=(n, args.seq_len)).astype(np.int32),
        lengths=np.full(n, args.seq_len, dtype=np.int16),
        labels=rng.integers(0, NUM_LABELS, size=n),
        pad_id=0,
    )
    schedule = draw_schedule(plan.drop_prob, total, rng)
    batches = [make_batch(data, rng.choice(n, size=args.batch_size, replace=False), args.seq_len) for _ in range(total)]
    assert all(b["input_ids"].shape == (args.batch_size, args.seq_len) for b in batches)

    model.train()
    gc.collect()
    base_bytes = _rss_bytes()
    times_s: list[float] = []
    cpu_s: list[float] = []
    torch.manual_seed(args.seed)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    with PeakRss() as peak:
        for step in range(total):
            c0 = time.process_time()
            t0 = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            with kept_layers(model, schedule[step]):
                out = model(**batches[step])
            out.loss.backward()
            for name, m in masks.items():
                if params[name].grad is not None:
                    params[name].grad.mul_(m)
            for layer in np.flatnonzero(schedule[step]):
                sum(float(p.grad.pow(2).sum()) for p in by_layer[layer] if p.grad is not None)
            optim.step()
            times_s.append(time.perf_counter() - t0)
            cpu_s.append((time.process_time() - c0) / args.threads)
    measured = times_s[args.warmup :]
    cfg = fm.config.to_dict()
    cpu_share = (time.process_time() - cpu0) / max(time.perf_counter() - wall0, 1e-9) / args.threads
    return {
        "median_s": statistics.median(measured),
        "median_cpu_s": statistics.median(cpu_s[args.warmup :]),
        "min_s": min(measured),
        "max_s": max(measured),
        "layers_per_step": float(schedule[args.warmup :].sum(axis=1).mean()),
        "max_layers_per_step": int(schedule.sum(axis=1).max()),
        "base_bytes": base_bytes,
        "peak_train_bytes": peak.peak_bytes - base_bytes,
        "peak_method": peak.method,
        "cpu_share": cpu_share,
        "load1": os.getloadavg()[0],
        "config": {k: cfg.get(k) for k in (
            "model_type", "num_hidden_layers", "hidden_size", "num_attention_heads", "intermediate_size",
            "vocab_size", "max_position_embeddings", "type_vocab_size")},
    }


def _run_worker(args: argparse.Namespace, drop: float, seq: int, batch: int, top: int) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", "--drop", str(drop), "--seq-len", str(seq), "--batch-size", str(batch),
        "--top", str(top), "--model", args.model, "--rank", str(args.rank), "--threads", str(args.threads),
        "--steps", str(args.steps), "--warmup", str(args.warmup), "--seed", str(args.seed),
    ]
    env = dict(os.environ)
    if args.malloc_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"worker {cmd[3:]} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm-l6", help="minilm-l6, tiny-bert or a local BERT model dir")
    ap.add_argument("--drops", default="0,0.5", help="comma-separated uniform layer drop ratios")
    ap.add_argument("--seqs", default="64,128", help="comma-separated sequence lengths")
    ap.add_argument("--batches", default="8,16", help="comma-separated batch sizes")
    ap.add_argument("--top-layers", type=int, default=3,
                    help="extra plan: LoRA on the top N layers only (no dropout, largest seq and batch); 0 = none")
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank on query/value")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=8, help="timed steps per configuration")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2,
                    help="interleaved passes over all configurations; time = lowest per-pass median, "
                         "memory = median over passes")
    ap.add_argument("--malloc-mmap-threshold", type=int, default=0,
                    help="set glibc MALLOC_MMAP_THRESHOLD_ in the workers (e.g. 131072: RSS then tracks live "
                         "tensors); 0 = glibc's default dynamic threshold")
    ap.add_argument("--calibrate", choices=["lsq", "first"], default="lsq",
                    help="host FLOP/s: least squares on relative error over all rows, or the first row")
    ap.add_argument("--fit", action="store_true", help="also print activation coefficients fitted to the memory")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--drop", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("--seq-len", type=int, default=128, help=argparse.SUPPRESS)
    ap.add_argument("--batch-size", type=int, default=16, help=argparse.SUPPRESS)
    ap.add_argument("--top", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    from fedsim.core.costmodel import CostCoefficients, ModelShape, plan_cost

    configs = [(d, s, b, 0) for d in _floats(args.drops) for s in map(int, _floats(args.seqs))
               for b in map(int, _floats(args.batches))]
    if args.top_layers > 0:
        configs.append((0.0, max(c[1] for c in configs), max(c[2] for c in configs), args.top_layers))
    t_start = time.perf_counter()
    # The runtime constant: a near-empty step (batch 1, 16 tokens) measures what training adds
    # whatever the plan (code pages loaded by the first backward, thread pools, allocator
    # arenas): this host's counterpart of the cost model's runtime_overhead_bytes.
    probe = (0.0, 16, 1, 0)
    results: dict[tuple, list[dict]] = {c: [] for c in [probe, *configs]}
    for rep in range(args.repeats):
        for c in [probe, *configs]:
            res = _run_worker(args, *c)
            results[c].append(res)
            print(f"  pass {rep + 1}/{args.repeats}: drop {c[0]} seq {c[1]} batch {c[2]} lora-top {c[3] or 'all'}: "
                  f"{res['median_s']:.3f} s/step, {res['peak_train_bytes'] / 2**20:.0f} MiB, cpu share "
                  f"{res['cpu_share']:.2f}, load {res['load1']:.1f}", file=sys.stderr, flush=True)

    def summarise(c: tuple) -> dict:
        runs = results[c]
        best = min(runs, key=lambda r: r["median_s"])
        drop, seq, batch, top = c
        shape = ModelShape.from_hf_config(runs[0]["config"], num_labels=NUM_LABELS)
        plan = make_plan(shape.num_layers, drop, seq, batch, args.rank, top, args.steps)
        cost = plan_cost(shape, plan)
        return {
            "drop": drop, "seq": seq, "batch": batch, "top": top,
            "median_s": best["median_s"], "cpu_share": best["cpu_share"], "load1": max(r["load1"] for r in runs),
            "pass_medians_s": [r["median_s"] for r in runs],
            "peak_train_bytes": statistics.median(r["peak_train_bytes"] for r in runs),
            "base_bytes": statistics.median(r["base_bytes"] for r in runs),
            "layers_per_step": best["layers_per_step"], "peak_method": best["peak_method"],
            "flops_step": cost.flops / plan.local_steps,
            "pred_mem": cost.grads_bytes + cost.optimizer_bytes + cost.activations_bytes,
            "grads_optim": cost.grads_bytes + cost.optimizer_bytes,
            "act_bytes": cost.activations_bytes,
            "shape": shape,
        }

    p = summarise(probe)
    runtime_bytes = p["peak_train_bytes"] - p["pred_mem"]
    rows = [summarise(c) for c in configs]

    x = np.array([r["flops_step"] / r["median_s"] for r in rows])
    host = float(x[0]) if args.calibrate == "first" else float(np.sum(x**2) / np.sum(x))
    for r in rows:
        r["pred_s"] = r["flops_step"] / host
        r["err_t"] = r["pred_s"] / r["median_s"] - 1.0
        r["net_mem"] = r["peak_train_bytes"] - runtime_bytes
        r["err_m"] = r["pred_mem"] / r["net_mem"] - 1.0
        r["err_raw"] = r["pred_mem"] / r["peak_train_bytes"] - 1.0

    shape = rows[0]["shape"]
    print(
        f"Cost-model fidelity: {args.model} ({shape.num_layers} layers, h={shape.hidden}, ffn={shape.ffn}), "
        f"LoRA r={args.rank} on query/value + head, AdamW, {args.threads} threads, full-length random tokens; "
        f"time = lowest of {args.repeats} per-pass medians of {args.steps} steps after {args.warmup} warm-up"
    )
    print(f"host throughput ({'least squares on relative error, all rows' if args.calibrate == 'lsq' else 'first row'}): "
          f"{host / 1e9:.1f} GFLOP/s; training runtime constant (batch 1, seq 16, measured - predicted): "
          f"{runtime_bytes / 2**20:.0f} MiB")
    head = (f"{'drop':>4} {'seq':>4} {'bs':>3} {'lora':>4} {'lay':>3} {'GFLOP':>5} {'pred_s':>6} {'meas_s':>6} {'err_t':>6}"
            f" {'cpu':>4} | {'pred_MiB':>8} {'raw_MiB':>7} {'net_MiB':>7} {'err_m':>6} {'err_raw':>7}")
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['drop']:>4.2f} {r['seq']:>4d} {r['batch']:>3d} {('top' + str(r['top'])) if r['top'] else 'all':>4} "
            f"{r['layers_per_step']:>3.0f} {r['flops_step'] / 1e9:>5.1f} {r['pred_s']:>6.3f} {r['median_s']:>6.3f} "
            f"{r['err_t']:>+6.1%} {r['cpu_share']:>4.2f} | {r['pred_mem'] / 2**20:>8.0f} "
            f"{r['peak_train_bytes'] / 2**20:>7.0f} {r['net_mem'] / 2**20:>7.0f} {r['err_m']:>+6.1%} {r['err_raw']:>+7.1%}"
        )
    et = np.abs([r["err_t"] for r in rows])
    em = np.abs([r["err_m"] for r in rows])
    er = np.abs([r["err_raw"] for r in rows])
    print("-" * len(head))
    print(f"step time: median |err| {np.median(et):.1%}, worst {et.max():.1%}   (goals <= 15%, <= 30%)")
    print(f"memory (net of runtime constant): median |err| {np.median(em):.1%}, worst {em.max():.1%}   (goal: median <= 25%)")
    print(f"memory (raw):                     median |err| {np.median(er):.1%}, worst {er.max():.1%}")
    loads = [r["load1"] for r in rows]
    print(f"RSS after model load: {statistics.median(r['base_bytes'] for r in rows) / 2**20:.0f} MiB; peak via "
          f"{rows[0]['peak_method']}; predicted = grads + AdamW states + activations (no weights, no "
          f"runtime_overhead_bytes); host load avg {min(loads):.1f}-{max(loads):.1f}; "
          f"{time.perf_counter() - t_start:.0f} s in all")
    if min(r["cpu_share"] for r in rows) < 0.85:
        print("WARNING: some workers got < 85% of their threads' CPU time (other work on the host): step times "
              "are inflated and noisy; rerun on a quieter host or with more --repeats")

    if args.fit:
        coef = CostCoefficients()
        ys, xs = [], []
        for r in rows:
            sh = r["shape"]
            emb = coef.bytes_per_value * r["batch"] * r["seq"] * sh.hidden
            n_act = round((r["act_bytes"] - emb) / (coef.bytes_per_value * r["batch"] * r["seq"] * (
                coef.act_h * sh.hidden + coef.act_ffn * sh.ffn + coef.act_attn * sh.heads * r["seq"])))
            ys.append((r["net_mem"] - r["grads_optim"] - emb) / (coef.bytes_per_value * n_act * r["batch"] * r["seq"]))
            xs.append(sh.heads * r["seq"])
        slope, intercept = np.polyfit(xs, ys, 1)
        scale = intercept / (coef.act_h * shape.hidden + coef.act_ffn * shape.ffn)
        print(f"fit (net memory): values per layer and token = {intercept:.0f} + {slope:.2f} * heads * seq -> "
              f"act_h = {coef.act_h * scale:.1f}, act_ffn = {coef.act_ffn * scale:.1f}, act_attn = {slope:.2f} "
              f"(current {coef.act_h}, {coef.act_ffn}, {coef.act_attn})")

    if args.json is not None:
        args.json.write_text(json.dumps([{k: v for k, v in r.items() if k != "shape"} for r in rows], indent=1))


if __name__ == "__main__":
    main()
