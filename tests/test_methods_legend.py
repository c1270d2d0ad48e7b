"""LEGEND: depth and rank choice per device, rank-slot aggregation."""

from __future__ import annotations

import numpy as np
import torch

from fedsim.core.costmodel import plan_cost
from fedsim.methods.legend import (
    Legend, LegendParams, aggregate_rank_slots, choose_configs, legend_candidates, legend_ranks,
)
from fedsim.learning.base import ClientResult

A = "bert.encoder.layer.1.attention.self.query.lora_A.default.weight"   # (R, d_in): slots are rows
B = "bert.encoder.layer.1.attention.self.query.lora_B.default.weight"   # (d_out, R): slots are columns
HEAD = "classifier.weight"


def _res(cid, n, delta, steps=(1, 1)):
    return ClientResult(client_id=cid, num_examples=n, layer_steps=np.array(steps), train_loss=0.0,
                        grad_norms=np.zeros(2), delta=delta)


def test_ranks_sit_on_the_top_layers_and_rise_towards_the_output():
    assert legend_ranks(6, 3, 8, rank_floor=0.5) == (0, 0, 0, 4, 6, 8)
    assert legend_ranks(4, 1, 8) == (0, 0, 0, 8)
    assert legend_ranks(4, 0, 8) == (0, 0, 0, 0)
    cands = legend_candidates(4, 8, [1.0, 0.5], 0.5)
    assert all(sum(a) <= sum(b) for a, b in zip(cands, cands[1:]))
    assert cands[-1] == (4, 5, 7, 8) and cands[0] == (0, 0, 0, 4)


def test_choose_configs_prefers_largest_in_time_then_fastest_then_smallest():
    times = np.array([[1.0, 2.0, 3.0],    # fast: everything in time -> largest (2)
                      [2.0, 4.0, 9.0],    # medium: 0 and 1 in time -> 1
                      [5.0, 6.0, 7.0],    # slow: nothing in time -> fastest that fits (0)
                      [1.0, 1.0, 1.0],    # memory fits only candidate 0 and 1 -> 1
                      [1.0, 1.0, 1.0]])   # fits nothing -> smallest memory (0)
    mem = np.array([1.0, 2.0, 3.0])
    cap = np.array([9.0, 9.0, 9.0, 2.5, 0.5])
    got = choose_configs(times, mem, cap, np.arange(3.0), target_s=4.0)
    assert got.tolist() == [2, 1, 0, 1, 0]


def test_legend_gives_slow_devices_shallower_lora_and_evens_out_round_times(tiny_ctx):
    ctx = tiny_ctx(0, n=8)
    m = Legend(LegendParams(target_quantile=0.5), ctx.shape, ctx.base_plan)
    plans = m.configure_round(ctx)
    depth = np.array([sum(r > 0 for r in plans[i].lora_rank) for i in range(8)])
    size = np.array([sum(plans[i].lora_rank) for i in range(8)])
    assert len(plans.plans) <= len(m.candidates)
    assert np.all(np.diff(size[2:]) >= 0)          # faster devices never get less
    assert size[-1] == max(sum(c.lora_rank) for c in m.candidates)
    assert depth[2] < depth[-1]
    # round times are closer together than with the full plan for everyone
    full = plan_cost(ctx.shape, m.candidates[-1])
    own = [plan_cost(ctx.shape, plans[i]) for i in range(8)]
    f = ctx.fleet
    t_full = full.flops / f.flops_per_s + 8 * full.bytes_up / f.up_bps + 8 * full.bytes_down / f.down_bps
    t_own = np.array([c.flops for c in own]) / f.flops_per_s + 8 * np.array([c.bytes_up for c in own]) / f.up_bps \
        + 8 * np.array([c.bytes_down for c in own]) / f.down_bps
    assert np.ptp(t_own[2:]) < 0.7 * np.ptp(t_full[2:])
    # the aggregate_fn knows each client's ranks
    assert set(m._ranks_of) == set(range(8))


def test_rank_slots_average_over_the_clients_that_trained_them():
    # Prepare: R = 4; client 0 has rank 2 on layer 1, client 1 rank 4; weights 1 and 3
    glob = {A: np.zeros((4, 2)), B: np.ones((2, 4)), HEAD: np.zeros(2)}
    d0 = {A: np.vstack([np.full((2, 2), 4.0), np.zeros((2, 2))]), B: np.hstack([np.full((2, 2), 8.0), np.zeros((2, 2))]),
          HEAD: np.array([4.0, 0.0])}
    d1 = {A: np.full((4, 2), 8.0), B: np.full((2, 4), 4.0), HEAD: np.array([0.0, 4.0])}
    ranks = {0: (0, 2), 1: (4, 4)}
    # Execute
    new = aggregate_rank_slots(glob, [_res(0, 1, d0), _res(1, 3, d1)], ranks)
    # Assert
    np.testing.assert_allclose(new[A][:2], 7.0)      # (1*4 + 3*8) / 4
    np.testing.assert_allclose(new[A][2:], 8.0)      # only client 1 trained slots 2, 3 (plain FedAvg: 6)
    np.testing.assert_allclose(new[B][:, :2], 1 + 5.0)  # (1*8 + 3*4) / 4
    np.testing.assert_allclose(new[B][:, 2:], 1 + 4.0)
    np.testing.assert_allclose(new[HEAD], [1.0, 3.0])
    np.testing.assert_allclose(glob[A], 0.0)


def test_rank_slots_work_on_torch_and_skip_layers_a_client_never_ran():
    glob = {A: torch.zeros(2, 3)}
    d0 = {A: torch.ones(2, 3)}
    d1 = {A: torch.full((2, 3), 5.0)}
    new = aggregate_rank_slots(glob, [_res(0, 1, d0), _res(1, 1, d1, steps=(1, 0))], {0: (2, 2), 1: (2, 2)})
    assert isinstance(new[A], torch.Tensor)
    torch.testing.assert_close(new[A], torch.ones(2, 3))
