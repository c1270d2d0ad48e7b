"""DropPEFT: stochastic layer dropout with an online configurator, plus PTLS.

Each round (see docs/droppeft.md):

1. the *arms* (per-layer dropout configurations) that would run out of memory or miss
   the round deadline on a selected client, by the cost model, are masked out;
2. the policy (UCB, Thompson sampling or epsilon-greedy) turns the posterior of each
   arm's *utility* (what one update with it adds to a round's progress) into the
   utilities the round is planned with;
3. the paced planner gives every client the arm that maximises the round's predicted
   progress per second: the round ends at its ``quota``-th update, so fast devices run
   heavier arms and slow ones drop more to keep the pace;
4. with PTLS, the ``personal_layers`` layers with the largest gradient norms stay personal
   on the client (the trainer keeps them; they are neither uploaded nor aggregated);
5. after the round's evaluation, its eval-loss drop (scaled to O(1)) is regressed on the
   arm shares of the updates that arrived (discounted Bayesian ridge regression with a
   fitted ``c * keep ** beta`` prior), which separates the arms that shared the round.

``configurator: group-bandit`` is the first design, kept for ablation: one bandit per
group of similar devices on the round's shared progress per second.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fedsim.costmodel import client_times, plan_cost
from fedsim.methods.bandit import (
    ArmStats,
    ArmUtility,
    EpsilonGreedyPolicy,
    Policy,
    RewardScale,
    ThompsonPolicy,
    UCBPolicy,
    assign_arms,
    paced_assignment,
    utility_scores,
)
from fedsim.methods.base import Method, MethodParams, RoundContext, RoundReport, register
from fedsim.methods.compose import compressible
from fedsim.methods.stld_fixed import Profile, profile_ratios
from fedsim.plan import ClientPlan, RoundPlans, depth_weighted_keep

__all__ = ["DropPEFT", "DropPEFTParams", "ArmSpec", "make_arms", "feasible_arms", "device_groups",
           "select_personal_layers", "round_progress"]


class ArmSpec(BaseModel):
    """One dropout configuration: a mean ratio and depth profile, or explicit ratios."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    mean_drop: float = Field(0.0, ge=0.0, lt=1.0)
    profile: Profile = "uniform"
    drop_prob: list[float] | None = Field(None, description="explicit per-layer ratios (override mean_drop/profile)")

    @model_validator(mode="after")
    def _check(self):
        if self.drop_prob is not None and any(not 0.0 <= p < 1.0 for p in self.drop_prob):
            raise ValueError("every drop_prob entry must be in [0, 1)")
        return self


