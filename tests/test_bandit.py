"""Pure maths of DropPEFT's configurator: statistics, discounting, scaling, policies."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.methods.bandit import (
    ArmStats,
    ArmUtility,
    EpsilonGreedyPolicy,
    RewardScale,
    ThompsonPolicy,
    UCBPolicy,
    assign_arms,
    credit_matrix,
    paced_assignment,
    thompson_scores,
    ucb_scores,
    PRIOR_FLOOR,
    utility_scores,
)


def test_arm_stats_weighted_mean_and_variance():
    # Prepare
    stats = ArmStats(2, 3)
    # Execute
    stats.observe_round([0, 0, 1], [1, 1, 2], [1.0, 3.0, 5.0], [1.0, 3.0, 2.0])
    # Assert
    assert stats.counts[0, 1] == 4.0 and stats.counts[1, 2] == 2.0 and stats.counts.sum() == 6.0
    assert stats.means[0, 1] == pytest.approx(2.5)  # (1*1 + 3*3) / 4
    assert stats.variances[0, 1] == pytest.approx((1 * 1 + 3 * 9) / 4 - 2.5**2)
    assert stats.means[0, 0] == 0.0 and stats.rounds_seen == 1


def test_discount_shrinks_old_rounds_geometrically():
    # Prepare
    stats = ArmStats(1, 2, discount=0.5)
    # Execute
    stats.observe_round([0], [0], [1.0])
    stats.observe_round([0], [1], [0.0])
    stats.observe_round([0], [0], [0.0])
    # Assert: arm 0 weights 0.25 (reward 1) and 1 (reward 0)
    assert stats.counts[0, 0] == pytest.approx(1.25)
    assert stats.means[0, 0] == pytest.approx(0.25 / 1.25)
    assert stats.counts[0, 1] == pytest.approx(0.5)


def test_window_forgets_rounds_older_than_it():
    # Prepare
    stats = ArmStats(1, 2, window=2)
    # Execute
    for reward in (10.0, 1.0, 2.0):
        stats.observe_round([0], [0], [reward])
    # Assert
    assert stats.counts[0, 0] == 2.0 and stats.means[0, 0] == pytest.approx(1.5)


def test_state_dict_round_trip():
    stats = ArmStats(2, 2, discount=0.9)
    stats.observe_round([0, 1], [1, 0], [0.5, -1.0])
    other = ArmStats(2, 2, discount=0.9)
    other.load_state_dict(stats.state_dict())
    assert np.array_equal(other.means, stats.means) and np.array_equal(other.counts, stats.counts)


def test_reward_scale_keeps_shrinking_rewards_order_one():
    # Prepare: raw progress per second halves every round (1000x over the run)
    scale = RewardScale(discount=0.5)
    # Execute
    scaled = [scale(2.0 ** -k) for k in range(10)]
    # Assert: the raw signal fell 500x; the scaled one only 5x
    assert scaled[0] == pytest.approx(1.0)
    assert all(0.15 < s <= 1.0 for s in scaled)
    assert -2.0 <= scale(-100.0) < -1.9  # a jump is bounded by 1 / (1 - discount)
    assert RewardScale(discount=0.9, clip=3.0)(1.0) == 1.0


def test_credit_matrix_counts_clients_per_group_and_arm():
    m = credit_matrix([0, 0, 1, 1, 1], [2, 2, 0, 2, 2], (2, 3))
    assert m.tolist() == [[0, 0, 2], [1, 0, 2]]


def test_ucb_tries_untried_then_prefers_best_mean_with_bonus():
    scores = ucb_scores(np.array([0.5, 0.9, 0.0]), np.array([4.0, 4.0, 0.0]), c=1.0)
    assert np.isinf(scores[2]) and scores[1] > scores[0]
    # A rarely tried arm with a lower mean can win on its bonus.
    s = ucb_scores(np.array([0.5, 0.4]), np.array([100.0, 1.0]), c=1.0)
    assert s[1] > s[0]


def test_thompson_draws_concentrate_with_more_observations():
    rng = np.random.default_rng(0)
    draws = np.array([thompson_scores(np.array([1.0, 1.0]), np.array([1.0, 1000.0]), np.zeros(2), rng) for _ in range(2000)])
    assert draws[:, 1].std() < 0.1 < draws[:, 0].std()
    assert draws[:, 1].mean() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("policy", [UCBPolicy(c=0.1), ThompsonPolicy(), EpsilonGreedyPolicy(epsilon=0.05)])
def test_policies_find_the_best_arm_on_hand_made_rewards(policy):
    # Prepare: 4 arms with fixed mean rewards and noise; arm 2 is best
    rng = np.random.default_rng(1)
    true = np.array([0.0, 0.5, 1.0, 0.2])
    stats = ArmStats(1, 4, discount=0.95)
    feasible = np.ones((10, 4), dtype=bool)
    # Execute
    for _ in range(40):
        arms = assign_arms(policy, stats, np.zeros(10, dtype=int), feasible, rng, np.zeros(10, dtype=int))
        stats.observe_round(np.zeros(10, dtype=int), arms, true[arms] + rng.normal(0, 0.3, 10))
    arms = assign_arms(policy, stats, np.zeros(10, dtype=int), feasible, rng, np.zeros(10, dtype=int))
    # Assert
    assert np.mean(arms == 2) >= 0.7


def test_assignment_never_picks_infeasible_arms_and_uses_fallback():
    # Prepare
    rng = np.random.default_rng(0)
    stats = ArmStats(2, 3)
    stats.observe_round([0, 0, 0, 1, 1, 1], [0, 1, 2, 0, 1, 2], [5.0, 1.0, 1.0, 5.0, 1.0, 1.0])  # arm 0 looks best
    feasible = np.array([[False, True, True], [False, False, False], [True, True, True]])
    # Execute
    arms = assign_arms(UCBPolicy(c=0.0), stats, np.array([0, 1, 1]), feasible, rng, fallback=np.array([2, 1, 2]))
    # Assert
    assert arms[0] in (1, 2) and arms[1] == 1 and arms[2] == 0
    assert feasible[np.arange(3), arms][[0, 2]].all()


def test_batched_ucb_spreads_untried_arms_over_a_round():
    stats = ArmStats(1, 3)
    arms = assign_arms(UCBPolicy(), stats, np.zeros(3, dtype=int), np.ones((3, 3), bool), np.random.default_rng(0), np.zeros(3, int))
    assert sorted(arms.tolist()) == [0, 1, 2]


def test_same_seed_same_choices():
    def run(seed):
        stats = ArmStats(1, 3)
        stats.observe_round([0, 0, 0], [0, 1, 2], [0.1, 0.2, 0.3])
        return assign_arms(ThompsonPolicy(), stats, np.zeros(8, int), np.ones((8, 3), bool), np.random.default_rng(seed), np.zeros(8, int))
    assert np.array_equal(run(5), run(5))


# -- the paced configurator ---------------------------------------------------------------

def test_arm_utility_separates_arms_that_shared_rounds():
    # Prepare: theta = (1, 3); rounds mix the two arms in different shares
    util = ArmUtility(2, prior_weight=1e-6)
    # Execute
    for share in (0.0, 0.25, 0.5, 1.0):
        util.observe(np.array([1 - share, share]), 1.0 * (1 - share) + 3.0 * share)
    mean, cov = util.posterior()
    # Assert: the shared round reward is split by arm, exactly without noise
    assert mean == pytest.approx([1.0, 3.0], abs=1e-4)
    assert np.all(np.diag(cov) > 0)


def test_arm_utility_prior_is_the_mean_progress_for_unseen_arms():
    util = ArmUtility(3, prior_weight=1.0)
    util.observe(np.array([1.0, 0.0, 0.0]), 2.0)
    util.observe(np.array([1.0, 0.0, 0.0]), 2.0)
    mean, cov = util.posterior()
    # Arm 0 is pinned at 2; arms 1 and 2 never ran: the prior mean (2) with the prior's width.
    assert mean == pytest.approx([2.0, 2.0, 2.0])
    assert cov[1, 1] == pytest.approx(0.25) and cov[0, 0] == pytest.approx(0.25 / 3)
    assert util.weight.tolist() == [2.0, 0.0, 0.0]


def test_arm_utility_discount_and_window_forget_old_rounds():
    # Prepare: arm 0 was worth 10, now 1
    fresh = ArmUtility(1, discount=0.1, prior_weight=1e-9)
    windowed = ArmUtility(1, window=2, prior_weight=1e-9)
    for u in (fresh, windowed):
        for y in (10.0, 10.0, 1.0, 1.0):
            u.observe(np.array([1.0]), y)
    # Assert
    assert windowed.posterior()[0][0] == pytest.approx(1.0)
    assert fresh.posterior()[0][0] == pytest.approx((1 + 0.1 + 0.01 * 10 + 0.001 * 10) / 1.111, rel=1e-6)
    assert windowed.state_dict()["y"] == [1.0, 1.0]
    other = ArmUtility(1, window=2, prior_weight=1e-9)
    other.load_state_dict(windowed.state_dict())
    assert np.allclose(other.posterior()[0], windowed.posterior()[0])
    with pytest.raises(ValueError):
        fresh.observe(np.array([0.5, 0.5]), 1.0)


def test_utility_scores_by_policy():
    util = ArmUtility(2)
    for _ in range(5):
        util.observe(np.array([1.0, 0.0]), 1.0)
    mean, _ = util.posterior()
    ucb = utility_scores(util, "ucb", np.random.default_rng(0), c=1.0)
    # UCB: optimism is largest for the arm seen least
    assert ucb[1] - mean[1] > ucb[0] - mean[0] > 0
    a = utility_scores(util, "thompson", np.random.default_rng(3))
    b = utility_scores(util, "thompson", np.random.default_rng(3))
    assert np.array_equal(a, b) and not np.allclose(a, mean)
    assert np.allclose(utility_scores(util, "egreedy", np.random.default_rng(0), epsilon=0.0), mean)
    with pytest.raises(ValueError):
        utility_scores(util, "nope", np.random.default_rng(0))


def test_paced_assignment_lets_fast_clients_run_heavier_arms():
    # Prepare: arm 0 = no drop (utility 2), arm 1 = heavy drop (utility 1, twice as fast).
    # Clients 0-2 are fast (time 2 / 1), client 3 is slow (time 8 / 4); the round waits for 3.
    utility = np.array([2.0, 1.0])
    times = np.array([[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [8.0, 4.0]])
    feasible = np.ones_like(times, dtype=bool)
    # Execute
    arms, pace = paced_assignment(utility, times, feasible, quota=3, fallback=np.zeros(4, dtype=np.int64))
    # Assert: arm 1 everywhere (1 per 1 s) ties with arm 0 on the fast clients (2 per 2 s): the shorter round wins
    assert pace == 1.0 and arms.tolist() == [1, 1, 1, 1]
    # Make the heavy arm clearly better per second on fast clients:
    utility = np.array([3.0, 1.0])
    arms, pace = paced_assignment(utility, times, feasible, quota=3, fallback=np.zeros(4, dtype=np.int64))
    assert pace == 2.0 and arms[:3].tolist() == [0, 0, 0]
    assert arms[3] == 1  # nothing fits T = 2 on the slow client: its fastest arm
    # With the slow client needed (quota 4) its time sets the pace: everyone else gets arm 0.
    arms, pace = paced_assignment(utility, times, feasible, quota=4, fallback=np.zeros(4, dtype=np.int64))
    assert pace == 4.0 and arms.tolist() == [0, 0, 0, 1]


def test_paced_assignment_slow_client_gets_the_best_of_its_near_fastest_arms():
    # Prepare: arms 1 and 2 drop as much (about as fast), arm 2 keeps the layers that matter
    utility = np.array([3.0, 0.2, 1.0])
    times = np.array([[2.0, 1.0, 1.0]] * 3 + [[8.0, 4.0, 4.05]])
    feasible = np.ones_like(times, dtype=bool)
    # Execute
    arms, pace = paced_assignment(utility, times, feasible, quota=3, fallback=np.zeros(4, dtype=np.int64))
    # Assert: nothing fits T = 2 on the slow client; 4.05 s is within the tolerance of 4 s
    assert pace == 2.0 and arms.tolist() == [0, 0, 0, 2]


def test_paced_assignment_respects_feasibility_and_fallback():
    utility = np.array([5.0, 1.0])
    times = np.array([[1.0, 1.0], [1.0, 1.0]])
    feasible = np.array([[False, True], [False, False]])
    arms, _ = paced_assignment(utility, times, feasible, quota=1, fallback=np.array([1, 0]))
    assert arms.tolist() == [1, 0]  # never the infeasible arm 0; no feasible arm -> fallback


def test_arm_utility_prior_shape_is_scaled_to_the_rounds_seen():
    # Prepare: arm 1 runs half the layers of arm 0; only arm 0 has run, worth 2 a round
    util = ArmUtility(2, prior_weight=1.0, shapes=np.array([1.0, 0.5]))
    assert util.posterior()[0].tolist() == [1.0, 0.5]  # before any round: the shape itself
    # Execute
    for _ in range(3):
        util.observe(np.array([1.0, 0.0]), 2.0)
    # Assert: c = 2 fits arm 0 exactly; the unseen arm 1 is expected at 2 * 0.5
    assert util.posterior()[0] == pytest.approx([2.0, 1.0])
    with pytest.raises(ValueError):
        ArmUtility(2, shapes=np.ones(3))


def test_arm_utility_fits_which_shape_and_how_steeply_progress_falls():
    # Prepare: two candidate shapes of four arms; the truth is 2 * shape_1 ** 2
    shapes = np.array([[1.0, 0.5, 0.5, 0.25], [1.0, 0.8, 0.3, 0.25]])
    util = ArmUtility(4, prior_weight=50.0, shapes=shapes, exponents=(0.5, 1.0, 2.0, 3.0), initial=(0, 1.0))
    assert util.prior_fit() == (1.0, 0, 1.0)
    # Execute
    truth = 2.0 * shapes[1] ** 2
    for f in ([1, 0, 0, 0], [0.5, 0.5, 0, 0], [0.2, 0.3, 0.5, 0], [0, 0.5, 0, 0.5], [0, 0, 0.5, 0.5]):
        f = np.array(f, dtype=float)
        util.observe(f, float(f @ truth))
    # Assert: the pooled fit recovers the shape, beta and c; a heavy prior keeps the posterior on it
    c, g, beta = util.prior_fit()
    assert (g, beta) == (1, 2.0) and c == pytest.approx(2.0)
    assert util.posterior()[0] == pytest.approx(truth, rel=1e-6)
    with pytest.raises(ValueError):
        ArmUtility(3, exponents=())
    with pytest.raises(ValueError):
        ArmUtility(4, shapes=shapes, initial=(2, 1.0))


def test_net_negative_progress_keeps_the_prior_order():
    # Prepare: label skew makes the global eval loss swing; a window of net-negative progress
    keep = np.array([1.0, 0.75, 0.5, 0.25])
    u = ArmUtility(4, discount=0.9, prior_weight=10.0, shapes=keep[None, :], exponents=(2.0,), initial=(0, 2.0))
    rng = np.random.default_rng(0)
    # Execute
    for _ in range(8):
        f = rng.dirichlet(np.ones(4))
        u.observe(f, -1.0 + 0.1 * rng.standard_normal())
    c, _, _ = u.prior_fit()
    # Assert: the scale is floored (never an inverted prior) and every policy keeps the order
    assert c == pytest.approx(u.min_scale)
    assert np.all(np.diff(u.prior_mean) < 0)
    for policy in ("ucb", "thompson"):
        scores = utility_scores(u, policy, np.random.default_rng(1), c=0.5)
        assert np.all(scores >= PRIOR_FLOOR * u.prior_mean - 1e-12)
    mean = utility_scores(u, "ucb", np.random.default_rng(1), c=0.0)
    assert np.all(np.diff(mean) < 0)  # all floored: the prior's order, not a tie


def test_relative_prior_moves_arms_less_when_progress_is_noisier():
    # Prepare: two arms on the curve [1, 0.5]; the rounds say arm 1 is as good as arm 0,
    # once cleanly and once with large round-to-round noise of the same mean.
    shapes = np.array([[1.0, 0.5]])
    rng = np.random.default_rng(0)

    def fitted(noise: float) -> np.ndarray:
        u = ArmUtility(2, shapes=shapes, prior_sd=0.2, noise_floor=0.01)
        for _ in range(20):
            f = rng.dirichlet(np.ones(2))
            u.observe(f, 1.0 + noise * rng.standard_normal())
        mean, _ = u.posterior()
        return mean / u.prior_mean  # how far each arm moved off its curve

    # Execute
    clean, noisy = fitted(0.01), fitted(2.0)
    # Assert: clean evidence lifts arm 1 well above its curve; noise barely moves it
    assert clean[1] > 1.3
    assert abs(noisy[1] - 1.0) < abs(clean[1] - 1.0) / 2


def test_fit_margin_keeps_the_initial_shape_unless_clearly_better():
    shapes = np.array([[1.0, 0.5], [1.0, 0.9]])
    u = ArmUtility(2, shapes=shapes, exponents=(1.0,), initial=(0, 1.0), fit_margin=0.999)
    for f, y in (([0.5, 0.5], 0.95), ([1.0, 0.0], 1.0), ([0.0, 1.0], 0.85)):
        u.observe(np.array(f), y)
    assert u.prior_fit()[1] == 0  # shape 1 fits 60x better, but the margin asks for 1000x
    u.fit_margin = 0.5
    assert u.prior_fit()[1] == 1
