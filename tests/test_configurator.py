"""DropPEFT's configurator: the progress model, Thompson planning, and that it learns.

The learning tests feed the method synthetic rounds (a fleet of identical devices, an
update's gain = its arm's true worth x a decaying phase x log-normal noise) in which a
given arm is best per second whatever the prior says, and check the method converges on
it, with learning switched off as the control.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.core.costmodel import CostCoefficients, ModelShape
from fedsim.fleet.fleet import Fleet
from fedsim.methods.base import RoundContext, RoundReport
from fedsim.methods.configurator import (ARM_SD, NOISY_VAR, ProgressModel, ids_assignment, information_gain, kg_assignment, lindy_horizon,
                                          paced_assignment, plan_value, round_pace, utility_scores)
from fedsim.methods.droppeft import DropPEFT, DropPEFTParams, feasible_arms
from fedsim.core.plan import ClientPlan, depth_weighted_keep
from fedsim.learning.base import ClientResult, EvalResult

SHAPE = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
BASE = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64, local_steps=5)
QUOTA = 10


def _identical_fleet(n: int = 13) -> Fleet:
    f32 = lambda v: np.full(n, v, dtype=np.float32)  # noqa: E731
    return Fleet(["d"], ["n"], np.zeros(n, np.int16), np.zeros(n, np.int16), np.full(n, 5e9), np.full(n, 4e9),
                 np.full(n, 40e6), np.full(n, 10e6), f32(0.02), f32(0), f32(0), f32(1e-9), f32(1e-7), f32(1e-7),
                 f32(0), f32(24), f32(0), f32(0))


def _two_speed_fleet(n: int = 13, slow: int = 6) -> Fleet:
    """``_identical_fleet`` whose last ``slow`` devices compute 4x slower."""
    fleet = _identical_fleet(n)
    fleet.flops_per_s[n - slow:] /= 4.0
    return fleet


def _run(worth_fn, rounds: int, seed: int, noise: float = 0.3, decay: float = 0.93, fleet: Fleet | None = None,
         may_leave_out: bool = False, **params):
    """Clients per arm in each round; ``worth_fn(round, arm_times) -> (A,)`` true worth, or
    with ``worth_fn.in_round`` set, ``worth_fn(round, arm_times, arms) -> (n,)`` the true
    worth of each arriving update given the arms of the round's others. ``may_leave_out``:
    the rounds are a synchronous engine's (the method may leave clients out; they neither
    run nor arrive)."""
    fleet = _identical_fleet() if fleet is None else fleet
    ids = np.arange(fleet.size)
    method = DropPEFT(DropPEFTParams(**params), SHAPE, BASE)
    device_times = feasible_arms(fleet, ids, SHAPE, method.arms, CostCoefficients(), None)[2]
    times = device_times[0]
    rng = np.random.default_rng([seed, 99])
    counts = []
    for r in range(rounds):
        ctx = RoundContext(round_idx=r, now_s=0.0, device_ids=ids, fleet=fleet, shape=SHAPE, base_plan=BASE,
                           coefficients=CostCoefficients(), deadline_s=None, rng=np.random.default_rng([seed, r]),
                           quota=QUOTA, may_leave_out=may_leave_out)
        plans = method.configure_round(ctx)
        arms = method._round_arms
        run = np.flatnonzero(arms >= 0)
        if run.size < arms.size:
            ids_r, arms = ids[run], arms[run]
            plans = plans.dispatched()
        else:
            ids_r = ids
        quota = QUOTA if plans.quota is None else min(plans.quota, QUOTA)  # the engine's rule
        arrived = np.sort(np.argsort(device_times[ids_r, arms], kind="stable")[:quota])
        outcome = np.full(len(arms), "surplus", dtype=object)
        outcome[arrived] = "ok"
        results = [ClientResult(int(i), 10, np.zeros(6), 0.0, np.zeros(6)) for i in arrived]
        if getattr(worth_fn, "in_round", False):
            true = worth_fn(r, times, arms[arrived])
        else:
            true = worth_fn(r, times)[arms[arrived]]
        gains = true * decay**r * np.exp(noise * rng.standard_normal(arrived.size))
        method.round_finished(RoundReport(round_idx=r, start_s=0.0, end_s=1.0, device_ids=ids_r, plans=plans,
                                          outcome=outcome, duration_s=np.ones(len(arms)), results=results,
                                          evaluation=EvalResult(accuracy=0.5, loss=1.0), update_gains=gains))
        counts.append(np.bincount(arms, minlength=len(method.arms)))
    return np.array(counts), method


def _curve(gamma: float, beta: float):
    arms = DropPEFT(DropPEFTParams(), SHAPE, BASE).arms
    worth = np.array([depth_weighted_keep(a.keep_prob, gamma) ** beta for a in arms])
    return lambda r, times: worth


def _one_best(k: int, others: float = 0.7):
    """Arm k is worth 1 per second, every other arm ``others`` per second: no curve fits."""
    def worth(r, times):
        per_s = np.full(times.size, others)
        per_s[k] = 1.0
        return per_s * times
    return worth


def _good_share(counts: np.ndarray, worth_fn, rounds_at: int, last: int = 10, tol: float = 0.05) -> float:
    """Share of the clients of the last ``last`` rounds on arms within ``tol`` of the best per second."""
    fleet = _identical_fleet()
    times = feasible_arms(fleet, np.arange(fleet.size), SHAPE, DropPEFT(DropPEFTParams(), SHAPE, BASE).arms,
                          CostCoefficients(), None)[2][0]
    per_s = worth_fn(rounds_at, times) / times
    good = per_s >= (1.0 - tol) * per_s.max()
    window = counts[-last:]
    return float(window[:, good].sum() / window.sum())


# Truths in which different arms are best per second: dropout nearly free (a heavy arm),
# steep and deep-weighted (no dropout), shallow layers matter (rising drops the deep
# ones), and two arms no curve describes.
TRUTHS = {
    "free-dropout": _curve(0.0, 0.3),
    "steep-deep": _curve(2.0, 3.0),
    "shallow-matters": _curve(-2.0, 1.5),
    "one-best-uniform-0.5": _one_best(4),
    "one-best-falling-0.5": _one_best(6),
}


def _mixing_harm(harm: float = 3.0):
    """An update is worth its share of layers run, less ``harm`` times how many fewer it
    runs than the round's fullest update (at least -1): dropped updates averaged with full
    ones harm the round, as real training showed; a round of like arms is unharmed."""
    arms = DropPEFT(DropPEFTParams(), SHAPE, BASE).arms
    keep = np.array([depth_weighted_keep(a.keep_prob, 0.0) for a in arms])

    def worth(r, times, run):
        return np.maximum(keep[run] - harm * (keep[run].max() - keep[run]), -1.0)

    worth.in_round = True
    return worth


POLICIES = ["kg", "ids", "thompson"]  # every exploration policy DropPEFTParams.policy offers


def _harmed_share(counts: np.ndarray) -> float:
    """Share of the last 10 rounds' clients on an arm that runs fewer layers than the round's fullest."""
    keep = np.array([depth_weighted_keep(a.keep_prob, 0.0) for a in DropPEFT(DropPEFTParams(), SHAPE, BASE).arms])
    last = counts[-10:]
    return float(sum(c[keep < keep[c > 0].max() - 1e-9].sum() for c in last) / last.sum())


@pytest.mark.parametrize("policy", POLICIES)
def test_learns_to_stop_mixing_arms_that_harm_the_round(policy):
    # Prepare: fast and slow devices; the prior gives the slow ones dropped arms, and
    # dropped updates mixed in with full ones harm the round (negative gains). In truth a
    # round of like arms is about 25% more progress per second than the prior's mix.
    worth = _mixing_harm()
    # Execute: learning off; learning with signed worths
    off = _harmed_share(_run(worth, 30, 0, learning=False, fleet=_two_speed_fleet())[0])
    on = [_harmed_share(_run(worth, 30, seed, fleet=_two_speed_fleet(), policy=policy, signed_worth=True)[0])
          for seed in range(3)]
    # Assert: the signed model mixes in harmful arms for at least 15 points fewer clients
    # (what is left is exploration: an arm seen harmful a few times may still help)
    assert off >= 0.3 and np.mean(on) <= off - 0.15, (off, on)


@pytest.mark.parametrize("leave_out", ["harmful", "infeasible"])
def test_floored_sizes_stop_mixing_by_the_harm_sign_alone(leave_out):
    # The default sizes: harmful gains floored at a tenth of the round's median. With
    # leave_out: harmful an arm whose updates harm the round more often than not is
    # signed negative, and the slow devices run the full arm instead; without it (the
    # default) a harmful arm is never worth less than nothing, and the mix stays as
    # learning off has it
    worth = _mixing_harm()
    off = _harmed_share(_run(worth, 30, 0, learning=False, fleet=_two_speed_fleet())[0])
    floored = [_harmed_share(_run(worth, 30, seed, fleet=_two_speed_fleet(), leave_out=leave_out)[0])
               for seed in range(2)]
    if leave_out == "harmful":
        assert off >= 0.3 and np.mean(floored) <= off - 0.15, (off, floored)
    else:
        assert np.mean(floored) >= off - 0.05, (off, floored)


def _starved_fleet(n: int = 13, low: int = 6) -> Fleet:
    """``_two_speed_fleet`` whose ``low`` slow devices fit only the arms that drop half the layers or more."""
    fleet = _two_speed_fleet(n, low)
    fleet.mem_cap_bytes[n - low:] = 500e6
    return fleet


def _low_left_out(method: DropPEFT, last: int = 10, low: int = 6) -> float:
    """Share of the low devices left out over the last ``last`` rounds."""
    return float(np.mean([h["left_out"] for h in method.history[-last:]]) / low)


@pytest.mark.parametrize("policy", POLICIES)
def test_leaves_out_devices_whose_only_arms_harm_the_round(policy):
    # Prepare: the memory-starved fleet's shape: six slow devices fit only heavily dropped
    # arms, and such updates averaged in with full ones harm the round (negative gains),
    # so the round is better without them; the prior cannot know it
    worth = _mixing_harm()
    # Execute: learning (leave_out: harmful), learning off, and the default (infeasible),
    # each waiting for the whole quota (a round closed early would cut the slow devices
    # as surplus instead: test_round_returns.py)
    fixed = dict(fleet=_starved_fleet(), may_leave_out=True, choose_quota=False)
    on = [_low_left_out(_run(worth, 30, seed, policy=policy, leave_out="harmful", **fixed)[1]) for seed in range(3)]
    off = _low_left_out(_run(worth, 30, 0, learning=False, leave_out="harmful", **fixed)[1])
    kept = _low_left_out(_run(worth, 30, 0, policy=policy, **fixed)[1])
    # Assert: learning leaves most of them out of the last 10 rounds (what is left is the
    # re-checking: an arm's harm counts fade with the discount and it is tried again);
    # neither the prior nor a planner that leaves out only the devices no arm fits does
    assert np.mean(on) >= 0.6 and min(on) >= 0.4, on
    assert off == 0.0 and kept == 0.0, (off, kept)


def test_every_policy_offered_is_tested():
    assert set(POLICIES) == set(DropPEFTParams.model_fields["policy"].annotation.__args__)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("truth", sorted(TRUTHS))
def test_converges_on_the_best_arm_within_40_rounds_and_not_without_learning(truth, policy):
    # Prepare
    worth = TRUTHS[truth]
    # Execute: 4 seeds with learning, 1 without
    shares = [_good_share(_run(worth, 40, seed, policy=policy)[0], worth, 39) for seed in range(4)]
    off = _good_share(_run(worth, 12, 0, learning=False)[0], worth, 11)
    # Assert: in the last 10 of 40 rounds, 60% of the clients run a best arm (mean over
    # seeds; a uniform choice would give 10%), and no seed stays below 30%
    assert min(shares) >= 0.3 and np.mean(shares) >= 0.6, shares
    if off < 0.5:  # where the prior alone picks a wrong arm, learning is what finds the right one
        assert np.mean(shares) >= off + 0.5


def test_learning_off_ignores_what_is_observed():
    # Prepare: two opposite truths
    a = _run(TRUTHS["free-dropout"], 8, 0, learning=False)[0]
    b = _run(TRUTHS["steep-deep"], 8, 0, learning=False)[0]
    # Assert: the same choices whatever the gains; with learning they differ
    assert np.array_equal(a, b)
    assert not np.array_equal(_run(TRUTHS["free-dropout"], 8, 0)[0], _run(TRUTHS["steep-deep"], 8, 0)[0])


@pytest.mark.parametrize("policy", POLICIES)
def test_follows_a_best_arm_that_switches_half_way(policy):
    # Prepare: dropout is cheap for 30 rounds (a heavy arm is best), then costly (no dropout)
    early, late = TRUTHS["shallow-matters"], TRUTHS["steep-deep"]
    def worth(r, times):
        return early(r, times) if r < 30 else late(r, times)
    # Execute: 6 seeds (with 3, one seed that has not yet left the early arm moves the
    # mean by 0.3)
    shares_early, shares_late = [], []
    for seed in range(6):
        counts, _ = _run(worth, 60, seed, decay=0.97, policy=policy)
        shares_early.append(_good_share(counts[:30], early, 29))
        shares_late.append(_good_share(counts, late, 59))
    # Assert: on the early best by round 30, on the late best within 30 rounds of the switch
    # (measured with learnt spreads, kg / ids / thompson: early 0.99 / 0.99 / 1.00, late
    # 0.73 / 0.63 / 0.61; with one spread of 1: early 0.93 / 0.95 / 0.93, late 0.80 / 0.67 / 0.82)
    assert np.mean(shares_early) >= 0.7, shares_early
    assert np.mean(shares_late) >= 0.6, shares_late


def test_same_seed_same_choices():
    a = _run(TRUTHS["steep-deep"], 6, 3)[0]
    b = _run(TRUTHS["steep-deep"], 6, 3)[0]
    assert np.array_equal(a, b)


# -- the progress model --------------------------------------------------------------------

def _keeps():
    return [a.keep_prob for a in DropPEFT(DropPEFTParams(), SHAPE, BASE).arms]


def test_prior_worth_is_the_share_of_layers_run():
    # Prepare: no observation
    model = ProgressModel(_keeps(), depths=(0.0,))
    # Assert: beta's prior mean is 1 (worth = plain share of layers run)
    expected = np.array([k.mean() for k in _keeps()])
    assert model.worth() == pytest.approx(expected, rel=1e-6)


def test_gains_recover_how_steeply_worth_falls_and_where_in_depth():
    # Prepare: worth = keep_2 ** 3, mixed rounds, little noise, a decaying phase
    keeps = _keeps()
    truth = np.array([depth_weighted_keep(k, 2.0) ** 3 for k in keeps])
    model = ProgressModel(keeps)
    rng = np.random.default_rng(0)
    # Execute
    for r in range(15):
        arms = rng.integers(0, len(keeps), size=10)
        model.observe(arms, truth[arms] * 0.9**r * np.exp(0.05 * rng.standard_normal(10)))
    p, _, _ = model.log_worth()
    # Assert: gamma = 2 carries the weight; relative worths match the truth
    gammas = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0)
    assert gammas[int(np.argmax(p))] == 2.0 and p[:3].sum() < 0.01  # its neighbours share the rest
    assert model.worth() / model.worth()[0] == pytest.approx(truth / truth[0], rel=0.15, abs=0.02)


def _noisy_rounds(model: ProgressModel, truth: np.ndarray, rounds: int, noise: float, seed: int) -> ProgressModel:
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        arms = rng.integers(0, len(truth), size=10)
        model.observe(arms, truth[arms] * 0.9**r * np.exp(noise * rng.standard_normal(10)))
    return model


def test_noisy_gains_that_follow_the_curve_leave_the_worths_near_it():
    # Prepare: the truth is the prior's curve (worth = share of layers run); the gains
    # are noisy (log sd 1, as an update's client swings them at Dirichlet 0.1)
    keeps = _keeps()
    truth = np.array([depth_weighted_keep(k, 0.0) for k in keeps])
    # Execute: 10 rounds, spreads learnt and one spread of 1 for every arm
    err = {sd: [np.abs(np.log(_noisy_rounds(ProgressModel(keeps, arm_sd=sd), truth, 10, 1.0, seed).worth() / truth)).max()
                for seed in range(5)] for sd in (None, 1.0)}
    # Assert: learnt spreads keep the worst arm's worth within a factor 1.6 of the truth
    # (log error 0.47) on average; the one spread strays further (measured: 0.37 and 0.57)
    assert np.mean(err[None]) <= 0.47 and np.mean(err[None]) < 0.75 * np.mean(err[1.0]), err


def test_an_arm_whose_gains_stray_from_the_curve_gets_its_own_spread():
    # Prepare: every arm on the curve but arm 4, worth 3x the curve's; little noise
    keeps = _keeps()
    truth = np.array([depth_weighted_keep(k, 0.0) for k in keeps])
    truth[4] *= 3.0
    # Execute
    model = _noisy_rounds(ProgressModel(keeps), truth, 15, 0.2, 0)
    # Assert: arm 4's worth is learnt, with the widest spread; the others stay narrow
    assert model.worth()[4] / model.worth()[0] == pytest.approx(truth[4] / truth[0], rel=0.2)
    sds = model.arm_sd_fit
    assert sds[4] >= 0.6 and np.delete(sds, 4).max() <= 0.35, sds


def test_an_arm_not_yet_seen_keeps_the_prior_spread():
    keeps = _keeps()
    truth = np.array([depth_weighted_keep(k, 0.0) for k in keeps])
    model = ProgressModel(keeps)
    rng = np.random.default_rng(0)
    for r in range(5):
        arms = rng.integers(0, 5, size=10)  # arms 5.. never run
        model.observe(arms, truth[arms] * np.exp(0.2 * rng.standard_normal(10)))
    model.fit()
    assert np.all(model.arm_sd_fit[5:] == ARM_SD)


def _client_swung_rounds(model: ProgressModel, truth: np.ndarray, rounds: int, seed: int, swing: float = 1.5) -> ProgressModel:
    """Rounds of 8 updates whose gains are swung either way by their clients (a normal term
    of sd ``swing`` times a full update's gain, so about a third are at or below zero, as
    real leave-one-out gains at Dirichlet 0.1), on two or three arms a round."""
    rng = np.random.default_rng(seed)
    for r in range(rounds):
        arms = rng.choice(len(truth), size=rng.integers(2, 4), replace=False)[rng.integers(0, 2, size=8) % 2]
        model.observe(arms, 0.9**r * (truth[arms] + swing * rng.standard_normal(8)))
    return model


def test_the_prior_as_a_hypothesis_changes_nothing_before_gains_or_at_zero():
    keeps = _keeps()
    truth = np.array([depth_weighted_keep(k, 2.0) ** 3 for k in keeps])
    # Before any gain: its prior probability, and the prior's worths
    fresh = ProgressModel(keeps, point_null=0.5)
    assert fresh.null_prob() == 0.5
    assert fresh.worth() == pytest.approx(ProgressModel(keeps).worth(), rel=1e-12)
    # point_null 0 is the learnt model, to the bit
    a = _noisy_rounds(ProgressModel(keeps), truth, 6, 0.3, 0)
    b = _noisy_rounds(ProgressModel(keeps, point_null=0.0), truth, 6, 0.3, 0)
    assert np.array_equal(a.worth(), b.worth()) and b.null_prob() == 0.0
    with pytest.raises(ValueError, match="point_null"):
        ProgressModel(keeps, point_null=1.0)
    with pytest.raises(ValueError, match="point_null"):
        ProgressModel(keeps, depths=None, point_null=0.5)


def test_gains_decide_between_the_prior_and_the_learnt_worths():
    # Prepare: gains of sd 0.3 from the prior's own curve, and from a steep one (keep_2 ** 3)
    keeps = _keeps()
    prior = ProgressModel(keeps).worth()
    steep = np.array([depth_weighted_keep(k, 2.0) ** 3 for k in keeps])
    # Execute: 10 rounds of each, 3 seeds
    kept = [_noisy_rounds(ProgressModel(keeps, point_null=0.5), prior, 10, 0.3, s) for s in range(3)]
    moved = [_noisy_rounds(ProgressModel(keeps, point_null=0.5), steep, 10, 0.3, s) for s in range(3)]
    # Assert: the prior's curve keeps its hypothesis (more likely than it was a priori);
    # the steep truth refutes it within 10 rounds, and the worths are the learnt ones
    assert min(m.null_prob() for m in kept) > 0.5, [m.null_prob() for m in kept]
    assert max(m.null_prob() for m in moved) < 0.01, [m.null_prob() for m in moved]
    for m in moved:
        assert m.worth() / m.worth()[0] == pytest.approx(steep / steep[0], rel=0.25, abs=0.03)


def test_gains_swung_by_their_clients_leave_the_worths_near_the_prior():
    # Prepare: the prior's curve, gains swung either way by their clients (about a third
    # at or below zero): the floored log model reads the swing as the arms' worths
    keeps = _keeps()
    prior = ProgressModel(keeps).worth()
    # Execute: 12 rounds, 5 seeds, with the prior as a hypothesis and without
    def err(pn):
        return [np.abs(np.log(_client_swung_rounds(ProgressModel(keeps, point_null=pn), prior, 12, s).worth() / prior)).max()
                for s in range(5)]
    with_null, without = err(0.5), err(0.0)
    # Assert: the worst arm's log error is at most half the learnt model's, on average
    assert np.mean(with_null) <= 0.5 * np.mean(without), (with_null, without)


def test_flat_prior_rates_every_arm_alike_before_data():
    model = ProgressModel(_keeps(), depths=None)
    assert model.worth() == pytest.approx(np.ones(len(_keeps())))


def test_signed_gains_enter_by_size_and_sign():
    # Prepare
    model = ProgressModel(_keeps(), signed=True, harm_prior="helps")
    # Execute: a round with only harmful gains still says something
    model.observe(np.array([0, 1]), np.array([-1.0, 0.0]))
    model.observe(np.array([0, 1, 2]), np.array([2.0, -4.0, np.nan]))
    # Assert: sizes (floored at a tenth of the round's median size) and signs
    assert model.evidence == pytest.approx(1.9)
    assert [r[2] for r in model._rows] == pytest.approx([0.0, np.log(0.1), np.log(2.0), np.log(4.0)])
    harmed, helped = model.harm_counts()
    assert harmed[:3] == pytest.approx([0.9, 1.9, 0.0]) and helped[:3] == pytest.approx([1.0, 0.0, 0.0])
    # The harm share's posterior mean Beta(n-, 1 + n+): arm 0 0.9 / 2.9, arm 1 1.9 / 2.9
    factor = model.harm_factor()[0]
    assert factor[:2] == pytest.approx([1 - 1.8 / 2.9, 1 - 3.8 / 2.9]) and np.all(factor[2:] == 1.0)
    assert model.worth()[1] < 0 < model.worth()[0]


def _signed_rounds(harm_share, rounds: int = 8, seed: int = 0, arms_run: int = 4):
    """Rounds of 10 updates on arms ``0 .. arms_run - 1``, sizes on the prior's curve, and
    each update harmful with its arm's ``harm_share``: pooled and ``helps`` models fed alike."""
    rng = np.random.default_rng(seed)
    keeps = _keeps()
    size = np.array([k.mean() for k in keeps])
    models = {"pooled": ProgressModel(keeps, signed=True), "helps": ProgressModel(keeps, signed=True, harm_prior="helps")}
    for _ in range(rounds):
        arms = rng.integers(0, arms_run, size=10)
        sign = np.where(rng.random(10) < np.asarray(harm_share)[arms], -1.0, 1.0)
        gains = sign * size[arms] * np.exp(0.3 * rng.standard_normal(10))
        for model in models.values():
            model.observe(arms, gains)
    return models