class DropPEFTParams(MethodParams):
    """Parameters of ``method: {name: droppeft}``."""

    policy: Literal["ucb", "thompson", "egreedy"] = Field("ucb", description="bandit policy")
    configurator: Literal["paced", "group-bandit"] = Field(
        "paced", description="paced: learnt progress per arm x predicted time per device, planned per round; "
        "group-bandit: one bandit per device group on the shared round reward")
    prior_sd: float | None = Field(
        0.2, gt=0.0, description="paced: prior sd of each arm's utility relative to its prior mean (noisier "
        "progress then moves arms less); null = a fixed prior_weight")
    prior_weight: float = Field(10.0, gt=0.0, description="paced, prior_sd null: ridge prior weight, in rounds")
    fit_margin: float = Field(0.05, ge=0.0, lt=1.0, description="paced: the fitted prior shape replaces "
                              "prior_initial only if its squared error is this share lower")
    prior: Literal["keep", "flat"] = Field(
        "keep", description="paced: prior of the arm utilities: keep = c * keep_gamma ** beta, keep_gamma the "
        "share of layers the arm runs with layer l weighted (l + 1) ** gamma, (c, gamma, beta) fitted to the "
        "rounds; flat = all arms alike")
    prior_depth: list[float] = Field([0.0, 1.0, 2.0, 3.0], min_length=1, description="paced, prior keep: gammas tried")
    prior_exponents: list[float] = Field([0.5, 1.0, 2.0, 3.0, 4.0], min_length=1,
                                         description="paced, prior keep: betas tried")
    prior_initial: tuple[float, float] = Field(
        (2.0, 2.0), description="paced, prior keep: (gamma, beta) before any round (measured on MiniLM-L6, "
        "docs/droppeft.md); each must be in its list")
    arms: list[ArmSpec] | None = Field(None, description="explicit arm list; default: mean_levels x profiles")
    mean_levels: list[float] = Field([0.0, 0.25, 0.5, 0.75], min_length=1, description="mean drop ratios of the default arms")
    profiles: list[Profile] = Field(["uniform", "rising", "falling"], min_length=1, description="depth profiles of the default arms")
    bandit: bool = Field(True, description="false: every client gets fixed_arm (or the nearest feasible arm)")
    fixed_arm: int = Field(0, ge=0, description="arm index used when bandit is false")
    ptls: bool = Field(False, description="personalised transformer layer sharing")
    personal_layers: int | Literal["auto"] = Field(2, description="layers kept personal, or auto (by gradient-norm mass)")
    personal_mass: float = Field(0.5, gt=0.0, lt=1.0, description="auto: smallest set holding this share of the squared grad norm")
    personal_head: bool = Field(False, description="PTLS: keep the classification head personal too (as FedPer does)")
    discount: float = Field(0.9, gt=0.0, le=1.0, description="per-round discount of past rewards (1 = none)")
    window: int | None = Field(None, ge=1, description="keep only the last this many rounds of rewards")
    group_by: Literal["quantiles", "device_class", "none"] = Field("quantiles", description="how devices are grouped")
    speed_bins: int = Field(3, ge=1, le=20, description="quantile bins of flops_per_s")
    mem_bins: int = Field(2, ge=1, le=20, description="quantile bins of mem_cap_bytes")
    ucb_c: float = Field(0.5, ge=0.0, description="UCB exploration weight (rewards are scaled to O(1))")
    epsilon: float = Field(0.3, ge=0.0, le=1.0, description="egreedy: epsilon_t = epsilon / sqrt(1 + t)")
    progress: Literal["loss", "accuracy"] = Field("loss", description="eval loss decrease or accuracy gain")
    failure_reward: float = Field(-1.0, description="scaled reward credited for a client's lost work (oom, straggler)")
    deadline_margin: float = Field(1.0, gt=0.0, le=1.0, description="an arm is feasible if its predicted time <= margin * deadline")

    @model_validator(mode="after")
    def _check(self):
        if isinstance(self.personal_layers, int) and self.personal_layers < 0:
            raise ValueError(f"personal_layers must be >= 0 or 'auto', got {self.personal_layers}")
        if any(not 0.0 <= m < 1.0 for m in self.mean_levels):
            raise ValueError(f"every mean_levels entry must be in [0, 1), got {self.mean_levels}")
        n_arms = len(self.arms) if self.arms is not None else None
        g0, b0 = self.prior_initial
        if g0 not in self.prior_depth or b0 not in self.prior_exponents:
            raise ValueError(f"prior_initial {self.prior_initial} must take its gamma from prior_depth "
                             f"{self.prior_depth} and its beta from prior_exponents {self.prior_exponents}")
        if n_arms is not None and self.fixed_arm >= n_arms:
            raise ValueError(f"fixed_arm {self.fixed_arm} is not an arm index; there are {n_arms} arms")
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


def device_groups(fleet, how: str, speed_bins: int, mem_bins: int) -> tuple[np.ndarray, int]:
    """Group of every device of the fleet and the number of groups.

    ``quantiles``: ``speed_bin * mem_bins + mem_bin`` with bins at the fleet's quantiles of
    ``flops_per_s`` and ``mem_cap_bytes`` (ties share a bin); ``device_class``: the
    device's profile class; ``none``: one group.
    """
    if how == "none":
        return np.zeros(fleet.size, dtype=np.int64), 1
    if how == "device_class":
        cls = np.asarray(fleet.device_class, dtype=np.int64)
        return cls, int(cls.max()) + 1 if cls.size else 1

    def bins(x: np.ndarray, k: int) -> np.ndarray:
        edges = np.quantile(x, np.linspace(0, 1, k + 1)[1:-1]) if k > 1 else np.empty(0)
        return np.searchsorted(edges, x, side="right")

    return bins(fleet.flops_per_s, speed_bins) * mem_bins + bins(fleet.mem_cap_bytes, mem_bins), speed_bins * mem_bins


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


