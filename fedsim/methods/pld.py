"""Progressive layer dropping (PLD; Zhang & He, NeurIPS 2020) as a federated baseline.

The keep probability of the whole stack follows a schedule over rounds ``t``

    theta(t) = (1 - theta_bar) * exp(-gamma * t) + theta_bar

(all layers run at first, then the stack thins out towards ``theta_bar``), and it falls
linearly with depth, as in the paper: layer ``l`` (0-based, of ``L``) runs with
probability ``1 - (l + 1) / L * (1 - theta(t))``, so the first layer is dropped least
and the last layer with probability ``1 - theta(t)``. Every client gets the same plan in
a round; the schedule counts rounds, not local steps (PLD's ``t`` is the optimiser step:
``gamma`` here is per round, so ``gamma_step * local_steps`` is the like-for-like value).
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedsim.methods.base import Method, MethodParams, RoundContext, register
from fedsim.core.plan import RoundPlans

MAX_DROP = 0.95


def keep_schedule(round_idx: int | np.ndarray, theta_bar: float, gamma: float) -> np.ndarray | float:
    """``theta(t)``: the schedule's keep probability at round ``t``."""
    return (1.0 - theta_bar) * np.exp(-gamma * np.asarray(round_idx, dtype=float)) + theta_bar


def pld_drop_prob(num_layers: int, theta: float) -> np.ndarray:
    """Per-layer drop probabilities at keep level ``theta``: ``(l + 1) / L * (1 - theta)``."""
    depth = np.arange(1, num_layers + 1, dtype=float) / num_layers
    return np.clip(depth * (1.0 - float(theta)), 0.0, MAX_DROP)


class PLDParams(MethodParams):
    theta_bar: float = Field(0.5, gt=0.0, le=1.0, description="keep probability the schedule tends to")
    gamma: float = Field(0.1, ge=0.0, description="decay rate of the schedule per round")


@register
class PLD(Method):
    name = "pld"
    Params = PLDParams

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        p: PLDParams = self.params  # type: ignore[assignment]
        theta = float(keep_schedule(ctx.round_idx, p.theta_bar, p.gamma))
        drop = pld_drop_prob(self.shape.num_layers, theta)
        plan = self.base_plan.with_(drop_prob=tuple(round(float(d), 4) for d in drop), name=f"pld-{theta:.2f}")
        return RoundPlans.same(plan, len(ctx.device_ids))
