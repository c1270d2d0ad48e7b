"""DropPEFT: stochastic layer dropout with an online configurator, plus PTLS.

Each round (see docs/droppeft.md):

1. the *arms* (per-layer dropout configurations) that would run out of memory or miss
   the round deadline on a selected client, by the cost model, are masked out; in a
   synchronous round a client no arm fits is left out of it (``leave_out``);
2. the policy (``kg``: the online knowledge gradient, ``ids``: information-directed
   sampling, or ``thompson``) turns the
   posterior of each arm's *worth* (what an update with it is worth relative to running
   every layer) into the round's plan (:mod:`fedsim.methods.configurator`);
3. the paced planner gives every client the arm that maximises the round's predicted
   progress per second for given worths: the round ends at its ``quota``-th update, so
   fast devices run heavier arms and slow ones drop more to keep the pace; with
   ``choose_quota`` (the default) it may end the round sooner, at between
   ``min_quota_share`` of the quota and all of it, by the returns to more updates it
   learns from the run (:class:`~fedsim.methods.configurator.RoundReturns`), each plan
   weighed over ``arrival_draws`` draws of the clients' straggling and drop-outs (from
   the fleet's profiles, as the engine draws them), so that a round closed at its
   ``k``-th update is priced at when that update really comes;
4. with PTLS, the ``personal_layers`` layers with the largest gradient norms stay personal
   on the client (the trainer keeps them; they are neither uploaded nor aggregated);
5. before aggregation, each arrived update's gain (validation-loss drop when it alone is
   applied) and its arm are one more observation of the worths: the cost model says
   what an arm costs on a device, the run itself says what it is worth.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from fedsim.core.configio import Spec

from fedsim.core.costmodel import client_times, plan_cost
from fedsim.engine.fate import draw_slowdown
from fedsim.methods.base import Method, MethodParams, RoundContext, RoundReport, register
from fedsim.methods.compose import compressible
from fedsim.methods.configurator import (ArrivalDraws, ProgressModel, RoundReturns, ids_assignment, kg_assignment, lindy_horizon,
                                         paced_assignment, planned_quota, utility_scores)
from fedsim.methods.stld_fixed import Profile, profile_ratios
from fedsim.core.plan import ClientPlan, RoundPlans

__all__ = ["DropPEFT", "DropPEFTParams", "ArmSpec", "make_arms", "feasible_arms", "select_personal_layers"]


class ArmSpec(Spec):
    """One dropout configuration: a mean ratio and depth profile, or explicit ratios."""
    mean_drop: float = Field(0.0, ge=0.0, lt=1.0)
    profile: Profile = "uniform"
    drop_prob: list[float] | None = Field(None, description="explicit per-layer ratios (override mean_drop/profile)")

    @model_validator(mode="after")
    def _check(self):
        if self.drop_prob is not None and any(not 0.0 <= p < 1.0 for p in self.drop_prob):
            raise ValueError("every drop_prob entry must be in [0, 1)")
        return self


class DropPEFTParams(MethodParams):
    """Parameters of ``method: {name: droppeft}``.

    What a user sets: the policy, the arms, PTLS. The rest (marked *ablation*) exists to
    switch parts of the configurator off and measure what they bring.
    """

    arms: list[ArmSpec] | None = Field(None, description="explicit arm list; default: mean_levels x profiles")
    mean_levels: list[float] = Field([0.0, 0.25, 0.5, 0.75], min_length=1, description="mean drop ratios of the default arms")
    profiles: list[Profile] = Field(["uniform", "rising", "falling"], min_length=1, description="depth profiles of the default arms")
    ptls: bool = Field(False, description="personalised transformer layer sharing")
    personal_layers: int | Literal["auto"] = Field(2, description="layers kept personal, or auto (by gradient-norm mass)")
    personal_mass: float = Field(0.5, gt=0.0, lt=1.0, description="auto: smallest set holding this share of the squared grad norm")
    personal_head: bool = Field(False, description="PTLS: keep the classification head personal too (as FedPer does)")
    discount: float = Field(0.9, gt=0.0, le=1.0, description="weight of an evaluation k evaluations ago: discount ** k")
    window: int | None = Field(None, ge=1, description="keep only the last this many evaluations")
    deadline_margin: float = Field(1.0, gt=0.0, le=1.0, description="an arm is feasible if its predicted time <= margin * deadline")
    shape_depths: list[float] = Field([-2.0, -1.0, 0.0, 1.0, 2.0, 3.0], min_length=1,
                                      description="gammas averaged over: layer l weighs (l + 1) ** gamma in an arm's keep")
    arm_sd: float | None = Field(None, gt=0.0, allow_inf_nan=False, description=(
        "prior sd of an arm's own correction to the worth curve (log scale, at the prior's guess of the noise); "
        "null (the default): learnt, the one of 0.1-1.7 under which the gains seen are likeliest"))
    prior_beta: float = Field(1.0, ge=0.0, le=20.0, allow_inf_nan=False, description=(
        "prior mean of how steeply an arm's worth falls with dropout (worth = keep ** beta; 1: the share of layers "
        "run); set it from a calibration on another data set and model, never from the run it is scored on"))
    gain_examples: int = Field(128, ge=1, description="validation examples each update's gain is measured on")
    gain_measure: Literal["loo", "alone"] = Field("loo", description=(
        "what an update's gain measures: loo = how much the round's aggregate would lose without it (sees updates "
        "that harm the average), alone = the loss drop of the update applied alone"))
    signed_worth: bool = Field(False, description=(
        "learn each arm's share of updates that harm the round (gain <= 0) beside the size of its gains, so a "
        "harmful arm is worth less than nothing; false (the default) floors such gains at a tenth of the round's "
        "median. Off by default: in real training at Dirichlet 0.1 it took 2-4x longer (docs/droppeft.md)"))
    worth_scale: Literal["log", "mean"] = Field("log", description=(
        "what an arm's worth is learnt as: log = the ratio of its updates' typical gain sizes (log-linear model, "
        "harmful gains floored or signed); mean = the ratio of their mean signed gains, each over its round's "
        "median size (what adds up in the aggregate when a client's labels swing its update either way)"))
    harm_prior: Literal["pooled", "helps"] = Field("pooled", description=(
        "signed_worth: each arm's prior of its harm share; pooled = the fleet-wide share seen so far, as strong as "
        "the arms' counts say (an arm not yet run harms as often as the rest); helps = none until one is seen"))
    monotone_worth: bool | Literal["noisy"] = Field("noisy", description=(
        "never rate an arm above one that runs every layer it runs at least as often (the estimates a round is "
        "planned with are capped there; the posterior draws that explore, among the dropped arms only): dropping "
        "more layers may cost nothing but is not taken to help. noisy (the default) = so while the noise variance "
        "of the gains within a round (log scale) is at least 0.5, as in real training, where one gain says little and the cheap heavy "
        "arms would win plans on noise; precise gains rank the arms themselves. true = always (on synthetic rounds "
        "with precise gains it settles on a near-best arm in some runs); false = never (docs/droppeft.md)"))
    monotone_draws: bool = Field(True, description=(
        "monotone_worth: order the posterior draws that explore too (among the dropped arms); ablation: false "
        "orders only the estimates a round is planned with, exploring with the unordered posterior's draws"))
    leave_out: Literal["infeasible", "harmful", "none"] = Field("infeasible", description=(
        "synchronous rounds: which selected clients are left out. infeasible (the default) = those no arm fits "
        "(memory, deadline), which would fail or miss the deadline; harmful = those too, and those every arm "
        "of which the gains seen say harms the round's aggregate (log scale with floored sizes: the arm's harm "
        "share, by the pooled prior, above one half unless every arm's is; signed or mean scale: a worth at "
        "or below zero); none = every selected client runs (the arm of least memory where none fits), and the "
        "round waits for its quota of updates, as before"))
    choose_quota: bool = Field(True, description=(
        "synchronous rounds: the planner may close a round at fewer updates than the scenario's quota (down to "
        "min_quota_share of it) where the returns to more updates it measures (RoundReturns: the updates' "
        "leave-one-out gains over the whole aggregate's gain) say a shorter round makes faster progress; "
        "false = every round waits for the quota (ablation)"))
    min_quota_share: float = Field(0.5, gt=0.0, le=1.0, description=(
        "choose_quota: the fewest updates a round may close at, as a share of the quota (rounded up): the "
        "returns are measured near the quota and are not extrapolated further"))
    returns_prior: float = Field(0.5, ge=0.0, le=1.0, description=(
        "choose_quota: prior elasticity of a round's progress in its number of updates (weight: one round); "
        "0.5 = progress grows as the square root of the updates, as averaging k noisy updates cuts the noise "
        "variance k-fold; learnt from the run unless learning is false"))
    arrival_draws: int = Field(32, ge=0, le=1024, description=(
        "synchronous rounds with choose_quota: joint draws of the selected clients' straggling and drop-outs "
        "(from the fleet's profiles, as the engine draws them) over which the planner weighs each plan's "
        "progress and length, so that a round closing at its k-th update is priced at when the k-th update "
        "really comes; 0 = the cost model's times alone, no straggler or drop-out (ablation, the design before)"))
    learn_returns: bool = Field(True, description=(
        "ablation: false keeps the returns to more updates at returns_prior (the worths are still learnt)"))
    policy: Literal["kg", "ids", "thompson"] = Field("kg", description=(
        "exploration: kg = online knowledge gradient (explores as far as the rounds left can repay it); "
        "ids = information-directed sampling over the median's and Thompson plans; "
        "thompson = Thompson sampling, one draw per client"))
    probes: int = Field(4, ge=0, le=64, description=(
        "kg: probe plans among its candidates, each the median's plan with one client switched to an arm none "
        "of its arriving updates runs (the arms the posterior is least sure of, each on the client where the "
        "switch costs least); 0 = Thompson candidates only (ablation, the design until 2026-11-28)"))
    point_null: float = Field(0.5, ge=0.0, lt=1.0, allow_inf_nan=False, description=(
        "prior probability that the prior's worths (worth = keep ** prior_beta, what learning off plans with) are "
        "exact, weighed against the learnt model by the evidence of the gains seen: the plans mix the two by "
        "it and the knowledge gradient values learning only as far as the learnt model is likely, so gains "
        "that say little (swung by their clients) leave the plans near the prior's; 0 = the learnt model alone "
        "(ablation, the design until 2026-11-28). Read with learning, prior: shapes and worth_scale: log only"))
    horizon: int | Literal["auto"] = Field("auto", description=(
        "kg: rounds the run is expected to last; auto = unknown: as many rounds still to come as have gone"))
    learning: bool = Field(True, description="ablation: false plans with the prior alone, whatever is observed")
    explore: bool = Field(True, description="ablation: false plans with the posterior median (no Thompson draws)")
    prior: Literal["shapes", "flat"] = Field(
        "shapes", description="ablation: flat = every arm alike a priori (per-arm learning only)")
    bandit: bool = Field(True, description="ablation: false gives every client fixed_arm (or the nearest feasible arm)")
    fixed_arm: int = Field(0, ge=0, description="arm index used when bandit is false")

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.horizon, int) and self.horizon < 1:
            raise ValueError(f"horizon must be >= 1 rounds or 'auto', got {self.horizon}")
        if isinstance(self.personal_layers, int) and self.personal_layers < 0:
            raise ValueError(f"personal_layers must be >= 0 or 'auto', got {self.personal_layers}")
        if any(not 0.0 <= m < 1.0 for m in self.mean_levels):
            raise ValueError(f"every mean_levels entry must be in [0, 1), got {self.mean_levels}")
        if any(not np.isfinite(g) for g in self.shape_depths):
            raise ValueError(f"every shape_depths entry must be finite, got {self.shape_depths}")
        if self.arms is not None and self.fixed_arm >= len(self.arms):
            raise ValueError(f"fixed_arm {self.fixed_arm} is not an arm index; there are {len(self.arms)} arms")
        return self


# -- pure helpers ------------------------------------------------------------------------

def make_arms(base_plan: ClientPlan, params: DropPEFTParams) -> list[ClientPlan]:
    """The arm set as plans: explicit ``arms``, or ``mean_levels`` x ``profiles`` (duplicates removed)."""
    L = base_plan.num_layers
    specs = params.arms or [ArmSpec(mean_drop=m, profile=p) for m in params.mean_levels for p in params.profiles]
    arms: list[ClientPlan] = []
    seen: set[tuple[float, ...]] = set()
    for spec in specs:
        if spec.drop_prob is not None:
            if len(spec.drop_prob) != L:
                raise ValueError(f"an arm's drop_prob has {len(spec.drop_prob)} entries; the model has {L} layers")
            ratios, name = np.asarray(spec.drop_prob, dtype=float), "custom-" + "-".join(f"{p:g}" for p in spec.drop_prob)
        else:
            ratios = profile_ratios(L, spec.mean_drop, spec.profile)
            name = f"{spec.profile}-{spec.mean_drop:g}" if spec.mean_drop > 0 else "none"
        key = tuple(round(float(r), 9) for r in ratios)
        if key in seen and params.arms is None:
            continue  # mean 0 is the same arm for every profile
        seen.add(key)
        arms.append(base_plan.with_(drop_prob=tuple(float(r) for r in ratios), name=name))
    if params.fixed_arm >= len(arms):
        raise ValueError(f"fixed_arm {params.fixed_arm} is not an arm index; there are {len(arms)} arms")
    return arms


def feasible_arms(fleet, ids: np.ndarray, shape, arms: list[ClientPlan], coefficients,
                  deadline_s: float | None, margin: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(feasible, peak_mem_bytes, total_s)``, each ``(n_clients, n_arms)``.

    An arm is feasible on a device when its predicted peak memory fits the device's cap
    and its predicted round time (download + compute + upload, no straggling) fits
    ``margin * deadline_s`` (any time when there is no deadline).
    """
    costs = [plan_cost(shape, a, coefficients) for a in arms]
    n, k = len(ids), len(arms)
    mem = np.broadcast_to(np.array([c.peak_mem_bytes for c in costs])[None, :], (n, k))
    total = np.empty((n, k))
    for j in range(k):  # vectorised over clients; arms are few
        total[:, j] = client_times(fleet, ids, [costs[j]], np.zeros(n, dtype=np.int64)).total_s
    ok = mem <= fleet.mem_cap_bytes[ids][:, None]
    if deadline_s is not None:
        ok &= total <= margin * deadline_s
    return ok, np.array(mem), total