def test_pooled_harm_prior_keeps_arms_to_the_fleets_share_where_the_client_decides_harm():
    # Prepare: every arm's updates harm 40% of the time (the client's labels, not the arm)
    models = _signed_rounds(np.full(len(_keeps()), 0.4))
    pooled, helps = models["pooled"], models["helps"]
    # Execute
    a, b = pooled.harm_posterior()
    share = a / (a + b)
    harmed, helped = pooled.harm_counts()
    fleet = harmed.sum() / (harmed.sum() + helped.sum() + 1.0)
    # Assert: the evidence pools strongly, so every arm is within 0.05 of the fleet's share,
    # and an arm never run is expected to harm as often (with "helps", never: factor 1)
    assert pooled.harm_kappa >= 30
    assert np.abs(share - fleet).max() < 0.05
    assert pooled.harm_factor()[0][5] == pytest.approx(1 - 2 * fleet) and helps.harm_factor()[0][5] == 1.0
    # ... and the arms keep to their sizes: the 0.25 arms at 0.5-1 of the full arm's worth
    w = pooled.worth()
    assert np.all((w[1:4] / w[0] > 0.5) & (w[1:4] / w[0] < 1.0))


def test_pooled_harm_prior_learns_an_arm_that_harms_by_itself():
    # Prepare: arm 1's updates harm 90% of the time, the others' 10%
    share = np.full(len(_keeps()), 0.1)
    share[1] = 0.9
    pooled = _signed_rounds(share)["pooled"]
    # Assert: weak pooling; arm 1 is worth less than nothing, the others keep most of their worth
    factor = pooled.harm_factor()[0]
    assert pooled.harm_kappa <= 10
    assert factor[1] < 0 and np.all(factor[[0, 2, 3]] > 0.5)


