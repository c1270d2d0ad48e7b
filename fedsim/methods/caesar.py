"""Caesar (arXiv 2412.19989): low-deviation compression and batch-size tuning.

Three parts; the compression (:class:`CaesarCompression`) is reusable by other methods
(``stld-fixed`` takes ``compression: caesar``).

**Download.** The server keeps, per device, the model the device last received (its
*reference*; a device that never took part holds the initial global model, shipped with
the app). It sends ``compress(global - reference)``, and the device starts from
``reference + decompress(...)``. The *staleness* ``s`` of a device is the number of rounds
since it last took part (``round + 1`` for one that never did). A fresh device's difference
is small, so coarse compression costs little; a stale one gets a more precise model:
level ``round((n - 1) * exp(-(s - 1) / staleness_tau))`` of ``down_levels`` (ordered
most precise first; :func:`download_level`).

**Upload.** A client's update is weighted by *importance*
``I = (n_i / mean n) * (1 - JSD(p_i, p))``: its sample volume relative to the round's
clients, times one minus the Jensen-Shannon divergence (base 2, in [0, 1]) of its label
distribution from the global one (:func:`importance`). Relative to the round's most
important client, ``u = I / max I``, it uploads at level ``round((n - 1) * (1 - u))`` of
``up_levels`` (:func:`upload_level`). Without label counts (surrogate trainer) the
divergence is 0 and only the volume counts.

Compression is top-k sparsification plus uniform quantisation, applied to the tensors for
real (:mod:`fedsim.learning.compression`), and the plan's ``down_ratio`` / ``up_ratio`` are the exact
compressed / dense byte ratios of the state being sent, so the records count the bytes as
sent. Upload compression runs in :meth:`CaesarCompression.aggregate_fn` (each delta is
compressed and decompressed before averaging); download compression in the trainer's
``download_transform`` hook. No error feedback: what compression drops is lost.
The references cost one copy of the trainable state per device that took part (about
0.9 MB for MiniLM-L6 with LoRA r=8 and the head); only clients whose update arrived are
tracked (a device that failed after downloading is treated as not having received).

**Batch size.** With the transfer times fixed by the chosen levels, the compute time of a
client is linear in its batch size, and so is its peak memory. Target round time ``T``: the
``target_quantile`` of the selected clients' times at the base batch. A client that would
finish before ``T`` gets the largest batch of ``batch_choices`` (default ``b, 1.5b, 2b, 3b,
4b`` up to ``max_batch``) that still finishes by ``T`` and fits its memory; slower clients
keep the base batch (:func:`tune_batch_sizes`). Fast devices do more useful work instead of
idling at the synchronous barrier.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from fedsim.learning.compression import Level, roundtrip, roundtrip_state, state_ratio
from fedsim.core.costmodel import ModelShape, plan_cost
from fedsim.methods.base import Method, MethodParams, RoundContext, RoundReport, register
from fedsim.core.plan import ClientPlan, RoundPlans
from fedsim.learning.base import AggregateFn, ClientResult

__all__ = [
    "download_level", "upload_level", "importance", "label_divergence", "plan_state_sizes", "tune_batch_sizes",
    "CompressionParams", "CaesarCompression", "Caesar",
]


# -- pure maths -----------------------------------------------------------------------
def download_level(staleness: np.ndarray, n_levels: int, tau: float) -> np.ndarray:
    """Index into the download levels (0 = most precise) for each client's staleness (>= 1)."""
    s = np.maximum(np.asarray(staleness, dtype=float), 1.0)
    return np.rint((n_levels - 1) * np.exp(-(s - 1.0) / tau)).astype(np.int64)


def label_divergence(counts: np.ndarray, global_p: np.ndarray) -> np.ndarray:
    """Jensen-Shannon divergence (base 2, in [0, 1]) of each row's label mix from ``global_p``."""
    counts = np.atleast_2d(np.asarray(counts, dtype=float))
    p = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1e-12)
    q = np.asarray(global_p, dtype=float)[None, :] / max(float(np.sum(global_p)), 1e-12)
    m = 0.5 * (p + q)

    def kl(a, b):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(a > 0, a * np.log2(a / np.where(b > 0, b, 1.0)), 0.0).sum(axis=1)

    return np.clip(0.5 * kl(p, m) + 0.5 * kl(q, m), 0.0, 1.0)