def arrival_draws(fleet, ids: np.ndarray, shape, arms: list[ClientPlan], coefficients, slowdown_dists,
                  deadline_s: float | None, rng: np.random.Generator, draws: int) -> ArrivalDraws:
    """``draws`` joint draws of the clients ``ids``' straggling and drop-outs, as the
    engine draws a round's fate (:func:`fedsim.engine.fate.draw_slowdown`,
    :func:`~fedsim.engine.fate.draw_failures`): a client straggles with its
    ``straggle_prob``, its compute then stretched by a draw of its class's
    ``straggle_slowdown`` (``slowdown_dists``, by device class code), and drops out with
    its ``dropout_prob`` after a uniform share of its time."""
    n = len(ids)
    costs = [plan_cost(shape, a, coefficients) for a in arms]
    compute = np.empty((n, len(arms)))
    for j in range(len(arms)):
        compute[:, j] = client_times(fleet, ids, [costs[j]], np.zeros(n, dtype=np.int64)).compute_s
    fits = np.array([c.peak_mem_bytes for c in costs])[None, :] <= fleet.mem_cap_bytes[ids][:, None]
    stretch = draw_slowdown(rng, fleet, np.tile(ids, draws), slowdown_dists).reshape(draws, n)
    dropping = rng.random((draws, n)) < fleet.dropout_prob[ids][None]
    drop_at = np.where(dropping, rng.random((draws, n)), np.inf)
    return ArrivalDraws(stretch, drop_at, compute, fits, deadline_s)