def test_pooled_and_helps_priors_agree_until_a_gain_harms():
    models = _signed_rounds(np.zeros(len(_keeps())))
    assert np.array_equal(models["pooled"].worth(), models["helps"].worth())
    assert np.all(models["pooled"].harm_factor() == 1.0)


def test_mean_scale_starts_from_the_same_prior_worths():
    # Learning off plans with the prior: the same on either scale
    assert np.array_equal(ProgressModel(_keeps(), scale="mean").worth(), ProgressModel(_keeps()).worth())
    assert np.array_equal(ProgressModel(_keeps(), depths=None, scale="mean").worth(), np.ones(len(_keeps())))


def _swung_rounds(swing: float, rounds: int = 12, seed: int = 0):
    """Rounds of 10 updates on random arms whose mean gains follow ``keep ** 2`` (steeper
    than the prior), each swung by its client: gain = phase x (worth + swing x N(0, 1))."""
    rng = np.random.default_rng(seed)
    truth = np.array([k.mean() ** 2 for k in _keeps()])
    models = {"log": ProgressModel(_keeps()), "mean": ProgressModel(_keeps(), scale="mean")}
    for r in range(rounds):
        arms = rng.integers(0, truth.size, size=10)
        gains = 0.9**r * (truth[arms] + swing * rng.standard_normal(10))
        for model in models.values():
            model.observe(arms, gains)
    return truth, models


