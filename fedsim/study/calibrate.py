"""``fedsim calibrate``: measure this host's training, fit the cost model's host figures,
write a device profile.

For each configuration (sequence length, batch size, layers kept per step) a worker
builds the model with LoRA, applies the plan's trainable set as real training does, and
times ``warmup + steps`` local steps (``zero_grad -> forward over the kept layers ->
backward -> AdamW step``) on full-length random token ids, recording the peak RSS the
steps add on top of the loaded model (the kernel's high-water mark, reset before the
first step). By default every configuration runs in a fresh process, so one
configuration's freed memory does not hide the next one's peak.

The fit (docs/cost-model.md names the coefficients):

* **throughput** ``F``: one scalar, least squares on relative error of the predicted step
  time ``flops / F`` (``1/F = sum(x) / sum(x^2)`` with ``x = flops / t``);
* **memory**: measured = ``runtime + grads + optimizer + scale * activations``, a least
  squares line: ``runtime`` is this host's counterpart of ``runtime_overhead_bytes``,
  ``scale`` multiplies ``act_h``, ``act_ffn`` and ``act_attn``.

The profile holds ``train_gflops_per_s = F`` and the memory the host may use; the memory
fit is printed and written in the profile's header, for comparison with the defaults.
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from fedsim.core.costmodel import ModelShape, plan_cost
from fedsim.core.models import TINY_BERT, TINY_BERT_NAME
from fedsim.core.plan import ClientPlan
from fedsim.core.errors import FedsimError

__all__ = [
    "CalibConfig", "Measurement", "Fit", "PeakRss", "measure", "fit", "table", "profile_yaml", "calibrate", "parse_configs",
    "DEFAULT_CONFIGS",
]

NUM_LABELS = 4


@dataclass(frozen=True)
class CalibConfig:
    """One measured configuration; ``layers_kept`` 0 means every layer."""

    seq_len: int
    batch_size: int
    layers_kept: int = 0


DEFAULT_CONFIGS = (CalibConfig(32, 4), CalibConfig(64, 8), CalibConfig(128, 8), CalibConfig(64, 16),
                   CalibConfig(128, 16), CalibConfig(64, 8, -2), CalibConfig(128, 16, -2))
"""Sequence length x batch, all layers, plus two with a third of the layers kept (-2: L // 3)."""


@dataclass(frozen=True)
class Measurement:
    """What one configuration took on this host, and what the cost model says it costs."""

    config: CalibConfig
    layers_run: int
    step_s: float  # median over the timed steps
    peak_train_bytes: float  # peak RSS during the steps minus RSS before them
    flops_step: float
    grads_optim_bytes: float
    act_bytes: float


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


class PeakRss:
    """Peak RSS of this process while the block runs: the kernel's high-water mark reset
    on entry (``/proc/self/clear_refs``), else RSS sampled every millisecond."""

    def __init__(self, interval_s: float = 0.001) -> None:
        self.interval_s = interval_s
        self.peak_bytes = _rss_bytes()
        self.method = "VmHWM"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
            time.sleep(self.interval_s)

    def __enter__(self) -> PeakRss:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            if _hwm_bytes() > _rss_bytes() + (1 << 20):
                raise OSError("VmHWM was not reset")
        except OSError:
            self.method = "sampled"
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self.peak_bytes, _rss_bytes())
        else:
            self.peak_bytes = _hwm_bytes()


def _plan(shape: ModelShape, cfg: CalibConfig, rank: int, targets: tuple[str, ...], steps: int) -> ClientPlan:
    kept = _layers_kept(shape.num_layers, cfg)
    return ClientPlan(drop_prob=(1.0 - kept / shape.num_layers,) * shape.num_layers, lora_rank=(rank,) * shape.num_layers,
                      lora_targets=targets, train_head=True, batch_size=cfg.batch_size, seq_len=cfg.seq_len,
                      local_steps=steps)


