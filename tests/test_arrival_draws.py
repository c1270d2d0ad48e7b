"""DropPEFT's planner pricing a round at when its updates really arrive.

Without draws the planner reads the cost model's times: a round closed at its ``k``-th
update lasts until the ``k``-th predicted arrival. The engine stretches a straggler's
compute and loses a drop-out's update, so the later updates of a round come later than
predicted, and the more so the more updates it waits for. ``ArrivalDraws`` gives the
planner joint draws of that fate (from the fleet's profiles, as the engine draws it).
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.core.costmodel import CostCoefficients, ModelShape
from fedsim.core.plan import ClientPlan
from fedsim.fleet.distributions import Constant
from fedsim.fleet.fleet import Fleet
from fedsim.methods.base import RoundContext
from fedsim.methods.configurator import ArrivalDraws, kg_assignment, paced_assignment, plan_value, ProgressModel
from fedsim.methods.droppeft import DropPEFT, DropPEFTParams, arrival_draws, feasible_arms

SHAPE = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
BASE = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64, local_steps=5)


def _plain(n: int, arms: int, draws: int = 4, deadline_s: float | None = None) -> ArrivalDraws:
    """Draws in which nobody straggles or drops out."""
    return ArrivalDraws(np.ones((draws, n)), np.full((draws, n), np.inf), np.ones((n, arms)),
                        np.ones((n, arms), dtype=bool), deadline_s)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(2, 14), quota=st.integers(1, 14),
       returns=st.sampled_from([None, 0.0, 0.5, 1.0]))
def test_without_stragglers_the_draws_plan_as_the_cost_model(seed, n, quota, returns):
    """Draws with no straggler and no drop-out are the cost model's times: the same arms,
    length and closing count as the planner without draws."""
    rng = np.random.default_rng(seed)
    A = 4
    times = rng.uniform(1.0, 20.0, (n, A))
    feasible = rng.random((n, A)) < 0.8
    utility = rng.uniform(0.05, 1.0, A)
    fallback = np.zeros(n, dtype=np.int64)
    min_quota = max(quota // 2, 1)
    how = dict(returns=returns, min_quota=min_quota) if returns is not None else {}
    plain = paced_assignment(utility, times, feasible, quota, fallback, **how)
    drawn = paced_assignment(utility, times, feasible, quota, fallback, draws=_plain(n, A), **how)
    np.testing.assert_array_equal(drawn[0], plain[0])
    if np.isfinite(plain[1]):
        assert drawn[1] == pytest.approx(plain[1])
        assert plan_value(utility, times, drawn[0], quota, draws=_plain(n, A), **how) == pytest.approx(
            plan_value(utility, times, plain[0], quota, **how))


def _stragglers(n: int, p: float, factor: float, compute_s: float, draws: int = 256, seed: int = 0) -> ArrivalDraws:
    rng = np.random.default_rng(seed)
    stretch = np.where(rng.random((draws, n)) < p, factor, 1.0)
    return ArrivalDraws(stretch, np.full((draws, n), np.inf), np.full((n, 1), compute_s), np.ones((n, 1), dtype=bool))


def test_stragglers_make_a_round_close_sooner():
    """Ten devices predicted to arrive together, each update adding as much as the
    others (returns 1): by the cost model the round waits for all ten. When a device
    straggles (compute x5) three times in ten, the tenth update comes late in most
    rounds, and the planner closes at fewer."""
    n = 10
    times = np.full((n, 1), 10.0)  # all compute
    feasible = np.ones((n, 1), dtype=bool)
    fallback = np.zeros(n, dtype=np.int64)
    plain = paced_assignment(np.ones(1), times, feasible, n, fallback, returns=1.0, min_quota=5)
    assert plain.closes_at is None and plain[1] == pytest.approx(10.0)
    drawn = paced_assignment(np.ones(1), times, feasible, n, fallback, returns=1.0, min_quota=5,
                             draws=_stragglers(n, 0.3, 5.0, 10.0))
    assert 5 <= drawn.closes_at < n
    # Its expected length is the expected k-th arrival: above the cost model's 10 s.
    assert drawn[1] > 10.0
    # Without stragglers the same call waits for all ten.
    calm = paced_assignment(np.ones(1), times, feasible, n, fallback, returns=1.0, min_quota=5,
                            draws=_stragglers(n, 0.0, 5.0, 10.0))
    assert calm.closes_at == n and calm[1] == pytest.approx(10.0)


def test_a_round_never_counts_on_drop_outs_or_late_arrivals():
    """Devices that drop out in every draw, or whose arm does not fit their memory, or
    that arrive after the deadline, add nothing: a round waiting for more updates than
    the others can give closes when the last of them is done or at the deadline."""
    n, draws = 6, 8
    times = np.array([[1.0], [2.0], [3.0], [4.0], [5.0], [30.0]])
    drop_at = np.full((draws, n), np.inf)
    drop_at[:, 3] = 0.5  # device 3 drops out half-way, at 2 s
    fits = np.ones((n, 1), dtype=bool)
    fits[4] = False  # device 4 runs out of memory
    d = ArrivalDraws(np.ones((draws, n)), drop_at, times.copy(), fits, deadline_s=20.0)
    progress, length = d.closing(times, np.zeros((1, n), dtype=np.int64), np.ones((1, n)), quota=6, returns=1.0,
                                 min_quota=1)
    # k = 1..3 arrive at 1, 2, 3 s; device 5 arrives after the deadline; beyond 3 updates
    # the round holds 3 and ends at the deadline (the last device still working).
    np.testing.assert_allclose(length[0], [1.0, 2.0, 3.0, 20.0, 20.0, 20.0])
    np.testing.assert_allclose(progress[0], [1 / 6, 2 / 6, 3 / 6, 3 / 6, 3 / 6, 3 / 6])
    # Without a deadline the round ends when device 5 is done.
    d = ArrivalDraws(np.ones((draws, n)), drop_at, times.copy(), fits, deadline_s=None)
    progress, length = d.closing(times, np.zeros((1, n), dtype=np.int64), np.ones((1, n)), quota=6, returns=1.0,
                                 min_quota=1)
    np.testing.assert_allclose(length[0], [1.0, 2.0, 3.0, 30.0, 30.0, 30.0])
    np.testing.assert_allclose(progress[0], [1 / 6, 2 / 6, 3 / 6, 4 / 6, 4 / 6, 4 / 6])


def test_a_left_out_client_never_arrives():
    n = 4
    times = np.array([[1.0], [2.0], [3.0], [4.0]])
    d = _plain(n, 1, draws=2)
    value = plan_value(np.ones(1), times, np.array([0, -1, 0, 0]), quota=3, returns=0.0, min_quota=3, draws=d)
    assert value == pytest.approx(1.0 / 4.0)  # three updates, the third at 4 s
    assert plan_value(np.ones(1), times, np.full(n, -1), quota=3, draws=d) == 0.0


def _fleet(n: int, straggle: float, dropout: float) -> Fleet:
    f32 = lambda v: np.full(n, v, dtype=np.float32)  # noqa: E731
    return Fleet(["d"], ["n"], np.zeros(n, np.int16), np.zeros(n, np.int16), np.full(n, 5e9), np.full(n, 4e9),
                 np.full(n, 40e6), np.full(n, 10e6), f32(0.02), f32(straggle), f32(dropout), f32(1e-9), f32(1e-7),
                 f32(1e-7), f32(0), f32(24), f32(0), f32(0))


def test_arrival_draws_follow_the_fleet_profiles():
    """The draws straggle and drop out at the fleet's rates, stretch compute by the
    class's slowdown distribution, and price every arm's compute as the cost model does."""
    n, draws = 20, 2000
    fleet = _fleet(n, straggle=0.2, dropout=0.1)
    method = DropPEFT(DropPEFTParams(), SHAPE, BASE)
    ids = np.arange(n)
    slow = [Constant(value=3.0)]
    d = arrival_draws(fleet, ids, SHAPE, method.arms, CostCoefficients(), slow, 30.0,
                      np.random.default_rng(0), draws)
    assert d.stretch.shape == d.drop_at.shape == (draws, n)
    assert set(np.unique(d.stretch)) == {1.0, 3.0}
    assert np.mean(d.stretch > 1) == pytest.approx(0.2, abs=0.02)
    assert np.mean(np.isfinite(d.drop_at)) == pytest.approx(0.1, abs=0.02)
    _, _, total = feasible_arms(fleet, ids, SHAPE, method.arms, CostCoefficients(), None)
    assert np.all(d.compute > 0) and np.all(d.compute < total)
    assert d.deadline_s == 30.0


def _ctx(fleet: Fleet, slow, seed: int = 0) -> RoundContext:
    return RoundContext(round_idx=0, now_s=0.0, device_ids=np.arange(fleet.size), fleet=fleet, shape=SHAPE,
                        base_plan=BASE, coefficients=CostCoefficients(), deadline_s=None,
                        rng=np.random.default_rng(seed), quota=10, may_leave_out=True, slowdown_dists=slow)


@pytest.mark.parametrize("policy", ["kg", "ids", "thompson"])
def test_droppeft_closes_sooner_where_devices_straggle(policy):
    """The method, every policy: on 13 equal devices, each update worth as much as the
    others (returns 1), it waits for its quota where nobody straggles, and closes sooner
    where devices straggle often and long; ``arrival_draws: 0`` plans at the cost
    model's times and waits for the quota there too."""
    slow = [Constant(value=6.0)]
    params = dict(policy=policy, mean_levels=[0.0], returns_prior=1.0)
    calm = DropPEFT(DropPEFTParams(**params), SHAPE, BASE).configure_round(_ctx(_fleet(13, 0.0, 0.0), slow))
    assert calm.quota == 10
    stormy = _fleet(13, 0.4, 0.1)
    rough = DropPEFT(DropPEFTParams(**params), SHAPE, BASE).configure_round(_ctx(stormy, slow))
    assert 5 <= rough.quota < 10
    blind = DropPEFT(DropPEFTParams(arrival_draws=0, **params), SHAPE, BASE).configure_round(_ctx(stormy, slow))
    assert blind.quota == 10
    unknown = DropPEFT(DropPEFTParams(**params), SHAPE, BASE).configure_round(_ctx(stormy, None))
    assert unknown.quota == 10


