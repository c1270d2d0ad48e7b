"""One client's local training round on the shared model object.

The model holds the global state between clients. :func:`train_client` snapshots the
parameters this plan trains, runs ``plan.local_steps`` AdamW steps with stochastic layer
dropout, reports ``local - global`` as the delta, and copies the snapshot back, so a fleet
of thousands of clients needs one model and one snapshot at a time.

Conventions:

* Batches: a seeded generator walks through shuffled passes over the client's local train
  indices (reshuffled every pass), ``plan.batch_size`` at a time; a client with fewer
  examples than a batch repeats examples. Each batch is cut to ``min(plan.seq_len,
  max_length)`` tokens and then to its longest real example (padding does not change a
  BERT-style forward, it only costs time on the host).
* ``num_examples`` is the client's local train size (the FedAvg weight ``n_k``).
* The delta holds only parameters the client actually changed: a layer that never ran,
  a layer with plan rank 0, or a frozen head is left out. Aggregators treat a missing
  name as "did not train it".
* Per-layer LoRA ranks: see :mod:`fedsim.learning.real.model`. For ``0 < r_l < R`` the unused
  rank slots are zeroed for the round and their gradient masked, so they stay zero and
  their delta is exactly zero.
* ``grad_norms[l]`` is ``sqrt(sum over steps of ||g_{l,t}||^2)`` over the layer's
  trainable parameters (root-sum-square; unlike the norm of the summed gradient it cannot
  cancel out between steps).
* ``plan.lora_targets`` is not applied here: the adapted modules are fixed when the model
  is built (``ModelSpec.lora_targets``); the plan's field informs the cost model.
* ``plan.personal_layers`` is not applied here either: a personalisation method filters
  the delta and keeps the personal state itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import torch

from fedsim.core.plan import ClientPlan
from fedsim.learning.base import ClientResult
from fedsim.learning.real.config import TrainSpec
from fedsim.learning.real.data import TokenizedSplit
from fedsim.learning.real.model import FedModel
from fedsim.learning.real.stld import draw_schedule, kept_layers

__all__ = ["train_client", "batch_indices", "make_batch", "plan_trainable", "to_device"]


def batch_indices(indices: np.ndarray, batch_size: int, steps: int, rng: np.random.Generator) -> Iterator[np.ndarray]:
    """``steps`` batches drawn from shuffled passes over ``indices``."""
    indices = np.asarray(indices)
    if indices.size == 0:
        raise ValueError("a client with no local training examples cannot train")
    buf = np.empty(0, dtype=indices.dtype)
    for _ in range(steps):
        while buf.size < batch_size:
            buf = np.concatenate([buf, rng.permutation(indices)])
        yield buf[:batch_size]
        buf = buf[batch_size:]


def make_batch(data: TokenizedSplit, idx: np.ndarray, seq_len: int | None = None) -> dict[str, torch.Tensor]:
    """Model inputs and labels for the examples ``idx``, trimmed to the longest one."""
    lengths = data.lengths[idx].astype(np.int64)
    width = int(lengths.max()) if lengths.size else 1
    if seq_len is not None:
        width = min(width, seq_len)
        lengths = np.minimum(lengths, seq_len)
    width = max(width, 1)
    ids = torch.from_numpy(data.input_ids[idx, :width].astype(np.int64))
    mask = torch.from_numpy((np.arange(width)[None, :] < lengths[:, None]).astype(np.int64))
    labels = torch.from_numpy(data.labels[idx].astype(np.int64))
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device`` (the same tensors on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()}


def plan_trainable(fm: FedModel, plan: ClientPlan) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Names this plan trains and, for reduced LoRA ranks, a 0/1 mask per parameter.

    Raises:
        ValueError: The plan's layer count or a rank does not fit the model.
    """
    if plan.num_layers != fm.num_layers:
        raise ValueError(f"plan has {plan.num_layers} layers but the model has {fm.num_layers}")
    if max(plan.lora_rank, default=0) > fm.lora_rank:
        raise ValueError(
            f"plan asks for LoRA rank {max(plan.lora_rank)} but the model was built with rank "
            f"{fm.lora_rank}; raise model.lora_rank to the largest rank any plan uses"
        )
    names: list[str] = []
    masks: dict[str, torch.Tensor] = {}
    params = dict(fm.model.named_parameters())
    for name, p in params.items():
        layer = fm.param_layer[name]
        is_lora = "lora_" in name
        if layer is None:
            if not is_lora and name in fm.base_trainable:
                if plan.train_head:
                    names.append(name)
            elif plan.full_finetune and not is_lora:
                names.append(name)  # embeddings etc. under full fine-tuning
            continue
        if plan.full_finetune:
            if not is_lora:
                names.append(name)
            continue
        if not is_lora:
            continue
        rank = plan.lora_rank[layer]
        if rank == 0:
            continue
        names.append(name)
        if rank < fm.lora_rank:
            mask = torch.zeros_like(p)
            if ".lora_A." in name:
                mask[:rank] = 1.0
            elif ".lora_B." in name:
                mask[:, :rank] = 1.0
            else:
                mask.fill_(1.0)
            masks[name] = mask
    return names, masks


