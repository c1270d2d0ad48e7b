"""Local fine-tuning at evaluation time: the FedPer-style personalisation baseline.

Every client evaluated for personalised accuracy first fine-tunes the global model on its
own local train shard, restricted to a few layers (by default the 2 nearest the output)
and the classification head, the parts PTLS keeps personal; then it is evaluated on its
local test shard. This happens at evaluation only: the global model and the training
rounds are unchanged (the trainer fine-tunes a copy of the touched tensors).

Budget: ``steps`` defaults to the scenario's ``local.local_steps``, the steps a PTLS
client spends on its personal layers in one round it takes part in.

Used as ``method: {name: fedlora, params: {local_finetune: {layers: 2, head: true}}}``.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedsim.methods.base import MethodParams
from fedsim.core.plan import ClientPlan

__all__ = ["LocalFinetune", "finetune_plan", "bind_finetune"]


class LocalFinetune(MethodParams):
    """What an evaluated client fine-tunes, and for how long."""

    layers: int | list[int] = Field(
        2, description="the number of layers nearest the output (an int), or their indices (0 = nearest the input)"
    )
    head: bool = Field(True, description="fine-tune the classification head (pooler and classifier) too")
    steps: int | None = Field(None, ge=1, description="local steps; null = the scenario's local.local_steps")


def finetune_plan(base_plan: ClientPlan, spec: LocalFinetune) -> ClientPlan:
    """The plan of the fine-tuning: the base plan's batch, length and rank on the chosen
    layers only, no layer dropout.

    Raises:
        ValueError: A layer index or count does not fit the model.
    """
    n = base_plan.num_layers
    if isinstance(spec.layers, int):
        if not 0 <= spec.layers <= n:
            raise ValueError(f"local_finetune.layers: {spec.layers} layers asked, the model has {n}")
        layers = set(range(n - spec.layers, n))
    else:
        if any(not 0 <= l < n for l in spec.layers):
            raise ValueError(f"local_finetune.layers: indices {spec.layers} must be in [0, {n})")
        layers = set(spec.layers)
    if not layers and not spec.head:
        raise ValueError("local_finetune: no layer and no head to fine-tune")
    rank = max(base_plan.lora_rank, default=0)
    return base_plan.with_(
        drop_prob=(0.0,) * n,
        lora_rank=tuple(rank if l in layers else 0 for l in range(n)),
        train_head=spec.head,
        local_steps=spec.steps or base_plan.local_steps,
        name="local-finetune",
    )


def bind_finetune(trainer: Any, plan: ClientPlan) -> None:
    """Ask ``trainer`` to fine-tune every evaluated client with ``plan`` before its
    personalised evaluation. A trainer without personalised evaluation (the surrogate)
    is left alone."""
    if hasattr(trainer, "eval_finetune"):
        trainer.eval_finetune = plan