def test_mean_scale_learns_mean_gains_where_clients_swing_the_updates():
    # Prepare: gains swung by their clients about as much as a full update is worth
    errs = {"log": [], "mean": []}
    for seed in range(4):
        truth, models = _swung_rounds(1.0, rounds=30, seed=seed)
        heavy = np.array([k.mean() for k in _keeps()]) < 0.3
        for name, model in models.items():
            w = model.worth()
            errs[name].append(np.abs(w / w[0] - truth)[heavy].mean())
    # Assert: after 30 rounds the log model still reads the swing's size as the heavy arms'
    # worth (0.06 in truth, 0.25 a priori: measured errors 0.26-0.45); the mean model has
    # learnt it (0.02-0.11; after 12 rounds 0.21-0.44, the noise of a dozen updates an arm)
    assert np.mean(errs["log"]) > 0.25
    assert np.mean(errs["mean"]) < 0.4 * np.mean(errs["log"])


def test_mean_scale_learns_an_arm_no_curve_describes_from_clean_gains():
    # Prepare: arm 4 (uniform-0.5) worth as much as the full arm, the rest on the prior's curve
    keeps = _keeps()
    truth = np.array([k.mean() for k in keeps])
    truth[4] = 1.0
    model = ProgressModel(keeps, scale="mean")
    rng = np.random.default_rng(1)
    for r in range(10):
        arms = rng.integers(0, truth.size, size=10)
        model.observe(arms, 0.9**r * truth[arms] * np.exp(0.3 * rng.standard_normal(10)))
    # Assert: its worth within 20% of the truth, the others by the curve
    w = model.worth()
    assert w[4] / w[0] == pytest.approx(1.0, rel=0.2)
    assert np.all(np.abs(np.delete(w / w[0], 4) - np.delete(truth, 4)) < 0.2)


def test_an_arm_never_seen_to_harm_is_planned_as_without_harm_shares():
    # Prepare: the same positive gains, signed and floored
    signed, floored = ProgressModel(_keeps(), signed=True), ProgressModel(_keeps())
    for model in (signed, floored):
        model.observe(np.array([0, 3, 5]), np.array([1.0, 0.5, 0.05]))
    # Assert: same worths and the same draws from the same generator
    assert np.array_equal(signed.worth(), floored.worth())
    assert np.array_equal(signed.sample(np.random.default_rng(3), 4), floored.sample(np.random.default_rng(3), 4))


