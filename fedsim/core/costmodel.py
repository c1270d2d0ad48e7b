"""Analytic cost of a client plan on a transformer: FLOPs, peak memory, bytes, energy.

Pure functions of (model shape, plan, coefficients); no SimPy, no torch. The engine calls
:func:`plan_cost` once per distinct plan of a round and :func:`client_times` once per
round, vectorised over the selected devices.

Conventions (documented in docs/cost-model.md):

* A matrix multiply of an ``(m, k)`` by a ``(k, n)`` matrix costs ``2mkn`` FLOPs.
* Forward FLOPs per example of one encoder layer at sequence length ``s``:
  ``s * (8h^2 + 4h*ffn) + 4 s^2 h`` (Q, K, V and output projections, the two FFN
  matrices, then ``QK^T`` and ``AV``); element-wise work (softmax, GELU, layer norm) is
  left out, as in nanoGPT's ``estimate_mfu`` and Kaplan et al.'s ``6N`` rule.
* LoRA of rank ``r`` on a ``(d_in, d_out)`` projection adds ``2 s r (d_in + d_out)``.
* Backward through a layer costs one forward again for the input gradients, needed only
  if some executed layer at or below it has trainable parameters (with LoRA on the top
  layers only, nothing below them is back-propagated), plus one forward of the trainable
  matrices for their weight gradients.
* Activation memory per example of a layer that is back-propagated is
  ``bytes_per_value * s * (c_h*h + c_f*ffn + c_a*a*s)``, coefficients calibrated to
  measured peaks of eager PyTorch (fp32) and kept in :class:`CostCoefficients`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from fedsim.core.plan import ClientPlan

__all__ = [
    "ModelShape",
    "CostCoefficients",
    "PlanCost",
    "plan_cost",
    "layer_forward_flops",
    "forward_flops_per_example",
    "expected_layers_run",
    "client_times",
    "ClientTimes",
]


# Names of the adapted projections inside one layer, per family, and their shapes as a
# function of (hidden, ffn). "dense" in BERT names three different projections.
_TARGETS = {
    "bert": {"query": "hh", "key": "hh", "value": "hh", "dense": ("hh", "hf", "fh")},
    "distilbert": {"q_lin": "hh", "k_lin": "hh", "v_lin": "hh", "out_lin": "hh", "lin1": "hf", "lin2": "fh"},
    "mpnet": {"q": "hh", "k": "hh", "v": "hh", "o": "hh", "dense": ("hf", "fh")},
}
_TARGETS["roberta"] = _TARGETS["bert"]
_TARGETS["xlm-roberta"] = _TARGETS["bert"]


@dataclass(frozen=True)
class ModelShape:
    """The architecture figures the cost model needs, for BERT-like encoders.

    Build one with :meth:`from_hf_config` from a Hugging Face config (object or dict).
    """

    family: str
    num_layers: int
    hidden: int
    heads: int
    ffn: int
    vocab: int
    max_positions: int
    type_vocab: int
    num_labels: int
    extra_params: int = 0  # e.g. MPNet's relative attention bias table

    @classmethod
    def from_hf_config(cls, config: Any, num_labels: int | None = None) -> ModelShape:
        """Read a transformers ``PretrainedConfig`` or its ``config.json`` as a dict.

        Supports the BERT, RoBERTa, XLM-RoBERTa, DistilBERT and MPNet families.
        """
        get = config.get if isinstance(config, Mapping) else (lambda k, d=None: getattr(config, k, d))
        family = get("model_type")
        labels = num_labels if num_labels is not None else get("num_labels", None)
        if labels is None:
            labels = len(get("id2label", None) or {}) or 2
        if family == "distilbert":
            return cls(
                family=family,
                num_layers=get("n_layers"),
                hidden=get("dim"),
                heads=get("n_heads"),
                ffn=get("hidden_dim"),
                vocab=get("vocab_size"),
                max_positions=get("max_position_embeddings"),
                type_vocab=0,
                num_labels=int(labels),
            )
        if family in ("bert", "roberta", "xlm-roberta", "mpnet"):
            extra = get("relative_attention_num_buckets", 32) * get("num_attention_heads") if family == "mpnet" else 0
            return cls(
                family=family,
                num_layers=get("num_hidden_layers"),
                hidden=get("hidden_size"),
                heads=get("num_attention_heads"),
                ffn=get("intermediate_size"),
                vocab=get("vocab_size"),
                max_positions=get("max_position_embeddings"),
                type_vocab=0 if family == "mpnet" else get("type_vocab_size", 0),
                num_labels=int(labels),
                extra_params=extra,
            )
        raise ValueError(
            f"model_type {family!r} is not supported by the cost model; expected one of "
            "bert, roberta, xlm-roberta, distilbert, mpnet"
        )

    # Parameter counts --------------------------------------------------------------
    @property
    def layer_params(self) -> int:
        h, f = self.hidden, self.ffn
        return 4 * (h * h + h) + (h * f + f) + (f * h + h) + 2 * (2 * h)

    @property
    def embedding_params(self) -> int:
        h = self.hidden
        return (self.vocab + self.max_positions + self.type_vocab) * h + 2 * h + self.extra_params

    @property
    def head_params(self) -> int:
        # BERT: pooler + classifier; RoBERTa/MPNet: dense + out_proj; DistilBERT:
        # pre_classifier + classifier. All are an (h, h) and an (h, labels) linear.
        h = self.hidden
        return (h * h + h) + (h * self.num_labels + self.num_labels)

    @property
    def total_params(self) -> int:
        return self.embedding_params + self.num_layers * self.layer_params + self.head_params

    def target_shapes(self, targets: tuple[str, ...]) -> list[tuple[int, int]]:
        """``(d_in, d_out)`` of every projection in a layer matched by ``targets``."""
        table = _TARGETS.get(self.family, _TARGETS["bert"])
        dims = {"h": self.hidden, "f": self.ffn}
        shapes: list[tuple[int, int]] = []
        for name in targets:
            if name not in table:
                raise ValueError(f"LoRA target {name!r} is not a projection of a {self.family} layer; expected one of {sorted(table)}")
            kinds = table[name]
            for kind in (kinds,) if isinstance(kinds, str) else kinds:
                shapes.append((dims[kind[0]], dims[kind[1]]))
        return shapes

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """LoRA parameters (A and B) of one layer at ``rank``."""
        return sum(rank * (i + o) for i, o in self.target_shapes(targets))


@dataclass(frozen=True)
class CostCoefficients:
    """Calibrated constants of the cost model (defaults: eager PyTorch, fp32).

    Attributes:
        bytes_per_value: Bytes per parameter and activation value (4 = fp32).
        act_h: Activation values saved per token per layer, in units of hidden.
        act_ffn: ... in units of the FFN width.
        act_attn: ... in units of ``heads * seq_len`` (attention probabilities).
        full_ft_act_factor: Extra activation factor when every weight trains (the inputs
            of frozen projections need not be saved; of trainable ones they must).
        optimizer_states: Optimizer values per trainable parameter (AdamW: 2).
        optimizer_flops_per_param: FLOPs of one optimizer step per trainable parameter.
        runtime_overhead_bytes: Memory of the training runtime itself on a device.
    """

    bytes_per_value: int = 4
    act_h: float = 18.0
    act_ffn: float = 6.0
    act_attn: float = 2.0
    full_ft_act_factor: float = 1.5
    optimizer_states: int = 2
    optimizer_flops_per_param: float = 12.0
    runtime_overhead_bytes: float = 150e6


@dataclass(frozen=True)
class PlanCost:
    """Cost of one plan for one round, independent of the device.

    Attributes:
        flops: Expected training FLOPs of the round (all local steps).
        peak_mem_bytes: Peak training memory: weights, gradients, optimizer state,
            activations of the largest step, runtime overhead.
        bytes_down: Bytes received at the start of the round.
        bytes_up: Bytes sent at the end of the round.
        trainable_params: Parameters the plan trains.
        weights_bytes, grads_bytes, optimizer_bytes, activations_bytes: Parts of the peak.
    """

    flops: float
    peak_mem_bytes: float
    bytes_down: float
    bytes_up: float
    trainable_params: int
    weights_bytes: float
    grads_bytes: float
    optimizer_bytes: float
    activations_bytes: float


def layer_forward_flops(shape: ModelShape, seq_len: int) -> float:
    """Forward FLOPs of one encoder layer for one example (LoRA excluded)."""
    h, f, s = shape.hidden, shape.ffn, seq_len
    return s * (8 * h * h + 4 * h * f) + 4 * s * s * h


def forward_flops_per_example(shape: ModelShape, seq_len: int) -> float:
    """Forward FLOPs of the whole model (every layer and the head) for one example."""
    return shape.num_layers * layer_forward_flops(shape, seq_len) + 2.0 * shape.head_params


def expected_layers_run(plan: ClientPlan) -> float:
    """Expected number of layers executed per local step."""
    return float(plan.keep_prob.sum())


def _max_layers_run(plan: ClientPlan) -> int:
    # Layers are drawn by systematic sampling (fedsim.core.plan.draw_layers): a step runs
    # floor or ceil of the expected count, never more, which bounds peak memory.
    return min(plan.num_layers, math.ceil(expected_layers_run(plan) - 1e-9))


def _trainable_layer(plan: ClientPlan, layer: int) -> bool:
    return plan.full_finetune or plan.lora_rank[layer] > 0


@lru_cache(maxsize=4096)
def plan_cost(shape: ModelShape, plan: ClientPlan, coef: CostCoefficients = CostCoefficients()) -> PlanCost:
    """Price ``plan`` on a model of ``shape``. Cached: plans and shapes are hashable."""
    if plan.num_layers != shape.num_layers:
        raise ValueError(f"plan has {plan.num_layers} layers but the model has {shape.num_layers}")
    b, s, steps = plan.batch_size, plan.seq_len, plan.local_steps
    bpv = coef.bytes_per_value
    keep = plan.keep_prob
    fwd_layer = layer_forward_flops(shape, s)
    head_fwd = 2.0 * shape.head_params  # on the pooled token only

    # Trainable parameters per layer.
    if plan.full_finetune:
        train_layer = np.full(shape.num_layers, shape.layer_params, dtype=float)
        lora_fwd = np.zeros(shape.num_layers)
    else:
        shapes = shape.target_shapes(plan.lora_targets)
        per_rank = sum(i + o for i, o in shapes)
        ranks = np.asarray(plan.lora_rank, dtype=float)
        train_layer = ranks * per_rank
        lora_fwd = 2.0 * s * ranks * per_rank
    trainable = int(train_layer.sum()) + (shape.head_params if plan.train_head else 0)
    if plan.full_finetune:
        trainable += shape.embedding_params

    # Probability that a kept layer must be back-propagated: some trainable layer at or
    # below it is kept too (layers drawn independently for this expectation).
    p_backprop = np.empty(shape.num_layers)
    none_below = 1.0
    for l in range(shape.num_layers):
        if _trainable_layer(plan, l):
            p_backprop[l] = 1.0
            none_below *= 1.0 - keep[l]
        else:
            p_backprop[l] = 1.0 - none_below
    if plan.full_finetune:
        p_backprop[:] = 1.0  # embeddings train too

    wgrad = np.where(plan.full_finetune, s * (8 * shape.hidden**2 + 4 * shape.hidden * shape.ffn), 0.0) + lora_fwd
    per_layer = keep * (fwd_layer + lora_fwd + p_backprop * (fwd_layer + lora_fwd) + wgrad)
    head = head_fwd * (3.0 if plan.train_head else 1.0)
    step_flops = b * (per_layer.sum() + head) + coef.optimizer_flops_per_param * trainable
    flops = steps * step_flops

    # Memory at peak.
    weights = (shape.total_params + (0 if plan.full_finetune else int(train_layer.sum()))) * bpv
    grads = trainable * bpv
    optim = coef.optimizer_states * trainable * bpv
    per_token = coef.act_h * shape.hidden + coef.act_ffn * shape.ffn + coef.act_attn * shape.heads * s
    act_layer = bpv * b * s * per_token * (coef.full_ft_act_factor if plan.full_finetune else 1.0)
    backprop_layers = [l for l in range(shape.num_layers) if p_backprop[l] > 0]
    n_act = min(_max_layers_run(plan), len(backprop_layers))
    activations = act_layer * n_act + bpv * b * s * shape.hidden  # + embeddings output
    peak = weights + grads + optim + activations + coef.runtime_overhead_bytes

    # Traffic: the global trainable state down; the shared trained part up. Personal
    # layers (and head) stay on the device once it holds a copy of them: the server
    # neither receives nor sends them (a newcomer, share_personal, still exchanges them).
    personal = () if plan.share_personal else plan.personal_layers
    head_personal = plan.personal_head and not plan.share_personal
    sent_layers = [l for l in range(shape.num_layers) if l not in personal]
    p_trained = 1.0 - (1.0 - keep) ** steps  # the layer ran at least once
    down_params = trainable - float(sum(train_layer[l] for l in personal if 0 <= l < shape.num_layers))
    if plan.train_head and head_personal:
        down_params -= shape.head_params
    up_params = float(sum(train_layer[l] * p_trained[l] for l in sent_layers))
    if plan.train_head and not head_personal:
        up_params += shape.head_params
    if plan.full_finetune:
        up_params += shape.embedding_params
    return PlanCost(
        flops=float(flops),
        peak_mem_bytes=float(peak),
        bytes_down=float(down_params * bpv * plan.down_ratio),
        bytes_up=float(up_params * bpv * plan.up_ratio),
        trainable_params=trainable,
        weights_bytes=float(weights),
        grads_bytes=float(grads),
        optimizer_bytes=float(optim),
        activations_bytes=float(activations),
    )


@dataclass
class ClientTimes:
    """Per selected client, vectorised: durations (s), memory, bytes and energy."""

    download_s: np.ndarray
    compute_s: np.ndarray
    upload_s: np.ndarray
    peak_mem_bytes: np.ndarray
    bytes_down: np.ndarray
    bytes_up: np.ndarray
    flops: np.ndarray
    oom: np.ndarray

    @property
    def total_s(self) -> np.ndarray:
        return self.download_s + self.compute_s + self.upload_s

    def energy_j(self, fleet, ids: np.ndarray, compute_fraction: np.ndarray | float = 1.0,
                 down_fraction: np.ndarray | float = 1.0, up_fraction: np.ndarray | float = 1.0) -> np.ndarray:
        """Energy spent, counting only the fractions of each phase that took place."""
        return (
            self.flops * compute_fraction * fleet.joules_per_flop[ids]
            + self.bytes_down * down_fraction * fleet.joules_per_byte_down[ids]
            + self.bytes_up * up_fraction * fleet.joules_per_byte_up[ids]
        )


def client_times(
    fleet,
    ids: np.ndarray,
    costs: list[PlanCost],
    plan_index: np.ndarray,
    slowdown: np.ndarray | None = None,
) -> ClientTimes:
    """Durations of each phase for the devices ``ids`` running their plans.

    Args:
        fleet: A :class:`~fedsim.fleet.Fleet` (device arrays).
        ids: Device ids of the selected clients.
        costs: :class:`PlanCost` of each distinct plan.
        plan_index: For each client, the index of its plan in ``costs``.
        slowdown: Per-client compute-time factor (stragglers), default 1.
    """
    flops = np.array([c.flops for c in costs])[plan_index]
    mem = np.array([c.peak_mem_bytes for c in costs])[plan_index]
    down = np.array([c.bytes_down for c in costs])[plan_index]
    up = np.array([c.bytes_up for c in costs])[plan_index]
    compute = flops / fleet.flops_per_s[ids]
    if slowdown is not None:
        compute = compute * slowdown
    lat = fleet.latency_s[ids].astype(np.float64)
    return ClientTimes(
        download_s=lat + 8.0 * down / fleet.down_bps[ids],
        compute_s=compute,
        upload_s=lat + 8.0 * up / fleet.up_bps[ids],
        peak_mem_bytes=mem,
        bytes_down=down,
        bytes_up=up,
        flops=flops,
        oom=mem > fleet.mem_cap_bytes[ids],
    )
