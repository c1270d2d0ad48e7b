"""The real trainer: PyTorch + peft LoRA behind the :class:`~fedsim.learning.base.Trainer` protocol."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import torch

from fedsim.core.errors import ConfigError
from fedsim.core.plan import ClientPlan
from fedsim.learning.base import GAIN_MEASURES, AggregateFn, ClientResult, EvalResult, GainMeasure
from fedsim.learning.real.aggregate import fedavg_per_layer
from fedsim.learning.real.config import DataSpec, ModelSpec, ReuseSpec, TrainSpec
from fedsim.learning.real.data import TextData, load_data, tokenizer_identity
from fedsim.learning.real.evaluate import eval_indices, evaluate_model
from fedsim.learning.real.keys import TrainerKeys
from fedsim.learning.real.model import FedModel, build_model, load_tokenizer, resolve_device
from fedsim.learning.real.partition import Partition, make_partition
from fedsim.learning.real.personal import PersonalStore, evaluate_personal, finetuned_tensors
from fedsim.learning.real.workers import ClientJob, ClientOutcome, ClientPool, train_job
from fedsim.learning.reuse import ReuseCache

__all__ = ["TorchTrainer"]


class TorchTrainer:
    """Trains a LoRA classifier for real, one client after another on one model object
    (or side by side in ``train.workers`` processes, :mod:`fedsim.learning.real.workers`),
    reusing results from the cache ``train.reuse`` when it is set (:mod:`fedsim.learning.reuse`).

    Args:
        data: Data set, tokenisation and partition settings.
        model: Model and LoRA settings.
        train: Optimiser and host settings (``train.device``: where the model, batches,
            evaluation and aggregation run; client deltas stay on that device).
        num_clients: Fleet size; client ``i`` is device ``i``.
        rng: Source of randomness; three independent streams are spawned from it (the
            partition, the model's new weights, the clients of personalised evaluation).
    """

    def __init__(
        self, data: DataSpec, model: ModelSpec, train: TrainSpec, num_clients: int, rng: np.random.Generator
    ) -> None:
        self.data_spec = data
        self.model_spec = model
        self.train_spec = train
        torch.set_num_threads(train.threads)
        self.device = resolve_device(train.device)  # before the slow loading: a bad device fails fast
        # What a worker process needs to build this same trainer (the generator before it is used).
        self._worker_build = (data, model, train.model_copy(update={"threads": 1, "workers": 1, "reuse": ReuseSpec()}),
                              num_clients, copy.deepcopy(rng))
        self._pool: ClientPool | None = None
        part_rng, model_rng, eval_rng = rng.spawn(3)
        tokenizer, tok_name = load_tokenizer(model)
        self.data: TextData = load_data(data, tokenizer, tokenizer_identity(tokenizer, tok_name))
        self.partition: Partition = make_partition(self.data.train.labels, num_clients, data.partition, part_rng,
                                                   test_labels=self.data.test.labels)
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
        # Personalised accuracy: the same seeded clients whatever the method (the stream
        # depends on the run's seed only), and a seed for fine-tuning at evaluation.
        k = min(data.personal_eval_clients, num_clients)
        self.personal_eval_clients: np.ndarray = np.sort(eval_rng.choice(num_clients, size=k, replace=False))
        self._eval_seed = int(eval_rng.integers(0, 2**63 - 1))
        # Optional (FedLoRA's local_finetune): before personalised evaluation each evaluated
        # client trains this plan from the global model (and its personal tensors) on its
        # local train shard; the global model is not changed.
        self.eval_finetune: ClientPlan | None = None
        # Parameters aggregation has replaced (the trainable ones, and base weights under
        # full fine-tuning): what a checkpoint must store of the global model.
        self._aggregated: set[str] = set(self.fm.base_trainable)
        self.cache = _open_cache(train.reuse) if train.reuse.cache_dir else None
        self._keys = TrainerKeys(self, 1 if train.workers > 1 else train.threads) if self.cache is not None else None

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
        """Train each client from the current global model.

        One after another in this process, or side by side in ``train.workers`` processes;
        a client whose result the reuse cache holds (``train.reuse``) is not trained again.
        The results, and the personal tensors kept, are the same bytes either way.
        """
        if not len(client_ids) == len(plans) == len(seeds):
            raise ValueError(
                f"train: {len(client_ids)} client ids, {len(plans)} plans and {len(seeds)} seeds; need one of each per client"
            )
        global_now = self.global_state() if self.download_transform is not None else None
        jobs = [ClientJob(int(cid), plan, int(seed),
                          start=self.download_transform(int(cid), plan, global_now) if global_now is not None else None,
                          personal=self.personal.get(int(cid)) if plan.has_personal else None)
                for cid, plan, seed in zip(client_ids, plans, seeds)]
        keys = [self._keys.train(job) for job in jobs] if self._keys is not None else [None] * len(jobs)
        outcomes: list[ClientOutcome | None] = [self.cache.get(k, "train") if k else None for k in keys]
        todo = [i for i, out in enumerate(outcomes) if out is None]
        for i, out in zip(todo, self._train_jobs([jobs[i] for i in todo])):
            outcomes[i] = out
            if keys[i] is not None:
                self.cache.put(keys[i], out)
        for job, out in zip(jobs, outcomes):
            if job.plan.has_personal:
                self.personal.put(job.client_id, out.personal)
        if global_now is not None:
            self.fm.load_state(global_now)  # clients' deltas apply to the true global model
        return [out.result for out in outcomes]

    def _train_jobs(self, jobs: list[ClientJob]) -> list[ClientOutcome]:
        if self.train_spec.workers > 1 and jobs:  # even one job: the workers' thread count trains it
            if self._pool is None:
                self._pool = ClientPool(self.train_spec.workers, self._worker_build, self.device)
            return self._pool.train(self.state_dict()["params"], jobs)
        return [train_job(self, job, self.personal) for job in jobs]

    def close(self) -> None:
        """Stop the worker processes, if any were started."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def update_gains(self, round_idx: int, results: Sequence[ClientResult], num_examples: int,
                     measure: GainMeasure = "alone", aggregate_fn: AggregateFn | None = None,
                     weights: np.ndarray | None = None) -> np.ndarray:
        """Each update's gain in validation loss (:mod:`fedsim.learning.base`, step 2).

        ``alone``: the drop in loss when the update alone is applied to the global model.
        ``loo``: how much the loss of the round's aggregate (``aggregate_fn``, default
        per-layer FedAvg, with ``weights``) rises when the update is left out of it.
        ``round``: one value, the drop in loss when the whole aggregate is applied.
        Measured on a fixed seeded subsample of ``num_examples`` of the evaluation split,
        the same examples for every update; the global model is left as it was. An update
        with no delta gets NaN.
        """
        if measure not in GAIN_MEASURES:
            raise ValueError(f"measure must be one of {GAIN_MEASURES}, got {measure!r}")
        key = self._keys.gains(results, num_examples, measure, weights, aggregate_fn) if self._keys is not None else None
        if key is not None and (hit := self.cache.get(key, "gains")) is not None:
            return hit
        idx = eval_indices(len(self.data.test), num_examples, self.data_spec.split_seed + 1)

        def loss() -> float:
            return evaluate_model(self.fm.model, self.data.test, idx, self.train_spec.eval_batch_size).loss

        gains = np.full(len(results), np.nan)
        if measure == "alone":
            base = loss()
            params = dict(self.fm.model.named_parameters())
            for i, r in enumerate(results):
                if not r.delta:
                    continue
                names = [n for n in r.delta if n in params]
                before = {n: params[n].detach().clone() for n in names}
                self.fm.load_state({n: before[n] + torch.as_tensor(r.delta[n], dtype=before[n].dtype) for n in names})
                gains[i] = base - loss()
                self.fm.load_state(before)
        elif measure == "round":
            before, after = self._fold(_weighted(results, weights), aggregate_fn)
            base = loss()
            self.fm.load_state(after)
            gains = np.array([base - loss()])
            self.fm.load_state(before)
        else:
            results = _weighted(results, weights)
            before, after = self._fold(results, aggregate_fn)
            self.fm.load_state(after)
            with_all = loss()
            for i, r in enumerate(results):
                if not r.delta:
                    continue
                self.fm.load_state(before)  # tensors only the left-out update touched go back too
                self.fm.load_state(self._fold(results[:i] + results[i + 1:], aggregate_fn, before)[1])
                gains[i] = loss() - with_all
            self.fm.load_state(before)
        if key is not None:
            self.cache.put(key, gains)
        return gains

    def _fold(self, results: Sequence[ClientResult], aggregate_fn: AggregateFn | None,
              before: dict[str, torch.Tensor] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """``(before, after)``: the global tensors aggregation touches (``before`` if given,
        else read now), and the same with ``results`` folded in."""
        if before is None:
            names = set(self.fm.base_trainable)
            for r in results:
                if r.delta:
                    names.update(r.delta)
            params = dict(self.fm.model.named_parameters())
            before = {n: params[n].detach().clone() for n in sorted(names)}
        return before, (aggregate_fn or fedavg_per_layer)({n: v.clone() for n, v in before.items()}, results)

    def aggregate(
        self, round_idx: int, results: Sequence[ClientResult], aggregate_fn: AggregateFn | None,
        weights: np.ndarray | None = None,
    ) -> None:
        """Fold the results into the global model with ``aggregate_fn`` (default FedAvg per layer),
        each result's delta first scaled by its entry of ``weights`` if given.

        The state handed to ``aggregate_fn`` holds the global trainable parameters plus any
        other parameter a client sent (e.g. base weights under full fine-tuning).
        """
        before, after = self._fold(_weighted(results, weights), aggregate_fn)
        self._aggregated |= set(before)
        self.fm.load_state(after)
        if self._keys is not None:
            self._keys.stale()

    def state_dict(self) -> dict[str, Any]:
        """The global parameters aggregation has touched, and the personal-layer store."""
        params = dict(self.fm.model.named_parameters())
        return {"params": {n: params[n].detach().clone() for n in sorted(self._aggregated)},
                "personal": self.personal.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._aggregated = set(self.fm.base_trainable) | set(state["params"])
        self.fm.load_state(state["params"])
        self.personal.load_state_dict(state["personal"])
        if self._keys is not None:
            self._keys.stale()

    def evaluate(self, round_idx: int) -> EvalResult:
        """Accuracy and loss of the global model on the test split (or its fixed subsample),
        and the personalised accuracy (:meth:`evaluate_personal`)."""
        key = self._keys.evaluation(round_idx) if self._keys is not None else None
        if key is not None and (hit := self.cache.get(key, "eval")) is not None:
            return hit
        result = evaluate_model(self.fm.model, self.data.test, self._eval_idx, self.train_spec.eval_batch_size)
        result.personal_accuracy = self.evaluate_personal(round_idx)
        if key is not None:
            self.cache.put(key, result)
        return result

    def evaluate_personal(self, round_idx: int = 0) -> float | None:
        """Accuracy over the pooled local test shards of the ``personal_eval_clients``.

        Each client evaluates the model it would use: the global one with its personal
        tensors swapped in (PTLS; none: the global model), fine-tuned first with
        ``eval_finetune`` when a method set it (seeded by run, round and client).
        ``None`` when no client is evaluated or none has local test examples.
        """
        if self.personal_eval_clients.size == 0:
            return None
        test = self.data.test if self.partition.test_source == "test" else self.data.train

        def tensors(cid: int) -> dict[str, torch.Tensor]:
            own = self.personal.get(cid)
            if self.eval_finetune is None:
                return own
            seed = int(np.random.default_rng([self._eval_seed, round_idx, cid]).integers(0, 2**63 - 1))
            return finetuned_tensors(self.fm, self.data.train, self.partition.train[cid], self.eval_finetune,
                                     self.train_spec, seed, start=own)

        return evaluate_personal(self.fm, test, self.partition.test, self.personal_eval_clients, tensors,
                                 self.train_spec.eval_batch_size)


def _weighted(results: Sequence[ClientResult], weights: np.ndarray | None) -> list[ClientResult]:
    """The results, each delta scaled by its entry of ``weights`` (``None``: as they are)."""
    if weights is None:
        return list(results)
    return [r if not r.delta else replace(r, delta={n: v * float(w) for n, v in r.delta.items()})
            for r, w in zip(results, weights, strict=True)]


def _open_cache(spec: ReuseSpec) -> ReuseCache:
    try:
        return ReuseCache(spec.cache_dir, spec.max_bytes)
    except (OSError, ValueError) as exc:
        raise ConfigError(None, [("train.reuse.cache_dir", None, str(spec.cache_dir),
                                  f"a folder for fedsim's reuse cache ({exc})")]) from None