def test_a_client_whose_arms_within_the_pace_harm_runs_one_that_helps():
    # Prepare: client 1 is slow; its fast arm 1 harms (worth < 0), its slow arm 0 helps
    times = np.array([[1.0, 0.5], [4.0, 1.0]])
    feasible = np.ones((2, 2), dtype=bool)
    # Execute: the round waits for one update
    arms, pace = paced_assignment(np.array([1.0, -0.5]), times, feasible, 1, np.zeros(2, dtype=np.int64))
    # Assert: client 1 runs arm 0 and arrives after the quota; the round does not wait for it
    assert arms.tolist() == [0, 0] and pace == 1.0


def test_floored_non_positive_gains_and_a_round_without_positive_gain_is_skipped():
    model = ProgressModel(_keeps(), signed=False)
    model.observe(np.array([0, 1]), np.array([-1.0, 0.0]))
    assert model.evidence == 0.0  # nothing to scale against yet
    model.observe(np.array([0, 1, 2]), np.array([1.0, -5.0, np.nan]))
    assert model.evidence == pytest.approx(1.0)
    assert len(model._rows) == 2  # the NaN gain is dropped; the negative one counts at the floor
    assert [r[2] for r in model._rows] == pytest.approx([0.0, np.log(0.1)])


def test_discount_and_window_forget_old_evaluations():
    model = ProgressModel(_keeps(), window=2, discount=0.5)
    for _ in range(4):
        model.observe(np.array([0]), np.array([1.0]))
    assert model.evidence == pytest.approx(1.5)  # the last two: 1 + 0.5


def test_thompson_draws_one_row_per_client_and_ablations_use_the_median():
    model = ProgressModel(_keeps())
    u = utility_scores(model, np.random.default_rng(0), 5)
    assert u.shape == (5, len(_keeps())) and len({tuple(r) for r in u}) == 5
    median = utility_scores(model, np.random.default_rng(0), 3, explore=False)
    assert np.allclose(median, model.worth())


# -- the paced planner ---------------------------------------------------------------------

def test_paced_assignment_lets_fast_clients_run_heavier_arms():
    # Prepare: arm 0 = no drop (utility 2), arm 1 = heavy drop (utility 1, twice as fast).
    # Clients 0-2 are fast (time 2 / 1), client 3 is slow (time 8 / 4); the round waits for 3.
    times = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [8.0, 4.0]])
    feasible = np.ones_like(times, dtype=bool)
    fallback = np.zeros(4, dtype=np.int64)
    # Execute / Assert: a tie per second: the shorter round wins
    arms, pace = paced_assignment(np.array([2.0, 1.0]), times, feasible, 3, fallback)
    assert pace == 1.0 and arms.tolist() == [1, 1, 1, 1]
    arms, pace = paced_assignment(np.array([3.0, 1.0]), times, feasible, 3, fallback)
    assert pace == 2.0 and arms.tolist() == [0, 0, 0, 1]  # nothing fits T = 2 on the slow client
    arms, pace = paced_assignment(np.array([3.0, 1.0]), times, feasible, 4, fallback)
    assert pace == 4.0 and arms.tolist() == [0, 0, 0, 1]


def test_paced_assignment_takes_a_utility_row_per_client():
    times = np.ones((2, 2))
    arms, _ = paced_assignment(np.array([[1.0, 2.0], [2.0, 1.0]]), times, np.ones((2, 2), bool), 2, np.zeros(2, np.int64))
    assert arms.tolist() == [1, 0]


def test_paced_assignment_slow_client_gets_the_best_of_its_near_fastest_arms():
    times = np.array([[2.0, 1.0, 1.0]] * 3 + [[8.0, 4.0, 4.05]])
    arms, pace = paced_assignment(np.array([3.0, 0.2, 1.0]), times, np.ones_like(times, bool), 3, np.zeros(4, np.int64))
    assert pace == 2.0 and arms.tolist() == [0, 0, 0, 2]


def test_paced_assignment_respects_feasibility_and_fallback():
    feasible = np.array([[False, True], [False, False]])
    arms, _ = paced_assignment(np.array([5.0, 1.0]), np.ones((2, 2)), feasible, 1, np.array([1, 0]))
    assert arms.tolist() == [1, 0]


def test_paced_assignment_leaves_out_clients_no_arm_of_which_helps():
    # Prepare: 4 clients, 2 arms; arm 1 harms (utility < 0); client 2 can run only arm 1,
    # client 3 no arm at all
    times = np.array([[2.0, 1.0], [2.0, 1.0], [9.0, 1.0], [9.0, 1.0]])
    feasible = np.array([[True, True], [True, True], [False, True], [False, False]])
    fallback = np.array([0, 0, 1, 1])
    # Execute
    arms, pace = paced_assignment(np.array([1.0, -0.5]), times, feasible, 3, fallback, leave_out="harmful")
    infeasible, _ = paced_assignment(np.array([1.0, -0.5]), times, feasible, 3, fallback, leave_out="infeasible")
    kept, kept_pace = paced_assignment(np.array([1.0, -0.5]), times, feasible, 3, fallback)
    # Assert: the two that can help run the arm that helps, and the round waits for them alone
    assert arms.tolist() == [0, 0, -1, -1] and pace == 2.0
    assert plan_value(np.array([1.0, -0.5]), times, arms, 3) == pytest.approx(0.5)
    # "infeasible" leaves out only client 3, which no arm fits
    assert infeasible.tolist() == [0, 0, 1, -1]
    # ... while a planner that must run every client lets the harmful updates (fast:
    # arm 1 takes 1 s) take two of the round's three places
    assert kept.tolist() == [0, 0, 1, 1] and kept_pace == 2.0
    assert plan_value(np.array([1.0, -0.5]), times, kept, 3) == pytest.approx(0.0)
    # Where no client's arms help, only the one without a feasible arm is left out
    arms, _ = paced_assignment(np.array([-1.0, -0.5]), times, feasible, 3, fallback, leave_out="harmful")
    assert arms[3] == -1 and (arms[:3] >= 0).all()
    # Where none has a feasible arm, every one runs its fallback
    arms, _ = paced_assignment(np.array([1.0, 1.0]), times, np.zeros_like(feasible), 3, fallback, leave_out="harmful")
    assert arms.tolist() == fallback.tolist()
    with pytest.raises(ValueError, match="leave_out must be"):
        paced_assignment(np.array([1.0, 1.0]), times, feasible, 3, fallback, leave_out=True)


def test_the_harm_sign_marks_the_arms_that_harm_more_often_than_the_rest_not_harm_every_arm_shows():
    # Prepare: the floored model with the harm sign; arms 7-9 harm 9 updates in 10, the
    # rest 1 in 10; then a model where every arm harms 6 updates in 10
    rng = np.random.default_rng(0)
    some, every = ProgressModel(_keeps(), sign_harm=True), ProgressModel(_keeps(), sign_harm=True)
    for _ in range(6):
        arms = np.arange(10).repeat(5)
        some.observe(arms, np.where(rng.random(50) < np.where(arms >= 7, 0.9, 0.1), -1.0, 1.0))
        every.observe(arms, np.where(rng.random(50) < 0.6, -1.0, 1.0))
    # Assert: the harmful arms are worth less than nothing, the others keep their floored
    # worth; where every arm harms alike, none is signed
    w = some.worth()
    assert (w[7:] < 0).all() and (w[:7] > 0).all(), w
    assert (every.worth() > 0).all() and (every.harm_factor() == 1).all()
    # Without the sign (leave_out: infeasible, the default) the floored model never rates an arm below zero
    plain = ProgressModel(_keeps())
    for _ in range(3):
        plain.observe(np.arange(10), np.where(np.arange(10) >= 7, -1.0, 1.0))
    assert (plain.worth() > 0).all()


