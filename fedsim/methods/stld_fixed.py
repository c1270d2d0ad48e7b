"""STLD with a fixed dropout configuration: every client, every round, the same ratios.

The configuration is a mean drop ratio and a depth profile (see :func:`profile_ratios`),
or an explicit list of per-layer drop probabilities.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from fedsim.methods.base import Method, MethodParams, RoundContext, register
from fedsim.methods.compose import compressible
from fedsim.core.plan import ClientPlan, RoundPlans

Profile = Literal["uniform", "rising", "falling"]


def profile_ratios(num_layers: int, mean: float, profile: Profile) -> np.ndarray:
    """Per-layer drop ratios with the given mean and depth profile.

    ``rising`` drops deep layers (near the output) more, ``falling`` drops shallow layers
    more; both are linear in depth with slope chosen so the ratios span ``[0, 2*mean]``
    where that stays below 1, and are clipped to ``[0, 0.95]`` otherwise (the mean is
    then restored as closely as the clip allows).
    """
    if not 0.0 <= mean < 1.0:
        raise ValueError(f"mean drop ratio must be in [0, 1), got {mean}")
    if profile == "uniform" or num_layers == 1:
        return np.full(num_layers, mean)
    ramp = np.linspace(-1.0, 1.0, num_layers)
    if profile == "falling":
        ramp = -ramp
    span = min(mean, 0.95 - mean)
    ratios = np.clip(mean + span * ramp, 0.0, 0.95)
    return ratios


class STLDFixedParams(MethodParams):
    mean_drop: float = Field(0.5, ge=0.0, lt=1.0, description="mean per-layer drop ratio")
    profile: Profile = Field("uniform", description="how the ratio changes with depth")
    drop_prob: list[float] | None = Field(None, description="explicit per-layer ratios (overrides mean_drop/profile)")

    @model_validator(mode="after")
    def _check(self):
        if self.drop_prob is not None and any(not 0.0 <= p < 1.0 for p in self.drop_prob):
            raise ValueError("every drop_prob entry must be in [0, 1)")
        return self


@register
@compressible  # params.compression: caesar (fedsim.methods.compose)
class STLDFixed(Method):
    name = "stld-fixed"
    Params = STLDFixedParams

    def __init__(self, params: STLDFixedParams, shape, base_plan: ClientPlan) -> None:
        super().__init__(params, shape, base_plan)
        if params.drop_prob is not None:
            if len(params.drop_prob) != shape.num_layers:
                raise ValueError(
                    f"method.params.drop_prob has {len(params.drop_prob)} entries; the model has {shape.num_layers} layers"
                )
            ratios = np.asarray(params.drop_prob, dtype=float)
        else:
            ratios = profile_ratios(shape.num_layers, params.mean_drop, params.profile)
        self.plan = base_plan.with_(drop_prob=tuple(float(r) for r in ratios), name=f"stld-{params.profile}-{params.mean_drop:g}")

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        return RoundPlans.same(self.plan, len(ctx.device_ids))
