"""The interface between the event engine and whatever produces learning progress.

The engine decides *when* things happen (simulated time, from the cost model); a trainer
decides *what* is learnt. Two trainers implement this interface: the analytic surrogate
(:mod:`fedsim.learning.surrogate`) for engine tests and very large what-if studies, and
the real PyTorch/peft trainer (:mod:`fedsim.learning.real.trainer`).

Round protocol, called by the engine in this order for round ``r``:

1. ``train(r, client_ids, plans, seeds)`` for the clients whose updates reached the
   server in time (clients that failed are never trained: their work is lost anyway);
2. ``update_gains(r, results, n, measure, aggregate_fn, weights)``, only when the method
   asks for it: each update's gain in loss on ``n`` validation examples (DropPEFT's
   configurator learns from these). ``measure="alone"``: the drop in loss when the update
   alone is applied to the global model; ``"loo"`` (leave one out): how much the loss of
   the round's aggregate (``aggregate_fn`` with ``weights``, as step 3 will fold it) would
   rise without that update. An update can help alone and still harm the average it
   joins: only ``loo`` sees that (negative gains). ``"round"``: one value, the drop in
   loss when the round's whole aggregate is applied (DropPEFT's configurator learns from
   it how a round's progress grows with its number of updates);
3. ``aggregate(r, results, aggregate_fn, weights=None)`` folds the results into the
   global model; the asynchronous driver passes ``weights`` (one per result: its update
   is scaled by it, FedBuff's staleness discount), the synchronous one never does;
4. ``evaluate(r)`` when the evaluation schedule says so.

A checkpoint stores ``state_dict()``; a resumed run builds the trainer again from the
scenario and loads it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np

from fedsim.core.plan import ClientPlan

__all__ = ["ClientResult", "EvalResult", "Trainer", "AggregateFn", "GainMeasure", "GAIN_MEASURES", "is_finite"]


@dataclass(slots=True)
class ClientResult:
    """What one client's local training produced.

    Attributes:
        client_id: Index of the client (= device id).
        num_examples: Examples the client trained on this round (weight for FedAvg).
        layer_steps: Per transformer layer, how many local steps actually ran the layer.
        train_loss: Mean training loss over the local steps.
        grad_norms: Per transformer layer, L2 norm of the trainable parameters' gradient
            accumulated over the round (zero for layers that never ran).
        delta: Parameter name -> (local - global) tensor, for the trainable parameters
            the client shares; ``None`` for the surrogate trainer.
        compute_s: Wall-clock seconds the host spent training (not simulated time).
        extras: Method-specific values (e.g. personalised accuracy).
    """

    client_id: int
    num_examples: int
    layer_steps: np.ndarray
    train_loss: float
    grad_norms: np.ndarray
    delta: dict[str, Any] | None = None
    compute_s: float = 0.0
    extras: dict[str, float] = field(default_factory=dict)


def is_finite(result: ClientResult) -> bool:
    """Whether every value of the client's update (its ``delta``) is finite."""
    for value in (result.delta or {}).values():
        ok = value.isfinite().all() if hasattr(value, "isfinite") else np.isfinite(np.asarray(value)).all()
        if not bool(ok):
            return False
    return True


@dataclass
class EvalResult:
    """Evaluation of the global model (and optionally of personalised models)."""

    accuracy: float
    loss: float = float("nan")
    personal_accuracy: float | None = None


AggregateFn = Callable[[dict[str, Any], Sequence[ClientResult]], dict[str, Any]]
"""Folds client deltas into the global trainable state; methods may supply their own."""

GainMeasure = Literal["alone", "loo", "round"]
"""What an update's gain measures (module docstring, step 2)."""
GAIN_MEASURES: tuple[str, ...] = ("alone", "loo", "round")


@runtime_checkable
class Trainer(Protocol):
    """What the engine needs from a trainer. See the module docstring for the order."""

    def train(
        self,
        round_idx: int,
        client_ids: np.ndarray,
        plans: Sequence[ClientPlan],
        seeds: np.ndarray,
    ) -> list[ClientResult]: ...

    def update_gains(self, round_idx: int, results: Sequence[ClientResult], num_examples: int,
                     measure: GainMeasure = "alone", aggregate_fn: AggregateFn | None = None,
                     weights: np.ndarray | None = None) -> np.ndarray: ...

    def aggregate(
        self, round_idx: int, results: Sequence[ClientResult], aggregate_fn: AggregateFn | None,
        weights: np.ndarray | None = None,
    ) -> None: ...

    def evaluate(self, round_idx: int) -> EvalResult: ...

    def num_examples(self, client_ids: np.ndarray) -> np.ndarray:
        """Training examples each of the given clients holds."""
        ...

    def state_dict(self) -> Any:
        """What changed since the trainer was built (global model, per-client state), picklable."""
        ...

    def load_state_dict(self, state: Any) -> None:
        """Restore :meth:`state_dict` into a trainer built from the same scenario."""
        ...
