"""FedAvg with full fine-tuning: every weight trains, every weight travels.

The baseline that PEFT methods are measured against. Its plan trains the embeddings,
every layer and the head (no LoRA), so the cost model prices the weights' gradients and
AdamW states (three more copies of the model) and the whole model in both directions:
small phones fail with ``oom`` and slow links become stragglers. Aggregation is per-layer
FedAvg over whatever each client sent (all parameters of the layers it ran).
"""

from __future__ import annotations

from pydantic import Field

from fedsim.methods.base import Method, MethodParams, RoundContext, register
from fedsim.core.plan import ClientPlan, RoundPlans


class FedAvgFullParams(MethodParams):
    """Parameters of ``method: {name: fedavg-full}``."""

    lr: float | None = Field(
        5e-5, gt=0.0, le=1.0,
        description="local learning rate of full fine-tuning (BERT's recommended 2e-5 to 5e-5, Devlin et al. "
        "2019); null: the scenario's train.lr, which is tuned for LoRA and diverges here")


def full_finetune_plan(base_plan: ClientPlan, lr: float | None = None) -> ClientPlan:
    """The base plan turned into full fine-tuning (no LoRA, no layer dropout)."""
    n = base_plan.num_layers
    return base_plan.with_(full_finetune=True, lora_rank=(0,) * n, drop_prob=(0.0,) * n, train_head=True,
                           lr=lr, name="full-ft")


@register
class FedAvgFull(Method):
    name = "fedavg-full"
    Params = FedAvgFullParams

    def __init__(self, params: FedAvgFullParams, shape, base_plan: ClientPlan) -> None:
        super().__init__(params, shape, base_plan)
        self.plan = full_finetune_plan(base_plan, params.lr)

    def configure_round(self, ctx: RoundContext) -> RoundPlans:
        return RoundPlans.same(self.plan, len(ctx.device_ids))