def round_progress(prev: tuple[float, float] | None, cur: tuple[float, float], metric: str) -> float | None:
    """Progress of the global model between two evaluations ``(accuracy, loss)``."""
    if prev is None:
        return None
    if metric == "accuracy":
        return cur[0] - prev[0]
    if not (np.isfinite(prev[1]) and np.isfinite(cur[1])):
        return cur[0] - prev[0]
    return prev[1] - cur[1]


def _policy(params: DropPEFTParams) -> Policy:
    if params.policy == "ucb":
        return UCBPolicy(c=params.ucb_c)
    if params.policy == "thompson":
        return ThompsonPolicy()
    return EpsilonGreedyPolicy(epsilon=params.epsilon)


# -- the method ----------------------------------------------------------------------------

@register
@compressible  # params.compression: caesar (fedsim.methods.compose)
class DropPEFT(Method):
    name = "droppeft"
    Params = DropPEFTParams

    def __init__(self, params: DropPEFTParams, shape, base_plan: ClientPlan) -> None:
        super().__init__(params, shape, base_plan)
        self.arms = make_arms(base_plan, params)
        self.policy = _policy(params)
        self._groups: np.ndarray | None = None  # per device, computed on the first round
        self.stats: ArmStats | None = None
        self.scale = RewardScale(discount=params.discount)
        if params.prior == "keep":
            shapes = np.array([[depth_weighted_keep(a.keep_prob, g) for a in self.arms] for g in params.prior_depth])
            exponents = tuple(params.prior_exponents)
            initial = (params.prior_depth.index(params.prior_initial[0]), params.prior_initial[1])
        else:
            shapes, exponents, initial = None, (1.0,), None
        self.utility = ArmUtility(len(self.arms), discount=params.discount, window=params.window,
                                  prior_weight=params.prior_weight, shapes=shapes, exponents=exponents, initial=initial,
                                  prior_sd=params.prior_sd, fit_margin=params.fit_margin)
        self._round_pace: float | None = None
        self._last_eval: tuple[float, float] | None = None
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (groups, arms, outcome) since last eval
        self._pending_since_s: float | None = None
        self._round_arms: np.ndarray | None = None
        # PTLS: per-layer gradient norms per step, fleet-wide (discounted mean) and per client (sparse).
        self._norm_sum = np.zeros(shape.num_layers)
        self._norm_w = 0.0
        self._client_norms: dict[int, np.ndarray] = {}
        self._has_copy: set[int] = set()  # clients whose trainer holds personal tensors
        self.history: list[dict[str, Any]] = []

    # -- planning ------------------------------------------------------------------------
    def _ensure_groups(self, fleet) -> None:
        if self._groups is None:
            p = self.params
            self._groups, n_groups = device_groups(fleet, p.group_by, p.speed_bins, p.mem_bins)
            if self.stats is None:
                self.stats = ArmStats(n_groups, len(self.arms), discount=p.discount, window=p.window)

    def choose_arms(self, ctx: RoundContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Arm of each selected client, its group and the feasibility mask."""
        self._ensure_groups(ctx.fleet)
        p = self.params
        ids = ctx.device_ids
        groups = self._groups[ids]
        feasible, mem, total = feasible_arms(ctx.fleet, ids, self.shape, self.arms, ctx.coefficients,
                                             ctx.deadline_s, p.deadline_margin)
        # No feasible arm: the one least likely to fail (fits memory if any does, then fastest).
        fits = mem <= ctx.fleet.mem_cap_bytes[ids][:, None]
        fallback = np.where(fits.any(axis=1), np.argmin(np.where(fits, total, np.inf), axis=1), np.argmin(mem, axis=1))
        if not p.bandit:
            arms = self._fixed_or_nearest(feasible, fallback)
        elif p.configurator == "paced":
            util = utility_scores(self.utility, p.policy, ctx.rng, c=p.ucb_c, epsilon=p.epsilon)
            quota = ctx.quota if ctx.quota is not None else len(ids)
            arms, self._round_pace = paced_assignment(util, total, feasible, quota, fallback)
        else:
            arms = assign_arms(self.policy, self.stats, groups, feasible, ctx.rng, fallback)
        return arms, groups, feasible

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
        arms, groups, feasible = self.choose_arms(ctx)
        self._round_arms = arms
        used = np.unique(arms)
        remap = np.zeros(len(self.arms), dtype=np.int64)
        remap[used] = np.arange(used.size)
        plans = RoundPlans([self.arms[a] for a in used], remap[arms])
        if not self.params.ptls:
            return plans

        return plans.regroup(lambda i, plan: self.personalise(plan, int(ctx.device_ids[i])))

    # -- learning from the round ---------------------------------------------------------
    def round_finished(self, report: RoundReport) -> None:
        if self._groups is None:
            raise RuntimeError("DropPEFT.round_finished called before configure_round")
        if self._pending_since_s is None:
            self._pending_since_s = report.start_s
        self._pending.append((self._groups[report.device_ids], np.asarray(self._round_arms), np.asarray(report.outcome)))
        self._observe_norms(report)
        if report.evaluation is None:
            return
        cur = (float(report.evaluation.accuracy), float(report.evaluation.loss))
        progress = round_progress(self._last_eval, cur, self.params.progress)
        self._last_eval = cur
        elapsed = max(report.end_s - self._pending_since_s, 1e-9)
        pending, self._pending, self._pending_since_s = self._pending, [], None
        if progress is None:
            return  # first evaluation: nothing to compare with
        groups = np.concatenate([g for g, _, _ in pending])
        arms = np.concatenate([a for _, a, _ in pending])
        outcome = np.concatenate([o for _, _, o in pending])
        if self.params.configurator == "paced":
            # Progress per round, regressed on the arm shares of the updates that arrived;
            # the planner divides by the predicted round time (bandit.paced_assignment).
            raw = progress / len(pending)
            scaled = self.scale(raw)
            arrived = arms[outcome == "ok"]
            if self.params.bandit and arrived.size:
                shares = np.bincount(arrived, minlength=len(self.arms)) / arrived.size
                self.utility.observe(shares, scaled)
            self.history.append({"round": report.round_idx, "raw_reward": raw, "scaled_reward": scaled,
                                 "pace_s": self._round_pace,
                                 "arms": np.bincount(arms, minlength=len(self.arms)).tolist()})
            return
        raw = progress / elapsed
        scaled = self.scale(raw)
        # Drop-outs and surplus clients say little about their arm: not credited.
        credited = np.isin(outcome, ("ok", "oom", "straggler"))
        rewards = np.where(outcome == "ok", scaled, self.params.failure_reward)
        if self.params.bandit and credited.any():
            self.stats.observe_round(groups[credited], arms[credited], rewards[credited])
        self.history.append({"round": report.round_idx, "raw_reward": raw, "scaled_reward": scaled,
                             "arms": np.bincount(arms, minlength=len(self.arms)).tolist()})

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

    # -- checkpointing -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "stats": self.stats.state_dict() if self.stats else None,
            "scale": self.scale.state_dict(),
            "utility": self.utility.state_dict(),
            "last_eval": self._last_eval,
            "norm_sum": self._norm_sum.tolist(),
            "norm_w": self._norm_w,
            "client_norms": {k: v.tolist() for k, v in self._client_norms.items()},
            "has_copy": sorted(self._has_copy),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("stats") is not None:
            if self.stats is None:
                g = np.asarray(state["stats"]["w"])
                self.stats = ArmStats(g.shape[0], g.shape[1], self.params.discount, self.params.window)
            self.stats.load_state_dict(state["stats"])
        self.scale.load_state_dict(state["scale"])
        if "utility" in state:
            self.utility.load_state_dict(state["utility"])
        self._last_eval = tuple(state["last_eval"]) if state["last_eval"] is not None else None
        self._norm_sum = np.asarray(state["norm_sum"], dtype=float)
        self._norm_w = float(state["norm_w"])
        self._client_norms = {int(k): np.asarray(v, dtype=float) for k, v in state["client_norms"].items()}
        self._has_copy = {int(c) for c in state.get("has_copy", [])}