def importance(num_examples: np.ndarray, divergence: np.ndarray) -> np.ndarray:
    """``(n_i / mean n) * (1 - divergence_i)``."""
    n = np.asarray(num_examples, dtype=float)
    return n / max(float(n.mean()), 1e-12) * (1.0 - np.asarray(divergence, dtype=float))


def upload_level(imp: np.ndarray, n_levels: int) -> np.ndarray:
    """Index into the upload levels (0 = most precise): the most important client gets 0."""
    imp = np.asarray(imp, dtype=float)
    top = float(imp.max()) if imp.size else 0.0
    u = imp / top if top > 0 else np.ones_like(imp)
    return np.clip(np.rint((n_levels - 1) * (1.0 - u)), 0, n_levels - 1).astype(np.int64)


def plan_state_sizes(shape: ModelShape, plan: ClientPlan) -> list[int]:
    """Sizes of the tensors of the trainable state a plan sends (LoRA A and B per target, head)."""
    sizes: list[int] = []
    for r in plan.lora_rank:
        if r > 0:
            for d_in, d_out in shape.target_shapes(plan.lora_targets):
                sizes += [r * d_in, d_out * r]
    if plan.train_head:
        h = shape.hidden
        sizes += [h * h, h, h * shape.num_labels, shape.num_labels]
    return sizes


def tune_batch_sizes(
    comm_s: np.ndarray,
    flops_per_s: np.ndarray,
    flops_fixed: np.ndarray,
    flops_per_example: np.ndarray,
    mem_fixed: np.ndarray,
    mem_per_example: np.ndarray,
    cap_bytes: np.ndarray,
    base: int,
    choices: Sequence[int],
    target_s: float,
) -> np.ndarray:
    """Per client, the largest batch of ``choices`` (at least ``base``) done by ``target_s`` that fits.

    Round time at batch ``b``: ``comm_s + (flops_fixed + b * flops_per_example) / flops_per_s``;
    peak memory: ``mem_fixed + b * mem_per_example``. Vectorised over clients.
    """
    b_time = ((target_s - comm_s) * flops_per_s - flops_fixed) / np.maximum(flops_per_example, 1e-30)
    b_mem = (cap_bytes - mem_fixed) / np.maximum(mem_per_example, 1e-30)
    bmax = np.minimum(b_time, b_mem)
    grid = np.array(sorted(set(int(c) for c in choices) | {int(base)}))
    grid = grid[grid >= base]
    pick = np.searchsorted(grid, bmax + 1e-9, side="right") - 1
    return grid[np.clip(pick, 0, grid.size - 1)]


# -- the reusable compression component -----------------------------------------------
def _levels(v: list[tuple[float, int]]) -> list[tuple[float, int]]:
    for keep, bits in v:
        Level(keep, bits)  # raises with the field's problem
    return v


class CompressionParams(MethodParams):
    # Defaults aim at Caesar's published operating point (25-38% less traffic for a 0.68%
    # accuracy loss): dense fp16 / 8-bit for most transfers, top-k only for the least
    # important uploads and the freshest downloads. Harsher levels (10% top-k) cut far
    # more bytes, but without error feedback they slow learning (docs/methods.md).
    down_levels: list[tuple[float, int]] = Field(
        [(1.0, 32), (1.0, 16), (1.0, 8), (0.5, 8)], min_length=1,
        description="download (keep fraction, bits), most precise first")
    up_levels: list[tuple[float, int]] = Field(
        [(1.0, 16), (1.0, 8), (0.5, 8), (0.25, 8)], min_length=1,
        description="upload (keep fraction, bits), most precise first")
    staleness_tau: float = Field(10.0, gt=0.0, description="rounds of staleness over which download precision rises")

    @field_validator("down_levels", "up_levels")
    @classmethod
    def _valid_levels(cls, v: list[tuple[float, int]]) -> list[tuple[float, int]]:
        return _levels(v)


