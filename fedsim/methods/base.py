"""The method interface: how a federated algorithm plugs into the engine.

A method chooses each selected client's :class:`~fedsim.core.plan.ClientPlan` at the start of
a round, may replace the aggregation of client updates, and hears how the round went.
Hooks are round-numbered, as in Flower's strategies; failures arrive as data in the
:class:`RoundReport`, never as exceptions. Each method is one module that registers
itself with one call to :func:`register`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from fedsim.core.configio import Spec
from fedsim.core.costmodel import CostCoefficients, ModelShape
from fedsim.fleet.fleet import Fleet
from fedsim.core.plan import ClientPlan, RoundPlans
from fedsim.learning.base import AggregateFn, ClientResult, EvalResult

__all__ = ["Method", "MethodParams", "RoundContext", "RoundReport", "register", "get_method", "method_names"]


class MethodParams(Spec):
    """Base of a method's ``params`` block in a scenario: unknown keys are rejected,
    numbers must be finite and booleans are not numbers (see :class:`~fedsim.core.configio.Spec`)."""


@dataclass
class RoundContext:
    """What a method may look at when planning a round."""

    round_idx: int
    now_s: float
    device_ids: np.ndarray
    fleet: Fleet
    shape: ModelShape
    base_plan: ClientPlan
    coefficients: CostCoefficients
    deadline_s: float | None
    rng: np.random.Generator
    quota: int | None = None  # updates the round waits for (None: every selected client)
    # The method may leave selected clients out of the round (RoundPlans.dispatch): the
    # synchronous engine allows it; a driver that dispatches one device at a time does not.
    may_leave_out: bool = False
    # Per device class code, the compute-time factor of a straggling round (the profiles'
    # straggle_slowdown), for a method that weighs stragglers in its plans (None: unknown).
    slowdown_dists: Sequence | None = None


@dataclass
class RoundReport:
    """How a round went, per selected client (arrays aligned with ``device_ids``)."""

    round_idx: int
    start_s: float
    end_s: float
    device_ids: np.ndarray
    plans: RoundPlans
    outcome: np.ndarray  # str codes, see fedsim.engine.fate.OUTCOMES
    duration_s: np.ndarray
    results: list[ClientResult] = field(default_factory=list)
    evaluation: EvalResult | None = None
    update_gains: np.ndarray | None = None  # per result: its gain in validation loss (Method.update_gain_measure)
    round_gain: float | None = None  # the whole aggregate's gain on the same examples (Method.round_gain_wanted)


class Method:
    """Base class: FedLoRA behaviour (every client gets the base plan, FedAvg per layer).

    Subclasses override :meth:`configure_round`, and optionally :meth:`aggregate_fn`,
    :meth:`bind_trainer` and :meth:`round_finished`. A checkpoint pickles the method
    object whole (:mod:`fedsim.engine.checkpoint`), so its state must be picklable.
    """

    name: ClassVar[str] = "base"
    Params: ClassVar[type[MethodParams]] = MethodParams

    def __init__(self, params: MethodParams, shape: ModelShape, base_plan: ClientPlan) -> None:
        self.params = params
        self.shape = shape
        self.base_plan = base_plan

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        return RoundPlans.same(self.base_plan, len(ctx.device_ids))

    def aggregate_fn(self) -> AggregateFn | None:
        """A replacement for per-layer FedAvg, or ``None`` to keep it."""
        return None

    def bind_trainer(self, trainer: Any) -> None:
        """Called by the engine before the first round with the run's freshly built trainer.

        A method may read data statistics from it (e.g. the clients' label counts) or
        install a trainer hook (e.g. ``download_transform``). Default: nothing. A resumed
        run unpickles the method and calls this again, on a new trainer still in its
        initial state: derive here only what follows from that trainer.
        """

    def update_gain_examples(self) -> int | None:
        """Validation examples on which the engine should measure each update's gain
        before aggregation (``RoundReport.update_gains``); ``None``: not needed."""
        return None

    def update_gain_measure(self) -> str:
        """What those gains measure: ``alone`` or ``loo`` (:mod:`fedsim.learning.base`, step 2)."""
        return "alone"

    def round_gain_wanted(self) -> bool:
        """Whether, where update gains are measured, the engine should measure the whole
        aggregate's gain on the same examples too (``RoundReport.round_gain``)."""
        return False

    def round_finished(self, report: RoundReport) -> None:
        """Called after aggregation and evaluation of every round."""


_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Make ``cls`` available to scenarios as ``method: {name: cls.name}``."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"a method named {cls.name!r} is already registered")
    _REGISTRY[cls.name] = cls
    return cls


def get_method(name: str) -> type[Method]:
    return _REGISTRY[name]


def method_names() -> list[str]:
    return sorted(_REGISTRY)
