"""DropPEFT's configurator: what each dropout arm is worth, learnt from the run itself.

Pure maths; nothing here knows about fleets, plans or the engine
(:mod:`fedsim.methods.droppeft` wires it in). See docs/droppeft.md.

**What is observed.** Before aggregating a round, the server measures every arrived
update's *gain* on a fixed set of validation examples (``Trainer.update_gains``): by
default how much the loss of the round's aggregate would rise without that update
(leave one out, ``gain_measure: loo``), else the drop in loss when the update alone is
applied to the global model (``alone``). Only the first sees an update that helps alone
but harms the average it joins, as heavily dropped updates did in real training of
MiniLM-L6 (docs/droppeft.md). Updates of one round start from the same model, so their
gains compare arms within the same phase of training; gains of different rounds differ
by how far training has come.

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

**How far an arm strays from the curve** is learnt too: each arm's ``delta_a`` has its
own prior sd, the one of a grid (0.1-1.7, log scale) under which the gains seen are
likeliest (empirical Bayes; an arm starts at 1 and one not yet run keeps 1). With a
conjugate prior a spread is relative to the noise, so with one spread for every arm
(``arm_sd`` set, as before) noisy gains moved the worths as far as clean ones. Where an
update's gain is swung by its client more than by its arm (real training at Dirichlet
0.1: docs/droppeft.md), the arms' gains differ from the curve no more than that noise
would make them, their spreads shrink and the worths keep to a curve; an arm whose gains
stray from it beyond the noise keeps a wide spread and is learnt on its own.

**Harm.** With ``loo`` an update can make the round worse (a negative gain). The log model
above describes a gain's *size* ``|gain|``; beside it, each arm's *harm share* ``h_a``,
the chance that its update does not help the round, has a prior (``harm_prior``):
``helps``, ``Beta(0, 1)``, an update helps until one is seen not to; ``pooled`` (the
default), the fleet-wide harm share seen so far with the strength the arms' counts are
likeliest under (beta-binomial evidence), so an arm not yet run is expected to harm as
often as the rest (:meth:`ProgressModel.harm_posterior`). Before any gain at or below
zero both are a point mass at ``h_a = 0`` and the arms are planned exactly as without
this part. The arm's signed worth is ``theta_a * (1 - 2 h_a)``: the expected gain when
a harmful update is as large as a helpful one. ``signed=False`` (the default) instead
counts a gain at or below zero at a tenth of the round's median positive gain: a
harmful arm is nearly useless, never worse than nothing. (In real training at
Dirichlet 0.1 the sign of an update's gain follows its client's labels more than its
arm, and so does its size: docs/droppeft.md.)

**The mean scale** (``scale="mean"``, DropPEFT's ``worth_scale: mean``). What adds up in a
round's aggregate is an update's signed gain, and an arm is worth the *mean* of its
updates' gains, not their typical size. Where a client's labels swing its update either
way (real training at Dirichlet 0.1), ``|gain|`` measures the swing more than the arm: a
heavily dropped update's gain is about as large as a full one's, and about as often
harmful, yet its mean is a fifth of the full arm's. The log model reads the size and
raises such arms; the mean scale models each signed gain over its round's median size
(the phase of training divided out) as ``theta_a + noise``, with
``theta_a = c * w_a + d * w_a log w_a + delta_a``, ``w_a = keep_gamma(a) ** prior_beta``:
``c`` the full arm's level, ``d`` tilting the prior's curve (steeper or flatter; heavy
arms may come out worth less than nothing), ``delta_a`` each arm's correction with its
learnt spread. The same conjugate machinery, ``gamma`` averaged by evidence; before any
gain its worths are the log model's prior's, so learning off plans alike on both.

**The prior as a hypothesis** (``point_null``, DropPEFT's default 0.5). Beside the model
above, the hypothesis that the prior's worths are exact (``theta_a = w0_a``, the worths
learning off plans with; only the phase learnt) has prior probability ``point_null``;
the two are weighed by the evidence of the gains seen (conjugate, in closed form, the
same prior of the phase and the noise in both), and the estimates a round is planned
with are their average, ``P0 * w0 + (1 - P0) * theta``. Gains that agree with the prior,
or say little (swung by their clients), keep ``P0`` high and the plans near the prior's,
where the free model would follow the swing; gains that contradict it refute it within
a few rounds. Exploration is the free model's (its draws and look-ahead), so the
hypothesis is put to the test, not taken on trust: a hypothesis that also held back the
exploring would keep the gains that could refute it from being seen.

Observations made ``k`` evaluations ago weigh ``discount ** k`` (``window``: only the
last ones are kept), so the model follows a best arm that changes as training goes on.
Thompson sampling turns the posterior into the utilities a round is planned with: one
draw per client, which spreads a round over the arms still plausible and so makes the
gains of one round compare them. :func:`kg_assignment` (the default policy, the online
knowledge gradient) runs, of the posterior median's plan and several Thompson plans, the
one whose value this round plus what its updates are expected to teach the rounds still
to come is largest, so a run with few rounds left explores little.
:func:`ids_assignment` (information-directed sampling) runs the one whose expected regret
squared per unit of information is least, whatever the rounds left. :func:`paced_assignment` gives
every client of a synchronous round the arm that maximises the round's predicted progress
per second, the times coming from the cost model; given :class:`ArrivalDraws` (the
default in synchronous rounds), it weighs each plan over draws of when each client
really arrives, with the fleet's straggling and drop-outs, not the cost model's times
alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from scipy.special import betaln

__all__ = ["ProgressModel", "RoundReturns", "ArrivalDraws", "Assignment", "RoundPlanner", "utility_scores", "paced_assignment", "planned_quota", "round_pace", "arrival_times",
           "plan_value", "information_gain",
           "ids_assignment", "kg_assignment", "lindy_horizon", "PRIOR_BETA", "ARM_SD", "ARM_SDS"]

FASTEST_TOLERANCE = 0.1  # paced_assignment: arms this close to a client's fastest count as fastest
KEEP_BYTES = 64 << 20  # RoundPlanner: the most bytes of schedules it keeps for a round's later calls
PRIOR_BETA = 1.0  # prior mean of beta: an update is worth the share of layers it runs
HELP_PRIOR = 1.0  # harm share prior Beta(0, HELP_PRIOR)
HARM_KAPPAS = (1.0, 3.0, 10.0, 30.0, 100.0, 1000.0)  # pooled harm prior: its strengths (pseudo-updates) to choose from
_TREND_UNIT = 10.0  # evaluations per unit of the trend coefficient
ARM_SD = 1.0  # prior sd of an arm's correction before its gains say otherwise (log scale)
ARM_SDS = (0.1, 0.2, 0.35, 0.6, 1.0, 1.7)  # the sds the evidence chooses among, per arm
# monotone="noisy": the order holds once the gains' noise variance within a round (log
# scale; ProgressModel.noise_var) reaches this: a gain's log sd 0.7, so one update in three
# is off its arm's worth by more than a factor of two. Below it the gains rank the arms
# themselves. Set between the calibration set's clean gains (0.09) and its client swing (> 1).
NOISY_VAR = 0.5


class ProgressModel:
    """Posterior of each arm's worth from the gains of the updates seen (module docstring).

    Args:
        keep_probs: per arm, each layer's probability of running.
        depths: the grid of ``gamma``; ``None`` (the *flat* ablation): no curve, every
            arm alike a priori, learnt by its own corrections alone.
        discount: weight of an observation ``k`` evaluations old: ``discount ** k``.
        window: keep only the observations of the last this many evaluations.
        arm_sd: prior sd of each arm's correction ``delta_a`` (log scale, at the prior's
            guess of the noise: the conjugate prior scales with the noise variance);
            ``None`` (the default): each arm's learnt (module docstring).
        noise: prior guess of the variance of ``log gain`` about the model.
        prior_beta: prior mean of ``beta`` (default 1: worth = share of layers run).
        signed: learn each arm's harm share beside the size of its gains, so an arm
            whose updates harm the round is worth less than nothing; ``False`` (the
            default): floor harmful gains (module docstring).
        harm_prior: signed: the harm shares' prior, ``pooled`` (each arm's shrunk to the
            fleet-wide share) or ``helps`` (no harm until seen; :meth:`harm_posterior`).
        scale: ``log`` (the log-linear model of gain sizes) or ``mean`` (signed gains over
            their round's median, a linear model of their means; module docstring).
            ``signed`` and ``harm_prior`` apply to ``log`` only.
        monotone: an arm is never worth more than one that runs every layer it runs at
            least as often (:meth:`ordered`; a posterior draw: among the dropped arms
            only); ``False``: the worths are what the gains say; ``"noisy"``: ordered
            while the gains' noise variance within a round is at least ``NOISY_VAR``
            (:meth:`order_on`).
        monotone_draws: with ``monotone``, order the posterior draws too; ``False``: only
            the estimates a round is planned with are ordered, and the draws that
            explore are the unordered posterior's.
        point_null: prior probability that the prior's worths are exact (module
            docstring; :meth:`null_prob`); 0 (the default here): the learnt model alone.
            Needs ``depths`` and the log scale.
    """

    # Class defaults: a model pickled before signed worths existed floors, as it ran.
    signed = False
    sign_harm = False  # ... and before harmful arms were signed, with every worth positive
    harm_prior = "helps"  # ... and one pickled before the pooled harm prior, with the prior it ran
    scale = "log"  # ... and before the mean scale, on the log scale
    harm_kappa: float | None = None
    _signs: list[tuple[int, int, bool]] | tuple = ()
    _arm_sds: tuple[float, ...] | None = None  # ... and one pickled before the spread was learnt keeps its own
    arm_sd_fit: np.ndarray | None = None
    monotone = False  # ... and before the order, unordered
    monotone_draws = True  # ... and before the choice, with its draws ordered
    point_null = 0.0  # ... and before the prior's worths were a hypothesis of their own, without it
    _null_prob = 0.0
    _noise_var: float | None = None  # noise_var's cache (cleared by observe)
    _above: np.ndarray | None = None
    _full: np.ndarray | None = None
    _order: np.ndarray | None = None

    def __init__(self, keep_probs: Sequence[np.ndarray], depths: Sequence[float] | None = (-2.0, -1.0, 0.0, 1.0, 2.0, 3.0),
                 discount: float = 0.9, window: int | None = None, arm_sd: float | None = None, beta_sd: float = 2.0,
                 noise: float = 0.25, noise_weight: float = 2.0, prior_beta: float = PRIOR_BETA,
                 signed: bool = False, harm_prior: str = "pooled", scale: str = "log", monotone: bool | str = False,
                 monotone_draws: bool = True, sign_harm: bool = False, point_null: float = 0.0) -> None:
        from fedsim.core.plan import depth_weighted_keep

        if not 0.0 < discount <= 1.0:
            raise ValueError(f"discount must be in (0, 1], got {discount}")
        if window is not None and window < 1:
            raise ValueError(f"window must be >= 1 evaluations, got {window}")
        if scale not in ("log", "mean"):
            raise ValueError(f"scale must be 'log' or 'mean', got {scale!r}")
        if not (isinstance(monotone, (bool, np.bool_)) or monotone == "noisy"):
            raise ValueError(f"monotone must be true, false or 'noisy', got {monotone!r}")
        self.scale = scale
        self.num_arms = len(keep_probs)
        self.discount = float(discount)
        self.window = window
        self.flat = depths is None
        gammas = [0.0] if depths is None else list(depths)
        self.log_keep = np.log(np.maximum(np.array([[depth_weighted_keep(k, g) for k in keep_probs] for g in gammas]), 1e-6))
        if arm_sd is not None and not arm_sd > 0:
            raise ValueError(f"arm_sd must be > 0 (or None: learnt), got {arm_sd}")
        if harm_prior not in ("pooled", "helps"):
            raise ValueError(f"harm_prior must be 'pooled' or 'helps', got {harm_prior!r}")
        if scale == "mean":
            # Coefficients [c, d, delta_1..A]: theta_a = c * w_a + d * w_a log w_a + delta_a, with
            # w_a = keep_gamma(a) ** prior_beta the prior's curve; c ~ N(1, noise) (a full update's
            # gain is about its round's median), d ~ N(0, noise) tilts the curve (w log w is the
            # first-order change of keep ** beta with beta: d > 0, dropout costs more than the prior
            # says, and heavy arms may come out worth less than nothing). A gain's noise over its
            # round's median is guessed at 1.
            noise = 1.0
            self.curve = np.exp((0.0 if self.flat else prior_beta) * self.log_keep)  # (G, A)
            self.tilt = self.curve * np.log(self.curve)
            self.m0 = np.zeros(2 + self.num_arms)
            self.m0[0] = 1.0
            v0 = np.full(self.m0.size, 1.0 / noise)  # c and d: sd 1 at the guessed noise; arms: _prior_inv
        else:
            # Coefficients [alpha, trend, beta, delta_1..A] (flat: no beta); prior N(m0, s2 * V0).
            k = 2 + (0 if self.flat else 1) + self.num_arms
            self.m0 = np.zeros(k)
            v0 = np.full(k, 1.0 / noise)  # the arms' entries: see _prior_inv
            v0[0], v0[1] = 100.0 / noise, 1.0 / noise
            if not self.flat:
                self.m0[2] = prior_beta
                v0[2] = beta_sd**2 / noise
        self.V0_inv = np.diag(1.0 / v0)
        if not 0.0 <= point_null < 1.0:
            raise ValueError(f"point_null must be in [0, 1), got {point_null}")
        if point_null > 0 and (self.flat or scale != "log"):
            raise ValueError("point_null needs the prior's curve (depths) on the log scale")
        self.point_null = float(point_null)
        self._null_prob = self.point_null
        # The prior's worths, what learning off plans with: keep_gamma ** prior_beta, averaged over gamma.
        self._null_worth = np.exp(prior_beta * self.log_keep).mean(axis=0)
        self._arm_sds = ARM_SDS if arm_sd is None else (float(arm_sd),)
        self.arm_sd_fit = None  # per arm, once fitted
        self.a0 = 1.0 + noise_weight / 2.0
        self.b0 = noise * (self.a0 - 1.0)
        self._rows: list[tuple[int, np.ndarray, float]] = []  # (evaluation, arm shares, log gain or scaled gain)
        self.signed = bool(signed) and scale == "log"
        self.sign_harm = bool(sign_harm) and scale == "log" and not self.signed
        self.harm_prior = harm_prior
        self._signs = []  # signed: (evaluation, arm, harmed) of every finite gain
        self.evaluations = 0
        self._fit: tuple | None = None
        self.monotone = "noisy" if isinstance(monotone, str) else bool(monotone)
        self.monotone_draws = bool(monotone_draws)
        keep = np.array([np.asarray(k, dtype=float) for k in keep_probs])
        # _above[a, b]: arm b runs every layer at least as often as arm a, and one more often;
        # _full[b]: arm b runs every layer (it caps the estimates, not the draws: ordered).
        self._above = np.all(keep[None, :, :] >= keep[:, None, :], axis=2) & np.any(keep[None] > keep[:, None], axis=2)
        self._full = np.all(keep >= 1.0, axis=1)
        self._order = np.argsort(-keep.sum(axis=1), kind="stable")

    # -- data --------------------------------------------------------------------------
    def observe(self, arms: np.ndarray, gains: np.ndarray) -> None:
        """One evaluation's updates: arm and measured gain of each.

        A gain's size enters the log model at no less than a tenth of the round's median
        size, so a tiny one pulls its arm down without an unbounded log. Signed: the
        size is ``|gain|`` and the sign goes to the arm's harm share (a gain of zero
        counts as not helping). Else (the default) a gain at or below zero is counted at
        that floor, and a round with no positive gain says nothing.
        """
        arms = np.asarray(arms, dtype=np.int64)
        gains = np.asarray(gains, dtype=float)
        ok = np.isfinite(gains)
        arms, gains = arms[ok], gains[ok]
        self.evaluations += 1
        self._fit = None
        self._noise_var = None
        eye = np.eye(self.num_arms)
        if self.scale == "mean":
            size = float(np.median(np.abs(gains))) if gains.size else 0.0
            if size > 0:  # signed gains over the round's median size: the phase of training divided out
                self._rows.extend((self.evaluations, eye[a], float(g / size)) for a, g in zip(arms, gains))
            self._forget()
            return
        if self.signed or self.sign_harm:
            self._signs.extend((self.evaluations, int(a), bool(g <= 0)) for a, g in zip(arms, gains))
        size = np.abs(gains) if self.signed else gains  # floored: a gain <= 0 counts at the floor
        if (size > 0).any():
            z = np.log(np.maximum(size, 0.1 * float(np.median(size[size > 0]))))
            self._rows.extend((self.evaluations, eye[a], float(zi)) for a, zi in zip(arms, z))
        self._forget()

    def _forget(self) -> None:
        """Drop the observations outside the window or weighing less than 1e-6."""
        oldest = self.evaluations - (self.window or 10**9)
        if self.discount < 1.0:
            oldest = max(oldest, self.evaluations - int(np.ceil(np.log(1e-6) / np.log(self.discount))))
        self._rows = [r for r in self._rows if r[0] > oldest]
        if self.signed or self.sign_harm:
            self._signs = [r for r in self._signs if r[0] > oldest]

    def harm_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """``(harmed, helped)`` per arm: discounted counts of gains at or below zero and above."""
        harmed, helped = np.zeros(self.num_arms), np.zeros(self.num_arms)
        for e, a, bad in self._signs:
            (harmed if bad else helped)[a] += self.discount ** (self.evaluations - e)
        return harmed, helped

    def harm_posterior(self) -> tuple[np.ndarray, np.ndarray]:
        """``(a, b)``: each arm's ``Beta(a, b)`` posterior of its harm share.

        ``harm_prior="helps"``: every arm's prior is ``Beta(0, 1)``, an update helps until
        one of the arm's is seen not to. ``"pooled"``: an arm's prior is the fleet-wide
        harm share ``m`` (the ``helps`` posterior of all arms' gains pooled) with the
        strength ``kappa`` (pseudo-updates) of :data:`HARM_KAPPAS` under which the arms'
        counts are likeliest (beta-binomial evidence; :attr:`harm_kappa`): where every arm
        harms about as often, which is what an update's client decides and not its arm,
        the arms keep to the shared share, and an arm not yet run is expected to harm as
        often as the rest, not never. Before any gain at or below zero both are a point
        mass at no harm.
        """
        harmed, helped = self.harm_counts()
        H, P = float(harmed.sum()), float(helped.sum())
        if self.harm_prior == "helps" or H <= 0:
            return harmed, HELP_PRIOR + helped
        m = H / (H + P + HELP_PRIOR)
        seen = (harmed + helped) > 0

        def evidence(kappa: float) -> float:
            a0, b0 = kappa * m, kappa * (1.0 - m)
            return float(np.sum(betaln(a0 + harmed[seen], b0 + helped[seen]) - betaln(a0, b0)))

        kappa = max(HARM_KAPPAS, key=evidence)  # ties: the weakest
        self.harm_kappa = kappa
        return kappa * m + harmed, kappa * (1.0 - m) + helped

    def harm_factor(self, rng: np.random.Generator | None = None, size: int = 1) -> np.ndarray:
        """``(size, A)`` signed worth over size, ``1 - 2 h_a``: with ``rng``, ``h_a`` drawn from
        its posterior; without, its posterior mean. 1 for an arm whose harm share is 0
        for sure (no harm seen: every arm with the pooled prior, the arm with ``helps``).
        ``sign_harm`` (floored sizes): the sign alone, -1 for an arm whose posterior mean
        harm share is above one half (its updates make the round worse more often than
        better), 1 for the others; drawn or not, so a plan's exploration is over sizes.
        Where every arm's is above one half nothing is signed: a leave-one-out gain is
        relative to the round's other updates (in a round of like updates about half are
        below the average), so harm that every arm shows is the clients', not the arms'."""
        out = np.ones((size, self.num_arms))
        if self.sign_harm:
            a, b = self.harm_posterior()
            harms = (a > 0) & (a > b)
            if not harms.all():
                out[:, harms] = -1.0
            return out
        if not self.signed:
            return out
        a, b = self.harm_posterior()
        for k in np.flatnonzero(a > 0):
            h = a[k] / (a[k] + b[k]) if rng is None else rng.beta(a[k], b[k], size=size)
            out[:, k] = 1.0 - 2.0 * h
        return out

    @property
    def evidence(self) -> float:
        """Discounted number of evaluations with observations."""
        t = sorted({r[0] for r in self._rows})
        return float(sum(self.discount ** (self.evaluations - e) for e in t))

    def _design(self, g: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        t = np.array([r[0] for r in self._rows], dtype=float)
        X = np.array([r[1] for r in self._rows]).reshape(len(self._rows), self.num_arms)
        z = np.array([r[2] for r in self._rows])
        w = self.discount ** (self.evaluations - t)
        if self.scale == "mean":
            F = np.column_stack([X @ self.curve[g], X @ self.tilt[g], X]) if len(t) else np.zeros((0, len(self.m0)))
            return F, z, w
        cols = [np.ones(len(t)), (t - self.evaluations) / _TREND_UNIT]
        if not self.flat:
            cols.append(X @ self.log_keep[g])
        F = np.column_stack(cols + [X]) if len(t) else np.zeros((0, len(self.m0)))
        return F, z, w

    def fit(self) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
        """``(weight per gamma, [(mean, cov, noise) of the coefficients per gamma])``.

        With the arms' spreads learnt (``arm_sd=None``), the prior sd of each arm's
        correction is the one of ``ARM_SDS`` under which the gains seen are likeliest,
        the ``gamma`` averaged out (empirical Bayes, by coordinate ascent from ``ARM_SD``
        for every arm; :attr:`arm_sd_fit`): an arm strays from the curve only as far as
        its gains show beyond what the noise would make of them, and one not yet seen
        keeps the prior's spread (so it is still worth exploring).
        """
        if self._fit is not None:
            return self._fit
        stats = []
        for g in range(self.log_keep.shape[0]):
            F, z, w = self._design(g)
            stats.append(((F * w[:, None]).T @ F, (F * w[:, None]).T @ z, float(w @ z**2), float(w.sum())))
        if self._arm_sds is None:  # pickled before the spreads were learnt
            self._fit = self._posterior(stats, self.V0_inv)[1]
            return self._fit
        grid = self._arm_sds
        sds = np.full(self.num_arms, ARM_SD if len(grid) > 1 else grid[0])
        total, fit = self._posterior(stats, self._prior_inv(sds))
        if len(grid) > 1 and stats[0][3] > 0:  # no gains yet: every spread is as likely
            for _ in range(2):
                for a in range(self.num_arms):
                    for sd in grid:
                        if sd == sds[a]:
                            continue
                        trial = sds.copy()
                        trial[a] = sd
                        t_total, t_fit = self._posterior(stats, self._prior_inv(trial))
                        if t_total > total + 1e-9:
                            total, fit, sds = t_total, t_fit, trial
        self.arm_sd_fit = sds
        self._fit = fit
        if self.point_null > 0:
            self._null_prob = self._null_posterior(total - np.log(len(stats)))
        return self._fit

    def _null_posterior(self, learnt: float) -> float:
        """Posterior probability that the prior's worths are exact (``point_null``).

        The hypothesis: ``log gain = alpha + trend * ... + log w0(a) + noise``, ``w0`` the
        prior's worths (what learning off plans with), only the phase learnt; against it
        the model above, whose log evidence (``learnt``, its spreads at their likeliest,
        ``gamma`` averaged) is given. Both use the same conjugate prior of the phase and
        the noise, so their evidences compare: more coefficients fit the gains better and
        are charged for it (Occam's factor), and gains that say little leave the
        hypothesis standing where one round's swing would move the free model."""
        if not self._rows:
            return self.point_null
        design, z, w = self._design(0)  # [phase (2 columns), curve, arms]: the phase's and the arms' are read
        F = design[:, :2]
        z = z - design[:, -self.num_arms:] @ np.log(self._null_worth)
        V0_inv, m0 = self.V0_inv[:2, :2], self.m0[:2]
        prec = V0_inv + (F * w[:, None]).T @ F
        mn = np.linalg.solve(prec, V0_inv @ m0 + (F * w[:, None]).T @ z)
        an = self.a0 + 0.5 * float(w.sum())
        bn = self.b0 + 0.5 * max(float(w @ z**2 + m0 @ V0_inv @ m0 - mn @ prec @ mn), 0.0)
        null = -0.5 * np.linalg.slogdet(prec)[1] - an * np.log(bn) + 0.5 * np.log(np.diag(V0_inv)).sum()
        odds = np.log(self.point_null / (1.0 - self.point_null)) + null - learnt
        return float(1.0 / (1.0 + np.exp(-odds))) if odds > -700 else 0.0

    def null_prob(self) -> float:
        """Posterior probability that the prior's worths are exact (0 without ``point_null``)."""
        if self.point_null <= 0:
            return 0.0
        self.fit()
        return self._null_prob

    def _posterior(self, stats: list, V0_inv: np.ndarray) -> tuple[float, tuple]:
        """``(log evidence, (weight per gamma, posts))`` under the prior precision ``V0_inv``."""
        logev, posts = [], []
        for FtWF, FtWz, zWz, n in stats:
            prec = V0_inv + FtWF
            Vn = np.linalg.inv(prec)
            mn = Vn @ (V0_inv @ self.m0 + FtWz)
            an = self.a0 + 0.5 * n
            bn = self.b0 + 0.5 * max(float(zWz + self.m0 @ V0_inv @ self.m0 - mn @ prec @ mn), 0.0)
            logev.append(0.5 * np.linalg.slogdet(Vn)[1] - an * np.log(bn))
            posts.append((mn, Vn * bn / an, bn / an))
        logev = np.array(logev)
        p = np.exp(logev - logev.max())
        # The prior's own determinant differs between spreads (not between gammas).
        total = float(logev.max() + np.log(p.sum()) + 0.5 * np.log(np.diag(V0_inv)).sum())
        return total, (p / p.sum(), posts)

    def _prior_inv(self, arm_sd: np.ndarray) -> np.ndarray:
        """The coefficients' prior precision (over the noise variance) with arm ``a``'s
        correction of sd ``arm_sd[a]`` (at the prior's guess of the noise)."""
        d = np.diag(self.V0_inv).copy()
        d[-self.num_arms:] = (self.b0 / (self.a0 - 1.0)) / np.asarray(arm_sd, dtype=float) ** 2
        return np.diag(d)

    def _arm_features(self, g: int) -> np.ndarray:
        """``(A, k)``: coefficients -> ``log theta`` of every arm (``mean`` scale: ``theta``)."""
        eye = np.eye(self.num_arms)
        if self.scale == "mean":
            return np.hstack([self.curve[g][:, None], self.tilt[g][:, None], eye])
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
        learnt = self.ordered(p @ self._to_worth(mean) * self.harm_factor()[0], estimate=True)
        if self.point_null <= 0:
            return learnt
        null = self.null_prob()
        return null * self._null_worth + (1.0 - null) * learnt

    def ordered(self, worth: np.ndarray, estimate: bool = False) -> np.ndarray:
        """``worth`` (``(..., A)``) with, if ``monotone``, each arm capped at the worth of
        every arm that runs each of its layers at least as often (and one more often):
        dropping a layer more may cost nothing, but is never taken to help. Estimates that
        break the order (in real training at Dirichlet 0.1 the gains' sizes rated heavily
        dropped arms above lighter ones: docs/droppeft.md) are lowered, never raised.

        ``estimate``: ``worth`` is a point estimate (the posterior median, now or after a
        look-ahead), which the arm that runs every layer caps too. A posterior *draw* is
        ordered among the dropped arms only: the full arm's draw carries the widest
        uncertainty of all (its correction is what separates the round's level from the
        arms; one round of a single other arm can double its median), and capping every
        arm at it would cut off the draws that explore the dropped arms. Without
        ``monotone_draws`` a draw is returned as it is (the ablation of form 4 in the docs)."""
        if self._above is None or not self._above.any() or not (estimate or self.monotone_draws) or not self.order_on():
            return worth
        above_of = self._above if estimate or self._full is None else self._above & ~self._full[None, :]
        out = np.array(worth, dtype=float, copy=True)
        for a in self._order:  # an arm's dominators run more layers in all: capped before it
            above = np.flatnonzero(above_of[a])
            if above.size:
                out[..., a] = np.minimum(out[..., a], out[..., above].min(axis=-1))
        return out

    def noise_var(self) -> float:
        """The gains' noise variance within a round (on the model's scale): the spread of
        the gains of updates that ran the same arm in the same evaluation about their mean,
        pooled over such groups, each weighted as its evaluation is (``discount``), with the
        noise prior's guess counted as ``noise_weight`` observations. Unlike the model's
        residual variance, a change of the arms' worths during training or a misfit of the
        curve does not enter it: it measures how much one gain says, nothing else."""
        if self._noise_var is not None:  # cached until the next observation
            return self._noise_var
        prior_var, prior_n = self.b0 / max(self.a0 - 1.0, 1e-9), 2.0 * (self.a0 - 1.0)
        groups: dict[tuple[int, int], list[float]] = {}
        for t, x, z in self._rows:
            groups.setdefault((t, int(np.argmax(x))), []).append(z)
        ss, dof = prior_var * prior_n, prior_n
        for (t, _), zs in groups.items():
            if len(zs) > 1:
                w = self.discount ** (self.evaluations - t)
                ss += w * float(np.sum((np.asarray(zs) - np.mean(zs)) ** 2))
                dof += w * (len(zs) - 1)
        self._noise_var = ss / dof
        return self._noise_var

    def order_on(self) -> bool:
        """Whether :meth:`ordered` orders now: always with ``monotone`` true, never with
        false; with ``"noisy"`` while :meth:`noise_var` is at least ``NOISY_VAR``. The cap
        guards against a winner's curse: where one gain says little, the arms drawn or
        estimated above their lighter neighbours are mostly noise, and the cheaper heavy
        arm would take the plan on it; where gains are precise they rank the arms
        themselves, and a heavier arm that helps (dropout as a regulariser) can be found."""
        if self.monotone == "noisy":
            return self.noise_var() >= NOISY_VAR
        return bool(self.monotone)

    def _to_worth(self, x: np.ndarray) -> np.ndarray:
        """What the coefficients' image says of the worth: ``exp`` of ``log theta``, or
        ``theta`` itself on the ``mean`` scale."""
        return x if self.scale == "mean" else np.exp(x)

    def future_design(self, g: int, arms: np.ndarray, ahead: int = 1) -> np.ndarray:
        """``(q, k)`` design rows of updates with ``arms`` observed ``ahead`` evaluations from now."""
        F = self._arm_features(g)[np.asarray(arms, dtype=np.int64)].copy()
        if self.scale == "log":
            F[:, 0] = 1.0  # the phase ...
            F[:, 1] = ahead / _TREND_UNIT  # ... that many evaluations on
        return F

    def sample_coefficients(self, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(gamma index (size,), coefficients (size, k))``: joint posterior draws."""
        p, posts = self.fit()
        gs = rng.choice(len(p), size=size, p=p)
        coefs = np.empty((size, len(self.m0)))
        for i, g in enumerate(gs):
            mn, cov, _ = posts[g]
            coefs[i] = rng.multivariate_normal(mn, cov, method="cholesky")
        return gs, coefs

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        """``(size, A)`` joint draws of every arm's worth (a ``gamma``, then coefficients)."""
        gs, coefs = self.sample_coefficients(rng, size)
        out = np.empty((size, self.num_arms))
        for i, (g, coef) in enumerate(zip(gs, coefs)):
            out[i] = self._to_worth(self._arm_features(g) @ coef)
        return self.ordered(out * self.harm_factor(rng, size))

    def lookahead_worth(self, arms: np.ndarray, gs: np.ndarray, coefs: np.ndarray,
                        noise: np.ndarray) -> np.ndarray:
        """``(W, A)``: the posterior median worth after one more evaluation in which updates
        with ``arms`` report their gains, in each of ``W`` worlds.

        World ``w`` is a posterior draw (``gs[w]``, ``coefs[w]``); its gains are what the
        model says they would be there, plus ``noise[w]`` (standard normal, one per update)
        times the noise sd. Every ``gamma``'s posterior is updated by the Gaussian
        (Kalman) step and its weight by the predictive likelihood of those gains; the
        discount of older evaluations is left out (one step ahead), and the harm shares
        are held at their posterior means.
        """
        p, posts = self.fit()
        arms = np.asarray(arms, dtype=np.int64)
        q = arms.size
        W = len(gs)
        feats = [self._arm_features(g) for g in range(len(p))]
        design = [self.future_design(g, arms) for g in range(len(p))]
        # Gains in each world.
        z = np.empty((W, q))
        for w in range(W):
            g = int(gs[w])
            z[w] = design[g] @ coefs[w] + np.sqrt(posts[g][2]) * noise[w, :q]
        logw = np.tile(np.log(np.maximum(p, 1e-300)), (W, 1))
        log_theta = np.empty((len(p), W, self.num_arms))
        for g, (mn, cov, s2) in enumerate(posts):
            F = design[g]
            S = F @ cov @ F.T + s2 * np.eye(q)
            L = np.linalg.cholesky(S)
            resid = z - F @ mn  # (W, q)
            sol = np.linalg.solve(L, resid.T)  # L^-1 r
            logw[:, g] += -0.5 * (sol**2).sum(axis=0) - np.log(np.diag(L)).sum()
            K = cov @ F.T @ np.linalg.inv(S)  # (k, q)
            new_mean = mn[None, :] + resid @ K.T  # (W, k)
            log_theta[g] = new_mean @ feats[g].T
        logw -= logw.max(axis=1, keepdims=True)
        wts = np.exp(logw)
        wts /= wts.sum(axis=1, keepdims=True)
        return self.ordered(np.einsum("wg,gwa->wa", wts, self._to_worth(log_theta)) * self.harm_factor(), estimate=True)


class RoundReturns:
    """How a synchronous round's progress grows with the updates it aggregates, learnt
    from the run: the elasticity ``eps`` of a round's progress ``P(k)`` in its number of
    updates ``k`` near its quota, ``P(k) ~ k ** eps`` (1: every update adds as much as the
    others; 0: the round's first updates already make its progress).

    Observed each round from the gains the configurator already measures: with ``k``
    updates, each one's leave-one-out gain is ``P(k) - P(k - 1)`` (for its own share),
    so their sum over the round's gain ``P(k)`` (the loss drop of the whole aggregate on
    the same examples) is ``k (P(k) - P(k - 1)) / P(k)``, the elasticity. Rounds are
    pooled as a ratio of discounted sums (a round that gained more says more; weight
    ``discount ** age``) over rounds whose aggregate lowered the loss, with ``prior`` as
    one pseudo-round of the mean gain seen, and the estimate is kept in ``[0, 1]``. With
    ``learning=False`` it stays at ``prior``.
    """

    def __init__(self, prior: float = 0.5, discount: float = 0.9, learning: bool = True) -> None:
        if not 0.0 <= prior <= 1.0:
            raise ValueError(f"prior elasticity must be in [0, 1], got {prior}")
        self.prior, self.discount, self.learning = float(prior), float(discount), bool(learning)
        self._loo = self._gain = self._rounds = 0.0

    def observe(self, loo_gains: np.ndarray, round_gain: float) -> None:
        """One round: its updates' leave-one-out gains and its aggregate's gain."""
        g = np.asarray(loo_gains, dtype=float)
        g = g[np.isfinite(g)]
        if not self.learning or g.size < 2 or not np.isfinite(round_gain) or round_gain <= 0:
            return
        d = self.discount
        self._loo = d * self._loo + float(g.sum())
        self._gain = d * self._gain + float(round_gain)
        self._rounds = d * self._rounds + 1.0

    @property
    def elasticity(self) -> float:
        if self._rounds <= 0:
            return self.prior
        mean_gain = self._gain / self._rounds
        eps = (self.prior * mean_gain + self._loo) / (mean_gain + self._gain)
        return float(min(max(eps, 0.0), 1.0))


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


@dataclass(frozen=True)
class ArrivalDraws:
    """``M`` joint draws of how a round's ``n`` clients fare, for the planner to weigh a
    plan by when its updates really arrive rather than by the cost model's times alone.

    A client's time with an arm is the cost model's ``times`` (download, compute, upload)
    with its compute stretched by ``stretch`` (1 unless it straggles in that draw). It
    drops out, in a draw where ``drop_at`` is below 1, after that share of its time, and
    never arrives; so does one whose arm does not fit its memory (``fits``), and one that
    would arrive after ``deadline_s``. Draws are shared by every plan the planner
    compares in a round (common random numbers), so plans differ by their arms, not by
    their luck.

    Attributes:
        stretch: ``(M, n)`` factor on each client's compute time, >= 1.
        drop_at: ``(M, n)`` share of its time after which the client drops out; ``inf``
            where it does not.
        compute: ``(n, A)`` compute seconds of every arm (the part ``stretch`` scales).
        fits: ``(n, A)`` whether the arm fits the client's memory.
        deadline_s: when the server closes the round whatever has arrived (``None``: never).
    """

    stretch: np.ndarray
    drop_at: np.ndarray
    compute: np.ndarray
    fits: np.ndarray
    deadline_s: float | None = None

    def rows(self, rows: np.ndarray) -> ArrivalDraws:
        """The draws of clients ``rows`` only."""
        return ArrivalDraws(self.stretch[:, rows], self.drop_at[:, rows], self.compute[rows], self.fits[rows],
                            self.deadline_s)

    def closing(self, times: np.ndarray, arms: np.ndarray, utility: np.ndarray, quota: int,
                returns: float | None, min_quota: int, schedule: Schedule | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Expected progress and length of rounds planned as ``arms`` closed at each count.

        Args:
            times: ``(n, A)`` the cost model's client times.
            arms: ``(C, n)`` candidate plans (``-1``: the client is left out).
            utility: ``(C, n)`` what each client's update adds with its arm.
            quota: the most updates a round waits for.
            returns: the elasticity of progress in the number of updates
                (:class:`RoundReturns`); ``None``: the round waits for its quota, and
                its progress is the mean utility of what arrived.
            min_quota: the fewest updates a round may close at (with ``returns``).
            schedule: :meth:`schedule` of these rounds (computed here if not given).

        Returns:
            ``(progress, length)``, each ``(C, K)``: for the round closed at its ``k``-th
            update, ``k`` from ``min_quota`` (``quota`` without ``returns``) to ``quota``,
            the mean over the draws of its progress (the mean utility of its first ``k``
            updates times ``(k / quota) ** returns``; of what arrived where fewer did,
            the round then closing when the last client is done or at the deadline) and
            of its length.
        """
        if schedule is None:
            schedule = self.schedule(times, arms, quota, returns, min_quota)
        return schedule.progress(utility), schedule.length

    def schedule(self, times: np.ndarray, arms: np.ndarray, quota: int, returns: float | None,
                 min_quota: int) -> Schedule:
        """What :meth:`closing` weighs rounds planned as ``arms`` ``(C, n)`` by, other than
        their utilities: in every draw, which clients arrive in what order and when, and
        so how many updates the round closed at each count holds and how long it lasts."""
        arms = np.asarray(arms, dtype=np.int64)
        n = arms.shape[1]
        run = arms >= 0
        q = min(max(int(quota), 1), max(int(run.sum(axis=1).max()), 1))
        a = np.maximum(arms, 0)
        r = np.arange(n)[None]
        total, comp = np.asarray(times, dtype=float)[r, a], self.compute[r, a]  # (C, n)
        t = total[:, None] + comp[:, None] * (self.stretch[None] - 1.0)  # (C, M, n)
        drops = self.drop_at[None] < 1.0
        gone = (~run | ~self.fits[r, a])[:, None]
        ok = ~drops & ~gone
        if self.deadline_s is not None:
            ok &= t <= self.deadline_s
        # When each client is done, arrived or not (one gone at once is done at 0).
        done = np.where(gone, 0.0, np.where(drops, np.minimum(self.drop_at[None], 1.0) * t, t))
        last = done.max(axis=2)
        if self.deadline_s is not None:
            last = np.minimum(last, self.deadline_s)
        arrive = np.where(ok, t, np.inf)
        order = np.argsort(arrive, axis=2, kind="stable")[:, :, :q]
        first_t = np.take_along_axis(arrive, order, axis=2)  # (C, M, q)
        arrived = ok.sum(axis=2)  # (C, M)
        k0 = min(max(int(min_quota), 1), q) if returns is not None else q
        ks = np.arange(k0, q + 1)
        got = np.minimum(ks[None, None], arrived[..., None])  # (C, M, K) updates the round holds
        scale = (got / q) ** float(returns) if returns is not None else np.ones(got.shape)
        on_time = arrived[..., None] >= ks[None, None]
        length = np.where(on_time, first_t[:, :, ks - 1], last[..., None])
        return Schedule(order, got, scale, np.maximum(length.mean(axis=1), 1e-9), n)


@dataclass(frozen=True)
class Schedule:
    """Rounds' arrivals over the draws, whatever their updates are worth
    (:meth:`ArrivalDraws.schedule`).

    Attributes:
        order: ``(C, M, q)`` the clients of the first ``q`` arrivals, in order (past
            the arrivals, clients whose utilities are never read).
        got: ``(C, M, K)`` updates the round closed at each count holds.
        scale: ``(C, M, K)`` ``(got / q) ** returns`` (1 without returns).
        length: ``(C, K)`` the round's mean length.
        n: clients a round plans for.
    """

    order: np.ndarray
    got: np.ndarray
    scale: np.ndarray
    length: np.ndarray
    n: int

    @cached_property
    def _flat(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Flat indices, so that progress() gathers with np.take: the utility of each
        arrival and the running sum each closing holds; which closings hold any update,
        and their counts (at least 1). Computed on first use: the one-round schedules the
        planner keeps are only stacked."""
        C, M, q = self.order.shape
        return (self.order + self.n * np.arange(C)[:, None, None],
                np.maximum(self.got - 1, 0) + q * np.arange(C * M).reshape(C, M, 1), self.got > 0,
                np.maximum(self.got, 1))

    def progress(self, utility: np.ndarray) -> np.ndarray:
        """``(C, K)`` mean progress over the draws with ``utility`` ``(C, n)``."""
        take_u, take_held, some, count = self._flat
        # Utilities in order of arrival; those past the arrivals are never read (held).
        cum = np.cumsum(np.take(np.asarray(utility, dtype=float), take_u), axis=2)
        held = np.take(cum, take_held)
        return np.where(some, held / count * self.scale, 0.0).mean(axis=1)

    @property
    def nbytes(self) -> int:
        """Bytes of its arrays, the flat indices counted whether made yet or not."""
        return 2 * sum(x.nbytes for x in (self.order, self.got, self.scale)) + self.length.nbytes

    def row(self, i: int) -> Schedule:
        """The schedule of round ``i`` alone."""
        return Schedule(self.order[i:i + 1], self.got[i:i + 1], self.scale[i:i + 1], self.length[i:i + 1], self.n)

    @staticmethod
    def stack(parts: Sequence[Schedule]) -> Schedule:
        """The schedules of one-round ``parts`` as one of their rounds."""
        return Schedule(*(np.concatenate(x) for x in zip(*((p.order, p.got, p.scale, p.length) for p in parts))),
                        parts[0].n)


class Assignment(tuple):
    """A planned round, ``(arms, length_s)`` as the planners return it, and
    ``closes_at``: the updates it waits for where the planner chose them from
    :class:`ArrivalDraws` (``None``: the round waits for the clients predicted to arrive
    by ``length_s``, :func:`planned_quota`)."""

    closes_at: int | None

    def __new__(cls, arms: np.ndarray, length_s: float, closes_at: int | None = None) -> Assignment:
        self = super().__new__(cls, (arms, length_s))
        self.closes_at = closes_at
        return self


def paced_assignment(utility: np.ndarray, times: np.ndarray, feasible: np.ndarray, quota: int,
                     fallback: np.ndarray, max_candidates: int = 64, leave_out: str = "none",
                     returns: float | None = None, min_quota: int = 1,
                     draws: ArrivalDraws | None = None) -> Assignment:
    """Arms for one synchronous round that maximise predicted progress per second.

    A round lasts until its ``quota``-th update arrives, so its time is the
    ``quota``-th smallest client time, and a fast client can afford a heavier arm
    without delaying it. For each candidate round length ``T`` (quantiles of the
    feasible predicted times), every client takes the feasible arm of largest utility
    whose predicted time fits ``T`` (if none does, the arm of largest utility among its
    feasible arms within ``FASTEST_TOLERANCE`` of its fastest), unless that arm's utility
    is at or below zero (it would harm the round) and another feasible arm's is above:
    then it runs the best of those, and arrives later; the round's value is the mean
    utility of its ``quota`` fastest clients over their ``quota``-th time (where that
    mean is not positive, :func:`round_pace`: the shorter round and the smaller loss win).
    The best candidate wins (ties: the shorter round).

    ``leave_out``: ``"infeasible"``, a client with no feasible arm is left out of the
    round (arm ``-1``) instead of running its ``fallback`` (it would fail or miss the
    deadline); ``"harmful"``, so is one every feasible arm of which has a utility at or
    below zero (its update is expected to make the round's aggregate worse), unless no
    client has an arm that helps; ``"none"``: every client runs. The round then waits for
    at most as many updates as clients run. Where no client has a feasible arm, every
    one runs its ``fallback``.

    ``returns`` (``None``: the round always waits for its quota): the round may close
    at its ``k``-th update for any ``k`` from ``min_quota`` to ``quota``, its progress
    taken as the mean utility of its ``k`` first updates times ``(k / quota) ** returns``
    (the elasticity of a round's progress in its number of updates,
    :class:`RoundReturns`); every ``(T, k)`` is weighed and the returned length is the
    chosen round's (:func:`planned_quota` reads ``k`` back).

    ``draws`` (:class:`ArrivalDraws`): each ``(T, k)`` is weighed by its expected
    progress over its expected length across the draws of when the clients really
    arrive (stragglers, drop-outs, the deadline), not at the cost model's times; the
    returned length is the expected one and ``closes_at`` the chosen ``k``.

    Args:
        utility: ``(n, A)`` (or ``(A,)`` for every client) what an update with each arm
            adds to the round's progress.
        times: ``(n, A)`` predicted client time of every arm.
        feasible: ``(n, A)`` arms the client may get (memory, deadline).
        quota: updates the round waits for.
        fallback: ``(n,)`` arm of clients with no feasible arm.

    Returns:
        ``(arms, T)``: an arm per client (``-1``: left out) and the round's predicted length.
    """
    return RoundPlanner(times, feasible, quota, fallback, max_candidates, leave_out, returns, min_quota,
                        draws).assign(utility)


class RoundPlanner:
    """:func:`paced_assignment` and :func:`plan_value` for one round, asked many times.

    The policies plan one round under many worths (the posterior median, Thompson
    draws, the worlds of the knowledge gradient's look-ahead). What does not depend on
    the worths is computed once here: the candidate lengths and which arms fit them,
    and, with ``draws``, when each plan's updates arrive in every draw (kept per plan,
    as the same plans come back under different worths). The results are those of the
    functions, to the bit.
    """

    def __init__(self, times: np.ndarray, feasible: np.ndarray, quota: int, fallback: np.ndarray,
                 max_candidates: int = 64, leave_out: str = "none", returns: float | None = None,
                 min_quota: int = 1, draws: ArrivalDraws | None = None) -> None:
        if leave_out not in ("none", "infeasible", "harmful"):
            raise ValueError(f"leave_out must be 'none', 'infeasible' or 'harmful', got {leave_out!r}")
        self.times = np.asarray(times, dtype=float)
        self.feasible = np.broadcast_to(np.asarray(feasible, dtype=bool), self.times.shape)
        self.quota, self.fallback = int(quota), np.asarray(fallback, dtype=np.int64)
        self.max_candidates, self.leave_out = int(max_candidates), leave_out
        self.returns, self.min_quota, self.draws = returns, int(min_quota), draws
        self._rows = np.flatnonzero(self.feasible.any(axis=1))
        self._lengths: dict[bytes, tuple] = {}  # rows -> what the candidate lengths need
        self._schedules: dict[tuple, Schedule] = {}  # (rows, plan(s), q) -> ArrivalDraws.schedule
        self._kept_bytes = 0

    def assign(self, utility: np.ndarray) -> Assignment:
        """:func:`paced_assignment` of ``utility`` (``(n, A)`` or ``(A,)``)."""
        times, feasible = self.times, self.feasible
        out = self.fallback.copy()
        rows = self._rows
        if rows.size == 0:
            return Assignment(out, float("nan"))
        u_all = np.broadcast_to(np.asarray(utility, dtype=float), times.shape)
        if self.leave_out != "none":
            out[:] = -1
        if self.leave_out == "harmful":
            helpful = np.flatnonzero((feasible & (u_all > 0)).any(axis=1))
            if helpful.size:
                rows = helpful
        t, f, fits, fit_any, near, r, drawn = self._candidates(rows)
        u = u_all[rows]
        u = np.where(u > 0, np.maximum(u, 1e-3 * max(float(np.abs(u).max()), 1e-12)), u)
        # A client no arm of which fits T runs its best arm among the (near-)fastest: arms of
        # the same mean drop cost about the same, and the exact fastest would pick among them
        # by a few bytes of upload instead of by utility.
        fastest = np.argmax(np.where(near, u, -np.inf), axis=1)
        q = min(max(self.quota, 1), rows.size)
        # Every candidate T at once: (C, n, A).
        arms = np.where(fit_any, np.argmax(np.where(fits, u[None], -np.inf), axis=2), fastest[None])  # (C, n)
        # A client whose arms within T would harm the round (worth <= 0) runs its best arm
        # instead, where one helps: it arrives later, after the quota if the others make it.
        best_u = np.where(f, u, -np.inf)
        helps = best_u.max(axis=1) > 0
        arms = np.where((u[r, arms] <= 0) & helps[None], np.argmax(best_u, axis=1)[None], arms)
        if drawn is not None:
            # Candidate lengths often give the same arms: weigh each plan once (in order of
            # first appearance, so that ties go as they would without this).
            plans = _distinct_rows(arms)
            progress, length = drawn.closing(t, plans, u[r, plans], q, self.returns, self.min_quota,
                                             self._schedule_of(drawn, rows, t, plans, q))
            i, j = _pick_closing(progress, length)
            out[rows] = plans[i]
            k0 = min(max(self.min_quota, 1), q) if self.returns is not None else q
            return Assignment(out, float(length[i, j]), k0 + j)
        ct = t[r, arms]
        order = np.argsort(ct, axis=1, kind="stable")[:, :q]
        first_u = np.take_along_axis(u[r, arms], order, axis=1)
        if self.returns is not None:
            i, length = _best_closing(first_u, np.take_along_axis(ct, order, axis=1), self.returns, self.min_quota)
            out[rows] = arms[i]
            return Assignment(out, length)
        last_t = np.take_along_axis(ct, order[:, -1:], axis=1)[:, 0]
        best_val, best = -np.inf, 0
        for i in range(last_t.size):
            val = round_pace(float(first_u[i].mean()), float(last_t[i]))
            if i == 0 or val > best_val + 1e-9 * abs(best_val):
                best_val, best = val, i
        out[rows] = arms[best]
        return Assignment(out, float(last_t[best]))

    def value(self, worth: np.ndarray, arms: np.ndarray) -> float:
        """:func:`plan_value` of the plan ``arms`` under ``worth`` (``(A,)``)."""
        got = self._closings(worth, arms)
        if got is None:
            return 0.0
        progress, length, _ = got
        if self.draws is None and self.returns is None:
            return round_pace(float(progress[0, 0]), float(length[0, 0]))
        return float(_closing_values(progress, length).max())

    def close(self, worth: np.ndarray, arms: np.ndarray) -> Assignment:
        """The plan ``arms`` as a round: closed at the count of largest value under
        ``worth`` (:meth:`value`), with its length (and ``closes_at`` with draws)."""
        arms = np.asarray(arms, dtype=np.int64)
        got = self._closings(worth, arms)
        if got is None:
            return Assignment(arms, float("nan"))
        progress, length, k0 = got
        _, j = _pick_closing(progress, length)
        return Assignment(arms, float(length[0, j]), None if self.draws is None else k0 + j)

    def _closings(self, worth: np.ndarray, arms: np.ndarray) -> tuple[np.ndarray, np.ndarray, int] | None:
        """``(progress, length, k0)`` of the plan ``arms`` closed at each count from its
        ``k0``-th update on, each ``(1, K)`` (one count, its quota's, without returns);
        ``None`` where no update arrives."""
        times, quota, returns, min_quota = self.times, self.quota, self.returns, self.min_quota
        arms = np.asarray(arms, dtype=np.int64)
        if self.draws is not None:
            if not (arms >= 0).any():
                return None
            w = np.asarray(worth, dtype=float)[np.maximum(arms, 0)]
            plans = arms[None]
            progress, length = self.draws.closing(times, plans, w[None], quota, returns, min_quota,
                                                  self._schedule_of(self.draws, None, times, plans, quota))
            q = min(max(int(quota), 1), int((arms >= 0).sum()))
            return progress, length, min(max(min_quota, 1), q) if returns is not None else q
        t = arrival_times(times, arms)
        idx = np.flatnonzero(np.isfinite(t))
        if idx.size == 0:
            return None
        first = idx[np.argsort(t[idx], kind="stable")[: max(min(int(quota), idx.size), 1)]]
        w = np.asarray(worth, dtype=float)[arms[first]]
        if returns is None:
            return np.array([[w.mean()]]), np.array([[t[first].max()]]), first.size
        ks = np.arange(1, first.size + 1, dtype=float)
        k0 = min(max(int(min_quota), 1), first.size)
        progress = (np.cumsum(w) / ks * (ks / first.size) ** float(returns))[k0 - 1:]
        return progress[None], np.maximum(t[first][k0 - 1:], 1e-9)[None], k0

    def _candidates(self, rows: np.ndarray) -> tuple:
        """For the clients ``rows``: their times and feasible arms, which arms fit each
        candidate length (and whether any does), their near-fastest arms, the row index
        and their draws."""
        key = rows.tobytes()
        got = self._lengths.get(key)
        if got is None:
            t, f = self.times[rows], self.feasible[rows]
            cand = np.unique(t[f])
            if cand.size > self.max_candidates:
                cand = np.unique(np.quantile(t[f], np.linspace(0.0, 1.0, self.max_candidates)))
            t_min = np.min(np.where(f, t, np.inf), axis=1, keepdims=True)
            near = f & (t <= t_min * (1.0 + FASTEST_TOLERANCE))
            fits = f[None] & (t[None] <= cand[:, None, None])
            drawn = None if self.draws is None else self.draws.rows(rows)
            got = self._lengths[key] = (t, f, fits, fits.any(axis=2), near, np.arange(rows.size)[None], drawn)
        return got

    def _schedule_of(self, drawn: ArrivalDraws, rows: np.ndarray | None, t: np.ndarray, plans: np.ndarray,
                     q: int) -> Schedule:
        """:meth:`ArrivalDraws.schedule` of ``plans`` (each plan's computed once a round)."""
        key = None if rows is None else rows.tobytes()
        whole = (key, plans.shape, plans.tobytes(), q)
        got = self._schedules.get(whole)
        if got is None:
            keys = [(key, plan.tobytes(), q) for plan in plans]
            new = [i for i, k in enumerate(keys) if k not in self._schedules]
            fresh = drawn.schedule(t, plans[new], q, self.returns, self.min_quota) if new else None
            mine = {i: fresh.row(j) for j, i in enumerate(new)}  # the plans not weighed yet this round
            got = Schedule.stack([mine[i] if i in mine else self._schedules[k] for i, k in enumerate(keys)])
            for i, one in mine.items():
                self._keep(keys[i], one)
            self._keep(whole, got)
        return got

    def _keep(self, key: tuple, schedule: Schedule) -> None:
        """Keep ``schedule`` for the round's later calls, within ``KEEP_BYTES`` in all: past
        it, what was kept is let go, and one larger than that is not kept (a round of
        many clients weighs large plans)."""
        size = schedule.nbytes
        if size > KEEP_BYTES:
            return
        if self._kept_bytes + size > KEEP_BYTES:
            self._schedules.clear()
            self._kept_bytes = 0
        self._schedules[key] = schedule
        self._kept_bytes += size


def _distinct_rows(a: np.ndarray) -> np.ndarray:
    """The distinct rows of ``a``, in order of first appearance."""
    if len(a) > 1:  # neighbours repeat most: drop those first (first appearances stay)
        a = a[np.r_[True, (a[1:] != a[:-1]).any(axis=1)]]
    seen: dict[bytes, int] = {}
    for i, row in enumerate(a):
        seen.setdefault(row.tobytes(), i)
    return a[list(seen.values())]


def _best_closing(first_u: np.ndarray, first_t: np.ndarray, returns: float, min_quota: int) -> tuple[int, float]:
    """Of rounds ``i`` (rows: their first updates' utilities and arrival times, in order
    of arrival) each closed at its ``k``-th update, ``min_quota <= k <= q``, the one of
    largest :func:`round_pace` with progress ``mean(first k) * (k / q) ** returns``
    (ties: the shorter round, then the fewer updates). Returns ``(i, length)``."""
    q = first_u.shape[1]
    k0 = min(max(int(min_quota), 1), q)
    ks = np.arange(1, q + 1, dtype=float)
    progress = (np.cumsum(first_u, axis=1) / ks * (ks / q) ** float(returns))[:, k0 - 1:]
    length = np.maximum(first_t[:, k0 - 1:], 1e-9)
    i, j = _pick_closing(progress, length)
    return i, float(length[i, j])


def _closing_values(progress: np.ndarray, length: np.ndarray) -> np.ndarray:
    """:func:`round_pace` of every (round, closing count), elementwise."""
    return np.where(progress > 0, progress / length, progress * length)


def _pick_closing(progress: np.ndarray, length: np.ndarray) -> tuple[int, int]:
    """``(i, j)``: the round and closing count of largest :func:`round_pace` (ties: the
    shorter round, then the fewer updates)."""
    val = _closing_values(progress, length)
    top = val.max()
    ok = val >= top - 1e-9 * abs(top)
    cand = np.flatnonzero(ok.ravel())
    pick = cand[np.lexsort((cand % val.shape[1], length.ravel()[cand]))[0]]
    i, j = divmod(int(pick), val.shape[1])
    return i, j


def planned_quota(times: np.ndarray, arms: np.ndarray, length_s: float, quota: int,
                  closes_at: int | None = None) -> int:
    """Updates a round planned as ``arms`` waits for when planned to last ``length_s``
    (:func:`paced_assignment`): ``closes_at`` where the planner chose it
    (:attr:`Assignment.closes_at`), else the clients predicted to arrive by then; at
    most ``quota``, at least one."""
    if closes_at is not None:
        return int(min(max(int(closes_at), 1), max(int(quota), 1)))
    if not np.isfinite(length_s):
        return max(int(quota), 1)
    t = arrival_times(times, arms)
    return int(min(max(np.count_nonzero(t <= length_s * (1.0 + 1e-9)), 1), max(int(quota), 1)))


def arriving_clients(times: np.ndarray, plan: Assignment, quota: int) -> np.ndarray:
    """The clients of ``plan`` predicted to arrive before its round closes
    (:func:`planned_quota`), in order of arrival."""
    arms, length = plan
    t = arrival_times(times, arms)
    first = np.argsort(t, kind="stable")[:planned_quota(times, arms, length, quota, plan.closes_at)]
    return first[np.isfinite(t[first])]


def round_pace(utility: float, length_s: float) -> float:
    """What a round of mean ``utility`` lasting ``length_s`` is worth to the planner: its
    progress per second where it makes progress; where it makes none or loses ground
    (every utility at or below zero, possible with signed worths), the loss times the
    length, so that the planner still prefers the shorter round and the smaller loss (the
    ratio would prefer the longest round, its loss spread over the most seconds). Every
    round that makes progress ranks above every round that does not."""
    t = max(float(length_s), 1e-9)
    return utility / t if utility > 0 else utility * t


def arrival_times(times: np.ndarray, arms: np.ndarray) -> np.ndarray:
    """Each client's predicted time with its arm; ``inf`` for one left out (arm ``-1``)."""
    arms = np.asarray(arms, dtype=np.int64)
    t = np.asarray(times, dtype=float)[np.arange(len(arms)), np.maximum(arms, 0)]
    return np.where(arms >= 0, t, np.inf)


def plan_value(worth: np.ndarray, times: np.ndarray, arms: np.ndarray, quota: int,
               returns: float | None = None, min_quota: int = 1, draws: ArrivalDraws | None = None) -> float:
    """Predicted progress per second of a synchronous round planned as ``arms``: the mean
    ``worth`` of the ``quota`` clients predicted to arrive first over the time of the last
    of them (the value :func:`paced_assignment` maximises; :func:`round_pace` where that
    mean is not positive). A client left out (arm ``-1``) does not arrive. With
    ``returns``, the best of the round closed at each of its ``min_quota``-th to
    ``quota``-th updates, as :func:`paced_assignment` weighs them; with ``draws``, over
    the draws of when the clients really arrive, as it weighs them then."""
    return RoundPlanner(times, True, quota, np.zeros(np.shape(arms), np.int64), returns=returns, min_quota=min_quota,
                        draws=draws).value(worth, arms)


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
        F = model.future_design(g, arms, ahead=0)  # the phase of the round they are observed in
        prec = np.linalg.inv(cov)
        post = np.linalg.inv(prec + F.T @ F / max(s2, 1e-12))
        jitter = 1e-9 * np.eye(A.shape[0])
        before = np.linalg.slogdet(A @ cov @ A.T + jitter)[1]
        after = np.linalg.slogdet(A @ post @ A.T + jitter)[1]
        total += p[g] * 0.5 * max(before - after, 0.0)
    return float(total)


def ids_assignment(model: ProgressModel, rng: np.random.Generator, times: np.ndarray, feasible: np.ndarray,
                   quota: int, fallback: np.ndarray, candidates: int = 8, worlds: int = 16,
                   leave_out: str = "none", returns: float | None = None, min_quota: int = 1,
                   draws: ArrivalDraws | None = None) -> Assignment:
    """Arms for one round by information-directed sampling (Russo and Van Roy, 2018).

    Candidate plans: the posterior median's plan and ``candidates`` Thompson plans (one
    draw per client). Each is scored by its expected regret ``Delta`` (over ``worlds``
    joint posterior draws: the best plan's value in that world minus this plan's) and the
    information ``g`` its arriving updates bring (:func:`information_gain`); the plan of
    least ``Delta ** 2 / g`` is run. A plan that costs nothing in expectation (the
    posterior is sure) is run whatever it teaches; one that teaches nothing is not run
    unless it costs nothing. ``leave_out``, ``returns``, ``min_quota``, ``draws``: as
    :func:`paced_assignment`'s.
    """
    times = np.asarray(times, dtype=float)
    planner = RoundPlanner(times, feasible, quota, fallback, leave_out=leave_out, returns=returns, min_quota=min_quota,
                           draws=draws)
    median = model.worth()
    plans = [planner.assign(median)]
    plans += [planner.assign(model.sample(rng, times.shape[0])) for _ in range(candidates)]
    ws = model.sample(rng, worlds)
    value = np.array([[planner.value(w, arms) for arms, _ in plans] for w in ws])
    best = np.array([planner.value(w, planner.assign(w)[0]) for w in ws])
    regret = np.maximum(best, value.max(axis=1))[:, None] - value
    delta = regret.mean(axis=0)
    gain = []
    for plan in plans:
        arrive = arriving_clients(times, plan, quota)
        gain.append(information_gain(model, plan[0][arrive]) if arrive.size else 0.0)
    gain = np.maximum(np.array(gain), 1e-12)
    ratio = delta**2 / gain
    pick = int(np.argmin(ratio))
    return plans[pick]


def probe_plans(model: ProgressModel, planner: RoundPlanner, median: np.ndarray, plan0: Assignment,
                feasible: np.ndarray, quota: int, count: int) -> list[Assignment]:
    """Cheap plans that teach: the median's plan with one client switched to an arm none
    of its arriving updates runs, for the ``count`` such arms the posterior is least sure
    of (largest sd of ``log theta``), each on the client where the switch costs least
    under the median among those predicted to arrive with it by the plan's length."""
    arms0, length0 = plan0
    times = planner.times
    arriving = arriving_clients(times, plan0, quota)
    if arriving.size == 0 or not np.isfinite(length0):
        return []
    p, _, sd = model.log_worth()
    spread = p @ sd
    seen = set(arms0[arriving].tolist())
    feasible = np.asarray(feasible, dtype=bool)
    out = []
    for a in np.argsort(-spread, kind="stable"):
        if len(out) >= count:
            break
        if int(a) in seen:
            continue
        who = np.flatnonzero(feasible[:, a] & (arms0 >= 0) & (times[:, a] <= length0 * (1.0 + 1e-9)))
        if who.size == 0:
            continue
        best, best_v = None, -np.inf
        for i in who:
            plan = arms0.copy()
            plan[i] = a
            v = planner.value(median, plan)
            if v > best_v:
                best, best_v = plan, v
        out.append(planner.close(median, best))
    return out


def lindy_horizon(round_idx: int) -> int:
    """Rounds still to come when the run's length is unknown: as many as have gone
    (Gott's and Lindy's rule: a run that has lasted ``r`` rounds is as likely to be in its
    first half as in its second). 0 before the first round has reported."""
    return max(int(round_idx), 0)


def kg_assignment(model: ProgressModel, rng: np.random.Generator, times: np.ndarray, feasible: np.ndarray,
                  quota: int, fallback: np.ndarray, rounds_left: int, candidates: int = 4,
                  worlds: int = 32, z: float = 1.0, repeats: Sequence[int] = (1, 2, 4, 8),
                  leave_out: str = "none", returns: float | None = None, min_quota: int = 1,
                  draws: ArrivalDraws | None = None, probes: int = 0) -> Assignment:
    """Arms for one round by the online knowledge gradient (Ryzhov, Powell and Frazier,
    2012) in its KG(*) form (Frazier and Powell, 2010).

    A candidate plan is run instead of the posterior median's plan when its advantage
    over ``R = rounds_left + 1`` rounds is positive::

        A(plan) = max over m < R of  m * [value(plan | median) - value(plan0 | median)]
                                     + (R - m) * LCB_w[value_w(plan'_m) - value_w(plan0'_m)]

    ``value(plan | median)`` is a plan's progress per second (:func:`plan_value`) under the
    posterior median: the first term is what running ``plan`` for ``m`` rounds costs.
    ``plan'_m`` is the median's plan after the gains of ``m`` rounds of ``plan``'s
    arriving updates are seen (:meth:`ProgressModel.lookahead_worth`), ``plan0'_m`` the
    same for the median's own plan, and ``value_w`` the progress per second in world
    ``w``, one of ``worlds`` joint posterior draws shared by every plan (the devices of
    later rounds are taken to be like this round's). The second term is what the rounds
    after them gain from what ``plan`` taught. ``LCB`` is the mean over the worlds less
    ``z`` standard errors: with a few candidates and a few dozen worlds the largest mean is
    mostly noise, and a plan explores only where what it teaches is clear. Counting ``m``
    rounds of it, not one (KG(*)), values information that one round alone is too little
    to act on. Candidates: the median's plan, ``candidates`` Thompson plans and
    ``probes`` probe plans (:func:`probe_plans`: the median's plan with one client
    switched to an arm it does not run; a Thompson plan reassigns most clients at once,
    and what it teaches costs more than a single switch does). With
    ``rounds_left = 0`` it runs the plan of largest value under the median; the longer the
    run still has to go, the more a plan that teaches is worth, so exploration is paid for
    only where the rounds left can repay it (information-directed sampling,
    :func:`ids_assignment`, does not weigh that). ``leave_out``, ``returns``, ``min_quota``,
    ``draws``: as :func:`paced_assignment`'s.
    """
    times = np.asarray(times, dtype=float)
    n = times.shape[0]
    q = max(min(int(quota), n), 1)
    planner = RoundPlanner(times, feasible, quota, fallback, leave_out=leave_out, returns=returns, min_quota=min_quota,
                           draws=draws)
    median = model.worth()
    plans = [planner.assign(median)]
    plans += [planner.assign(model.sample(rng, n)) for _ in range(candidates)]
    if probes and rounds_left > 0:
        plans += probe_plans(model, planner, median, plans[0], feasible, quota, probes)
    reps = [m for m in sorted(set(int(r) for r in repeats)) if 1 <= m <= rounds_left]
    gs, coefs = model.sample_coefficients(rng, worlds)
    true_worth = np.array([model._to_worth(model._arm_features(int(g)) @ c) for g, c in zip(gs, coefs)])
    true_worth = model.ordered(true_worth * model.harm_factor(rng, worlds))
    noise = rng.standard_normal((worlds, q * max(reps, default=1)))
    now = np.array([planner.value(median, arms) for arms, _ in plans])
    adv = now - now[0]
    if reps:
        arrivals = []
        for plan in plans:
            arrivals.append(plan[0][arriving_clients(times, plan, quota)])
        best = np.full(len(plans), -np.inf)
        for m in reps:
            after = np.empty((len(plans), worlds))
            for i, seen in enumerate(arrivals):
                learnt = model.lookahead_worth(np.tile(seen, m), gs, coefs, noise)
                after[i] = [planner.value(true_worth[w], planner.assign(learnt[w])[0]) for w in range(worlds)]
            d = after - after[0]  # paired over the worlds: what a plan teaches beyond the median's plan
            lcb = d.mean(axis=1) - z * d.std(axis=1, ddof=1) / np.sqrt(worlds)
            best = np.maximum(best, m * adv + (rounds_left + 1 - m) * lcb)
        adv[1:] = best[1:]
    return plans[int(np.argmax(adv))]