class CaesarCompression:
    """Caesar's download and upload compression, for any method's plans."""

    def __init__(self, params: CompressionParams, shape: ModelShape) -> None:
        self.params = params
        self.shape = shape
        self.down_levels = [Level(k, b) for k, b in params.down_levels]
        self.up_levels = [Level(k, b) for k, b in params.up_levels]
        self._last_round: np.ndarray | None = None  # per device, -1 = never took part
        self._label_counts: Any = None  # callable(ids) -> (n, C) counts
        self._global_p: np.ndarray | None = None
        self._num_examples: Any = None  # callable(ids) -> (n,)
        self._down: dict[int, int] = {}
        self._up: dict[int, int] = {}
        self._initial: dict[str, Any] | None = None
        self._refs: dict[int, dict[str, Any]] = {}
        self.bytes_down_sent = 0
        self._ratio_cache: dict[tuple, float] = {}

    def __getstate__(self) -> dict[str, Any]:
        # What bind() derives from the trainer's data is rebuilt by calling it again.
        return {**vars(self), "_label_counts": None, "_num_examples": None}

    # hooks ------------------------------------------------------------------------
    def bind(self, trainer: Any) -> None:
        partition = getattr(trainer, "partition", None)
        data = getattr(trainer, "data", None)
        if partition is not None and data is not None:
            labels = np.asarray(data.train.labels)
            shards = partition.train
            n_cls = int(labels.max()) + 1 if labels.size else 1
            self._global_p = np.bincount(labels, minlength=n_cls).astype(float)
            self._label_counts = lambda ids: np.stack([np.bincount(labels[shards[int(i)]], minlength=n_cls) for i in ids])
            self._num_examples = lambda ids: shards.sizes[np.asarray(ids, dtype=np.int64)]
        elif getattr(trainer, "examples_per_client", None) is not None:
            sizes = np.asarray(trainer.examples_per_client)
            self._num_examples = lambda ids: sizes[np.asarray(ids, dtype=np.int64)]
        if hasattr(trainer, "download_transform") and hasattr(trainer, "global_state"):
            self._initial = trainer.global_state()
            trainer.download_transform = self.download

    def staleness(self, round_idx: int, ids: np.ndarray, fleet_size: int) -> np.ndarray:
        if self._last_round is None or self._last_round.size != fleet_size:
            self._last_round = np.full(fleet_size, -1, dtype=np.int64)
        return round_idx - self._last_round[ids]

    def assign(self, ctx: RoundContext, plans: RoundPlans) -> RoundPlans:
        """Give each selected client its download and upload levels (plans regrouped)."""
        ids = ctx.device_ids
        down = download_level(self.staleness(ctx.round_idx, ids, ctx.fleet.size), len(self.down_levels), self.params.staleness_tau)
        n = self._num_examples(ids) if self._num_examples is not None else np.ones(len(ids))
        div = label_divergence(self._label_counts(ids), self._global_p) if self._label_counts is not None else np.zeros(len(ids))
        up = upload_level(importance(n, div), len(self.up_levels))
        self._down = {int(c): int(d) for c, d in zip(ids, down)}
        self._up = {int(c): int(u) for c, u in zip(ids, up)}
        return plans.regroup(lambda i, p: p.with_(
            down_ratio=self.ratio(p, self.down_levels[down[i]]),
            up_ratio=self.ratio(p, self.up_levels[up[i]]),
            name=f"{p.name}|d-{self.down_levels[down[i]].tag}|u-{self.up_levels[up[i]].tag}",
        ))

    def ratio(self, plan: ClientPlan, level: Level) -> float:
        key = (plan.lora_rank, plan.lora_targets, plan.train_head, level)
        if key not in self._ratio_cache:
            self._ratio_cache[key] = max(state_ratio(plan_state_sizes(self.shape, plan), level), 1e-6)
        return self._ratio_cache[key]

    def download(self, client_id: int, plan: ClientPlan, global_state: dict[str, Any]) -> dict[str, Any]:
        """The state the device starts from: its reference plus the compressed difference."""
        level = self.down_levels[self._down.get(int(client_id), 0)]
        ref = self._refs.get(int(client_id), self._initial) or {}
        diff = {n: v - ref[n] for n, v in global_state.items() if n in ref}
        rec, nbytes = roundtrip_state(diff, level)
        out = {n: (ref[n] + rec[n] if n in rec else v) for n, v in global_state.items()}
        self._refs[int(client_id)] = out
        self.bytes_down_sent += nbytes
        return out

    def compress_results(self, results: Sequence[ClientResult]) -> list[ClientResult]:
        out = []
        for r in results:
            if not r.delta:
                out.append(r)
                continue
            level = self.up_levels[self._up.get(int(r.client_id), 0)]
            out.append(replace(r, delta={n: roundtrip(d, level)[0] for n, d in r.delta.items()}))
        return out

    def aggregate_fn(self, inner: AggregateFn | None = None) -> AggregateFn:
        """Compress each client's delta at its upload level, then aggregate with ``inner`` (FedAvg per layer)."""
        if inner is None:
            from fedsim.learning.real.aggregate import fedavg_per_layer as inner  # noqa: N813
        return lambda state, results: inner(state, self.compress_results(results))

    def round_finished(self, report: RoundReport) -> None:
        if self._last_round is not None:
            ok = report.outcome == "ok"
            self._last_round[report.device_ids[ok]] = report.round_idx