@pytest.mark.parametrize("policy", POLICIES)
def test_droppeft_leaves_clients_out_only_where_the_round_allows_it(policy):
    # Prepare: the starved fleet; every heavily dropped arm seen to harm the round
    fleet = _starved_fleet()
    ids = np.arange(fleet.size)
    method = DropPEFT(DropPEFTParams(policy=policy, leave_out="harmful"), SHAPE, BASE)
    heavy = np.array([a.mean_drop >= 0.5 for a in method.arms])
    for _ in range(3):
        method.model.observe(np.arange(len(heavy)), np.where(heavy, -0.5, 1.0))

    def plan(may_leave_out):
        ctx = RoundContext(round_idx=3, now_s=0.0, device_ids=ids, fleet=fleet, shape=SHAPE, base_plan=BASE,
                           coefficients=CostCoefficients(), deadline_s=None, rng=np.random.default_rng(0),
                           quota=QUOTA, may_leave_out=may_leave_out)
        return method.configure_round(ctx), method._round_arms.copy()

    # Execute
    (plans, arms), (every, every_arms) = plan(True), plan(False)
    # Assert: the six low devices are left out (their arms all harm), the others run;
    # where the round cannot leave anyone out (the async driver), every device runs
    assert plans.dispatch.tolist() == [True] * 7 + [False] * 6 and (arms[7:] == -1).all()
    assert len(plans.dispatched()) == 7
    assert every.dispatch is None and (every_arms >= 0).all()
    assert method.arms[every_arms[-1]].mean_drop >= 0.5  # the low devices fit heavy arms only


def test_droppeft_by_default_leaves_out_the_devices_no_arm_fits_learning_or_not():
    # Prepare: the starved fleet with two devices that fit no arm (100 MB)
    fleet = _starved_fleet()
    fleet.mem_cap_bytes[[3, 9]] = 100e6
    ids = np.arange(fleet.size)
    ctx = lambda may: RoundContext(round_idx=0, now_s=0.0, device_ids=ids, fleet=fleet, shape=SHAPE,  # noqa: E731
                                   base_plan=BASE, coefficients=CostCoefficients(), deadline_s=None,
                                   rng=np.random.default_rng(0), quota=QUOTA, may_leave_out=may)
    # Execute / Assert: the default and learning off leave them out; leave_out: none and
    # the asynchronous driver give them the arm of least memory (they fail at once)
    for params in ({}, {"learning": False}):
        assert DropPEFT(DropPEFTParams(**params), SHAPE, BASE).configure_round(ctx(True)).dispatch.tolist() == \
            [i not in (3, 9) for i in range(13)]
    for params, may in (({"leave_out": "none"}, True), ({}, False)):
        method = DropPEFT(DropPEFTParams(**params), SHAPE, BASE)
        assert method.configure_round(ctx(may)).dispatch is None
        assert method.arms[method._round_arms[3]].mean_drop == 0.75


def test_plan_value_is_mean_worth_of_the_first_quota_over_the_last_of_their_times():
    # Prepare: 3 clients, 2 arms; client 2 is predicted to arrive last
    times = np.array([[4.0, 2.0], [3.0, 1.0], [9.0, 5.0]])
    worth = np.array([1.0, 0.5])
    # Execute / Assert: quota 2 counts clients 0 (arm 0, 4 s) and 1 (arm 1, 1 s)
    assert plan_value(worth, times, np.array([0, 1, 0]), 2) == pytest.approx((1.0 + 0.5) / 2 / 4.0)


def test_information_gain_needs_contrast_and_grows_with_it():
    # Prepare: a fresh model (the prior)
    model = ProgressModel(_keeps())
    # Execute
    one_arm = information_gain(model, np.zeros(10, np.int64))
    two_arms = information_gain(model, np.array([0] * 5 + [9] * 5))
    many = information_gain(model, np.arange(10))
    # Assert: updates of one arm say little about relative worth; contrast says more
    assert 0.0 <= one_arm < two_arms < many


def test_ids_runs_the_median_plan_once_the_posterior_is_sure():
    # Prepare: 60 evaluations in which every arm's gain is its share of layers run, exactly
    keeps = _keeps()
    model = ProgressModel(keeps, discount=1.0)
    worth = np.array([k.mean() for k in keeps])
    for _ in range(60):
        model.observe(np.arange(len(keeps)), worth)
    fleet = _identical_fleet()
    ids = np.arange(fleet.size)
    arms = DropPEFT(DropPEFTParams(), SHAPE, BASE).arms
    feasible, _, times = feasible_arms(fleet, ids, SHAPE, arms, CostCoefficients(), None)
    fallback = np.zeros(ids.size, np.int64)
    # Execute
    chosen, _ = ids_assignment(model, np.random.default_rng(0), times, feasible, QUOTA, fallback)
    median, _ = paced_assignment(model.worth(), times, feasible, QUOTA, fallback)
    # Assert
    assert np.array_equal(chosen, median)


def _fresh_round():
    fleet = _identical_fleet()
    ids = np.arange(fleet.size)
    arms = DropPEFT(DropPEFTParams(), SHAPE, BASE).arms
    feasible, _, times = feasible_arms(fleet, ids, SHAPE, arms, CostCoefficients(), None)
    return ProgressModel(_keeps()), times, feasible, np.zeros(ids.size, np.int64)


def test_kg_with_no_rounds_left_runs_the_best_plan_under_the_median():
    # Prepare: the prior, like devices
    model, times, feasible, fallback = _fresh_round()
    median, _ = paced_assignment(model.worth(), times, feasible, QUOTA, fallback)
    # Execute
    chosen, _ = kg_assignment(model, np.random.default_rng(0), times, feasible, QUOTA, fallback, rounds_left=0)
    # Assert: nothing to repay exploration, so no plan worse than the median's under the median
    assert plan_value(model.worth(), times, chosen, QUOTA) >= plan_value(model.worth(), times, median, QUOTA)


def test_kg_explores_when_many_rounds_are_left_and_not_when_none_are():
    # Prepare: the prior, like devices: the median's plan gives every client one arm,
    # which teaches nothing about the arms' relative worth
    model, times, feasible, fallback = _fresh_round()
    # Execute
    distinct = {}
    for left in (0, 200):
        distinct[left] = [np.unique(kg_assignment(model, np.random.default_rng(s), times, feasible, QUOTA, fallback,
                                                  rounds_left=left)[0]).size for s in range(4)]
    # Assert
    assert distinct[0] == [1, 1, 1, 1]
    assert min(distinct[200]) >= 2, distinct


def test_lookahead_moves_the_median_towards_the_world_it_observes():
    # Prepare: worlds drawn from the prior; updates on every arm, twice
    model = ProgressModel(_keeps())
    rng = np.random.default_rng(3)
    gs, coefs = model.sample_coefficients(rng, 24)
    worlds = np.array([np.exp(model._arm_features(int(g)) @ c) for g, c in zip(gs, coefs)])
    arms = np.tile(np.arange(model.num_arms), 2)
    noise = rng.standard_normal((24, arms.size))
    # Execute
    learnt = model.lookahead_worth(arms, gs, coefs, noise)
    # Assert: after seeing a world's gains the median is nearer that world (in log worth
    # relative to the mean arm) than the prior median is, in most worlds
    def shape(x):
        lx = np.log(x)
        return lx - lx.mean(axis=-1, keepdims=True)
    err_prior = np.abs(shape(worlds) - shape(model.worth())[None]).mean(axis=1)
    err_learnt = np.abs(shape(worlds) - shape(learnt)).mean(axis=1)
    assert (err_learnt < err_prior).mean() >= 0.8
    assert learnt.shape == (24, model.num_arms) and np.all(np.isfinite(learnt)) and np.all(learnt > 0)


