"""Personal layers (DropPEFT's PTLS): per-client copies of some layers' LoRA tensors.

A plan with ``personal_layers`` asks the trainer to keep those layers' adapters on the
client: the client trains from its own copy of them (the global copy the first time),
keeps the result, and sends only the shared layers. The store is sparse: it holds, for
each client that has trained with personal layers, only the LoRA tensors of those layers
(e.g. MiniLM-L6, rank 8 on query/value: about 98 KB per layer per client), never a model.

Personalised evaluation (:func:`evaluate_personal`) swaps each evaluated client's own
tensors into the shared model, evaluates on the client's local test shard and swaps them
back; a client with none is evaluated with the global model. The tensors may come from
the store (PTLS) and/or from fine-tuning at evaluation time (:func:`finetuned_tensors`,
FedLoRA's ``local_finetune`` baseline); neither changes the global model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch

from fedsim.core.plan import ClientPlan
from fedsim.learning.base import ClientResult
from fedsim.learning.real.config import TrainSpec
from fedsim.learning.real.data import TokenizedSplit
from fedsim.learning.real.evaluate import evaluate_model
from fedsim.learning.real.local import train_client
from fedsim.learning.real.model import FedModel
from fedsim.learning.real.partition import Shards

__all__ = ["PersonalStore", "personal_names", "swapped_in", "train_personal", "finetuned_tensors", "evaluate_personal"]


class PersonalStore:
    """Client id -> {parameter name: tensor} of its personal layers' LoRA tensors."""

    def __init__(self) -> None:
        self._state: dict[int, dict[str, torch.Tensor]] = {}

    def __contains__(self, client_id: int) -> bool:
        return int(client_id) in self._state

    def __len__(self) -> int:
        return len(self._state)

    def get(self, client_id: int) -> dict[str, torch.Tensor]:
        return self._state.get(int(client_id), {})

    def put(self, client_id: int, tensors: dict[str, torch.Tensor]) -> None:
        if tensors:
            self._state[int(client_id)] = {n: t.detach().clone() for n, t in tensors.items()}
        else:
            self._state.pop(int(client_id), None)

    def clients(self) -> np.ndarray:
        return np.array(sorted(self._state), dtype=np.int64)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for d in self._state.values() for t in d.values())

    def state_dict(self) -> dict:
        return {k: dict(v) for k, v in self._state.items()}

    def load_state_dict(self, state: dict) -> None:
        self._state = {int(k): {n: t.clone() for n, t in v.items()} for k, v in state.items()}


def personal_names(fm: FedModel, layers: Sequence[int], head: bool = False) -> list[str]:
    """Names of the tensors a client keeps personal: the LoRA parameters of ``layers``,
    and with ``head`` the classification head's (the trainable parameters outside the
    transformer layers)."""
    wanted = set(int(l) for l in layers)
    return [n for n in fm.base_trainable
            if ("lora_" in n and fm.param_layer.get(n) in wanted)
            or (head and "lora_" not in n and fm.param_layer.get(n) is None)]


@contextmanager
def swapped_in(fm: FedModel, tensors: dict[str, torch.Tensor]) -> Iterator[None]:
    """Load ``tensors`` into the model for the block, then put the previous values back."""
    params = dict(fm.model.named_parameters())
    saved = {n: params[n].detach().clone() for n in tensors}
    try:
        with torch.no_grad():
            for n, t in tensors.items():
                params[n].copy_(t)
        yield
    finally:
        with torch.no_grad():
            for n, t in saved.items():
                params[n].copy_(t)


def train_personal(
    fm: FedModel,
    data: TokenizedSplit,
    indices: np.ndarray,
    plan: ClientPlan,
    spec: TrainSpec,
    seed: int,
    client_id: int,
    store: PersonalStore,
) -> ClientResult:
    """:func:`~fedsim.learning.real.local.train_client` with the plan's personal layers kept local.

    The client starts from its stored personal tensors (the global ones for layers it has
    none of), trains and stores the new personal tensors (dropping those of layers that
    are no longer personal). Its delta leaves them out (they are neither uploaded nor
    aggregated), except with ``plan.share_personal``: a newcomer's trained copies are
    also sent, so the global copies of those layers go on learning. The model holds the
    global state again on return.
    """
    names = personal_names(fm, plan.personal_layers, plan.personal_head)
    params = dict(fm.model.named_parameters())
    stored = store.get(client_id)
    start = {n: (stored[n] if n in stored else params[n].detach()).clone() for n in names}
    with swapped_in(fm, {n: stored[n] for n in names if n in stored}):
        result = train_client(fm, data, indices, plan, spec, seed=seed, client_id=client_id)
    delta = result.delta or {}
    new = {n: start[n] + (delta[n] if plan.share_personal else delta.pop(n)) if n in delta else start[n]
           for n in names}
    store.put(client_id, new)
    result.extras["personal_tensors"] = float(len(new))
    return result


def finetuned_tensors(
    fm: FedModel,
    data: TokenizedSplit,
    indices: np.ndarray,
    plan: ClientPlan,
    spec: TrainSpec,
    seed: int,
    start: dict[str, torch.Tensor] | None = None,
) -> dict[str, torch.Tensor]:
    """A client's tensors after local fine-tuning, for evaluation; the model is unchanged.

    The client starts from ``start`` swapped into the global model (its personal tensors,
    or nothing), trains what ``plan`` trains for ``plan.local_steps`` steps on its local
    train examples ``indices``, and gets ``start`` updated with the trained tensors.
    """
    start = start or {}
    params = dict(fm.model.named_parameters())
    with swapped_in(fm, start):
        result = train_client(fm, data, indices, plan, spec, seed=seed)
        before = {n: params[n].detach().clone() for n in result.delta or {}}
    return {**start, **{n: before[n] + d for n, d in (result.delta or {}).items()}}


def evaluate_personal(
    fm: FedModel,
    data: TokenizedSplit,
    local_test: Shards,
    clients: np.ndarray,
    tensors: Callable[[int], dict[str, torch.Tensor]],
    batch_size: int = 64,
) -> float | None:
    """Accuracy over the pooled local test examples of ``clients``, each with its own tensors.

    Args:
        fm: The shared model, holding the global state (also on return).
        data: The split ``local_test`` indexes.
        local_test: Every client's local test shard.
        clients: The evaluated clients.
        tensors: Client id -> the tensors it evaluates with in place of the global ones
            (empty: the global model).
        batch_size: Examples per evaluation batch.

    Returns:
        The pooled accuracy, or ``None`` when none of the clients has local test examples.
    """
    correct = 0.0
    total = 0
    for cid in np.asarray(clients, dtype=np.int64).tolist():
        idx = local_test[cid]
        if idx.size == 0:
            continue
        with swapped_in(fm, tensors(cid)):
            res = evaluate_model(fm.model, data, idx, batch_size)
        correct += res.accuracy * idx.size
        total += idx.size
    return correct / total if total else None
