"""Composition: Caesar's compression on top of another method, as a scenario option.

``@compressible`` (under ``@register``) gives a method two more parameters,
``compression: none | caesar`` and ``caesar`` (:class:`~fedsim.methods.caesar.CompressionParams`).
With ``compression: caesar`` the method's plans get Caesar's per-client download and
upload levels (``down_ratio`` / ``up_ratio``), its aggregation receives the compressed
deltas, and the trainer's download hook is installed; with ``none`` nothing changes::

    method: {name: droppeft, params: {compression: caesar, caesar: {staleness_tau: 5}}}
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from fedsim.methods.base import Method, RoundContext, RoundReport
from fedsim.methods.caesar import CaesarCompression, CompressionParams
from fedsim.core.plan import RoundPlans
from fedsim.learning.base import AggregateFn

__all__ = ["compressible"]


def compressible(cls: type[Method]) -> type[Method]:
    """A subclass of ``cls`` (same name) whose params accept ``compression`` and ``caesar``."""

    class Params(cls.Params):  # type: ignore[name-defined,misc]
        compression: Literal["none", "caesar"] = Field("none", description="compress traffic with Caesar's scheme")
        caesar: CompressionParams = Field(default_factory=CompressionParams, description="Caesar's compression levels")

    Params.__name__ = Params.__qualname__ = f"{cls.Params.__name__}"

    class Compressed(cls):  # type: ignore[valid-type,misc]
        def __init__(self, params, shape, base_plan) -> None:
            super().__init__(params, shape, base_plan)
            on = getattr(params, "compression", "none") == "caesar"
            self.compression = CaesarCompression(params.caesar, shape) if on else None

        def bind_trainer(self, trainer: Any) -> None:
            super().bind_trainer(trainer)
            if self.compression is not None:
                self.compression.bind(trainer)

        def configure_round(self, ctx: RoundContext) -> RoundPlans:
            plans = super().configure_round(ctx)
            return plans if self.compression is None else self.compression.assign(ctx, plans)

        def aggregate_fn(self) -> AggregateFn | None:
            inner = super().aggregate_fn()
            return inner if self.compression is None else self.compression.aggregate_fn(inner)

        def round_finished(self, report: RoundReport) -> None:
            super().round_finished(report)
            if self.compression is not None:
                self.compression.round_finished(report)

    Compressed.Params = Params
    Compressed.__name__ = Compressed.__qualname__ = cls.__name__
    Compressed.__module__ = cls.__module__
    Compressed.__doc__ = cls.__doc__
    return Compressed
