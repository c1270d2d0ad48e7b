"""The real trainer: PyTorch + peft LoRA behind the :class:`~fedsim.trainers.base.Trainer` protocol."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from fedsim.plan import ClientPlan
from fedsim.trainers.base import AggregateFn, ClientResult, EvalResult
from fedsim.training.aggregate import fedavg_per_layer
from fedsim.training.config import DataSpec, ModelSpec, TrainSpec
from fedsim.training.data import TextData, load_data, tokenizer_identity
from fedsim.training.evaluate import eval_indices, evaluate_model
from fedsim.training.local import train_client
from fedsim.training.model import FedModel, build_model, load_tokenizer, resolve_device
from fedsim.training.partition import Partition, make_partition
from fedsim.training.personal import PersonalStore, evaluate_personal, train_personal

__all__ = ["TorchTrainer"]


class TorchTrainer:
    """Trains a LoRA classifier for real, one client after another on one model object.

    Args:
        data: Data set, tokenisation and partition settings.
        model: Model and LoRA settings.
        train: Optimiser and host settings (``train.device``: where the model, batches,
            evaluation and aggregation run; client deltas stay on that device).
        num_clients: Fleet size; client ``i`` is device ``i``.
        rng: Source of randomness; two independent streams are spawned from it (the
            partition and the model's new weights).
    """

    def __init__(
        self, data: DataSpec, model: ModelSpec, train: TrainSpec, num_clients: int, rng: np.random.Generator
    ) -> None:
        self.data_spec = data
        self.model_spec = model
        self.train_spec = train
        torch.set_num_threads(train.threads)
        self.device = resolve_device(train.device)  # before the slow loading: a bad device fails fast
        part_rng, model_rng = rng.spawn(2)
        tokenizer, tok_name = load_tokenizer(model)
        self.data: TextData = load_data(data, tokenizer, tokenizer_identity(tokenizer, tok_name))
        self.partition: Partition = make_partition(self.data.train.labels, num_clients, data.partition, part_rng)
        self.fm: FedModel = build_model(
            model, self.data.num_labels, seed=int(model_rng.integers(0, 2**63 - 1)), vocab_size=len(tokenizer),
            device=self.device,
        )
        self._eval_idx = eval_indices(len(self.data.test), data.eval_subsample, data.split_seed)
        # Optional hook (Caesar's download compression): (client id, plan, global trainable
        # state) -> the state that client starts local training from.
        self.download_transform: Callable[[int, ClientPlan, dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = None
        # Personal layers (plan.personal_layers, DropPEFT's PTLS): sparse per-client LoRA tensors.
        self.personal = PersonalStore()
        self.personal_eval_clients = 200  # personalised accuracy over at most this many (seeded sample)

    @property
    def model_config(self) -> Any:
        """The Hugging Face config of the model (layer count, hidden size, ... for the cost model)."""
        return self.fm.config

    @property
    def num_layers(self) -> int:
        return self.fm.num_layers

    @property
    def num_clients(self) -> int:
        return self.partition.num_clients

    def num_examples(self, client_ids: np.ndarray | Sequence[int]) -> np.ndarray:
        """Local train sizes of the given clients."""
        return self.partition.train.sizes[np.asarray(client_ids, dtype=np.int64)]

    def global_state(self) -> dict[str, torch.Tensor]:
        """Copies of the global trainable parameters (LoRA adapters and head)."""
        return self.fm.trainable_state()

    def train(
        self,
        round_idx: int,
        client_ids: np.ndarray,
        plans: Sequence[ClientPlan],
        seeds: np.ndarray,
    ) -> list[ClientResult]:
        """Train each client from the current global model, sequentially."""
        if not len(client_ids) == len(plans) == len(seeds):
            raise ValueError(
                f"train: {len(client_ids)} client ids, {len(plans)} plans and {len(seeds)} seeds; need one of each per client"
            )
        results = []
        global_now = self.global_state() if self.download_transform is not None else None
        for cid, plan, seed in zip(client_ids, plans, seeds):
            if global_now is not None:
                self.fm.load_state(self.download_transform(int(cid), plan, global_now))
            if plan.has_personal:
                results.append(train_personal(self.fm, self.data.train, self.partition.train[int(cid)], plan,
                                              self.train_spec, seed=int(seed), client_id=int(cid), store=self.personal))
                continue
            results.append(
                train_client(
                    self.fm,
                    self.data.train,
                    self.partition.train[int(cid)],
                    plan,
                    self.train_spec,
                    seed=int(seed),
                    client_id=int(cid),
                )
            )
        if global_now is not None:
            self.fm.load_state(global_now)  # clients' deltas apply to the true global model
        return results

    def aggregate(
        self, round_idx: int, results: Sequence[ClientResult], aggregate_fn: AggregateFn | None
    ) -> None:
        """Fold the results into the global model with ``aggregate_fn`` (default FedAvg per layer).

        The state handed to ``aggregate_fn`` holds the global trainable parameters plus any
        other parameter a client sent (e.g. base weights under full fine-tuning).
        """
        fn = aggregate_fn or fedavg_per_layer
        names = set(self.fm.base_trainable)
        for r in results:
            if r.delta:
                names.update(r.delta)
        params = dict(self.fm.model.named_parameters())
        state = {n: params[n].detach().clone() for n in sorted(names)}
        self.fm.load_state(fn(state, results))

    def evaluate(self, round_idx: int) -> EvalResult:
        """Accuracy and loss of the global model on the test split (or its fixed subsample)."""
        result = evaluate_model(self.fm.model, self.data.test, self._eval_idx, self.train_spec.eval_batch_size)
        if len(self.personal):
            result.personal_accuracy = self.evaluate_personal()
        return result

    def evaluate_personal(self) -> float | None:
        """Accuracy with personal layers on the local test shards of the clients that have them.

        Over at most ``personal_eval_clients`` of them (a sample seeded by the data's split seed).
        """
        clients = self.personal.clients()
        if clients.size > self.personal_eval_clients:
            rng = np.random.default_rng([self.data_spec.split_seed, clients.size])
            clients = np.sort(rng.choice(clients, size=self.personal_eval_clients, replace=False))
        return evaluate_personal(self.fm, self.data.train, self.partition.test, self.personal, clients,
                                 self.train_spec.eval_batch_size)