def train_client(
    fm: FedModel,
    data: TokenizedSplit,
    indices: np.ndarray,
    plan: ClientPlan,
    spec: TrainSpec,
    seed: int,
    client_id: int = 0,
) -> ClientResult:
    """Train one client from the model's current (global) state and restore that state.

    Args:
        fm: The shared model; holds the global state on entry and on return.
        data: The training split.
        indices: The client's local train example indices into ``data``.
        plan: Steps, batch size, sequence length, per-layer drop probabilities and ranks.
        spec: Optimiser settings.
        seed: Seeds batches, layer dropout and torch's dropout for this client.
        client_id: Written into the result.

    Returns:
        The client's delta, layer step counts, mean loss and per-layer gradient norms.
    """
    t0 = time.perf_counter()
    model = fm.model
    device = fm.device
    params = dict(model.named_parameters())
    names, masks = plan_trainable(fm, plan)
    snapshot = {n: params[n].detach().clone() for n in names}
    rng = np.random.default_rng(seed)
    schedule = draw_schedule(plan.drop_prob, plan.local_steps, rng)
    layer_steps = schedule.sum(axis=0).astype(np.int64)
    grad_sq = np.zeros(fm.num_layers, dtype=np.float64)
    by_layer: list[list[torch.nn.Parameter]] = [[] for _ in range(fm.num_layers)]
    for n in names:
        if fm.param_layer[n] is not None:
            by_layer[fm.param_layer[n]].append(params[n])
    # Losses and squared gradient norms stay on the model's device until the client is
    # done: one host sync per client instead of one per step and layer (on a GPU). The
    # host then sums them exactly as a per-step float() would, so CPU records are unchanged.
    losses: list[torch.Tensor] = []
    grad_terms: list[tuple[int, list[torch.Tensor]]] = []
    try:
        for name, p in params.items():
            p.requires_grad_(name in snapshot)
        with torch.no_grad():
            for n, m in masks.items():
                params[n].mul_(m)
        # A plan may train nothing (head frozen, every rank 0): forward only, empty delta.
        optim = (
            torch.optim.AdamW([params[n] for n in names], lr=plan.lr if plan.lr is not None else spec.lr, weight_decay=spec.weight_decay)
            if names
            else None
        )
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(rng.integers(0, 2**63 - 1)))
            batches = batch_indices(indices, plan.batch_size, plan.local_steps, rng)
            for step, idx in enumerate(batches):
                batch = to_device(make_batch(data, idx, plan.seq_len), device)
                if optim is not None:
                    optim.zero_grad(set_to_none=True)
                with kept_layers(model, schedule[step]):
                    out = model(**batch)
                losses.append(out.loss.detach())
                if optim is None or not out.loss.requires_grad:
                    continue  # nothing trainable ran at this step (all layers dropped, head frozen)
                out.loss.backward()
                for n, m in masks.items():
                    if params[n].grad is not None:
                        params[n].grad.mul_(m)
                for layer in np.flatnonzero(schedule[step]):
                    grad_terms.append((int(layer), [p.grad.pow(2).sum() for p in by_layer[layer] if p.grad is not None]))
                optim.step()
        flat = [t for _, terms in grad_terms for t in terms]
        values = iter(torch.stack(flat).tolist() if flat else [])
        for layer, terms in grad_terms:
            grad_sq[layer] += sum(next(values) for _ in terms)
        loss_values = torch.stack(losses).tolist() if losses else []
        delta: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for n in names:
                layer = fm.param_layer[n]
                if layer is not None and layer_steps[layer] == 0:
                    continue
                d = params[n].detach() - snapshot[n]
                if n in masks:
                    d.mul_(masks[n])
                delta[n] = d
    finally:
        with torch.no_grad():
            for n, value in snapshot.items():
                params[n].copy_(value)
                params[n].grad = None
        fm.set_base_trainable()
    return ClientResult(
        client_id=int(client_id),
        num_examples=int(len(indices)),
        layer_steps=layer_steps,
        train_loss=float(np.mean(loss_values)) if loss_values else float("nan"),
        grad_norms=np.sqrt(grad_sq),
        delta=delta,
        compute_s=time.perf_counter() - t0,
    )