def test_kg_weighs_its_worlds_over_the_draws():
    """The knowledge gradient's candidate plans carry the closing count they were chosen at."""
    n = 10
    model = ProgressModel([np.ones(6), np.full(6, 0.5)])
    times = np.column_stack([np.full(n, 10.0), np.full(n, 6.0)])
    feasible = np.ones((n, 2), dtype=bool)
    rng = np.random.default_rng(0)
    stretch = np.where(rng.random((64, n)) < 0.3, 5.0, 1.0)
    d = ArrivalDraws(stretch, np.full((64, n), np.inf), times * 0.8, feasible)
    plan = kg_assignment(model, np.random.default_rng(1), times, feasible, n, np.zeros(n, dtype=np.int64), 3,
                         returns=1.0, min_quota=5, draws=d)
    assert plan.closes_at is not None and 5 <= plan.closes_at <= n


# -- one planner a round: what does not depend on the worths is computed once ----------------

def _closing_reference(d: ArrivalDraws, times, arms, utility, quota, returns, min_quota):
    """ArrivalDraws.closing spelt out a plan, a draw and a client at a time."""
    C, n = arms.shape
    M = d.stretch.shape[0]
    q = min(max(quota, 1), max(int((arms >= 0).sum(axis=1).max()), 1))
    ks = range(min(max(min_quota, 1), q) if returns is not None else q, q + 1)
    progress, length = np.zeros((C, len(ks))), np.zeros((C, len(ks)))
    for c in range(C):
        for m in range(M):
            arrived, done = [], [0.0]
            for i in range(n):
                a = arms[c, i]
                if a < 0 or not d.fits[i, a]:
                    continue  # gone at once: done at 0
                t = times[i, a] + d.compute[i, a] * (d.stretch[m, i] - 1.0)
                if d.drop_at[m, i] < 1.0:
                    done.append(d.drop_at[m, i] * t)  # drops out on the way
                    continue
                done.append(t)
                if d.deadline_s is None or t <= d.deadline_s:
                    arrived.append((t, i))
            arrived.sort()
            last = max(done) if d.deadline_s is None else min(max(done), d.deadline_s)
            for j, k in enumerate(ks):
                got = min(k, len(arrived))
                if got:
                    scale = (got / q) ** returns if returns is not None else 1.0
                    progress[c, j] += np.mean([utility[c, i] for _, i in arrived[:got]]) * scale / M
                length[c, j] += (arrived[k - 1][0] if len(arrived) >= k else last) / M
    return progress, np.maximum(length, 1e-9)


