"""DropPEFT's configurator: what each dropout arm is worth, learnt from the run itself.

Pure maths; nothing here knows about fleets, plans or the engine
(:mod:`fedsim.methods.droppeft` wires it in). See docs/droppeft.md.

**What is observed.** Before aggregating a round, the server measures every arrived
update's *gain*: the drop in loss on its validation examples when that update alone is
applied to the global model (``Trainer.update_gains``). Updates of one round start from
the same model, so their gains compare arms within the same phase of training; gains of
different rounds differ by how far training has come.

**What is learnt.** A log-linear model of the gain of update ``i`` (arm ``a_i``, observed
at evaluation ``t_i``)::

    log gain_i = alpha + trend * (t_i - now) / 10 + log theta_{a_i} + noise
    log theta_a = beta * log keep_gamma(a) + delta_a

``alpha + trend * ...`` is the phase of training (gains shrink as it converges);
``theta_a`` is arm ``a``'s worth relative to running every layer. ``keep_gamma(a)`` is
the share of layers the arm runs, layer ``l`` weighted ``(l + 1) ** gamma``
(:func:`fedsim.core.plan.depth_weighted_keep`: ``gamma < 0`` says the layers near the input
matter more, ``> 0`` the ones near the output); ``beta`` says how steeply the worth falls
with dropout (0: dropout costs nothing, 1: in proportion to the layers skipped);
``delta_a`` corrects arms no such curve describes. For every ``gamma`` of a grid the
model is a Bayesian linear regression with a conjugate normal-inverse-gamma prior, so
its evidence is in closed form; the ``gamma`` are averaged by their evidence, all equal
a priori. The prior says ``beta = 1`` (an update is worth the share of layers it runs),
with a wide spread; nothing in it was fitted to any data set or model.

Observations made ``k`` evaluations ago weigh ``discount ** k`` (``window``: only the
last ones are kept), so the model follows a best arm that changes as training goes on.
Thompson sampling turns the posterior into the utilities a round is planned with: one
draw per client, which spreads a round over the arms still plausible and so makes the
gains of one round compare them. :func:`ids_assignment` (the default policy) runs, of the
posterior median's plan and several Thompson plans, the one whose expected regret
squared per unit of information is least. :func:`paced_assignment` gives
every client of a synchronous round the arm that maximises the round's predicted progress
per second, the times coming from the cost model.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ProgressModel", "utility_scores", "paced_assignment", "plan_value", "information_gain", "ids_assignment", "PRIOR_BETA"]

FASTEST_TOLERANCE = 0.1  # paced_assignment: arms this close to a client's fastest count as fastest
PRIOR_BETA = 1.0  # prior mean of beta: an update is worth the share of layers it runs
_TREND_UNIT = 10.0  # evaluations per unit of the trend coefficient


class ProgressModel:
    """Posterior of each arm's worth from the gains of the updates seen (module docstring).

    Args:
        keep_probs: per arm, each layer's probability of running.
        depths: the grid of ``gamma``; ``None`` (the *flat* ablation): no curve, every
            arm alike a priori, learnt by its own corrections alone.
        discount: weight of an observation ``k`` evaluations old: ``discount ** k``.
        window: keep only the observations of the last this many evaluations.
        arm_sd: prior sd of each arm's correction ``delta_a`` (log scale, relative to the
            noise: the prior of the coefficients scales with the noise variance).
        noise: prior guess of the variance of ``log gain`` about the model.
    """

    def __init__(self, keep_probs: Sequence[np.ndarray], depths: Sequence[float] | None = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0),
                 discount: float = 0.9, window: int | None = None, arm_sd: float = 1.0, beta_sd: float = 2.0,
                 noise: float = 0.25, noise_weight: float = 2.0) -> None:
        from fedsim.core.plan import depth_weighted_keep

        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 evaluations, got {window}")
        self.num_arms = len(keep_probs)
        self.discount = float(discount)
        self.window = window
        self.flat = depths is None
        gammas = [0.0] if depths is None else list(depths)
        self.log_keep = np.log(np.maximum(np.array([[depth_weighted_keep(k, g) for k in keep_probs] for g in gammas]), 1e-6))
        # Coefficients [alpha, trend, beta, delta_1..A] (flat: no beta); prior N(m0, s2 * V0).
        k = 2 + (0 if self.flat else 1) + self.num_arms
        self.m0 = np.zeros(k)
        v0 = np.full(k, arm_sd**2 / noise)
        v0[0], v0[1] = 100.0 / noise, 1.0 / noise
        if not self.flat:
            self.m0[2] = PRIOR_BETA
            v0[2] = beta_sd**2 / noise
        self.V0_inv = np.diag(1.0 / v0)
        self.a0 = 1.0 + noise_weight / 2.0
        self.b0 = noise * (self.a0 - 1.0)
        self._rows: list[tuple[int, np.ndarray, float]] = []  # (evaluation, arm shares, log gain)
        self.evaluations = 0
        self._fit: tuple | None = None

    # -- data --------------------------------------------------------------------------
    def observe(self, arms: np.ndarray, gains: np.ndarray) -> None:
        """One evaluation's updates: arm and measured gain of each.

        A gain at or below zero (an update that did not help on the validation examples)
        is counted at a tenth of the round's median positive gain, so it pulls its arm
        down without an unbounded log; a round with no positive gain says nothing.
        """
        arms = np.asarray(arms, dtype=np.int64)
        gains = np.asarray(gains, dtype=float)
        ok = np.isfinite(gains)
        arms, gains = arms[ok], gains[ok]
        self.evaluations += 1
        self._fit = None
        if not (gains > 0).any():
            return
        floor = 0.1 * float(np.median(gains[gains > 0]))
        z = np.log(np.maximum(gains, floor))
        eye = np.eye(self.num_arms)
        self._rows.extend((self.evaluations, eye[a], float(zi)) for a, zi in zip(arms, z))
        oldest = self.evaluations - (self.window or 10**9)
        if self.discount < 1.0:
            oldest = max(oldest, self.evaluations - int(np.ceil(np.log(1e-6) / np.log(self.discount))))
        self._rows = [r for r in self._rows if r[0] > oldest]

    @property
    def evidence(self) -> float:
        """Discounted number of evaluations with observations."""
        t = sorted({r[0] for r in self._rows})
        return float(sum(self.discount ** (self.evaluations - e) for e in t))

    def _design(self, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.array([r[0] for r in self._rows], dtype=float)
        X = np.array([r[1] for r in self._rows]).reshape(len(self._rows), self.num_arms)
        z = np.array([r[2] for r in self._rows])
        cols = [np.ones(len(t)), (t - self.evaluations) / _TREND_UNIT]
        if not self.flat:
            cols.append(X @ self.log_keep[g])
        F = np.column_stack(cols + [X]) if len(t) else np.zeros((0, len(self.m0)))
        w = self.discount ** (self.evaluations - t)
        return F, z, w

    def fit(self) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
        """``(weight per gamma, [(mean, cov, noise) of the coefficients per gamma])``."""
        if self._fit is not None:
            return self._fit
        logev, posts = [], []
        for g in range(self.log_keep.shape[0]):
            F, z, w = self._design(g)
            prec = self.V0_inv + (F * w[:, None]).T @ F
            Vn = np.linalg.inv(prec)
            mn = Vn @ (self.V0_inv @ self.m0 + (F * w[:, None]).T @ z)
            an = self.a0 + 0.5 * w.sum()
            bn = self.b0 + 0.5 * max(float(w @ z**2 + self.m0 @ self.V0_inv @ self.m0 - mn @ prec @ mn), 0.0)
            logev.append(0.5 * np.linalg.slogdet(Vn)[1] - an * np.log(bn))
            posts.append((mn, Vn * bn / an, bn / an))
        logev = np.array(logev)
        p = np.exp(logev - logev.max())
        self._fit = (p / p.sum(), posts)
        return self._fit

    def _arm_features(self, g: int) -> np.ndarray:
        """``(A, k)``: coefficients -> ``log theta`` of every arm."""
        eye = np.eye(self.num_arms)
        lead = np.zeros((self.num_arms, 2))
        if self.flat:
            return np.hstack([lead, eye])
        return np.hstack([lead, self.log_keep[g][:, None], eye])

    def log_worth(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(weight per gamma, mean (G, A), sd (G, A))`` of ``log theta``."""
        p, posts = self.fit()
        means, sds = [], []
        for g, (mn, cov, _) in enumerate(posts):
            A = self._arm_features(g)
            means.append(A @ mn)
            sds.append(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", A, cov, A), 0.0)))
        return p, np.array(means), np.array(sds)

    def worth(self) -> np.ndarray:
        """Every arm's worth relative to running every layer: the posterior median under
        each ``gamma``, averaged by their weights. (The mean of a log-normal grows with its
        spread: it would rate the arms known least as the best.)"""
        p, mean, _ = self.log_worth()
        return p @ np.exp(mean)

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``(size, A)`` joint draws of every arm's worth (a ``gamma``, then coefficients)."""
        p, posts = self.fit()
        gs = rng.choice(len(p), size=size, p=p)
        out = np.empty((size, self.num_arms))
        for i, g in enumerate(gs):
            mn, cov, _ = posts[g]
            coef = rng.multivariate_normal(mn, cov, method="cholesky")
            out[i] = np.exp(self._arm_features(g) @ coef)
        return out


def utility_scores(model: ProgressModel, rng: np.random.Generator, n_clients: int, explore: bool = True,
                   learning: bool = True) -> np.ndarray:
    """``(n_clients, A)`` utilities a round is planned with.

    Thompson sampling: one joint posterior draw per client, so a round spreads its clients
    over the arms the posterior still finds plausible, and the gains of one round compare
    them; as the posterior narrows, the round settles on the best arms. Ablations:
    ``explore=False`` plans with the posterior median (learning without exploration);
    ``learning=False`` with the prior (the model is never told what was observed).
    """
    if learning and explore:
        return model.sample(rng, n_clients)
    return np.broadcast_to(model.worth(), (n_clients, model.num_arms))


def paced_assignment(utility: np.ndarray, times: np.ndarray, feasible: np.ndarray, quota: int,
                     fallback: np.ndarray, max_candidates: int = 64) -> tuple[np.ndarray, float]:
    """Arms for one synchronous round that maximise predicted progress per second.

    A round lasts until its ``quota``-th update arrives, so its time is the
    ``quota``-th smallest client time, and a fast client can afford a heavier arm
    without delaying it. For each candidate round length ``T`` (quantiles of the
    feasible predicted times), every client takes the feasible arm of largest utility
    whose predicted time fits ``T`` (if none does, the arm of largest utility among its
    feasible arms within ``FASTEST_TOLERANCE`` of its fastest); the round's value is the
    mean utility of its ``quota`` fastest clients over their ``quota``-th time. The best
    candidate wins (ties: the shorter round).

    Args:
        utility: ``(n, A)`` (or ``(A,)`` for every client) what an update with each arm
            adds to the round's progress.
        times: ``(n, A)`` predicted client time of every arm.
        feasible: ``(n, A)`` arms the client may get (memory, deadline).
        quota: updates the round waits for.
        fallback: ``(n,)`` arm of clients with no feasible arm.

    Returns:
        ``(arms, T)``: an arm per client and the round's predicted length.
    """
    times = np.asarray(times, dtype=float)
    feasible = np.asarray(feasible, dtype=bool)
    out = np.asarray(fallback, dtype=np.int64).copy()
    rows = np.flatnonzero(feasible.any(axis=1))
    if rows.size == 0:
        return out, float("nan")
    u = np.broadcast_to(np.asarray(utility, dtype=float), times.shape)[rows]
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
    fastest = np.argmax(np.where(near, u, -np.inf), axis=1)
    q = min(max(int(quota), 1), rows.size)
    best_val, best_arms, best_T = -np.inf, None, float("nan")
    for T in cand:
        fits = f & (t <= T)
        score = np.where(fits, u, -np.inf)
        arms = np.where(fits.any(axis=1), np.argmax(score, axis=1), fastest)
        ct = t[np.arange(rows.size), arms]
        order = np.argsort(ct, kind="stable")[:q]
        val = float(u[order, arms[order]].mean()) / max(float(ct[order[-1]]), 1e-9)
        if val > best_val * (1.0 + 1e-9):
            best_val, best_arms, best_T = val, arms, float(ct[order[-1]])
    out[rows] = best_arms
    return out, best_T


def plan_value(worth: np.ndarray, times: np.ndarray, arms: np.ndarray, quota: int) -> float:
    """Predicted progress per second of a synchronous round planned as ``arms``: the mean
    ``worth`` of the ``quota`` clients predicted to arrive first over the time of the last
    of them (the value :func:`paced_assignment` maximises)."""
    t = np.asarray(times, dtype=float)[np.arange(len(arms)), arms]
    ok = np.isfinite(t)
    if not ok.any():
        return 0.0
    idx = np.flatnonzero(ok)
    first = idx[np.argsort(t[idx], kind="stable")[: max(min(int(quota), idx.size), 1)]]
    return float(np.asarray(worth, dtype=float)[arms[first]].mean()) / max(float(t[first].max()), 1e-9)


def information_gain(model: ProgressModel, arms: np.ndarray) -> float:
    """Expected information (nats) that gains of updates run with ``arms`` (one entry per
    update) bring about the arms' worths: the fall in the log-determinant of the
    posterior covariance of ``log theta`` (every arm), averaged over ``gamma`` by weight."""
    p, posts = model.fit()
    arms = np.asarray(arms, dtype=np.int64)
    total = 0.0
    for g, (mn, cov, s2) in enumerate(posts):
        if p[g] < 1e-3:
            continue
        A = model._arm_features(g)
        F = A[arms].copy()
        F[:, 0] = 1.0  # the phase of the round they are observed in
        prec = np.linalg.inv(cov)
        post = np.linalg.inv(prec + F.T @ F / max(s2, 1e-12))
        jitter = 1e-9 * np.eye(A.shape[0])
        before = np.linalg.slogdet(A @ cov @ A.T + jitter)[1]
        after = np.linalg.slogdet(A @ post @ A.T + jitter)[1]
        total += p[g] * 0.5 * max(before - after, 0.0)
    return float(total)


def ids_assignment(model: ProgressModel, rng: np.random.Generator, times: np.ndarray, feasible: np.ndarray,
                   quota: int, fallback: np.ndarray, candidates: int = 8, worlds: int = 16) -> tuple[np.ndarray, float]:
    """Arms for one round by information-directed sampling (Russo and Van Roy, 2018).

    Candidate plans: the posterior median's plan and ``candidates`` Thompson plans (one
    draw per client). Each is scored by its expected regret ``Delta`` (over ``worlds``
    joint posterior draws: the best plan's value in that world minus this plan's) and the
    information ``g`` its arriving updates bring (:func:`information_gain`); the plan of
    least ``Delta ** 2 / g`` is run. A plan that costs nothing in expectation (the
    posterior is sure) is run whatever it teaches; one that teaches nothing is not run
    unless it costs nothing.
    """
    times = np.asarray(times, dtype=float)
    q = max(min(int(quota), times.shape[0]), 1)
    median = model.worth()
    plans = [paced_assignment(median, times, feasible, quota, fallback)]
    plans += [paced_assignment(model.sample(rng, times.shape[0]), times, feasible, quota, fallback)
              for _ in range(candidates)]
    ws = model.sample(rng, worlds)
    value = np.array([[plan_value(w, times, arms, quota) for arms, _ in plans] for w in ws])
    best = np.array([plan_value(w, times, paced_assignment(w, times, feasible, quota, fallback)[0], quota) for w in ws])
    regret = np.maximum(best, value.max(axis=1))[:, None] - value
    delta = regret.mean(axis=0)
    rows = np.arange(times.shape[0])
    gain = []
    for arms, _ in plans:
        t = times[rows, arms]
        arrive = np.argsort(np.where(np.isfinite(t), t, np.inf), kind="stable")[:q]
        gain.append(information_gain(model, arms[arrive]))
    gain = np.maximum(np.array(gain), 1e-12)
    ratio = delta**2 / gain
    pick = int(np.argmin(ratio))
    return plans[pick]
