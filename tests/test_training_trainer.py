"""TorchTrainer end to end on tiny-bert with a small synthetic data set."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedsim.core.plan import ClientPlan
from fedsim.learning.base import Trainer
from fedsim.learning.real.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
from fedsim.learning.real.trainer import TorchTrainer

# One torch thread: tiny models gain nothing from two, and two threads stall badly when
# another process shares the CPU.
WORDS = {"sports": "ball goal team match score", "space": "orbit rocket moon star planet",
         "food": "bread cheese apple soup rice", "music": "guitar song drum piano tune"}


def _synthetic_csv(path: Path, n: int = 160, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    topics = sorted(WORDS)
    lines = ["text,label"]
    for i in range(n):
        topic = topics[i % 4]
        words = rng.choice(WORDS[topic].split() + "the a of and is".split(), size=8)
        lines.append(f"{' '.join(words)},{topic}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory) -> DataSpec:
    tmp = tmp_path_factory.mktemp("syn")
    return DataSpec(dataset="file", train_file=_synthetic_csv(tmp / "syn.csv"), max_length=16, cache_dir=tmp / "cache",
                    partition=PartitionSpec(scheme="dirichlet", alpha=1.0))


def _run(data_spec: DataSpec, seed: int, rounds: int = 2, lr: float = 5e-3):
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=lr, threads=1),
                           num_clients=6, rng=np.random.default_rng(seed))
    plan = ClientPlan.uniform(trainer.num_layers, drop_prob=0.25, lora_rank=4, batch_size=8, local_steps=3,
                              seq_len=16)
    rng = np.random.default_rng(seed + 100)
    deltas, accs = [], []
    for r in range(rounds):
        clients = rng.choice(6, size=3, replace=False)
        results = trainer.train(r, clients, [plan] * 3, rng.integers(0, 2**31, size=3))
        deltas.append(results)
        trainer.aggregate(r, results, None)
        accs.append(trainer.evaluate(r))
    return trainer, deltas, accs


def test_trainer_satisfies_protocol_and_exposes_shape(data_spec):
    # Execute
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert"), TrainSpec(threads=1), 6, np.random.default_rng(0))
    # Assert
    assert isinstance(trainer, Trainer)
    assert trainer.num_layers == 4 and trainer.model_config.hidden_size == 32
    sizes = trainer.num_examples([0, 1, 2, 3, 4, 5])
    assert sizes.sum() == len(trainer.partition.train.indices) and (sizes >= 1).all()


def test_same_seed_gives_identical_deltas_and_accuracy(data_spec):
    # Execute
    t1, d1, a1 = _run(data_spec, seed=7)
    t2, d2, a2 = _run(data_spec, seed=7)
    # Assert
    for round1, round2 in zip(d1, d2):
        for r1, r2 in zip(round1, round2):
            assert r1.client_id == r2.client_id and r1.delta.keys() == r2.delta.keys()
            assert all(torch.equal(r1.delta[k], r2.delta[k]) for k in r1.delta)
            assert np.array_equal(r1.layer_steps, r2.layer_steps)
    assert [e.accuracy for e in a1] == [e.accuracy for e in a2]
    assert [e.loss for e in a1] == [e.loss for e in a2]
    s1, s2 = t1.global_state(), t2.global_state()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_aggregation_moves_the_global_model(data_spec):
    # Prepare
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=5e-3, threads=1), 6,
                           np.random.default_rng(1))
    before = trainer.global_state()
    plan = ClientPlan.uniform(4, lora_rank=4, batch_size=8, local_steps=2, seq_len=16)
    # Execute
    results = trainer.train(0, np.array([0, 1]), [plan, plan], np.array([1, 2]))
    trainer.aggregate(0, results, None)
    after = trainer.global_state()
    # Assert: the global model is the weighted mean of the two local models
    w = np.array([r.num_examples for r in results], dtype=float)
    w /= w.sum()
    name = "classifier.weight"
    expected = before[name] + w[0] * results[0].delta[name] + w[1] * results[1].delta[name]
    torch.testing.assert_close(after[name], expected)
    assert not torch.equal(after[name], before[name])


@pytest.mark.slow
def test_training_learns_the_synthetic_task(data_spec):
    # Prepare
    trainer = TorchTrainer(data_spec.model_copy(update={"partition": PartitionSpec(scheme="iid")}),
                           ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=1e-2, threads=1), 6,
                           np.random.default_rng(0))
    plan = ClientPlan.uniform(4, drop_prob=0.25, lora_rank=4, batch_size=8, local_steps=10, seq_len=16)
    rng = np.random.default_rng(1)
    # Execute
    for r in range(12):
        trainer.aggregate(r, trainer.train(r, np.arange(6), [plan] * 6, rng.integers(0, 2**31, size=6)), None)
    result = trainer.evaluate(11)
    # Assert: four separable topics, chance is 0.25
    assert result.accuracy > 0.7


def test_full_finetune_plan_sends_and_aggregates_base_weights(data_spec):
    # Prepare
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=1e-3, threads=1), 6,
                           np.random.default_rng(2))
    plan = ClientPlan.uniform(4, lora_rank=4, batch_size=8, local_steps=1, seq_len=16, full_finetune=True)
    name = "bert.encoder.layer.0.attention.self.query.base_layer.weight"
    before = dict(trainer.fm.model.named_parameters())[name].detach().clone()
    # Execute
    results = trainer.train(0, np.array([0]), [plan], np.array([5]))
    trainer.aggregate(0, results, None)
    after = dict(trainer.fm.model.named_parameters())[name].detach()
    # Assert
    assert name in results[0].delta and not any("lora_" in n for n in results[0].delta)
    torch.testing.assert_close(after, before + results[0].delta[name])


def test_leave_one_out_gains_match_the_aggregate_without_each_update(data_spec):
    # Setup: three updates of one round, and an update that undoes the first one
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=5e-3, threads=1),
                           num_clients=6, rng=np.random.default_rng(0))
    plan = ClientPlan.uniform(trainer.num_layers, lora_rank=4, batch_size=8, local_steps=3, seq_len=16)
    results = trainer.train(0, np.array([0, 1, 2]), [plan] * 3, np.array([1, 2, 3]))
    before = {n: v.clone() for n, v in trainer.state_dict()["params"].items()}
    # Execute
    loo = trainer.update_gains(0, results, 40, measure="loo")
    alone = trainer.update_gains(0, results, 40, measure="alone")
    # Assert: the global model is untouched, and each gain is the aggregate's loss
    # without the update less its loss with every update
    after = trainer.state_dict()["params"]
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert np.all(np.isfinite(loo)) and not np.allclose(loo, alone)
    from fedsim.learning.real.evaluate import eval_indices, evaluate_model

    idx = eval_indices(len(trainer.data.test), 40, trainer.data_spec.split_seed + 1)

    def loss_of(subset, weights=None):
        probe = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=5e-3, threads=1),
                             num_clients=6, rng=np.random.default_rng(0))
        probe.aggregate(0, subset, None, weights=weights)
        return evaluate_model(probe.fm.model, probe.data.test, idx, probe.train_spec.eval_batch_size).loss

    full = loss_of(results)
    expected = [loss_of(results[:i] + results[i + 1:]) - full for i in range(3)]
    np.testing.assert_allclose(loo, expected, rtol=1e-5, atol=1e-7)
    # Weights (the asynchronous driver's staleness discount) scale the updates as aggregation will.
    w = np.array([0.25, 1.0, 0.5])
    weighted = trainer.update_gains(0, results, 40, measure="loo", weights=w)
    assert weighted[0] == pytest.approx(loss_of(results[1:], w[1:]) - loss_of(results, w), rel=1e-5, abs=1e-7)
    with pytest.raises(ValueError, match="measure"):
        trainer.update_gains(0, results, 40, measure="both")