def _layers_kept(num_layers: int, cfg: CalibConfig) -> int:
    if cfg.layers_kept == 0:
        return num_layers
    if cfg.layers_kept < 0:  # -k: num_layers // k, so a default fits any depth
        return max(1, num_layers // -cfg.layers_kept)
    return min(cfg.layers_kept, num_layers)


def measure(model: str, cfg: CalibConfig, *, rank: int = 8, steps: int = 4, warmup: int = 1, seed: int = 0) -> Measurement:
    """Train one configuration in this process and measure it (see the module docstring)."""
    import torch

    from fedsim.learning.real.config import ModelSpec
    from fedsim.learning.real.data import TokenizedSplit
    from fedsim.learning.real.local import make_batch, plan_trainable
    from fedsim.learning.real.model import build_model
    from fedsim.learning.real.stld import draw_schedule, kept_layers

    rng = np.random.default_rng(seed)
    vocab = TINY_BERT["vocab_size"] if model == TINY_BERT_NAME else None  # no tokenizer to load for the test model
    fm = build_model(ModelSpec(name_or_path=model, lora_rank=rank), num_labels=NUM_LABELS, seed=seed, vocab_size=vocab)
    shape = ModelShape.from_hf_config(fm.config.to_dict(), num_labels=NUM_LABELS)
    total = warmup + steps
    plan = _plan(shape, cfg, rank, tuple(fm.lora_targets), total)
    params = dict(fm.model.named_parameters())
    names, masks = plan_trainable(fm, plan)
    for name, p in params.items():
        p.requires_grad_(name in names)
    optim = torch.optim.AdamW([params[n] for n in names], lr=1e-3, weight_decay=0.0)
    n = cfg.batch_size * 2
    data = TokenizedSplit(
        input_ids=rng.integers(1000, fm.config.vocab_size, size=(n, cfg.seq_len)).astype(np.int32),
        lengths=np.full(n, cfg.seq_len, dtype=np.int16), labels=rng.integers(0, NUM_LABELS, size=n), pad_id=0,
    )
    schedule = draw_schedule(plan.drop_prob, total, rng)
    batches = [make_batch(data, rng.choice(n, size=cfg.batch_size, replace=False), cfg.seq_len) for _ in range(total)]
    fm.model.train()
    gc.collect()
    base = _rss_bytes()
    times = []
    with PeakRss() as peak:
        for step in range(total):
            t0 = time.perf_counter()
            optim.zero_grad(set_to_none=True)
            with kept_layers(fm.model, schedule[step]):
                out = fm.model(**batches[step])
            out.loss.backward()
            for name, m in masks.items():
                if params[name].grad is not None:
                    params[name].grad.mul_(m)
            optim.step()
            times.append(time.perf_counter() - t0)
    cost = plan_cost(shape, _plan(shape, cfg, rank, tuple(fm.lora_targets), 1))
    return Measurement(config=cfg, layers_run=int(schedule[warmup:].sum(axis=1).max()), step_s=statistics.median(times[warmup:]),
                       peak_train_bytes=float(peak.peak_bytes - base), flops_step=cost.flops,
                       grads_optim_bytes=cost.grads_bytes + cost.optimizer_bytes, act_bytes=cost.activations_bytes)


def parse_configs(text: str) -> tuple[CalibConfig, ...]:
    """``"64x8,128x16x2"``: sequence length x batch [x layers kept], comma-separated."""
    out = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) not in (2, 3) or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise ValueError(f"{item.strip()!r} is not SEQxBATCH or SEQxBATCHxLAYERS with positive integers")
        out.append(CalibConfig(*map(int, parts)))
    return tuple(out)


