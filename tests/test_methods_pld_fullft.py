"""PLD's schedule and depth profile; fedavg-full's plan and its cost."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.core.costmodel import ModelShape, plan_cost
from fedsim.methods.fedavg_full import FedAvgFull, FedAvgFullParams, full_finetune_plan
from fedsim.methods.pld import PLD, PLDParams, keep_schedule, pld_drop_prob
from fedsim.core.plan import ClientPlan

MINILM = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)


def test_keep_schedule_starts_at_one_and_decays_to_theta_bar():
    t = np.array([0, 1, 10, 1000])
    theta = keep_schedule(t, theta_bar=0.5, gamma=0.1)
    np.testing.assert_allclose(theta[:3], [1.0, 0.5 + 0.5 * np.exp(-0.1), 0.5 + 0.5 * np.exp(-1.0)])
    assert theta[3] == pytest.approx(0.5)
    assert np.all(np.diff(theta) < 0)


def test_drop_rises_linearly_with_depth_to_one_minus_theta():
    d = pld_drop_prob(4, theta=0.6)
    np.testing.assert_allclose(d, [0.1, 0.2, 0.3, 0.4])
    assert pld_drop_prob(3, theta=1.0).tolist() == [0.0, 0.0, 0.0]


def test_pld_plans_follow_the_schedule_over_rounds(tiny_ctx):
    base = ClientPlan.uniform(6, lora_rank=8)
    m = PLD(PLDParams(theta_bar=0.5, gamma=1.0), MINILM, base)
    first = m.configure_round(tiny_ctx(0)).plans[0]
    later = m.configure_round(tiny_ctx(5)).plans[0]
    assert first.mean_drop == 0.0
    assert later.mean_drop > 0.2 and later.drop_prob[-1] == pytest.approx(0.5 * (1 - np.exp(-5)), abs=1e-4)


def test_full_finetune_costs_far_more_memory_and_traffic_than_lora():
    base = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=128)
    full = full_finetune_plan(base)
    assert full.full_finetune and set(full.lora_rank) == {0}
    lora_c, full_c = plan_cost(MINILM, base), plan_cost(MINILM, full)
    assert full_c.trainable_params == MINILM.total_params
    assert full_c.bytes_up == pytest.approx(4 * MINILM.total_params)
    assert full_c.peak_mem_bytes > lora_c.peak_mem_bytes + 3 * 4 * MINILM.total_params * 0.9
    assert full_c.bytes_down > 50 * lora_c.bytes_down
    m = FedAvgFull(FedAvgFullParams(), MINILM, base)
    assert m.plan == full.with_(lr=5e-5)  # its own learning rate, not the LoRA one
    assert FedAvgFull(FedAvgFullParams(lr=None), MINILM, base).plan == full
