"""The new methods against the real trainer on tiny-bert: full fine-tuning, LEGEND ranks, Caesar's hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsim.learning.compression import roundtrip_state, state_ratio
from fedsim.core.costmodel import ModelShape
from fedsim.methods.caesar import Caesar, CaesarParams, plan_state_sizes
from fedsim.methods.fedavg_full import full_finetune_plan
from fedsim.methods.legend import aggregate_rank_slots
from fedsim.core.plan import ClientPlan
from fedsim.learning.real.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
from fedsim.learning.real.trainer import TorchTrainer
from test_training_trainer import _synthetic_csv


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> TorchTrainer:
    tmp = tmp_path_factory.mktemp("syn")
    spec = DataSpec(dataset="file", train_file=_synthetic_csv(tmp / "syn.csv"), max_length=16, cache_dir=tmp / "cache",
                    partition=PartitionSpec(scheme="dirichlet", alpha=0.5))
    return TorchTrainer(spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=5e-3, threads=1),
                        num_clients=6, rng=np.random.default_rng(0))


def _plan(trainer, **kw) -> ClientPlan:
    return ClientPlan.uniform(trainer.num_layers, lora_rank=4, batch_size=8, local_steps=2, seq_len=16, **kw)


def _weights(trainer) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in trainer.fm.model.named_parameters()}


def test_full_finetune_trains_every_weight_and_fedavg_moves_them(trainer):
    # Prepare
    plan = full_finetune_plan(_plan(trainer))
    before = _weights(trainer)
    # Execute
    results = trainer.train(0, np.array([0, 1]), [plan, plan], np.array([1, 2]))
    untouched = _weights(trainer)
    trainer.aggregate(0, results, None)
    after = _weights(trainer)
    # Assert
    names = set(results[0].delta)
    assert any("word_embeddings" in n for n in names) and any(".layer.0.attention.self.query.base_layer.weight" in n for n in names)
    assert "classifier.weight" in names and not any("lora_" in n for n in names)
    assert all(torch.equal(before[n], untouched[n]) for n in before)  # training restores the global model
    moved = [n for n in names if not torch.equal(before[n], after[n])]
    assert len(moved) > 0.8 * len(names)
    assert all(p.requires_grad == ("lora_" in n or "classifier" in n or "pooler" in n)
               for n, p in trainer.fm.model.named_parameters())
    assert 0.0 <= trainer.evaluate(0).accuracy <= 1.0
    trainer.fm.load_state(before)


def test_plan_learning_rate_overrides_the_scenarios(trainer):
    # Prepare: the same client and seed at the trainer's lr (5e-3) and at a plan lr 1000x smaller
    plan = _plan(trainer)
    # Execute
    fast = trainer.train(0, np.array([0]), [plan], np.array([7]))[0].delta
    slow = trainer.train(0, np.array([0]), [plan.with_(lr=5e-6)], np.array([7]))[0].delta
    # Assert: AdamW's steps scale with the learning rate
    norm = lambda d: float(torch.sqrt(sum((t.float() ** 2).sum() for t in d.values())))  # noqa: E731
    assert norm(slow) < 0.01 * norm(fast)


def test_legend_ranks_train_only_top_layers_and_slot_aggregation_applies(trainer):
    ranks = (0, 0, 2, 4)
    plan = _plan(trainer).with_(lora_rank=ranks)
    before = trainer.global_state()
    results = trainer.train(0, np.array([2, 3]), [plan, _plan(trainer)], np.array([3, 4]))
    lora0 = [n for n in results[0].delta if "lora_" in n]
    assert lora0 and all(".layer.2." in n or ".layer.3." in n for n in lora0)
    trainer.aggregate(0, results, lambda s, r: aggregate_rank_slots(s, r, {2: ranks, 3: (4, 4, 4, 4)}))
    after = trainer.global_state()
    name = next(n for n in lora0 if ".layer.2." in n and "lora_A" in n)
    # slots 2, 3 of layer 2 came from client 3 alone: its delta, unscaled
    torch.testing.assert_close(after[name][2:], before[name][2:] + results[1].delta[name][2:])
    trainer.fm.load_state(before)


def test_caesar_ratio_matches_the_real_state_and_download_hook_restores_global(trainer):
    # Prepare
    shape = ModelShape.from_hf_config(trainer.model_config, num_labels=trainer.data.num_labels)
    plan = _plan(trainer)
    method = Caesar(CaesarParams(), shape, plan)
    method.bind_trainer(trainer)
    comp = method.compression
    state = trainer.global_state()
    # Assert: the cost model's ratio is the real byte ratio of the trainer's state
    for level in comp.down_levels + comp.up_levels:
        _, nbytes = roundtrip_state(state, level)
        dense = 4 * sum(t.numel() for t in state.values())
        assert nbytes / dense == pytest.approx(state_ratio(plan_state_sizes(shape, plan), level))
    assert sorted(t.numel() for t in state.values()) == sorted(plan_state_sizes(shape, plan))
    # Execute: a round with the hook installed
    comp._down = {4: len(comp.down_levels) - 1}
    results = trainer.train(0, np.array([4]), [plan], np.array([5]))
    # Assert
    assert trainer.download_transform is not None and 4 in comp._refs and comp.bytes_down_sent > 0
    after = trainer.global_state()
    assert all(torch.equal(state[n], after[n]) for n in state)
    assert results[0].delta
    trainer.download_transform = None
