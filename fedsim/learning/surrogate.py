"""An analytic learning-curve trainer: a *surrogate* for real training.

It trains nothing. It turns the work that clients report into a scalar "progress" and
maps progress to accuracy with a saturating curve, so engine tests and what-if studies
over 10^5-10^6 devices run in seconds. Its numbers are a model, not a measurement: use
the PyTorch trainer (``trainer.kind: torch``) for anything about accuracy itself.

The curve, with ``E_i = batch_i * steps_i * q(plan_i)`` the effective examples of client i
in round r::

    progress_r = progress_{r-1} + rate * (sum_i E_i) ** data_exponent
    accuracy   = acc_max - (acc_max - acc_start) * exp(-progress)
    observed   = accuracy + Normal(0, noise_std)        (evaluation noise)

``q(plan) = keep ** e``: a step with layers dropped learns less than a full step, with
``e = drop_exponent`` at the start, moving linearly to ``drop_exponent_late`` (if set) as
the accuracy closes its gap to ``acc_max`` (``e = e0 + (e1 - e0) * (1 - exp(-progress))``):
the best dropout can change during training, cheap progress early, costly late; step (``drop_exponent < 1`` says dropout hurts less than proportionally, as STLD's
authors report; on MiniLM-L6 it hurts far more, see docs/droppeft.md). ``keep`` is the
share of layers the plan runs, layer ``l`` weighted ``(l + 1) ** depth_exponent``
(:func:`fedsim.core.plan.depth_weighted_keep`; 0: the plain mean). ``data_exponent < 1``
gives diminishing returns to more data per round, as averaging more clients reduces
variance but not bias.

``drop_harm`` (default 0) makes dropout *harm the average it joins*: in the aggregate
an update counts ``steps * max(q(plan) - drop_harm * (keep_max - keep), -1)`` effective
examples, ``keep_max`` the largest ``keep`` among the round's updates (at worst it undoes
what a full update adds); applied alone, or
in a round where every update runs the same share of layers, it counts ``steps * q(plan)``.
A heavily dropped update averaged per layer with full ones can so make the round worse
(below zero), as real training of MiniLM-L6 showed (``benchmarks/diag_update_gains.py``,
docs/droppeft.md): there, updates with half the layers dropped lowered the loss applied
alone, yet the round's aggregate was better without them. A round's progress never goes
below zero.

``update_gains`` gives what DropPEFT's configurator observes: ``alone``, the loss drop of
the update alone, ``loo``, how much the aggregate's loss would rise without it, or
``round``, the loss drop of the whole aggregate; each with log-normal measurement noise (``gain_noise`` on 128 examples, shrinking with the
square root of more), which keeps a gain's sign.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from pydantic import Field, model_validator
from scipy.special import ndtri

from fedsim.core.configio import Spec
from fedsim.core.plan import ClientPlan, depth_weighted_keep
from fedsim.core.rng import DeviceRandom
from fedsim.learning.base import GAIN_MEASURES, AggregateFn, ClientResult, EvalResult, GainMeasure

__all__ = ["SurrogateSpec", "SurrogateTrainer"]


class SurrogateSpec(Spec):
    """Parameters of the analytic learning curve (see the module docstring)."""

    acc_start: float = Field(0.25, ge=0.0, le=1.0, description="accuracy before training")
    acc_max: float = Field(0.9, ge=0.0, le=1.0, description="accuracy the curve saturates at")
    rate: float = Field(0.002, gt=0.0, description="progress per (effective example) ** data_exponent")
    data_exponent: float = Field(0.5, gt=0.0, le=1.0)
    drop_exponent: float = Field(0.5, ge=0.0, le=4.0)
    drop_exponent_late: float | None = Field(None, ge=0.0, le=4.0, description="drop_exponent as accuracy nears acc_max (null: constant)")
    depth_exponent: float = Field(0.0, ge=-4.0, le=4.0, description="weight of layer l in keep: (l + 1) ** this")
    noise_std: float = Field(0.0, ge=0.0, le=0.2, description="std of evaluation noise")
    gain_noise: float = Field(0.3, ge=0.0, le=2.0, description="relative std (log scale) of an update's gain measured on 128 examples")
    drop_harm: float = Field(0.0, ge=0.0, le=4.0, description="harm to the aggregate per unit of dropout (module docstring)")

    @model_validator(mode="after")
    def _check(self):
        if self.acc_max < self.acc_start:
            raise ValueError(f"acc_max ({self.acc_max}) must be at least acc_start ({self.acc_start})")
        return self


class SurrogateTrainer:
    """Implements :class:`~fedsim.learning.base.Trainer` with the curve above."""

    def __init__(self, spec: SurrogateSpec, num_layers: int, examples_per_client: np.ndarray, seed: int) -> None:
        self.spec = spec
        self.num_layers = num_layers
        self.examples_per_client = examples_per_client
        self.seed = int(seed)
        self.progress = 0.0

    def num_examples(self, client_ids: np.ndarray) -> np.ndarray:
        return self.examples_per_client[np.asarray(client_ids, dtype=np.int64)]

    def drop_exponent(self) -> float:
        """The exponent of ``keep`` at the current progress (module docstring)."""
        s = self.spec
        if s.drop_exponent_late is None:
            return s.drop_exponent
        return s.drop_exponent + (s.drop_exponent_late - s.drop_exponent) * (1.0 - float(np.exp(-self.progress)))

    def effective_examples(self, plan: ClientPlan) -> float:
        """Effective examples of an update applied alone (module docstring)."""
        return plan.batch_size * plan.local_steps * self._keep(plan) ** self.drop_exponent()

    def _keep(self, plan: ClientPlan) -> float:
        return depth_weighted_keep(plan.keep_prob, self.spec.depth_exponent)

    def _increment(self, total: float) -> float:
        return self.spec.rate * max(total, 0.0) ** self.spec.data_exponent

    def _loss_at(self, progress: float) -> float:
        s = self.spec
        acc = s.acc_max - (s.acc_max - s.acc_start) * float(np.exp(-progress))
        return float(-np.log(max(acc, 1e-6)))

    def update_gains(self, round_idx: int, results: Sequence[ClientResult], num_examples: int,
                     measure: GainMeasure = "alone", aggregate_fn: AggregateFn | None = None,
                     weights: np.ndarray | None = None) -> np.ndarray:
        """Each update's gain (module docstring), with log-normal measurement noise."""
        s = self.spec
        if measure == "alone":
            base = self._loss_at(self.progress)
            true = np.array([base - self._loss_at(self.progress + self._increment(r.extras["effective_examples"]))
                             for r in results])
        elif measure == "round":
            base = self._loss_at(self.progress)
            true = np.array([base - self._loss_at(self.progress + self._increment(self._total(results, weights)))])
        elif measure == "loo":
            after = self._loss_at(self.progress + self._increment(self._total(results, weights)))
            true = np.array([self._loss_at(self.progress + self._increment(self._total(results, weights, leave_out=i))) - after
                             for i in range(len(results))])
        else:
            raise ValueError(f"measure must be one of {GAIN_MEASURES}, got {measure!r}")
        sd = s.gain_noise * np.sqrt(128.0 / max(int(num_examples), 1))
        # Keyed by client: an update's noise does not depend on which others the round holds.
        key = int(np.random.default_rng([self.seed, 0x6A17, round_idx]).integers(0, 2**63 - 1))
        ids = np.array([r.client_id for r in results], dtype=np.int64) if measure != "round" else np.array([-1])
        z = ndtri(DeviceRandom(key, ids).random(ids.size))
        return true * np.exp(sd * z - 0.5 * sd**2)

    def _total(self, results: Sequence[ClientResult], weights: np.ndarray | None, leave_out: int | None = None) -> float:
        """The round's effective examples in the aggregate, each scaled by its weight (module docstring)."""
        w = [1.0] * len(results) if weights is None else [float(x) for x in weights]
        if leave_out is not None:
            w[leave_out] = 0.0
        e = [r.extras["effective_examples"] for r in results]
        if self.spec.drop_harm > 0 and any(x > 0 for x in w):
            top = max(r.extras["keep"] for r, x in zip(results, w) if x > 0)
            e = [max(ei - self.spec.drop_harm * r.extras["steps"] * (top - r.extras["keep"]), -float(r.extras["steps"]))
                 for ei, r in zip(e, results)]
        if weights is None and leave_out is None:
            return float(sum(e))
        return float(sum(x * ei for x, ei in zip(w, e, strict=True)))

    def train(self, round_idx: int, client_ids: np.ndarray, plans: Sequence[ClientPlan], seeds: np.ndarray) -> list[ClientResult]:
        loss = float(-np.log(max(self.accuracy(), 1e-6)))
        per_plan: dict[ClientPlan, tuple[np.ndarray, float, float, int]] = {}  # plans repeat: price each once
        grad_norms = np.zeros(self.num_layers)
        results = []
        for cid, plan in zip(client_ids.tolist(), plans):
            cached = per_plan.get(plan)
            if cached is None:
                cached = per_plan[plan] = (np.rint(plan.keep_prob * plan.local_steps).astype(np.int64), self.effective_examples(plan),
                                           self._keep(plan), plan.batch_size * plan.local_steps)
            results.append(
                ClientResult(
                    client_id=cid,
                    num_examples=int(self.examples_per_client[cid]),
                    layer_steps=cached[0],
                    train_loss=loss,
                    grad_norms=grad_norms,
                    extras={"effective_examples": cached[1], "keep": cached[2], "steps": cached[3]},
                )
            )
        return results

    def aggregate(self, round_idx: int, results: Sequence[ClientResult], aggregate_fn: AggregateFn | None,
                  weights: np.ndarray | None = None) -> None:
        """Progress from the results' effective examples, each scaled by its weight (if given)."""
        if results:
            self.progress += self._increment(self._total(results, weights))

    def accuracy(self) -> float:
        s = self.spec
        return s.acc_max - (s.acc_max - s.acc_start) * float(np.exp(-self.progress))

    def evaluate(self, round_idx: int) -> EvalResult:
        acc = self.accuracy()
        if self.spec.noise_std > 0:
            rng = np.random.default_rng([self.seed, 0xE7A1, round_idx])
            acc = float(np.clip(acc + rng.normal(0.0, self.spec.noise_std), 0.0, 1.0))
        return EvalResult(accuracy=acc, loss=float(-np.log(max(acc, 1e-6))))

    def state_dict(self) -> dict:
        return {"progress": self.progress}

    def load_state_dict(self, state: dict) -> None:
        self.progress = float(state["progress"])