# -- the method ------------------------------------------------------------------------
class CaesarParams(CompressionParams):
    batch_tuning: bool = Field(True, description="tune per-device batch sizes")
    max_batch: int = Field(64, ge=1, description="largest batch a device may get")
    batch_choices: list[int] | None = Field(None, description="allowed batch sizes (default b, 1.5b, 2b, 3b, 4b)")
    target_quantile: float = Field(0.75, gt=0.0, le=1.0, description="quantile of base-batch round times used as target")


@register
class Caesar(Method):
    name = "caesar"
    Params = CaesarParams

    def __init__(self, params: CaesarParams, shape, base_plan: ClientPlan) -> None:
        super().__init__(params, shape, base_plan)
        self.compression = CaesarCompression(params, shape)
        b = base_plan.batch_size
        choices = params.batch_choices or [b, int(1.5 * b), 2 * b, 3 * b, 4 * b]
        self.batch_choices = sorted({min(int(c), params.max_batch) for c in choices if c >= 1} | {b})

    def bind_trainer(self, trainer: Any) -> None:
        self.compression.bind(trainer)

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        plans = self.compression.assign(ctx, RoundPlans.same(self.base_plan, len(ctx.device_ids)))
        if not self.params.batch_tuning or len(self.batch_choices) < 2:  # type: ignore[attr-defined]
            return plans
        return self.tune(ctx, plans)

    def tune(self, ctx: RoundContext, plans: RoundPlans) -> RoundPlans:
        ids, fleet, coef = ctx.device_ids, ctx.fleet, ctx.coefficients
        b0 = self.base_plan.batch_size
        lin = []  # per distinct plan: flops and memory at b0 and their slopes per example
        for p in plans.plans:
            c0 = plan_cost(self.shape, p, coef)
            c1 = plan_cost(self.shape, p.with_(batch_size=b0 + 1), coef)
            lin.append((c0.flops - b0 * (c1.flops - c0.flops), c1.flops - c0.flops,
                        c0.peak_mem_bytes - b0 * (c1.peak_mem_bytes - c0.peak_mem_bytes), c1.peak_mem_bytes - c0.peak_mem_bytes,
                        c0.bytes_down, c0.bytes_up, c0.flops))
        a = np.array(lin)[plans.index]
        comm = 2.0 * fleet.latency_s[ids] + 8.0 * a[:, 4] / fleet.down_bps[ids] + 8.0 * a[:, 5] / fleet.up_bps[ids]
        base_times = comm + a[:, 6] / fleet.flops_per_s[ids]
        target = float(np.quantile(base_times, self.params.target_quantile))  # type: ignore[attr-defined]
        batch = tune_batch_sizes(comm, fleet.flops_per_s[ids], a[:, 0], a[:, 1], a[:, 2], a[:, 3],
                                 fleet.mem_cap_bytes[ids], b0, self.batch_choices, target)
        return plans.regroup(lambda i, p: p if batch[i] == p.batch_size else p.with_(batch_size=int(batch[i]), name=f"{p.name}|b{batch[i]}"))

    def aggregate_fn(self) -> AggregateFn | None:
        return self.compression.aggregate_fn()

    def round_finished(self, report: RoundReport) -> None:
        self.compression.round_finished(report)