def _random_draws(rng, n: int, A: int, M: int = 8) -> ArrivalDraws:
    stretch = np.where(rng.random((M, n)) < 0.3, rng.uniform(1.5, 6.0, (M, n)), 1.0)
    drop_at = np.where(rng.random((M, n)) < 0.15, rng.random((M, n)), np.inf)
    deadline = float(rng.uniform(8.0, 40.0)) if rng.random() < 0.5 else None
    return ArrivalDraws(stretch, drop_at, rng.uniform(0.5, 10.0, (n, A)), rng.random((n, A)) < 0.9, deadline)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), C=st.integers(1, 6), quota=st.integers(1, 12),
       returns=st.sampled_from([None, 0.0, 0.5, 1.0]))
def test_schedules_weigh_plans_as_the_batch_did(seed, n, C, quota, returns):
    """Progress and length from a round's schedule (computed once, kept per plan, stacked)
    are what a plan, a draw and a client at a time give: plans with clients left out,
    drop-outs, stragglers, arms that do not fit, a deadline or none. Stacked one-plan
    schedules give the batch's numbers to the bit."""
    rng = np.random.default_rng(seed)
    A = 4
    d = _random_draws(rng, n, A)
    times = rng.uniform(1.0, 20.0, (n, A))
    arms = rng.integers(-1, A, (C, n))
    utility = rng.uniform(-0.2, 1.0, (C, n))
    min_quota = int(rng.integers(1, quota + 1))
    want = _closing_reference(d, times, arms, utility, quota, returns, min_quota)
    got = d.closing(times, arms, utility, quota, returns, min_quota)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-12, atol=1e-12)
    # One plan at a time, stacked, as the planner keeps them.
    sched = d.schedule(times, arms, quota, returns, min_quota)
    rows = type(sched).stack([sched.row(i) for i in range(C)])
    np.testing.assert_array_equal(rows.progress(utility), got[0])
    np.testing.assert_array_equal(rows.length, got[1])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 12), quota=st.integers(1, 12),
       returns=st.sampled_from([None, 0.5, 1.0]), leave_out=st.sampled_from(["none", "infeasible", "harmful"]),
       drawn=st.booleans())
