"""Pure maths of DropPEFT's configurator: arm statistics, reward scaling and policies.

Nothing here knows about rounds, fleets or plans. The configurator
(:mod:`fedsim.methods.droppeft`) keeps one row of statistics per *group* of similar
devices and one column per *arm* (a dropout configuration), turns the round's progress
into rewards and asks a policy which arm each client gets. See docs/droppeft.md.

Non-stationarity: progress per simulated second shrinks as training converges, so an
arm's old rewards are too optimistic. :class:`ArmStats` forgets them geometrically
(``discount`` gamma: every round, each past observation's weight is multiplied by gamma,
effective memory ``1 / (1 - gamma)`` rounds) and/or keeps only the last ``window`` rounds
(sliding-window statistics). :class:`RewardScale` divides raw rewards by a discounted
mean of their magnitude, so rewards stay O(1) while the raw signal shrinks by orders of
magnitude, which keeps the exploration terms of the policies meaningful.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArmStats",
    "RewardScale",
    "credit_matrix",
    "ucb_scores",
    "thompson_scores",
    "epsilon_greedy_scores",
    "Policy",
    "UCBPolicy",
    "ThompsonPolicy",
    "EpsilonGreedyPolicy",
    "assign_arms",
]


class ArmStats:
    """Discounted (and optionally windowed) reward statistics per (group, arm).

    ``counts[g, a]`` is the discounted weight of the observations of arm ``a`` in group
    ``g``; ``means`` and ``variances`` are their weighted mean and variance. Observations
    of one round arrive together (:meth:`observe_round`); before adding them every older
    round's weight is multiplied by ``discount``, and rounds older than ``window`` are
    dropped.
    """

    def __init__(self, num_groups: int, num_arms: int, discount: float = 1.0, window: int | None = None) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 rounds, got {window}")
        self.shape = (num_groups, num_arms)
        self.discount = float(discount)
        self.window = window
        self._w = np.zeros(self.shape)  # sum of weights
        self._s = np.zeros(self.shape)  # sum of weight * reward
        self._q = np.zeros(self.shape)  # sum of weight * reward^2
        # With a window the statistics are recomputed from the kept rounds.
        self._rounds: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque(maxlen=window) if window else deque(maxlen=0)
        self.rounds_seen = 0

    def observe_round(self, groups: np.ndarray, arms: np.ndarray, rewards: np.ndarray, weights: np.ndarray | None = None) -> None:
        """Add one round's observations: ``rewards[i]`` of ``arms[i]`` in ``groups[i]``."""
        groups = np.asarray(groups, dtype=np.int64)
        arms = np.asarray(arms, dtype=np.int64)
        rewards = np.asarray(rewards, dtype=float)
        weights = np.ones_like(rewards) if weights is None else np.asarray(weights, dtype=float)
        w = np.zeros(self.shape)
        s = np.zeros(self.shape)
        q = np.zeros(self.shape)
        np.add.at(w, (groups, arms), weights)
        np.add.at(s, (groups, arms), weights * rewards)
        np.add.at(q, (groups, arms), weights * rewards**2)
        self.rounds_seen += 1
        if self.window:
            self._rounds.append((w, s, q))
            k = len(self._rounds)
            decay = self.discount ** np.arange(k - 1, -1, -1, dtype=float)
            self._w = sum(d * r[0] for d, r in zip(decay, self._rounds))
            self._s = sum(d * r[1] for d, r in zip(decay, self._rounds))
            self._q = sum(d * r[2] for d, r in zip(decay, self._rounds))
        else:
            self._w = self.discount * self._w + w
            self._s = self.discount * self._s + s
            self._q = self.discount * self._q + q

    @property
    def counts(self) -> np.ndarray:
        return self._w.copy()

    @property
    def means(self) -> np.ndarray:
        """Weighted mean reward; 0 where an arm has no (remaining) observations."""
        return np.divide(self._s, self._w, out=np.zeros(self.shape), where=self._w > 1e-12)

    @property
    def variances(self) -> np.ndarray:
        m = self.means
        second = np.divide(self._q, self._w, out=np.zeros(self.shape), where=self._w > 1e-12)
        return np.maximum(second - m**2, 0.0)

    def state_dict(self) -> dict:
        return {"w": self._w.tolist(), "s": self._s.tolist(), "q": self._q.tolist(), "rounds_seen": self.rounds_seen,
                "rounds": [[x.tolist() for x in r] for r in self._rounds]}

    def load_state_dict(self, state: dict) -> None:
        self._w, self._s, self._q = (np.asarray(state[k], dtype=float) for k in ("w", "s", "q"))
        self.rounds_seen = int(state["rounds_seen"])
        self._rounds.clear()
        for r in state.get("rounds", []):
            self._rounds.append(tuple(np.asarray(x, dtype=float) for x in r))


