"""A round's clients trained side by side in worker processes that hold the model.

:class:`ClientPool` starts ``workers`` spawned processes, each of which builds the same
:class:`~fedsim.learning.real.trainer.TorchTrainer` as the run (same data, partition
and initial model, from a copy of the run's generator) with one torch thread, and keeps
it for the whole run. Each client becomes one task: the global parameters that
aggregation has replaced (LoRA adapters and head; the base weights too under full
fine-tuning), the client's starting state when a download transform changed it, and its
personal tensors. A worker loads them, trains the client exactly as the run's own
process would (:func:`train_job`) and sends back the result and the client's new
personal tensors. Results come back in the clients' order, so the records are those of
training them one after another (with the same thread count; tests/test_training_workers.py).

Tensors cross the process boundary as numpy arrays (plain pickles, no shared-memory
file descriptors).
"""

from __future__ import annotations

import multiprocessing
import os
import weakref
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from fedsim.core.plan import ClientPlan
from fedsim.learning.base import ClientResult

__all__ = ["ClientJob", "ClientOutcome", "ClientPool", "train_job"]


@dataclass
class ClientJob:
    """One client to train this round.

    Attributes:
        start: The state it starts from when a download transform changed the global
            one (Caesar's compressed download); ``None``: the global model.
        personal: Its personal tensors before training (plans with personal layers).
    """

    client_id: int
    plan: ClientPlan
    seed: int
    start: dict[str, Any] | None = None
    personal: dict[str, Any] | None = None


@dataclass
class ClientOutcome:
    """A trained client: its result and, for plans with personal layers, its new personal tensors."""

    result: ClientResult
    personal: dict[str, Any] | None = None


def train_job(trainer: Any, job: ClientJob, store: Any) -> ClientOutcome:
    """Train ``job`` on ``trainer``'s model from its current state (``store``: personal tensors)."""
    from fedsim.learning.real.local import train_client
    from fedsim.learning.real.personal import train_personal

    cid, plan = job.client_id, job.plan
    if job.start is not None:
        trainer.fm.load_state(job.start)
    shard = trainer.partition.train[cid]
    if plan.has_personal:
        result = train_personal(trainer.fm, trainer.data.train, shard, plan, trainer.train_spec, seed=job.seed,
                                client_id=cid, store=store)
        return ClientOutcome(result, store.get(cid))
    return ClientOutcome(train_client(trainer.fm, trainer.data.train, shard, plan, trainer.train_spec, seed=job.seed,
                                      client_id=cid))


# ---------------------------------------------------------------- inside a worker process

# The trainer a worker process holds between rounds (one per process, built by _start).
_HELD: dict[str, Any] = {}


def _start(build: tuple) -> None:
    for var, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, value)
    from fedsim.learning.real.trainer import TorchTrainer  # torch is imported here, after the variables

    _HELD["trainer"] = TorchTrainer(*build)


def _run(global_params: dict[str, np.ndarray], job: ClientJob) -> ClientOutcome:
    from fedsim.learning.real.personal import PersonalStore

    trainer = _HELD["trainer"]
    trainer.fm.load_state(global_params)
    store = PersonalStore()
    if job.personal:
        store.put(job.client_id, _tensors(job.personal, trainer.device))
    job = replace(job, start=_tensors(job.start, trainer.device) if job.start is not None else None)
    out = train_job(trainer, job, store)
    return ClientOutcome(replace(out.result, delta=_arrays(out.result.delta)), _arrays(out.personal))


# ---------------------------------------------------------------- the run's side


def _arrays(tensors: dict[str, Any] | None) -> dict[str, np.ndarray] | None:
    return None if tensors is None else {n: t.detach().cpu().numpy() for n, t in tensors.items()}


def _tensors(arrays: dict[str, np.ndarray] | None, device: Any) -> dict[str, Any] | None:
    import torch

    return None if arrays is None else {n: torch.from_numpy(a).to(device) for n, a in arrays.items()}


class ClientPool:
    """``workers`` processes, each holding a trainer built from ``build`` (TorchTrainer's arguments)."""

    def __init__(self, workers: int, build: tuple, device: Any) -> None:
        ctx = multiprocessing.get_context("spawn")  # a forked child inherits torch's thread pool half-made
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_start, initargs=(build,))
        self._device = device
        self._finalizer = weakref.finalize(self, self._pool.shutdown, wait=True, cancel_futures=True)

    def train(self, global_params: dict[str, Any], jobs: list[ClientJob]) -> list[ClientOutcome]:
        """Every job trained from ``global_params``, in the jobs' order."""
        state = _arrays(global_params)
        futures = [self._pool.submit(_run, state, replace(job, start=_arrays(job.start), personal=_arrays(job.personal)))
                   for job in jobs]
        outcomes = []
        for fut in futures:
            out = fut.result()
            outcomes.append(ClientOutcome(replace(out.result, delta=_tensors(out.result.delta, self._device)),
                                          _tensors(out.personal, self._device)))
        return outcomes

    def close(self) -> None:
        self._finalizer()
