"""Reuse-cache keys of the real trainer: a hash of every input a result depends on.

``static`` is hashed once per run: the code (:func:`~fedsim.learning.reuse.code_version`),
the data, model and optimiser settings, the tokenised splits, the partition, the
evaluation sample, and the whole initial model (pretrained weights and the seeded new
ones), and the torch threads that train (their count may change the last bits).
``global`` adds the global parameters aggregation has replaced, hashed again after every
change. A client's training key adds its id, plan (but not its display name), seed,
starting state when a download transform changed it, and personal tensors; an
evaluation key adds the personal tensors of the evaluated clients and the fine-tuning
plan (and round, which seeds it); an update-gain key adds the updates' deltas.

Nothing that only changes timing (bandwidth, deadlines, the fleet's devices) is part of
a key, which is the point: sweep points that differ only in timing find each other's
results.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from fedsim.learning.reuse import Digest, code_version
from fedsim.learning.real.workers import ClientJob

__all__ = ["TrainerKeys"]


def _plan(plan) -> dict:
    return {**dataclasses.asdict(plan), "name": None}


class TrainerKeys:
    """Keys for one :class:`~fedsim.learning.real.trainer.TorchTrainer`, built when it is."""

    def __init__(self, trainer: Any, train_threads: int) -> None:
        self._t = trainer
        data, part, fm = trainer.data, trainer.partition, trainer.fm
        spec = trainer.train_spec
        d = Digest("fedsim-reuse-v1", code_version())
        d.add(trainer.data_spec.model_dump(mode="json", exclude={"cache_dir"}))
        d.add(trainer.model_spec.model_dump(mode="json"))
        d.add({"lr": spec.lr, "weight_decay": spec.weight_decay, "optimizer": spec.optimizer,
               "eval_batch_size": spec.eval_batch_size, "device": str(trainer.device.type), "threads": train_threads})
        for split in (data.train, data.test):
            d.add(split.input_ids).add(split.lengths).add(split.labels).add(int(split.pad_id))
        d.add(list(data.label_names))
        for shards in (part.train, part.test):
            d.add(shards.offsets).add(shards.indices)
        d.add([int(part.replication), part.test_source])
        d.add(trainer._eval_idx if trainer._eval_idx is not None else None)
        d.add(trainer.personal_eval_clients).add(int(trainer._eval_seed))
        d.add({n: p for n, p in fm.model.named_parameters()})
        d.add({n: b for n, b in fm.model.named_buffers()})
        self.static = d.hexdigest()
        self._global: str | None = None

    def stale(self) -> None:
        """The global model changed (aggregation, a loaded checkpoint)."""
        self._global = None

    @property
    def global_(self) -> str:
        if self._global is None:
            self._global = Digest(self.static, self._t.state_dict()["params"]).hexdigest()
        return self._global

    def train(self, job: ClientJob) -> str:
        d = Digest("train", self.global_, job.client_id, _plan(job.plan), job.seed)
        d.add(job.start if job.start is not None else None)
        d.add(job.personal if job.personal is not None else None)
        return d.hexdigest()

    def evaluation(self, round_idx: int) -> str:
        t = self._t
        personal = {int(c): t.personal.get(int(c)) for c in t.personal_eval_clients if int(c) in t.personal}
        d = Digest("eval", self.global_, len(personal))
        for cid in sorted(personal):
            d.add(cid).add(personal[cid])
        finetune = t.eval_finetune
        d.add(_plan(finetune) if finetune is not None else None).add(round_idx if finetune is not None else None)
        return d.hexdigest()

    def gains(self, results, num_examples: int, measure: str = "alone", weights=None, aggregate_fn=None) -> str:
        d = Digest("gains", self.global_, num_examples, len(results))
        if measure != "alone":  # keys of gains measured alone stay as they were
            d.add(measure).add(None if weights is None else np.asarray(weights, dtype=float))
            d.add(None if aggregate_fn is None else f"{aggregate_fn.__module__}.{aggregate_fn.__qualname__}")
        for r in results:
            d.add(r.delta if r.delta else None)
        return d.hexdigest()
