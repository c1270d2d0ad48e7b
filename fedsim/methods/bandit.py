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
    "ArmUtility",
    "utility_scores",
    "paced_assignment",
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


# -- the paced configurator: learnt progress per arm, predicted time per device -----------

class ArmUtility:
    """Discounted Bayesian linear regression of a round's progress on its arm shares.

    A synchronous round's progress comes from the updates that arrived; model it as
    ``y_r = sum_a f[r, a] * theta_a + noise``, where ``f[r, a]`` is the share of round
    ``r``'s arrived updates that used arm ``a`` and ``theta_a`` is what one update with
    arm ``a`` adds to a round's (scaled) progress. Unlike a per-(group, arm) mean of a
    shared round reward, the regression separates the arms that shared a round, as the
    arm mix varies from round to round.

    Prior ``theta ~ N(c * shape_g ** beta, noise_var / prior_weight * I)``: the candidate
    ``shapes`` say how the arms may compare (e.g. the share of layers an arm runs, with the
    deep layers weighted more or less; all ones: alike). ``g``, ``beta`` and ``c`` are
    fitted to the rounds seen, pooled over all arms: for each shape ``g`` and each
    ``beta`` of ``exponents``, ``c`` by weighted least squares of ``y_r`` on
    ``f_r . shape_g ** beta``, keeping the triple with the smallest weighted squared error
    (``initial`` = ``(g, beta)`` before any round, and on ties). This parametric prior
    learns from every round how steeply progress falls with dropout and where in depth
    it hurts, which a per-arm mean needs many rounds of each arm to see; the per-arm
    terms then correct it where the data says so. Round ``r``
    observed ``k`` rounds ago has weight ``discount ** k``; with ``window`` only the last
    ``window`` rounds are kept (non-stationarity: see :class:`ArmStats`). Posterior::

        A = prior_weight * I + sum_r w_r f_r f_r^T
        theta = m + A^-1 sum_r w_r f_r (y_r - f_r . m),   m = c * shape,   cov = s2 * A^-1

    with ``s2`` the weighted residual variance, floored at ``noise_floor`` (scaled
    rewards are O(1)). ``c`` is at least ``min_scale``; the fitted ``(g, beta)`` replaces
    ``initial`` only if its error is at least ``fit_margin`` (a share) below initial's.

    With ``prior_sd`` the prior is relative instead: arm ``a``'s prior sd is
    ``prior_sd * m_a`` whatever the noise, i.e. a precision of
    ``s2_0 / (prior_sd * m_a) ** 2`` rounds (``s2_0``: the residual variance of the rounds
    about the prior mean) in place of ``prior_weight``. Noisy progress (label skew) then
    moves the arms off their fitted curve less than clean progress does, and the arms
    the curve rates low need more evidence to rise.
    """

    def __init__(self, num_arms: int, discount: float = 1.0, window: int | None = None,
                 prior_weight: float = 1.0, noise_floor: float = 0.25, shapes: np.ndarray | None = None,
                 exponents: tuple[float, ...] = (1.0,), initial: tuple[int, float] | None = None,
                 min_scale: float = 0.1, prior_sd: float | None = None, fit_margin: float = 0.0) -> None:
        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 rounds, got {window}")
        self.num_arms = int(num_arms)
        self.discount = float(discount)
        self.window = window
        self.prior_weight = float(prior_weight)
        self.noise_floor = float(noise_floor)
        if not min_scale > 0:
            raise ValueError(f"min_scale must be > 0, got {min_scale}")
        self.min_scale = float(min_scale)
        if prior_sd is not None and not prior_sd > 0:
            raise ValueError(f"prior_sd must be > 0 or None, got {prior_sd}")
        self.prior_sd = None if prior_sd is None else float(prior_sd)
        if not 0.0 <= fit_margin < 1.0:
            raise ValueError(f"fit_margin must be in [0, 1), got {fit_margin}")
        self.fit_margin = float(fit_margin)
        self.shapes = np.ones((1, self.num_arms)) if shapes is None else np.atleast_2d(np.asarray(shapes, dtype=float))
        if self.shapes.ndim != 2 or self.shapes.shape[1] != self.num_arms or self.shapes.shape[0] < 1:
            raise ValueError(f"shapes must have shape (n_shapes, {self.num_arms}), got {np.shape(shapes)}")
        if not exponents or any(not np.isfinite(b) or b < 0 for b in exponents):
            raise ValueError(f"exponents must be finite and >= 0, got {exponents}")
        self.exponents = tuple(float(b) for b in exponents)
        self.initial = (0, self.exponents[0] if 1.0 not in self.exponents else 1.0) if initial is None else \
            (int(initial[0]), float(initial[1]))
        if not 0 <= self.initial[0] < self.shapes.shape[0]:
            raise ValueError(f"initial shape index {self.initial[0]} is not one of the {self.shapes.shape[0]} shapes")
        self._f: list[np.ndarray] = []  # arm shares of each kept round, oldest first
        self._y: list[float] = []
        self.rounds_seen = 0

    def observe(self, shares: np.ndarray, progress: float) -> None:
        """Add one round: ``shares`` (``(A,)``, summing to 1) and its scaled progress."""
        shares = np.asarray(shares, dtype=float)
        if shares.shape != (self.num_arms,):
            raise ValueError(f"shares must have shape ({self.num_arms},), got {shares.shape}")
        self._f.append(shares)
        self._y.append(float(progress))
        self.rounds_seen += 1
        # Forget rounds outside the window, or whose weight no longer matters.
        keep = len(self._f)
        if self.window:
            keep = min(keep, self.window)
        if self.discount < 1.0:
            keep = min(keep, int(np.ceil(np.log(1e-6) / np.log(self.discount))) + 1)
        self._f, self._y = self._f[-keep:], self._y[-keep:]

    def _weights(self) -> np.ndarray:
        k = len(self._y)
        return self.discount ** np.arange(k - 1, -1, -1, dtype=float)

    def prior_fit(self) -> tuple[float, int, float]:
        """``(c, g, beta)`` of the prior ``c * shapes[g] ** beta``."""
        g0, b0 = self.initial
        if not self._y:
            return 1.0, g0, b0
        w = self._weights()
        F = np.stack(self._f)
        y = np.asarray(self._y)
        candidates = [(g0, b0)] + [(g, b) for g in range(self.shapes.shape[0]) for b in self.exponents]
        fits = []
        for g, beta in candidates:  # the initial pair first: it wins ties
            x = F @ self.shapes[g] ** beta
            den = float(w @ x**2)
            # c >= min_scale: running more of the network never makes progress negative in
            # expectation. Without the floor a stretch of noisy, net-negative progress
            # (label skew makes the global eval loss swing) gives c < 0, which inverts the
            # prior: the arms that drop most would look best.
            c = max(float(w @ (x * y)) / den if den > 1e-12 else 1.0, self.min_scale)
            fits.append((float(w @ (y - c * x) ** 2), c, g, beta))
        best = min(fits, key=lambda f: f[0])
        # Leave the initial shape only for a clearly better fit: on noisy rounds the
        # candidates' errors differ by chance, and a flat shape chosen by chance would send
        # heavy arms everywhere.
        if best[0] >= (1.0 - self.fit_margin) * fits[0][0]:
            best = fits[0]
        return best[1], best[2], best[3]

    @property
    def prior_mean(self) -> np.ndarray:
        """``c * shapes[g] ** beta`` fitted to the rounds seen (``shapes[g0] ** beta0`` before any)."""
        c, g, beta = self.prior_fit()
        return c * self.shapes[g] ** beta

    def posterior(self, prior_mean: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(mean, cov)`` of ``theta`` (``prior_mean``: :attr:`prior_mean` if the caller has it)."""
        m = self.prior_mean if prior_mean is None else prior_mean
        if not self._y:
            return m, self.noise_floor * np.linalg.inv(self._prior_precision(m, self.noise_floor))
        F = np.stack(self._f)
        y = np.asarray(self._y)
        w = self._weights()
        s2_prior = max(float(w @ (y - F @ m) ** 2 / w.sum()), self.noise_floor)
        A = self._prior_precision(m, s2_prior) + (F * w[:, None]).T @ F
        A_inv = np.linalg.inv(A)
        theta = m + A_inv @ ((F * w[:, None]).T @ (y - F @ m))
        resid = y - F @ theta
        s2 = max(float(w @ resid**2 / w.sum()), self.noise_floor)
        return theta, s2 * A_inv

    def _prior_precision(self, m: np.ndarray, s2: float) -> np.ndarray:
        """Prior precision in rounds of evidence: ``prior_weight`` for every arm, or with
        ``prior_sd`` the precision that makes each arm's prior sd ``prior_sd * m_a``."""
        if self.prior_sd is None:
            return self.prior_weight * np.eye(self.num_arms)
        return np.diag(s2 / np.maximum(self.prior_sd * m, 1e-9) ** 2)

    @property
    def weight(self) -> np.ndarray:
        """Discounted number of updates (round shares) each arm has been seen with."""
        if not self._y:
            return np.zeros(self.num_arms)
        return self._weights() @ np.stack(self._f)

    def state_dict(self) -> dict:
        return {"f": [f.tolist() for f in self._f], "y": list(self._y), "rounds_seen": self.rounds_seen}

    def load_state_dict(self, state: dict) -> None:
        self._f = [np.asarray(f, dtype=float) for f in state["f"]]
        self._y = [float(v) for v in state["y"]]
        self.rounds_seen = int(state["rounds_seen"])


PRIOR_FLOOR = 0.05  # utility_scores: least utility of an arm, as a share of its prior mean
FASTEST_TOLERANCE = 0.1  # paced_assignment: arms this close to a client's fastest count as fastest


def utility_scores(utility: ArmUtility, policy: str, rng: np.random.Generator, c: float = 0.5,
                   epsilon: float = 0.3) -> np.ndarray:
    """The per-arm utilities a round is planned with, by policy.

    * ``ucb``: posterior mean + ``c * sd * sqrt(2 ln N)`` (N = discounted rounds seen,
      at least e): optimism for arms seen little;
    * ``thompson``: one joint draw from the posterior;
    * ``egreedy``: with probability ``epsilon / sqrt(1 + t)`` uniform random utilities in
      [0, 2 * max(mean)], else the posterior mean.
    """
    prior = utility.prior_mean  # the fit loops over every candidate shape: once a round
    mean, cov = utility.posterior(prior)
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    if policy == "ucb":
        n = max(float(utility._weights().sum()) if utility._y else 1.0, np.e)
        u = mean + c * sd * np.sqrt(2.0 * np.log(n))
    elif policy == "thompson":
        u = mean + np.linalg.cholesky(cov + 1e-12 * np.eye(len(mean))) @ rng.standard_normal(len(mean))
    elif policy == "egreedy":
        if rng.random() < epsilon / np.sqrt(1.0 + utility.rounds_seen):
            return rng.random(len(mean)) * 2.0 * max(float(mean.max()), 1e-3)
        u = mean
    else:
        raise ValueError(f"unknown policy {policy!r}; expected ucb, thompson or egreedy")
    # Progress per second only compares positive progress. Where the data push an arm's
    # utility to or below zero (noise: no arm makes negative progress in expectation),
    # keep a small share of its prior, so such arms keep the prior's order instead of
    # all tying, which would hand the round to whichever arms are fastest.
    return np.maximum(u, PRIOR_FLOOR * prior)


def paced_assignment(utility: np.ndarray, times: np.ndarray, feasible: np.ndarray, quota: int,
                     fallback: np.ndarray, max_candidates: int = 64) -> tuple[np.ndarray, float]:
    """Arms for one synchronous round that maximise predicted progress per second.

    A round lasts until its ``quota``-th update arrives, so its time is the
    ``quota``-th smallest client time, and a fast client can afford a heavier arm
    without delaying it. For each candidate round length ``T`` (quantiles of the
    feasible predicted times), every client takes the feasible arm of largest utility
    whose predicted time fits ``T`` (if none does, the arm of largest utility among its
    feasible arms within ``FASTEST_TOLERANCE`` of its fastest); the round's
    value is the mean utility of its ``quota`` fastest clients over their ``quota``-th
    time. The best candidate wins (ties: the shorter round).

    Args:
        utility: ``(A,)`` progress one update with each arm adds (floored at a small
            positive value: progress per second is only comparable for progress > 0).
        times: ``(n, A)`` predicted client time of every arm.
        feasible: ``(n, A)`` arms the client may get (memory, deadline).
        quota: updates the round waits for.
        fallback: ``(n,)`` arm of clients with no feasible arm.

    Returns:
        ``(arms, T)``: an arm per client and the round's predicted length (the
        ``quota``-th smallest predicted time of the assignment).
    """
    times = np.asarray(times, dtype=float)
    feasible = np.asarray(feasible, dtype=bool)
    n, A = times.shape
    out = np.asarray(fallback, dtype=np.int64).copy()
    rows = np.flatnonzero(feasible.any(axis=1))
    if rows.size == 0:
        return out, float("nan")
    u = np.asarray(utility, dtype=float)
    u = np.maximum(u, 1e-3 * max(float(np.abs(u).max()), 1e-12))
    t, f = times[rows], feasible[rows]
    cand = np.unique(t[f])
    if cand.size > max_candidates:
        cand = np.unique(np.quantile(t[f], np.linspace(0.0, 1.0, max_candidates)))
    # A client no arm of which fits T runs its best arm among the (near-)fastest: arms of
    # the same mean drop cost about the same, and the exact fastest would pick among them
    # by a few bytes of upload instead of by utility.
    t_min = np.min(np.where(f, t, np.inf), axis=1, keepdims=True)
    near = f & (t <= t_min * (1.0 + FASTEST_TOLERANCE))
    fastest = np.argmax(np.where(near, u[None, :], -np.inf), axis=1)
    q = min(max(int(quota), 1), rows.size)
    best_val, best_arms, best_T = -np.inf, None, float("nan")
    for T in cand:
        fits = f & (t <= T)
        score = np.where(fits, u[None, :], -np.inf)
        arms = np.where(fits.any(axis=1), np.argmax(score, axis=1), fastest)
        ct = t[np.arange(rows.size), arms]
        order = np.argsort(ct, kind="stable")[:q]
        val = float(u[arms[order]].mean()) / max(float(ct[order[-1]]), 1e-9)
        if val > best_val * (1.0 + 1e-9):
            best_val, best_arms, best_T = val, arms, float(ct[order[-1]])
    out[rows] = best_arms
    return out, best_T
