"""LEGEND (Liu et al., IEEE TMC 2025): per-device LoRA depth and rank distribution.

Observation behind it: LoRA layers close to the output, with higher ranks, buy most of
the accuracy; the lower layers can go without adapters (and then need no backward pass).
Per device, LEGEND picks the *LoRA depth* ``d`` (adapters on the top ``d`` layers only)
and the ranks of those layers from the device's capacity, so slow devices do less and the
round times of the selected devices even out.

Scheme implemented here (the paper's exact solver is not public):

* Candidates: for every depth ``d`` (``min_depth..L``) and every top rank ``R_top`` in
  ``rank_levels * R`` (``R`` = the model's LoRA rank), the ranks rise linearly from
  ``rank_floor * R_top`` on the lowest adapted layer to ``R_top`` on the last layer
  (:func:`legend_ranks`). Each candidate is priced once by the cost model (FLOPs, peak
  memory, bytes down and up).
* Per round, vectorised over the selected devices: the time of every candidate on every
  device (compute from its throughput, transfers from its links, :func:`candidate_times`),
  and a target round time ``T``: the ``target_quantile`` of the devices' times with the
  largest candidate, capped at ``deadline_fraction`` of the round deadline. Each device
  gets the largest candidate (most LoRA parameters, then deepest) that fits its memory and
  finishes within ``T``; if none finishes in time, the fastest that fits its memory; if
  none fits, the smallest (it will fail with ``oom``, as it would anyway)
  (:func:`choose_configs`). A round holds at most ``len(candidates)`` distinct plans,
  usually a handful.
* Aggregation of heterogeneous ranks (:func:`aggregate_rank_slots`): rank slot ``j`` of a
  layer's ``lora_A`` (row ``j``) and ``lora_B`` (column ``j``) is averaged, weighted by
  examples, over the clients that trained that slot (rank ``> j`` on that layer and the
  layer ran); a slot nobody trained keeps its global value. Plain FedAvg would average the
  zeros of the clients that held the slot at zero and shrink the high slots.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from pydantic import Field

from fedsim.core.costmodel import plan_cost
from fedsim.methods.base import Method, MethodParams, RoundContext, RoundReport, register
from fedsim.core.plan import ClientPlan, RoundPlans
from fedsim.learning.base import AggregateFn, ClientResult

__all__ = ["legend_ranks", "legend_candidates", "candidate_times", "choose_configs", "aggregate_rank_slots", "Legend"]


def legend_ranks(num_layers: int, depth: int, top_rank: int, rank_floor: float = 0.5) -> tuple[int, ...]:
    """Ranks with LoRA on the top ``depth`` layers, rising linearly to ``top_rank`` at the output."""
    if not 0 <= depth <= num_layers:
        raise ValueError(f"depth must be in [0, {num_layers}], got {depth}")
    ranks = [0] * num_layers
    if depth == 0 or top_rank <= 0:
        return tuple(ranks)
    ramp = np.linspace(rank_floor, 1.0, depth) if depth > 1 else np.ones(1)
    for k, frac in enumerate(ramp):
        ranks[num_layers - depth + k] = max(1, int(round(top_rank * float(frac))))
    return tuple(ranks)


def legend_candidates(
    num_layers: int, max_rank: int, rank_levels: Sequence[float], rank_floor: float, min_depth: int = 1
) -> list[tuple[int, ...]]:
    """Distinct rank tuples for every depth and top rank, smallest first (by total rank, then depth)."""
    out = set()
    for d in range(max(1, min_depth), num_layers + 1):
        for f in rank_levels:
            out.add(legend_ranks(num_layers, d, max(1, int(round(max_rank * f))), rank_floor))
    return sorted(out, key=lambda r: (sum(r), sum(x > 0 for x in r)))


def candidate_times(fleet, ids: np.ndarray, flops: np.ndarray, bytes_down: np.ndarray, bytes_up: np.ndarray) -> np.ndarray:
    """``(clients, candidates)`` round times without straggling: download, compute, upload."""
    lat = fleet.latency_s[ids].astype(np.float64)[:, None]
    return (
        2.0 * lat
        + 8.0 * np.asarray(bytes_down)[None, :] / fleet.down_bps[ids][:, None]
        + np.asarray(flops)[None, :] / fleet.flops_per_s[ids][:, None]
        + 8.0 * np.asarray(bytes_up)[None, :] / fleet.up_bps[ids][:, None]
    )


def choose_configs(times: np.ndarray, mem_bytes: np.ndarray, cap_bytes: np.ndarray, utility: np.ndarray, target_s: float) -> np.ndarray:
    """Per client, the candidate index LEGEND assigns (see the module docstring).

    Args:
        times: ``(clients, candidates)`` round times.
        mem_bytes: ``(candidates,)`` peak memory.
        cap_bytes: ``(clients,)`` memory caps.
        utility: ``(candidates,)`` preference order (larger = better).
        target_s: Target round time.
    """
    fits = np.asarray(mem_bytes)[None, :] <= np.asarray(cap_bytes)[:, None]
    in_time = fits & (times <= target_s)
    best = np.argmax(np.where(in_time, utility[None, :], -np.inf), axis=1)
    fastest = np.argmin(np.where(fits, times, np.inf), axis=1)
    smallest = int(np.argmin(mem_bytes))
    return np.where(in_time.any(axis=1), best, np.where(fits.any(axis=1), fastest, smallest))


def _slot_axis(name: str) -> int | None:
    if ".lora_A." in name:
        return 0
    if ".lora_B." in name:
        return 1
    return None


def aggregate_rank_slots(
    global_state: dict[str, Any],
    results: Sequence[ClientResult],
    ranks_of: Mapping[int, Sequence[int]],
    layer_of: Callable[[str], int | None] | None = None,
) -> dict[str, Any]:
    """FedAvg per LoRA rank slot over the clients that trained the slot.

    For a LoRA parameter of layer ``l`` (``lora_A``: slots are rows; ``lora_B``: columns),
    slot ``j`` is ``global + sum_k n_k delta_k[j] / sum_k n_k`` over the clients ``k`` with
    ``ranks_of[k][l] > j`` whose delta holds the parameter and that ran layer ``l``. Other
    parameters (head, ...) are FedAvg over the clients that sent them. A client missing
    from ``ranks_of`` counts as full rank. Works on numpy arrays and torch tensors.
    """
    from fedsim.learning.real.aggregate import _default_layer_of, layer_weights

    layer_of = layer_of or _default_layer_of
    new_state: dict[str, Any] = {}
    for name, value in global_state.items():
        contributors = layer_weights(name, results, layer_of)
        if not contributors:
            new_state[name] = value
            continue
        axis = _slot_axis(name)
        layer = layer_of(name)
        if axis is None or layer is None:
            total = sum(w for _, w in contributors)
            acc = sum(r.delta[name] * (w / total) for r, w in contributors)  # type: ignore[index]
            new_state[name] = value + acc
            continue
        out = value * 1.0
        for j in range(value.shape[axis]):
            slot = [(r, w) for r, w in contributors if j < _rank(ranks_of, r.client_id, layer, value.shape[axis])]
            total = sum(w for _, w in slot)
            if total <= 0:
                continue
            if axis == 0:
                out[j] = value[j] + sum(r.delta[name][j] * (w / total) for r, w in slot)  # type: ignore[index]
            else:
                out[:, j] = value[:, j] + sum(r.delta[name][:, j] * (w / total) for r, w in slot)  # type: ignore[index]
        new_state[name] = out
    return new_state


def _rank(ranks_of: Mapping[int, Sequence[int]], client_id: int, layer: int, full: int) -> int:
    ranks = ranks_of.get(int(client_id))
    return full if ranks is None else int(ranks[layer])


class LegendParams(MethodParams):
    target_quantile: float = Field(0.5, gt=0.0, le=1.0, description="quantile of full-config round times used as target")
    rank_levels: list[float] = Field([1.0, 0.5, 0.25], min_length=1, description="top-layer ranks as fractions of the model's rank")
    rank_floor: float = Field(0.5, gt=0.0, le=1.0, description="lowest adapted layer's rank / top rank")
    min_depth: int = Field(1, ge=1, description="fewest layers carrying LoRA")
    deadline_fraction: float = Field(0.9, gt=0.0, le=1.0, description="target at most this share of the deadline")


@register
class Legend(Method):
    name = "legend"
    Params = LegendParams

    def __init__(self, params: LegendParams, shape, base_plan: ClientPlan) -> None:
        super().__init__(params, shape, base_plan)
        if any(not 0.0 < f <= 1.0 for f in params.rank_levels):
            raise ValueError(f"rank_levels must be in (0, 1], got {params.rank_levels}")
        if params.min_depth > shape.num_layers:
            raise ValueError(f"min_depth {params.min_depth} exceeds the model's {shape.num_layers} layers")
        max_rank = max(base_plan.lora_rank)
        self.candidates = [
            base_plan.with_(lora_rank=r, name=f"d{sum(x > 0 for x in r)}r{max(r)}")
            for r in legend_candidates(shape.num_layers, max_rank, params.rank_levels, params.rank_floor, params.min_depth)
        ]
        self._ranks_of: dict[int, tuple[int, ...]] = {}

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        p: LegendParams = self.params  # type: ignore[assignment]
        costs = [plan_cost(self.shape, c, ctx.coefficients) for c in self.candidates]
        flops = np.array([c.flops for c in costs])
        mem = np.array([c.peak_mem_bytes for c in costs])
        down = np.array([c.bytes_down for c in costs])
        up = np.array([c.bytes_up for c in costs])
        times = candidate_times(ctx.fleet, ctx.device_ids, flops, down, up)
        utility = np.arange(len(self.candidates), dtype=float)  # candidates are sorted smallest first
        target = float(np.quantile(times[:, -1], p.target_quantile))
        if ctx.deadline_s is not None:
            target = min(target, p.deadline_fraction * ctx.deadline_s)
        choice = choose_configs(times, mem, ctx.fleet.mem_cap_bytes[ctx.device_ids], utility, target)
        used, index = np.unique(choice, return_inverse=True)
        plans = RoundPlans([self.candidates[k] for k in used], index)
        self._ranks_of = {int(cid): plans[i].lora_rank for i, cid in enumerate(ctx.device_ids)}
        return plans

    def aggregate_fn(self) -> AggregateFn | None:
        ranks_of = self._ranks_of
        return lambda state, results: aggregate_rank_slots(state, results, ranks_of)

    def round_finished(self, report: RoundReport) -> None:
        self._ranks_of = {}