def test_a_planner_asked_many_times_answers_as_a_fresh_one(seed, n, quota, returns, leave_out, drawn):
    """One RoundPlanner asked for plans and values under many worths, in any order (what
    it keeps from earlier calls in play), gives what a new planner gives for each call:
    the same arms, length, closing count and value. Worths at or below zero make the
    harmful clients, and so the planned rows, change between calls."""
    from fedsim.methods.configurator import RoundPlanner

    rng = np.random.default_rng(seed)
    A = 5
    times = rng.uniform(1.0, 20.0, (n, A))
    feasible = rng.random((n, A)) < 0.8
    fallback = rng.integers(0, A, n)
    draws = _random_draws(rng, n, A) if drawn else None
    args = (times, feasible, quota, fallback)
    how = dict(leave_out=leave_out, returns=returns, min_quota=max(quota // 2, 1), draws=draws)
    kept = RoundPlanner(*args, **how)
    for _ in range(6):
        worth = rng.uniform(-0.3, 1.0, A) if rng.random() < 0.3 else rng.uniform(0.05, 1.0, A)
        got, want = kept.assign(worth), RoundPlanner(*args, **how).assign(worth)
        np.testing.assert_array_equal(got[0], want[0])
        assert (got[1], got.closes_at) == (want[1], want.closes_at) or (np.isnan(got[1]) and np.isnan(want[1]))
        other = rng.integers(-1, A, n)
        for plan in (got[0], other):
            assert kept.value(worth, plan) == RoundPlanner(*args, **how).value(worth, plan)


def test_a_planner_keeps_within_its_budget(monkeypatch):
    """What a planner keeps for later calls stays under KEEP_BYTES (past it, it lets go of
    what it kept), and letting go changes no answer."""
    from fedsim.methods import configurator
    from fedsim.methods.configurator import RoundPlanner

    monkeypatch.setattr(configurator, "KEEP_BYTES", 100_000)
    rng = np.random.default_rng(7)
    n, A = 12, 5
    times = rng.uniform(1.0, 20.0, (n, A))
    feasible = rng.random((n, A)) < 0.9
    args = (times, feasible, 10, np.zeros(n, np.int64))
    how = dict(returns=0.5, min_quota=5, draws=_random_draws(rng, n, A, M=32))
    kept = RoundPlanner(*args, **how)
    held = []
    for _ in range(30):
        worth = rng.uniform(0.05, 1.0, A)
        got, want = kept.assign(worth), RoundPlanner(*args, **how).assign(worth)
        held.append(kept._kept_bytes)
        np.testing.assert_array_equal(got[0], want[0])
        assert (got[1], got.closes_at) == (want[1], want.closes_at)
        assert kept.value(worth, got[0]) == RoundPlanner(*args, **how).value(worth, got[0])
        held.append(kept._kept_bytes)
    assert 0 < max(held) <= 100_000
    assert any(b < a for a, b in zip(held, held[1:]))  # it let go on the way, and answers stayed the same
