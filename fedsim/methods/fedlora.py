"""FedLoRA: LoRA on every layer, no layer dropout, FedAvg of the adapters per layer.

With ``local_finetune`` the personalised accuracy is measured after each evaluated
client fine-tunes a few layers locally (:mod:`fedsim.methods.finetune`), the FedPer-style
baseline for PTLS; training is unchanged.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from fedsim.methods.base import Method, MethodParams, register
from fedsim.methods.finetune import LocalFinetune, bind_finetune, finetune_plan


class FedLoRAParams(MethodParams):
    """The scenario's model and local settings rule; ``local_finetune`` only changes evaluation."""

    local_finetune: LocalFinetune | None = Field(
        None, description="fine-tune a few layers on each evaluated client before personalised evaluation"
    )


@register
class FedLoRA(Method):
    name = "fedlora"
    Params = FedLoRAParams

    def __init__(self, params: FedLoRAParams, shape, base_plan) -> None:
        super().__init__(params, shape, base_plan)
        ft = params.local_finetune
        self.finetune = finetune_plan(base_plan, ft) if ft is not None else None

    def bind_trainer(self, trainer: Any) -> None:
        if self.finetune is not None:
            bind_finetune(trainer, self.finetune)
