"""DropPEFT closing a round before its quota: the returns to more updates, learnt.

Synthetic rounds: seven fast devices and six slower ones, one arm (every layer), so the
only choice is how many updates a round waits for. Each arrived update's gain is
log-normal noise around a phase that decays; the round's whole gain is set so that the
updates' gains over it are the true elasticity ``eps`` (module
:class:`fedsim.methods.configurator.RoundReturns`). Where more updates add little (small
``eps``) the round should close with the fast devices; where each update adds as much
as the others (``eps = 1``), it should wait for the slow ones. The prior (0.5) says
neither in these fleets, so the method must learn it; with learning off it keeps the
prior's choice.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.core.costmodel import CostCoefficients, ModelShape
from fedsim.core.plan import ClientPlan
from fedsim.fleet.fleet import Fleet
from fedsim.learning.base import ClientResult, EvalResult
from fedsim.methods.base import RoundContext, RoundReport
from fedsim.methods.configurator import RoundReturns, paced_assignment, plan_value, planned_quota
from fedsim.methods.droppeft import DropPEFT, DropPEFTParams, feasible_arms

SHAPE = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
BASE = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64, local_steps=5)
QUOTA, FAST = 10, 7
POLICIES = ["kg", "ids", "thompson"]


def _fleet(slow_factor: float, n: int = 13) -> Fleet:
    """``n`` devices; the last ``n - FAST`` compute ``slow_factor`` times slower."""
    f32 = lambda v: np.full(n, v, dtype=np.float32)  # noqa: E731
    fleet = Fleet(["d"], ["n"], np.zeros(n, np.int16), np.zeros(n, np.int16), np.full(n, 5e9), np.full(n, 4e9),
                  np.full(n, 40e6), np.full(n, 10e6), f32(0.02), f32(0), f32(0), f32(1e-9), f32(1e-7), f32(1e-7),
                  f32(0), f32(24), f32(0), f32(0))
    fleet.flops_per_s[FAST:] /= slow_factor
    return fleet


def _run(eps: float, slow_factor: float, rounds: int, seed: int, **params) -> DropPEFT:
    """The method after ``rounds`` synthetic rounds (module docstring); its history holds
    each round's quota."""
    fleet = _fleet(slow_factor)
    ids = np.arange(fleet.size)
    method = DropPEFT(DropPEFTParams(mean_levels=[0.0], **params), SHAPE, BASE)
    times = feasible_arms(fleet, ids, SHAPE, method.arms, CostCoefficients(), None)[2]
    rng = np.random.default_rng([seed, 7])
    for r in range(rounds):
        ctx = RoundContext(round_idx=r, now_s=0.0, device_ids=ids, fleet=fleet, shape=SHAPE, base_plan=BASE,
                           coefficients=CostCoefficients(), deadline_s=None, rng=np.random.default_rng([seed, r]),
                           quota=QUOTA, may_leave_out=True)
        plans = method.configure_round(ctx)
        quota = QUOTA if plans.quota is None else min(plans.quota, QUOTA)  # the engine's rule
        arrived = np.sort(np.argsort(times[ids, 0], kind="stable")[:quota])
        outcome = np.full(ids.size, "surplus", dtype=object)
        outcome[arrived] = "ok"
        results = [ClientResult(int(i), 10, np.full(6, 5), 0.0, np.zeros(6)) for i in arrived]
        gains = 0.93**r * np.exp(0.3 * rng.standard_normal(arrived.size))
        round_gain = gains.sum() / eps * float(np.exp(0.2 * rng.standard_normal()))
        method.round_finished(RoundReport(round_idx=r, start_s=0.0, end_s=1.0, device_ids=ids, plans=plans,
                                          outcome=outcome, duration_s=np.ones(ids.size), results=results,
                                          evaluation=EvalResult(accuracy=0.5, loss=1.0), update_gains=gains,
                                          round_gain=round_gain))
    return method


def _quotas(method: DropPEFT, last: int) -> list[int]:
    return [h["quota"] for h in method.history[-last:]]


# -- the estimate ---------------------------------------------------------------------------

def test_returns_start_at_the_prior_and_follow_the_rounds():
    r = RoundReturns(prior=0.5, discount=0.9)
    assert r.elasticity == 0.5
    for _ in range(30):
        r.observe(np.array([0.02, 0.01, 0.03]), 0.3)  # sum 0.06 over 0.3: 0.2
    n = (1 - 0.9**30) / (1 - 0.9)  # the rounds' discounted count; the prior weighs one round
    assert r.elasticity == pytest.approx((0.5 + 0.2 * n) / (1 + n))
    for _ in range(200):
        r.observe(np.array([0.2, 0.3]), 0.5)
    assert r.elasticity == pytest.approx((0.5 + 1.0 * 10) / 11, rel=1e-6)  # 1.0: more than 1 is clipped


def test_returns_ignore_rounds_that_say_nothing():
    r = RoundReturns(prior=0.5)
    r.observe(np.array([0.1, 0.2]), -0.05)  # the aggregate did not help: no elasticity to read
    r.observe(np.array([0.1, 0.2]), 0.0)
    r.observe(np.array([0.1]), 0.5)  # one update: its leave-one-out is the whole round
    r.observe(np.array([np.nan, 0.1]), 0.5)  # one finite gain
    r.observe(np.array([0.1, 0.2]), float("nan"))
    assert r.elasticity == 0.5