class RewardScale:
    """Divides raw rewards by a discounted mean of their magnitude.

    ``scaled = raw / scale`` with ``scale`` the discounted mean of ``|raw|`` over the
    rounds seen so far (including this one), clipped to ``[-clip, clip]``. Raw progress
    per second falls by orders of magnitude over a run; scaled rewards stay O(1), so the
    comparison between arms in the same period stays meaningful.
    """

    def __init__(self, discount: float = 0.9, clip: float = 3.0) -> None:
        self.discount = float(discount)
        self.clip = float(clip)
        self._num = 0.0
        self._den = 0.0

    @property
    def scale(self) -> float | None:
        return self._num / self._den if self._den > 0 and self._num > 0 else None

    def __call__(self, raw: float) -> float:
        self._num = self.discount * self._num + abs(raw)
        self._den = self.discount * self._den + 1.0
        scale = self.scale
        if scale is None:
            return 0.0
        return float(np.clip(raw / scale, -self.clip, self.clip))

    def state_dict(self) -> dict:
        return {"num": self._num, "den": self._den}

    def load_state_dict(self, state: dict) -> None:
        self._num, self._den = float(state["num"]), float(state["den"])


def credit_matrix(groups: np.ndarray, arms: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """How many clients used each (group, arm): the weights a shared round reward is credited with."""
    out = np.zeros(shape)
    np.add.at(out, (np.asarray(groups, dtype=np.int64), np.asarray(arms, dtype=np.int64)), 1.0)
    return out


# -- policies: scores per arm of one group; the largest feasible score wins ----------------

def ucb_scores(means: np.ndarray, counts: np.ndarray, c: float = 1.0) -> np.ndarray:
    """Discounted UCB (Garivier & Moulines 2011): ``mean + c * sqrt(2 log(N) / n)``.

    ``N`` is the (discounted) total weight of the group; untried arms score ``+inf`` so
    every feasible arm is tried once first. With discounted counts an arm left alone
    regains a large bonus, so it is re-tried after the rewards around it have moved.
    """
    counts = np.asarray(counts, dtype=float)
    total = max(float(counts.sum()), 1.0)
    bonus = c * np.sqrt(2.0 * np.log(max(total, np.e)) / np.maximum(counts, 1e-12))
    return np.where(counts > 1e-9, np.asarray(means, dtype=float) + bonus, np.inf)


def thompson_scores(means: np.ndarray, counts: np.ndarray, variances: np.ndarray, rng: np.random.Generator,
                    prior_mean: float = 0.0, prior_count: float = 1.0, noise_var: float = 1.0) -> np.ndarray:
    """One draw per arm from a Gaussian posterior of its mean reward.

    Normal prior ``N(prior_mean, noise_var / prior_count)``; with discounted weight ``n``
    and weighted mean ``m`` the posterior is ``N((prior_count*prior_mean + n*m) /
    (prior_count + n), s2 / (prior_count + n))`` where ``s2`` is the larger of
    ``noise_var`` and the arm's observed variance (rewards are scaled to O(1)).
    Discounting shrinks ``n``, which widens the posterior again for arms not tried lately.
    """
    counts = np.asarray(counts, dtype=float)
    post_n = prior_count + counts
    post_mean = (prior_count * prior_mean + counts * np.asarray(means, dtype=float)) / post_n
    post_sd = np.sqrt(np.maximum(np.asarray(variances, dtype=float), noise_var) / post_n)
    return post_mean + post_sd * rng.standard_normal(counts.shape)


def epsilon_greedy_scores(means: np.ndarray, counts: np.ndarray, epsilon: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``epsilon`` uniform random scores (explore), else the means (exploit).

    Untried arms score ``+inf`` when exploiting, so each is tried once.
    """
    counts = np.asarray(counts, dtype=float)
    if rng.random() < epsilon:
        return rng.random(counts.shape)
    return np.where(counts > 1e-9, np.asarray(means, dtype=float), np.inf)


@dataclass(frozen=True)
class Policy:
    """Base of the policies: ``scores(stats, group, rng, pending)``; larger = preferred."""

    def scores(self, stats: ArmStats, group: int, rng: np.random.Generator, pending: np.ndarray) -> np.ndarray:
        raise NotImplementedError


@dataclass(frozen=True)
class UCBPolicy(Policy):
    """Discounted UCB. ``pending`` (arms already given to clients this round) counts as
    observations, so a round's clients spread over the arms instead of all taking the
    arm with the largest bonus (batched UCB)."""

    c: float = 1.0

    def scores(self, stats, group, rng, pending):
        return ucb_scores(stats.means[group], stats.counts[group] + pending, self.c)


@dataclass(frozen=True)
class ThompsonPolicy(Policy):
    """Gaussian Thompson sampling, one posterior draw per client; the prior mean is the
    group's mean reward over all arms."""

    prior_count: float = 1.0
    noise_var: float = 1.0

    def scores(self, stats, group, rng, pending):
        counts, means = stats.counts[group], stats.means[group]
        # Empirical-Bayes prior: the group's mean reward, so untried arms are neither
        # favoured nor starved whatever the sign and size of the typical reward.
        prior = float(counts @ means / counts.sum()) if counts.sum() > 1e-12 else 0.0
        return thompson_scores(means, counts, stats.variances[group], rng,
                               prior_mean=prior, prior_count=self.prior_count, noise_var=self.noise_var)


@dataclass(frozen=True)
class EpsilonGreedyPolicy(Policy):
    """Epsilon-greedy with ``epsilon_t = epsilon / sqrt(1 + t)``, t = rounds observed."""

    epsilon: float = 0.3

    def scores(self, stats, group, rng, pending):
        eps = self.epsilon / np.sqrt(1.0 + stats.rounds_seen)
        # Untried arms: try each once, spread over the round's clients like UCB.
        counts = stats.counts[group] + pending
        return epsilon_greedy_scores(stats.means[group], counts, eps, rng)


def assign_arms(policy: Policy, stats: ArmStats, groups: np.ndarray, feasible: np.ndarray,
                rng: np.random.Generator, fallback: np.ndarray) -> np.ndarray:
    """An arm for each client: the best-scoring feasible arm of its group's policy.

    Args:
        groups: ``(n,)`` group of each client.
        feasible: ``(n, A)`` boolean mask; infeasible arms are never chosen.
        fallback: ``(n,)`` arm for clients with no feasible arm at all.
    """
    n = len(groups)
    out = np.asarray(fallback, dtype=np.int64).copy()
    pending = np.zeros(stats.shape)
    for i in range(n):
        if not feasible[i].any():
            continue
        g = int(groups[i])
        s = policy.scores(stats, g, rng, pending[g])
        s = np.where(feasible[i], s, -np.inf)
        best = np.flatnonzero(s == s.max())
        a = int(best[0]) if best.size == 1 else int(rng.choice(best))
        out[i] = a
        pending[g, a] += 1.0
    return out
