"""fedsim.learning.real.workers: a round's clients trained side by side, same bytes as one by one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.core.plan import ClientPlan
from fedsim.learning.real.config import ModelSpec, TrainSpec
from fedsim.learning.real.trainer import TorchTrainer
from test_training_trainer import data_spec  # noqa: F401 - the fixture


def _rounds(data_spec, workers: int) -> tuple[list, list, dict]:  # noqa: F811
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4),
                           TrainSpec(lr=5e-3, threads=1, workers=workers), num_clients=6, rng=np.random.default_rng(4))
    plain = ClientPlan.uniform(trainer.num_layers, drop_prob=0.25, lora_rank=4, batch_size=8, local_steps=3, seq_len=16)
    personal = ClientPlan.uniform(trainer.num_layers, drop_prob=0.0, lora_rank=4, batch_size=8, local_steps=2,
                                  seq_len=16).with_(personal_layers=(3,), share_personal=False)
    rng = np.random.default_rng(7)
    deltas, losses = [], []
    try:
        for r in range(2):
            clients = rng.choice(6, size=4, replace=False)
            results = trainer.train(r, clients, [plain, personal, plain, personal], rng.integers(0, 2**31, size=4))
            deltas.append([x.delta for x in results])
            losses.append([(x.train_loss, x.grad_norms.tolist(), x.layer_steps.tolist()) for x in results])
            trainer.aggregate(r, results, None)
        assert (trainer._pool is not None) == (workers > 1)
        return deltas, losses, trainer.personal.state_dict()
    finally:
        trainer.close()


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


@pytest.mark.slow
def test_two_workers_train_the_same_bytes_as_one_process(data_spec):  # noqa: F811
    # Execute: two rounds of four clients, two of them with a personal layer
    one = _rounds(data_spec, workers=1)
    two = _rounds(data_spec, workers=2)
    # Assert: deltas, losses, gradient norms, layer steps and personal tensors, bit for bit
    assert _same(one[0], two[0]) and one[1] == two[1] and _same(one[2], two[2])
    assert len(one[2]) > 0  # the personal path ran