def _measure_isolated(model: str, cfg: CalibConfig, rank: int, steps: int, warmup: int, threads: int, seed: int) -> Measurement:
    """:func:`measure` in a fresh Python process with ``threads`` torch threads."""
    job = {"model": model, "config": asdict(cfg), "rank": rank, "steps": steps, "warmup": warmup, "threads": threads, "seed": seed}
    out = subprocess.run([sys.executable, "-m", "fedsim.study.calibrate", json.dumps(job)], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    if out.returncode != 0:
        raise FedsimError(f"calibration of {model} at {cfg} failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Measurement(**{**data, "config": CalibConfig(**data["config"])})


@dataclass(frozen=True)
class Fit:
    """The host figures fitted to the measurements, and how well they predict each one."""

    gflops_per_s: float
    runtime_bytes: float
    act_scale: float
    rows: list[dict]

    @property
    def time_errors(self) -> np.ndarray:
        return np.array([r["err_time"] for r in self.rows])

    @property
    def mem_errors(self) -> np.ndarray:
        return np.array([r["err_mem"] for r in self.rows])


def fit(measurements: list[Measurement]) -> Fit:
    """Fit throughput and memory (module docstring); relative errors per configuration."""
    if not measurements:
        raise ValueError("calibration needs at least one measured configuration")
    x = np.array([m.flops_step / m.step_s for m in measurements])
    flops_per_s = float(np.sum(x**2) / np.sum(x))
    meas = np.array([m.peak_train_bytes - m.grads_optim_bytes for m in measurements])
    act = np.array([m.act_bytes for m in measurements])
    scale, runtime = 1.0, float(np.median(meas - act))
    if np.ptp(act) > 0:
        slope, intercept = np.polyfit(act, meas, 1)
        if slope > 0:  # noise on a small, flat grid can tilt the line backwards: keep the defaults' shape then
            scale, runtime = float(slope), float(intercept)
    rows = []
    for m in measurements:
        pred_s = m.flops_step / flops_per_s
        pred_mem = runtime + m.grads_optim_bytes + scale * m.act_bytes
        rows.append({
            "seq_len": m.config.seq_len, "batch_size": m.config.batch_size, "layers_run": m.layers_run,
            "gflop_step": m.flops_step / 1e9, "pred_s": pred_s, "meas_s": m.step_s, "err_time": pred_s / m.step_s - 1.0,
            "pred_mem_mb": pred_mem / 1e6, "meas_mem_mb": m.peak_train_bytes / 1e6,
            "err_mem": pred_mem / m.peak_train_bytes - 1.0 if m.peak_train_bytes > 0 else float("nan"),
        })
    return Fit(gflops_per_s=flops_per_s / 1e9, runtime_bytes=runtime, act_scale=scale, rows=rows)


def table(f: Fit) -> str:
    """Predicted against measured, one line per configuration, and the error summary."""
    head = f"{'seq':>5} {'batch':>5} {'layers':>6} {'GFLOP':>7} {'pred s':>8} {'meas s':>8} {'err':>7}   {'pred MB':>8} {'meas MB':>8} {'err':>7}"
    lines = [head, "-" * len(head)]
    for r in f.rows:
        lines.append(f"{r['seq_len']:>5} {r['batch_size']:>5} {r['layers_run']:>6} {r['gflop_step']:>7.2f} {r['pred_s']:>8.4f} "
                     f"{r['meas_s']:>8.4f} {r['err_time']:>+7.1%}   {r['pred_mem_mb']:>8.0f} {r['meas_mem_mb']:>8.0f} {r['err_mem']:>+7.1%}")
    et, em = np.abs(f.time_errors), np.abs(f.mem_errors)
    lines.append("-" * len(head))
    lines.append(f"throughput {f.gflops_per_s:.2f} GFLOP/s; step time |error| median {np.median(et):.1%}, worst {et.max():.1%}")
    lines.append(f"memory: runtime {f.runtime_bytes / 1e6:.0f} MB + grads + AdamW + {f.act_scale:.2f} x the default activations; "
                 f"|error| median {np.nanmedian(em):.1%}, worst {np.nanmax(em):.1%}")
    return "\n".join(lines)


def profile_yaml(f: Fit, name: str, model: str, *, app_memory_gb: float, watts: float, threads: int) -> str:
    """A device profile file holding one class, ``name``, with the fitted throughput."""
    import yaml

    from fedsim.core.configio import validate
    from fedsim.fleet.profiles import ProfileFile

    et = np.abs(f.time_errors)
    cls = {
        "description": f"this host ({platform.machine()}, {threads} torch threads), calibrated on {model}",
        "source": f"fedsim calibrate, {len(f.rows)} configurations of {model}; step time |error| median "
                  f"{np.median(et):.1%}, worst {et.max():.1%}",
        "train_gflops_per_s": {"dist": "constant", "value": float(f"{f.gflops_per_s:.4g}")},
        "app_memory_gb": {"dist": "constant", "value": round(app_memory_gb, 2)},
        "availability": {"window_start_h": 0, "window_len_h": 24, "skip_day_prob": 0.0},
        "straggle_prob": 0.0,
        "straggle_slowdown": {"dist": "constant", "value": 1.0},
        "dropout_prob": 0.0,
        "joules_per_gflop": {"dist": "constant", "value": float(f"{watts / f.gflops_per_s:.4g}")},
    }
    validate(ProfileFile, {"devices": {name: cls}}, file=f"<profile {name}>")
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    header = [
        f"# Written by `fedsim calibrate --model {model}` on {when} ({platform.node() or 'host'}).",
        f"# Energy: an assumed {watts:g} W while training (--watts), over the fitted throughput.",
        f"# Memory fit (not used by the simulator; the defaults are runtime 150 MB, scale 1): runtime "
        f"{f.runtime_bytes / 1e6:.0f} MB, activation scale {f.act_scale:.2f}.",
        "# Predicted against measured (seq, batch, layers run: step time error, memory error):",
    ]
    header += [f"#   {r['seq_len']}, {r['batch_size']}, {r['layers_run']}: {r['err_time']:+.1%}, {r['err_mem']:+.1%}" for r in f.rows]
    return "\n".join(header) + "\n" + yaml.safe_dump({"devices": {name: cls}}, sort_keys=False)


def calibrate(model: str, out: Path, *, configs=DEFAULT_CONFIGS, name: str | None = None, rank: int = 8, steps: int = 4,
              warmup: int = 1, threads: int = 1, app_memory_gb: float | None = None, watts: float = 30.0,
              isolate: bool = True, force: bool = False, seed: int = 0, on_row=None) -> Fit:
    """Measure ``configs``, fit, and write the profile to ``out`` (refused if it exists, unless ``force``)."""
    out = Path(out)
    if out.exists() and not force:
        raise FedsimError(f"{out} already exists; choose another --out or replace it with --force")
    if out.suffix not in (".yaml", ".yml"):
        raise FedsimError(f"--out {out}: expected a .yaml file (a profile folder reads *.yaml)")
    rows = []
    for cfg in configs:
        m = _measure_isolated(model, cfg, rank, steps, warmup, threads, seed) if isolate else \
            measure(model, cfg, rank=rank, steps=steps, warmup=warmup, seed=seed)
        rows.append(m)
        if on_row is not None:
            on_row(m)
    f = fit(rows)
    if app_memory_gb is None:
        app_memory_gb = 0.7 * os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9
    text = profile_yaml(f, name or out.stem, model, app_memory_gb=app_memory_gb, watts=watts, threads=threads)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    return f


def _worker(job: dict) -> None:
    import torch

    torch.set_num_threads(int(job["threads"]))  # this process is the worker's own
    m = measure(job["model"], CalibConfig(**job["config"]), rank=job["rank"], steps=job["steps"], warmup=job["warmup"], seed=job["seed"])
    print(json.dumps({**asdict(m), "config": asdict(m.config)}))


if __name__ == "__main__":
    _worker(json.loads(sys.argv[1]))
