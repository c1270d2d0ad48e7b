"""Step time and peak training memory of stochastic layer dropout (STLD) vs drop ratio.

Usage::

    python benchmarks/bench_stld.py                 # MiniLM-L6, seq 128, batch 16, r=8, 2 threads
    python benchmarks/bench_stld.py --steps 6 --ratios 0,0.5

Every ratio runs in a fresh subprocess, one after another, so peak memory is not polluted
by the allocator state of an earlier ratio. A worker builds the LoRA model, creates the
optimiser, measures its resident set size (RSS) as the baseline, then trains ``warmup +
steps`` local steps on random full-length token ids while a thread samples RSS every
millisecond. Reported: median (and mean) step time after warm-up, and peak RSS during
training minus the baseline ("training memory": activations, gradients, optimiser state,
allocator slack).

Layer schedule: ``exact`` (default) drops ``ratio`` of the layer slots over the run with
per-layer marginal drop probability ``ratio`` but the same count at every step (see
:func:`fedsim.learning.real.stld.exact_schedule`), so the time of a given mean ratio is
measured without the variance of Bernoulli draws; ``bernoulli`` uses the plain STLD draw.

Encoder speedup: a run with every layer dropped (ratio 1) measures the time outside the
encoder (embeddings, head, loss, optimiser); the encoder time at ratio ``r`` is ``T(r) -
T(1)`` and its speedup ``(T(0) - T(1)) / (T(r) - T(1))`` is compared to the ideal
``1 / (1 - r)``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Samples this process's RSS in a background thread; ``peak_bytes`` is the maximum."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.peak_bytes = _rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(self.peak_bytes, _rss_bytes())


def worker(args: argparse.Namespace) -> dict:
    """Train ``warmup + steps`` steps at one drop ratio; return timings and memory."""
    import torch

    from fedsim.learning.real.config import ModelSpec
    from fedsim.learning.real.data import TokenizedSplit
    from fedsim.learning.real.local import make_batch
    from fedsim.learning.real.model import build_model
    from fedsim.learning.real.stld import draw_schedule, exact_schedule, kept_layers

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    fm = build_model(ModelSpec(name_or_path=args.model, lora_rank=args.rank), num_labels=4, seed=args.seed)
    model = fm.model
    n = args.batch_size * 4
    vocab = fm.config.vocab_size
    data = TokenizedSplit(
        input_ids=rng.integers(1000, vocab, size=(n, args.seq_len)).astype(np.int32),
        lengths=np.full(n, args.seq_len, dtype=np.int16),
        labels=rng.integers(0, 4, size=n),
        pad_id=0,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    total = args.warmup + args.steps
    if args.ratio >= 1.0:
        schedule = np.zeros((total, fm.num_layers), dtype=bool)
    elif args.schedule == "exact":
        schedule = exact_schedule(fm.num_layers, args.ratio, total, rng)
    else:
        schedule = draw_schedule(np.full(fm.num_layers, args.ratio), total, rng)
    model.train()
    gc.collect()
    base_bytes = _rss_bytes()
    times_s = []
    with PeakRss() as peak:
        for step in range(total):
            idx = rng.choice(n, size=args.batch_size, replace=False)
            batch = make_batch(data, idx, args.seq_len)
            t0 = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            with kept_layers(model, schedule[step]):
                out = model(**batch)
            out.loss.backward()
            optim.step()
            times_s.append(time.perf_counter() - t0)
    measured = times_s[args.warmup :]
    return {
        "ratio": args.ratio,
        "realised_drop": float(1.0 - schedule[args.warmup :].mean()),
        "median_s": statistics.median(measured),
        "mean_s": statistics.fmean(measured),
        "base_bytes": base_bytes,
        "peak_train_bytes": peak.peak_bytes - base_bytes,
        "num_layers": fm.num_layers,
    }


def _run_worker(args: argparse.Namespace, ratio: float) -> dict:
    cmd = [
        sys.executable, __file__, "--worker", "--ratio", str(ratio), "--model", args.model,
        "--seq-len", str(args.seq_len), "--batch-size", str(args.batch_size), "--rank", str(args.rank),
        "--threads", str(args.threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
        "--schedule", args.schedule, "--seed", str(args.seed),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="minilm-l6", help="minilm-l6, tiny-bert or a local model dir")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--rank", type=int, default=8, help="LoRA rank on the family's query/value")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="measured steps per ratio")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--ratios", default="0,0.25,0.5,0.75", help="comma-separated mean drop ratios")
    ap.add_argument("--schedule", choices=["exact", "bernoulli"], default="exact")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--ratio", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args)))
        return

    ratios = [float(r) for r in args.ratios.split(",")]
    if 0.0 not in ratios:
        ratios.insert(0, 0.0)
    rows = {r: _run_worker(args, r) for r in ratios + [1.0]}
    ref, floor = rows[0.0], rows[1.0]
    enc_ref_s = ref["median_s"] - floor["median_s"]
    print(
        f"STLD benchmark: {args.model}, {ref['num_layers']} layers, seq {args.seq_len}, batch {args.batch_size}, "
        f"LoRA r={args.rank}, {args.threads} threads, {args.steps} steps after {args.warmup} warm-up, "
        f"{args.schedule} schedule"
    )
    head = (f"{'drop':>5} {'realised':>8} {'step_s':>7} {'mean_s':>7} {'speedup':>7} {'enc_spd':>7} "
            f"{'ideal':>6} {'enc/ideal':>9} {'train_mem_MB':>12} {'mem_cut':>7}")
    print(head)
    print("-" * len(head))
    for r in ratios:
        row = rows[r]
        enc_s = row["median_s"] - floor["median_s"]
        enc_speedup = enc_ref_s / enc_s if enc_s > 0 else float("inf")
        ideal = 1.0 / (1.0 - r)
        mem_cut = 1.0 - row["peak_train_bytes"] / ref["peak_train_bytes"]
        print(
            f"{r:>5.2f} {row['realised_drop']:>8.3f} {row['median_s']:>7.3f} {row['mean_s']:>7.3f} "
            f"{ref['median_s'] / row['median_s']:>6.2f}x {enc_speedup:>6.2f}x {ideal:>5.2f}x "
            f"{enc_speedup / ideal:>8.0%} {row['peak_train_bytes'] / 2**20:>12.0f} {mem_cut:>7.0%}"
        )
    print(
        f"all layers dropped: {floor['median_s']:.3f} s/step, {floor['peak_train_bytes'] / 2**20:.0f} MB training "
        f"memory; RSS after model load: {ref['base_bytes'] / 2**20:.0f} MB"
    )


if __name__ == "__main__":
    main()