def test_probe_plans_switch_one_client_to_an_arm_the_round_would_not_teach():
    # Prepare: the prior on like devices, whose median plan runs one arm everywhere
    from fedsim.methods.configurator import RoundPlanner, probe_plans

    model, times, feasible, fallback = _fresh_round()
    planner = RoundPlanner(times, feasible, QUOTA, fallback, returns=0.5, min_quota=QUOTA // 2)
    median = model.worth()
    plan0 = planner.assign(median)
    # Execute
    probes = probe_plans(model, planner, median, plan0, feasible, QUOTA, 4)
    # Assert: four plans, each differing from the median's in one client, on four distinct
    # arms that the median's arriving updates do not run, the switched client arriving in time
    _, _, sd = model.log_worth()
    assert len(probes) == 4
    used = set(plan0[0].tolist())
    arms = []
    for probe in probes:
        moved = np.flatnonzero(probe[0] != plan0[0])
        assert moved.size == 1
        arm = int(probe[0][moved[0]])
        assert arm not in used and feasible[moved[0], arm] and times[moved[0], arm] <= plan0[1] * (1 + 1e-9)
        arms.append(arm)
        # the plan's own closing: what the planner makes of it under the median
        assert probe == planner.close(median, probe[0])
        assert planner.value(median, probe[0]) <= planner.value(median, plan0[0]) + 1e-12
    assert len(set(arms)) == 4
    assert not probe_plans(model, planner, median, plan0, feasible, QUOTA, 0)


def test_kg_weighs_probe_plans_as_candidates():
    # Prepare: the prior, like devices, whose median plan teaches nothing of the arms'
    # relative worth; only the median's plan and probes to choose from (no Thompson plans)
    model, times, feasible, fallback = _fresh_round()
    median, _ = paced_assignment(model.worth(), times, feasible, QUOTA, fallback)
    # Execute
    moved = {left: [int((kg_assignment(model, np.random.default_rng(s), times, feasible, QUOTA, fallback,
                                       rounds_left=left, candidates=0, probes=4)[0] != median).sum())
                    for s in range(3)] for left in (0, 5)}
    none = [int((kg_assignment(model, np.random.default_rng(s), times, feasible, QUOTA, fallback, rounds_left=5,
                               candidates=0)[0] != median).sum()) for s in range(3)]
    # Assert: with rounds to come it runs a probe (one client switched); with none, or
    # with no probe to choose, the median's plan
    assert moved == {0: [0, 0, 0], 5: [1, 1, 1]}
    assert none == [0, 0, 0]


def test_lindy_horizon_expects_as_many_rounds_to_come_as_have_gone():
    assert [lindy_horizon(r) for r in (0, 1, 7)] == [0, 1, 7]


def test_kg_horizon_must_be_positive():
    with pytest.raises(ValueError, match="horizon"):
        DropPEFTParams(horizon=0)


# -- monotone worths ------------------------------------------------------------------------

def _assert_ordered(model: ProgressModel, worth: np.ndarray, estimate: bool = True) -> None:
    """No arm above one that runs every layer it runs at least as often (a draw: no dropped
    arm above a dropped one)."""
    above = model._above if estimate else model._above & ~model._full[None, :]
    for a, b in zip(*np.nonzero(above)):
        assert np.all(worth[..., a] <= worth[..., b] + 1e-12), (a, b)


def test_monotone_caps_an_arm_at_the_arms_that_run_its_layers_and_nothing_else():
    model = ProgressModel(_keeps(), monotone=True)
    # The full arm runs every layer of every arm; a dropped arm every layer of a heavier arm
    # of its profile at least as often
    assert model._above[1:, 0].all() and not model._above[0].any() and model._full[0] and not model._full[1:].any()
    assert model._above[7, 4] and model._above[7, 1] and model._above[4, 1] and not model._above[1, 4]
    rng = np.random.default_rng(0)
    w = rng.uniform(-0.5, 2.0, size=(200, model.num_arms))
    for estimate in (True, False):
        out = model.ordered(w, estimate=estimate)
        _assert_ordered(model, out, estimate)
        assert np.all(out <= w)  # lowered, never raised
        assert np.array_equal(model.ordered(out, estimate=estimate), out)  # once ordered, left as it is
        assert np.array_equal(out[:, 0], w[:, 0])  # the full arm is never lowered
    # A draw is not capped at the full arm: a dropped arm may be drawn above it
    assert (model.ordered(w)[:, 1:] > w[:, [0]]).any()
    assert not (model.ordered(w, estimate=True)[:, 1:] > w[:, [0]] + 1e-12).any()
    # The prior is ordered as it is
    assert np.array_equal(model.ordered(model.worth(), estimate=True), model.worth())
    # Off, nothing changes
    assert np.array_equal(ProgressModel(_keeps()).ordered(w, estimate=True), w)


def test_monotone_starts_from_the_same_prior_worths():
    # The prior's curve runs with the layers kept: learning off plans alike either way
    assert np.array_equal(ProgressModel(_keeps(), monotone=True).worth(), ProgressModel(_keeps()).worth())


def _heavy_as_large(rounds: int = 10, seed: int = 0, **kw) -> ProgressModel:
    """Gains whose sizes do not fall with dropout (arms 7-9, mean drop 0.75, 1.3x a full
    update's), as the floored sizes of real training at Dirichlet 0.1 did not."""
    keeps = _keeps()
    truth = np.array([k.mean() for k in keeps])
    truth[7:] = 1.3
    return _noisy_rounds(ProgressModel(keeps, **kw), truth, rounds, 0.3, seed)


def test_monotone_never_rates_a_heavier_arm_above_a_lighter_one():
    # Prepare: the heavy arms' gains as large as full ones; a fleet whose devices all fit
    # every arm within the pace of a full arm
    plain, mono = _heavy_as_large(), _heavy_as_large(monotone=True)
    # Assert: the plain model rates them above the full arm; ordered, none is
    w_plain, w_mono = plain.worth(), mono.worth()
    assert w_plain[7:].min() > w_plain[0], w_plain
    _assert_ordered(mono, w_mono)
    assert w_mono[7:].max() <= w_mono[0] + 1e-12
    # every draw the policies explore with is ordered among the dropped arms, and every
    # look-ahead (the median after more gains) as the median is
    _assert_ordered(mono, mono.sample(np.random.default_rng(1), 64), estimate=False)
    gs, coefs = mono.sample_coefficients(np.random.default_rng(2), 8)
    _assert_ordered(mono, mono.lookahead_worth(np.array([7, 8, 9, 0]), gs, coefs, np.zeros((8, 4))))
    # Each heavy arm at most its lighter profile's 0.5 arm (arms 4-6), which the gains put
    # near the prior's curve: the heavy arms lose most of what the sizes gave them
    assert np.all(w_mono[7:] <= w_mono[4:7] + 1e-12)
    assert np.all(w_mono[7:] / w_mono[0] < 0.75 * w_plain[7:] / w_plain[0]), (w_mono, w_plain)


def test_droppeft_passes_monotone_worth_and_old_models_stay_unordered():
    method = DropPEFT(DropPEFTParams(monotone_worth=True), SHAPE, BASE)
    assert method.model.monotone
    # A model pickled before the order existed has none of its state: it plans unordered
    old = _heavy_as_large()
    for name in ("monotone", "_above", "_order", "_full"):
        old.__dict__.pop(name, None)
    w = np.array([0.1, 0.5, 2.0] + [1.0] * (old.num_arms - 3))
    assert np.array_equal(old.ordered(w), w)


def test_ordering_the_estimates_only_leaves_the_draws_as_the_unordered_posterior_has_them():
    # Prepare: the gains above, with the order on the estimates only (monotone_draws false)
    plain, est = _heavy_as_large(), _heavy_as_large(monotone=True, monotone_draws=False)
    # Assert: the median and every look-ahead ordered as with ordered draws ...
    _assert_ordered(est, est.worth())
    assert np.array_equal(est.worth(), _heavy_as_large(monotone=True).worth())
    gs, coefs = est.sample_coefficients(np.random.default_rng(2), 8)
    _assert_ordered(est, est.lookahead_worth(np.array([7, 8, 9, 0]), gs, coefs, np.zeros((8, 4))))
    # ... and the draws that explore exactly the unordered model's (heavy arms drawn above lighter ones)
    draws = est.sample(np.random.default_rng(1), 64)
    assert np.array_equal(draws, plain.sample(np.random.default_rng(1), 64))
    assert (draws[:, 7:] > draws[:, 4:7]).any()


def test_droppeft_passes_monotone_draws_and_models_pickled_before_order_their_draws():
    method = DropPEFT(DropPEFTParams(monotone_worth=True, monotone_draws=False), SHAPE, BASE)
    assert method.model.monotone and not method.model.monotone_draws
    assert DropPEFTParams().monotone_draws  # with the order on, its draws are ordered unless told
    # A model pickled before the choice existed ordered its draws: it still does
    old = _heavy_as_large(monotone=True)
    old.__dict__.pop("monotone_draws", None)
    _assert_ordered(old, old.sample(np.random.default_rng(1), 64), estimate=False)


def test_noisy_order_holds_where_one_gain_says_little_and_not_where_gains_are_precise():
    # Prepare: gains whose sizes do not fall with dropout (heavy arms 1.3x a full update's):
    # precise (log sd 0.3, the synthetic tests' noise) and noisy (log sd 1.2, as real
    # training's: posterior noise variance 0.9-2.1 there)
    keeps = _keeps()
    truth = np.array([k.mean() for k in keeps])
    truth[7:] = 1.3
    precise = _noisy_rounds(ProgressModel(keeps, monotone="noisy"), truth, 10, 0.3, 0)
    noisy = _noisy_rounds(ProgressModel(keeps, monotone="noisy"), truth, 10, 1.2, 0)
    # Assert: precise, the gains rank the arms (the heavy arms above the full one, as said);
    # noisy, the order holds, in the estimates and the draws, as with monotone true
    assert precise.noise_var() < NOISY_VAR <= noisy.noise_var()
    assert not precise.order_on() and noisy.order_on()
    assert precise.worth()[7:].min() > precise.worth()[0]
    _assert_ordered(noisy, noisy.worth())
    _assert_ordered(noisy, noisy.sample(np.random.default_rng(1), 64), estimate=False)
    always = _noisy_rounds(ProgressModel(keeps, monotone=True), truth, 10, 1.2, 0)
    assert np.array_equal(noisy.worth(), always.worth())
    # Before any gain the prior's own noise is below the mark: unordered (the prior is ordered anyway)
    assert not ProgressModel(keeps, monotone="noisy").order_on()


def test_a_best_arm_that_changes_does_not_make_precise_gains_noisy():
    # Prepare: the switch (shallow layers matter for 30 rounds, then no dropout is best), gains
    # of log sd 0.3; 15 rounds after the switch
    early, late = TRUTHS["shallow-matters"], TRUTHS["steep-deep"]

    def worth(r, times):
        return early(r, times) if r < 30 else late(r, times)

    _, method = _run(worth, 45, 1, decay=0.97, policy="kg", monotone_worth="noisy")
    model = method.model
    p, posts = model.fit()
    # Assert: the model's residual variance has grown past the mark (its curve no longer
    # fits), the spread of gains within a round has not: the order stays off
    assert p @ np.array([s2 for _, _, s2 in posts]) >= NOISY_VAR
    assert model.noise_var() < 0.15 and not model.order_on()


def test_monotone_worth_takes_true_false_or_noisy():
    assert DropPEFTParams(monotone_worth="noisy").monotone_worth == "noisy"
    assert DropPEFT(DropPEFTParams(monotone_worth="noisy"), SHAPE, BASE).model.monotone == "noisy"
    with pytest.raises(ValueError, match="monotone_worth"):
        DropPEFTParams(monotone_worth="sometimes")
    with pytest.raises(ValueError, match="noisy"):
        ProgressModel(_keeps(), monotone="sometimes")


def test_ordered_worths_follow_a_best_arm_that_switches_half_way():
    # Prepare: the switch above (shallow layers matter for 30 rounds, then no dropout is best)
    early, late = TRUTHS["shallow-matters"], TRUTHS["steep-deep"]

    def worth(r, times):
        return early(r, times) if r < 30 else late(r, times)

    # Execute: the knowledge gradient with ordered worths, 6 seeds
    shares_early, shares_late = [], []
    for seed in range(6):
        counts, _ = _run(worth, 60, seed, decay=0.97, policy="kg", monotone_worth=True)
        shares_early.append(_good_share(counts[:30], early, 29))
        shares_late.append(_good_share(counts, late, 59))
    # Assert: as the unordered model must (measured 0.98 and 0.71). With the draws capped at
    # the full arm too (the first variant) the early share fell to 0.62: one round of a
    # single arm doubled the full arm's estimate and the capped draws stopped exploring
    assert np.mean(shares_early) >= 0.7, shares_early
    assert np.mean(shares_late) >= 0.6, shares_late


def test_where_every_arm_harms_the_planner_prefers_the_short_round_and_the_small_loss():
    # Prepare: 3 clients, 2 arms both harmful (signed worths); arm 1 is 5x faster, and
    # harms as much; the round waits for 2 updates
    times = np.array([[10.0, 2.0], [10.0, 2.0], [10.0, 2.0]])
    feasible = np.ones((3, 2), dtype=bool)
    fallback = np.zeros(3, dtype=np.int64)
    # Execute
    same, pace = paced_assignment(np.array([-0.5, -0.5]), times, feasible, 2, fallback)
    # Assert: the short round (a ratio of loss to time would take the 10 s one)
    assert same.tolist() == [1, 1, 1] and pace == 2.0
    assert plan_value(np.array([-0.5, -0.5]), times, same, 2) == pytest.approx(-1.0)
    # The smaller loss wins at the same length; any progress beats any loss
    assert round_pace(-0.1, 2.0) > round_pace(-0.5, 2.0) > round_pace(-0.5, 10.0)
    assert round_pace(1e-6, 100.0) > round_pace(0.0, 1.0) > round_pace(-1e-6, 1.0)
    # With progress the ratio decides, as before
    arms, pace = paced_assignment(np.array([1.0, 0.1]), times, feasible, 2, fallback)
    assert arms.tolist() == [0, 0, 0] and pace == 10.0  # 1.0 / 10 s beats 0.1 / 2 s