def select_personal_layers(norms: np.ndarray, k: int | str, mass: float = 0.5) -> tuple[int, ...]:
    """PTLS: the layers with the largest gradient norms (sorted indices).

    ``k`` layers, or with ``k='auto'`` the fewest layers whose squared norms hold at least
    ``mass`` of the total. Layers with zero norm (never ran) are never personal; at least
    one layer always stays shared.
    """
    norms = np.asarray(norms, dtype=float)
    L = norms.size
    order = np.argsort(-norms, kind="stable")
    order = order[norms[order] > 0]
    if k == "auto":
        sq = norms[order] ** 2
        if sq.sum() <= 0:
            return ()
        k = int(np.searchsorted(np.cumsum(sq) / sq.sum(), mass - 1e-12) + 1)
    k = min(int(k), L - 1, order.size)
    return tuple(sorted(int(i) for i in order[:k]))


# -- the method ----------------------------------------------------------------------------

@register
@compressible  # params.compression: caesar (fedsim.methods.compose)
class DropPEFT(Method):
    name = "droppeft"
    Params = DropPEFTParams

    def __init__(self, params: DropPEFTParams, shape, base_plan: ClientPlan) -> None:
        super().__init__(params, shape, base_plan)
        self.arms = make_arms(base_plan, params)
        depths = params.shape_depths if params.prior == "shapes" else None
        self.model = ProgressModel([a.keep_prob for a in self.arms], depths, discount=params.discount,
                                   window=params.window, arm_sd=params.arm_sd, prior_beta=params.prior_beta,
                                   signed=params.signed_worth, harm_prior=params.harm_prior,
                                   scale=params.worth_scale, monotone=params.monotone_worth,
                                   monotone_draws=params.monotone_draws,
                                   sign_harm=params.leave_out == "harmful",
                                   point_null=(params.point_null if params.learning and params.prior == "shapes"
                                               and params.worth_scale == "log" else 0.0))
        # How a round's progress grows with its updates (choose_quota), learnt from the run.
        self.returns = RoundReturns(params.returns_prior, params.discount,
                                    learning=params.learning and params.learn_returns)
        self._round_pace: float | None = None
        self._round_quota: int | None = None
        self._round_arms: np.ndarray | None = None
        self._arm_of: dict[int, list[int]] = {}  # planned clients not yet reported: their arms, oldest first

        # PTLS: per-layer gradient norms per step, fleet-wide (discounted mean) and per client (sparse).
        self._norm_sum = np.zeros(shape.num_layers)
        self._norm_w = 0.0
        self._client_norms: dict[int, np.ndarray] = {}
        self._has_copy: set[int] = set()  # clients whose trainer holds personal tensors
        self.history: list[dict[str, Any]] = []

    # -- planning ------------------------------------------------------------------------
    def choose_arms(self, ctx: RoundContext) -> tuple[np.ndarray, np.ndarray]:
        """Arm of each selected client (``-1``: left out of the round) and the feasibility mask."""
        p = self.params
        ids = ctx.device_ids
        feasible, mem, total = feasible_arms(ctx.fleet, ids, self.shape, self.arms, ctx.coefficients,
                                             ctx.deadline_s, p.deadline_margin)
        # No feasible arm: the one least likely to fail (fits memory if any does, then fastest).
        fits = mem <= ctx.fleet.mem_cap_bytes[ids][:, None]
        fallback = np.where(fits.any(axis=1), np.argmin(np.where(fits, total, np.inf), axis=1), np.argmin(mem, axis=1))
        if not p.bandit:
            return self._fixed_or_nearest(feasible, fallback), feasible
        quota = ctx.quota if ctx.quota is not None else len(ids)
        # A run checkpointed before the parameter existed ran every selected client: it resumes so.
        out = getattr(p, "leave_out", "none") if ctx.may_leave_out else "none"
        # The round may close before its quota where the driver closes rounds by quota (synchronous).
        how: dict[str, Any] = {"leave_out": out}
        if getattr(p, "choose_quota", False) and ctx.may_leave_out and ctx.quota is not None:
            how |= {"returns": self.returns.elasticity, "min_quota": int(np.ceil(p.min_quota_share * quota - 1e-9))}
            # A run checkpointed before the parameter existed planned at the cost model's times: it resumes so.
            n_draws = getattr(p, "arrival_draws", 0)
            if n_draws > 0 and ctx.slowdown_dists is not None:
                how["draws"] = arrival_draws(ctx.fleet, ids, self.shape, self.arms, ctx.coefficients, ctx.slowdown_dists,
                                             ctx.deadline_s, ctx.rng, n_draws)
        if p.policy == "kg" and p.explore and p.learning:
            left = lindy_horizon(ctx.round_idx) if p.horizon == "auto" else max(p.horizon - ctx.round_idx - 1, 0)
            # A run checkpointed before the parameter existed had no probes: it resumes so.
            plan = kg_assignment(self.model, ctx.rng, total, feasible, quota, fallback, left,
                                 probes=getattr(p, "probes", 0), **how)
        elif p.policy == "ids" and p.explore and p.learning:
            plan = ids_assignment(self.model, ctx.rng, total, feasible, quota, fallback, **how)
        else:
            util = utility_scores(self.model, ctx.rng, len(ids), explore=p.explore, learning=p.learning)
            plan = paced_assignment(util, total, feasible, quota, fallback, **how)
        arms, self._round_pace = plan
        self._round_quota = (planned_quota(total, arms, self._round_pace, quota, plan.closes_at)
                             if "returns" in how else None)
        return arms, feasible

    @property
    def left_out(self) -> int:
        """Selected clients the last planned round left out."""
        return 0 if self._round_arms is None else int(np.count_nonzero(self._round_arms < 0))

    def _fixed_or_nearest(self, feasible: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """``fixed_arm`` where feasible, else the feasible arm with the nearest mean drop at or above it."""
        fixed = self.params.fixed_arm
        means = np.array([a.mean_drop for a in self.arms])
        dist = np.where(means >= means[fixed] - 1e-9, means - means[fixed], 10.0 + np.abs(means - means[fixed]))
        order = np.argsort(dist, kind="stable")
        out = fallback.copy()
        for i in range(len(out)):
            ok = order[feasible[i, order]]
            if ok.size:
                out[i] = ok[0]
        return out

    def personal_layers_of(self, client_id: int) -> tuple[int, ...]:
        """PTLS layer set of a client: from its own last gradient norms, else the fleet's."""
        p = self.params
        if not p.ptls or p.personal_layers == 0:
            return ()
        norms = self._client_norms.get(int(client_id))
        if norms is None:
            if self._norm_w <= 0:
                return ()  # nothing measured yet: no layer is personal
            norms = self._norm_sum / self._norm_w
        return select_personal_layers(norms, p.personal_layers, p.personal_mass)

    def personalise(self, plan: ClientPlan, client_id: int) -> ClientPlan:
        """The plan with the client's PTLS set. A client that holds no personal copy yet
        (it has not trained with PTLS before) shares its personal layers this time
        (``share_personal``): with thousands of devices most updates come from
        newcomers, and the global copies of the personal layers would stop learning if
        newcomers kept them."""
        layers = self.personal_layers_of(client_id)
        head = self.params.ptls and self.params.personal_head
        if not layers and not head:
            return plan
        share = int(client_id) not in self._has_copy
        tag = "".join(map(str, layers)) + ("h" if head else "") + ("+" if share else "")
        return plan.with_(personal_layers=layers, personal_head=head, share_personal=share,
                          name=f"{plan.name}/p{tag}")

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        arms, _ = self.choose_arms(ctx)
        run = arms >= 0  # -1: left out of the round (choose_arms, leave_out)
        self._round_arms = arms
        for d, a in zip(ctx.device_ids[run].tolist(), arms[run].tolist()):
            self._arm_of.setdefault(d, []).append(a)
        arms = np.where(run, arms, arms[run][0] if run.any() else 0)  # a left-out client's plan is never run
        used = np.unique(arms)
        remap = np.zeros(len(self.arms), dtype=np.int64)
        remap[used] = np.arange(used.size)
        plans = RoundPlans([self.arms[a] for a in used], remap[arms], None if run.all() else run,
                           getattr(self, "_round_quota", None))
        if not self.params.ptls:
            return plans
        return plans.regroup(lambda i, plan: self.personalise(plan, int(ctx.device_ids[i])))

    # -- learning from the round ---------------------------------------------------------
    @property
    def _learns(self) -> bool:
        return self.params.bandit and self.params.learning

    def update_gain_examples(self) -> int | None:
        return self.params.gain_examples if self._learns else None

    def round_gain_wanted(self) -> bool:
        return bool(getattr(self.params, "choose_quota", False)) and self._learns and self.params.learn_returns

    def update_gain_measure(self) -> str:
        # A run checkpointed before the parameter existed measured gains alone: it resumes so.
        return getattr(self.params, "gain_measure", "alone")

    def round_finished(self, report: RoundReport) -> None:
        if self._round_arms is None:
            raise RuntimeError("DropPEFT.round_finished called before configure_round")
        self._observe_norms(report)
        # Under the async driver a report holds the clients that finished since the last
        # aggregation (a device possibly twice), each planned alone when it was dispatched.
        reported = np.array([self._pop_arm(d) for d in report.device_ids.tolist()], dtype=np.int64)
        entry = {"round": report.round_idx, "pace_s": self._round_pace, "left_out": self.left_out,
                 "arms": np.bincount(reported, minlength=len(self.arms)).tolist()}
        quota = getattr(self, "_round_quota", None)
        if quota is not None:
            entry["quota"] = quota
        if self._learns and report.update_gains is not None:
            # The results are the updates of the clients whose outcome is ok, in order.
            self.model.observe(reported[np.asarray(report.outcome) == "ok"], report.update_gains)
            entry["worth"] = self.model.worth().tolist()
            if self.model.point_null > 0:
                entry["null_prob"] = self.model.null_prob()
            if report.round_gain is not None and hasattr(self, "returns"):
                self.returns.observe(report.update_gains, report.round_gain)
        if quota is not None:
            entry["returns"] = self.returns.elasticity
        self.history.append(entry)

    def _pop_arm(self, client_id: int) -> int:
        arms = self._arm_of[client_id]
        arm = arms.pop(0)
        if not arms:
            del self._arm_of[client_id]
        return arm

    def _observe_norms(self, report: RoundReport) -> None:
        if not self.params.ptls:
            return
        for i in np.flatnonzero(np.asarray(report.outcome) == "ok"):  # they trained and kept copies
            if report.plans[int(i)].has_personal:
                self._has_copy.add(int(report.device_ids[i]))
        if not report.results:
            return
        d = self.params.discount
        self._norm_sum *= d
        self._norm_w *= d
        for r in report.results:
            steps = np.maximum(np.asarray(r.layer_steps, dtype=float), 1.0)
            per_step = np.asarray(r.grad_norms, dtype=float) / np.sqrt(steps)
            if not np.any(per_step > 0):
                continue  # surrogate trainer: no gradients
            # Each client counts once, whatever the scale of its gradients.
            self._norm_sum += per_step / per_step.sum()
            self._norm_w += 1.0
            self._client_norms[int(r.client_id)] = per_step
