"""FedLoRA: LoRA on every layer, no layer dropout, FedAvg of the adapters per layer."""

from __future__ import annotations

from fedsim.methods.base import Method, MethodParams, register


class FedLoRAParams(MethodParams):
    """FedLoRA has no parameters of its own: the scenario's model and local settings rule."""


@register
class FedLoRA(Method):
    name = "fedlora"
    Params = FedLoRAParams
