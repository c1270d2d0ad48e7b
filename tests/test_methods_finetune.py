"""FedLoRA's local fine-tuning baseline: the plan it trains, and that evaluation leaves
the global model alone."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from fedsim.core.costmodel import ModelShape
from fedsim.methods.base import get_method
from fedsim.methods.fedlora import FedLoRA, FedLoRAParams
from fedsim.methods.finetune import LocalFinetune, bind_finetune, finetune_plan
from fedsim.core.plan import ClientPlan

BASE = ClientPlan.uniform(6, drop_prob=0.25, lora_rank=8, batch_size=16, seq_len=64, local_steps=3)
SHAPE = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)


def test_finetune_plan_trains_the_top_layers_and_head_for_the_round_budget():
    # Execute
    plan = finetune_plan(BASE, LocalFinetune())
    # Assert
    assert plan.lora_rank == (0, 0, 0, 0, 8, 8) and plan.train_head
    assert plan.drop_prob == (0.0,) * 6 and plan.local_steps == 3
    assert (plan.batch_size, plan.seq_len) == (16, 64)


def test_finetune_plan_explicit_layers_steps_and_no_head():
    plan = finetune_plan(BASE, LocalFinetune(layers=[0, 3], head=False, steps=5))
    assert plan.lora_rank == (8, 0, 0, 8, 0, 0) and not plan.train_head and plan.local_steps == 5


@pytest.mark.parametrize("spec", [{"layers": 7}, {"layers": [6]}, {"layers": 0, "head": False}])
def test_finetune_plan_rejects_what_does_not_fit(spec):
    with pytest.raises(ValueError, match="local_finetune"):
        finetune_plan(BASE, LocalFinetune(**spec))


def test_fedlora_params_take_local_finetune_and_reject_unknown_keys():
    params = get_method("fedlora").Params(local_finetune={"layers": 2, "head": True})
    assert params.local_finetune == LocalFinetune()
    with pytest.raises(ValueError):
        get_method("fedlora").Params(local_finetune={"layer": 2})


def test_bind_finetune_leaves_a_trainer_without_personal_evaluation_alone():
    class Surrogate:
        pass

    trainer = Surrogate()
    FedLoRA(FedLoRAParams(local_finetune=LocalFinetune()), SHAPE, BASE).bind_trainer(trainer)
    assert not hasattr(trainer, "eval_finetune")


torch = pytest.importorskip("torch")


def _checksum(trainer) -> str:
    h = hashlib.sha256()
    for name, p in sorted(trainer.fm.model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().cpu().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    from test_training_personal import make_trainer

    t = make_trainer(tmp_path_factory.mktemp("ft"))
    plan = ClientPlan.uniform(t.num_layers, lora_rank=4, batch_size=8, local_steps=2, seq_len=16)
    t.aggregate(0, t.train(0, np.array([0, 1, 2]), [plan] * 3, np.array([1, 2, 3])), None)
    return t


def test_evaluation_with_local_finetuning_never_changes_the_global_model(trainer):
    # Prepare
    base = ClientPlan.uniform(trainer.num_layers, lora_rank=4, batch_size=8, local_steps=2, seq_len=16)
    plain = trainer.evaluate(1)
    before = _checksum(trainer)
    FedLoRA(FedLoRAParams(local_finetune=LocalFinetune(layers=1, steps=4)), SHAPE, base).bind_trainer(trainer)
    try:
        # Execute
        first = trainer.evaluate(1)
        middle = _checksum(trainer)
        again = trainer.evaluate(1)
        after = _checksum(trainer)
    finally:
        trainer.eval_finetune = None
    # Assert: global model bit for bit; the same seeded fine-tuning gives the same number
    assert before == middle == after
    assert first.accuracy == plain.accuracy and first.personal_accuracy == again.personal_accuracy
    assert len(trainer.personal) == 0


def test_finetuned_tensors_cover_only_the_chosen_layers_and_head(trainer):
    # Prepare
    from fedsim.learning.real.personal import finetuned_tensors, personal_names

    base = ClientPlan.uniform(trainer.num_layers, lora_rank=4, batch_size=8, local_steps=2, seq_len=16)
    plan = finetune_plan(base, LocalFinetune(layers=1, steps=3))
    glob = trainer.global_state()
    cid = int(trainer.personal_eval_clients[0])
    # Execute
    tuned = finetuned_tensors(trainer.fm, trainer.data.train, trainer.partition.train[cid], plan, trainer.train_spec, 5)
    # Assert
    last = trainer.num_layers - 1
    assert set(tuned) == set(personal_names(trainer.fm, [last], head=True))
    assert all(not torch.equal(tuned[n], glob[n]) for n in tuned if "lora_B" in n or "classifier" in n)
    assert all(torch.equal(v, glob[n]) for n, v in trainer.global_state().items())


def test_bind_finetune_sets_the_plan_on_a_torch_trainer(trainer):
    plan = finetune_plan(BASE, LocalFinetune())
    bind_finetune(trainer, plan)
    try:
        assert trainer.eval_finetune is plan
    finally:
        trainer.eval_finetune = None