def test_returns_without_learning_stay_at_the_prior():
    r = RoundReturns(prior=0.3, learning=False)
    r.observe(np.array([1.0, 1.0]), 2.0)
    assert r.elasticity == 0.3


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.lists(st.floats(-1e3, 1e3), min_size=2, max_size=12), st.floats(-1e3, 1e3)),
                max_size=20),
       st.floats(0.0, 1.0))
def test_returns_stay_in_the_unit_interval(rounds, prior):
    r = RoundReturns(prior=prior)
    for loo, gain in rounds:
        r.observe(np.array(loo), gain)
        assert 0.0 <= r.elasticity <= 1.0


@pytest.mark.parametrize("prior", [-0.1, 1.5, float("nan")])
def test_returns_refuse_an_impossible_prior(prior):
    with pytest.raises(ValueError, match="prior elasticity"):
        RoundReturns(prior=prior)


# -- the planner ----------------------------------------------------------------------------

def test_planner_closes_early_only_where_more_updates_add_little():
    # Ten arrive at 1 s, three more at 1.3 s; a quota of 12 needs two of the slow ones
    times = np.array([1.0] * 10 + [1.3] * 3)[:, None]
    feasible = np.ones((13, 1), dtype=bool)
    fallback = np.zeros(13, dtype=np.int64)

    def length(returns):
        return paced_assignment(np.ones(1), times, feasible, 12, fallback, returns=returns, min_quota=6)[1]

    # Closing at 10 is worth (10/12) ** eps per second, waiting for 12 is 1 / 1.3: closing
    # early wins for every eps below log(1.3) / log(1.2) = 1.44, so for every eps here
    assert length(None) == 1.3 and length(0.1) == 1.0 and length(1.0) == 1.0
    times2 = np.array([1.0] * 10 + [1.1] * 3)[:, None]
    ln = lambda eps: paced_assignment(np.ones(1), times2, feasible, 12, fallback, returns=eps, min_quota=6)[1]  # noqa: E731
    # (10/12) ** eps vs 1/1.1: waits for eps above log(1.1)/log(1.2) = 0.52
    assert ln(0.1) == 1.0 and ln(0.3) == 1.0 and ln(0.8) == 1.1 and ln(1.0) == 1.1
    arms, t = paced_assignment(np.ones(1), times2, feasible, 12, fallback, returns=0.1, min_quota=6)
    assert planned_quota(times2, arms, t, 12) == 10
    assert planned_quota(times2, arms, 1.1, 12) == 12


def test_planner_never_closes_below_its_floor():
    times = np.array([1.0] * 2 + [5.0] * 11)[:, None]  # two fast devices, the rest five times slower
    feasible = np.ones((13, 1), dtype=bool)
    arms, t = paced_assignment(np.ones(1), times, feasible, 10, np.zeros(13, dtype=np.int64), returns=0.0, min_quota=5)
    assert t == 5.0 and planned_quota(times, arms, t, 10) == 10  # ties: every device at 5 s arrives with the fifth
    assert plan_value(np.ones(1), times, arms, 10, returns=0.0, min_quota=5) == pytest.approx(1 / 5.0)
    assert plan_value(np.ones(1), times, arms, 10, returns=0.0, min_quota=1) == pytest.approx(1 / 1.0)


# -- the method learns it ---------------------------------------------------------------------

# Slow devices 1.1x slower, truth 0.05: the prior (0.5) waits for them ((7/10) ** 0.5 =
# 0.84 < 1/1.1 = 0.91), the truth does not ((7/10) ** 0.05 = 0.98). Slow devices 1.3x
# slower, truth 1.0: the prior closes early (0.84 > 1/1.3 = 0.77), the truth waits (0.7).
@pytest.mark.parametrize("eps, slow, prior_quota, true_quota", [(0.05, 1.1, QUOTA, FAST), (1.0, 1.3, FAST, QUOTA)],
                         ids=["closes-early-where-more-updates-add-little", "waits-where-every-update-adds"])
@pytest.mark.parametrize("policy", POLICIES)
def test_learns_how_many_updates_a_round_should_wait_for(policy, eps, slow, prior_quota, true_quota):
    prior = _quotas(_run(eps, slow, 12, 0, policy=policy, learning=False), 5)
    learnt = [_quotas(_run(eps, slow, 12, seed, policy=policy), 5) for seed in range(3)]
    assert prior == [prior_quota] * 5
    assert all(q == [true_quota] * 5 for q in learnt), learnt


def test_ablation_waits_for_the_quota():
    method = _run(0.05, 1.1, 6, 0, choose_quota=False)
    assert all("quota" not in h for h in method.history)


def test_an_async_round_never_chooses_its_quota():
    fleet = _fleet(1.1)
    ids = np.arange(1)
    method = DropPEFT(DropPEFTParams(mean_levels=[0.0]), SHAPE, BASE)
    ctx = RoundContext(round_idx=0, now_s=0.0, device_ids=ids, fleet=fleet, shape=SHAPE, base_plan=BASE,
                       coefficients=CostCoefficients(), deadline_s=None, rng=np.random.default_rng(0), quota=1)
    assert method.configure_round(ctx).quota is None
    assert not DropPEFT(DropPEFTParams(learning=False), SHAPE, BASE).round_gain_wanted()
    assert DropPEFT(DropPEFTParams(), SHAPE, BASE).round_gain_wanted()
