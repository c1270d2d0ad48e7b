"""Personalised accuracy in the real trainer (tiny-bert): the same clients and local test
shards for every method, the global model or a client's own tensors, recorded in rounds.csv."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fedsim.learning.real.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec  # noqa: E402
from fedsim.learning.real.evaluate import evaluate_model  # noqa: E402
from fedsim.learning.real.trainer import TorchTrainer  # noqa: E402
from test_training_trainer import _synthetic_csv  # noqa: E402

LOCAL_TEST = PartitionSpec(scheme="dirichlet", alpha=0.3, local_test="test_split", local_test_examples=20)


def make_trainer(tmp, seed: int = 0, partition: PartitionSpec = LOCAL_TEST, clients: int = 3) -> TorchTrainer:
    spec = DataSpec(dataset="file", train_file=_synthetic_csv(tmp / "syn.csv"), max_length=16, cache_dir=tmp / "cache",
                    partition=partition, personal_eval_clients=clients)
    return TorchTrainer(spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=5e-3, threads=1),
                        num_clients=6, rng=np.random.default_rng(seed))


@pytest.fixture(scope="module")
def trainer(tmp_path_factory) -> TorchTrainer:
    return make_trainer(tmp_path_factory.mktemp("syn"))


def test_evaluated_clients_and_shards_depend_on_the_seed_only(trainer, tmp_path):
    # Execute: a second trainer from the same seed (as another method's run would build)
    again = make_trainer(tmp_path)
    holdout = make_trainer(tmp_path, partition=PartitionSpec(scheme="dirichlet", alpha=0.3))
    # Assert
    assert trainer.personal_eval_clients.size == 3
    assert np.array_equal(again.personal_eval_clients, trainer.personal_eval_clients)
    assert np.array_equal(again.partition.test.indices, trainer.partition.test.indices)
    assert (trainer.partition.test.sizes == 20).all() and trainer.partition.test_source == "test"
    # the global test set is the same whatever the local test shards
    assert len(holdout.data.test) == len(trainer.data.test) and np.array_equal(holdout._eval_idx, trainer._eval_idx)


def test_personal_accuracy_of_the_global_model_pools_the_clients_shards(trainer):
    # Prepare: no personal state, no fine-tuning (FedLoRA, DropPEFT without PTLS)
    assert len(trainer.personal) == 0 and trainer.eval_finetune is None
    pooled = np.concatenate([trainer.partition.test[c] for c in trainer.personal_eval_clients])
    # Execute
    acc = trainer.evaluate(0).personal_accuracy
    # Assert: the global model on the same pooled examples of the test split
    assert acc == pytest.approx(evaluate_model(trainer.fm.model, trainer.data.test, pooled).accuracy)


def test_personal_accuracy_uses_a_clients_stored_tensors_only_for_that_client(trainer):
    # Prepare: evaluated client a holds a personal head that always predicts label 0
    a, b = trainer.personal_eval_clients[:2].tolist()
    params = dict(trainer.fm.model.named_parameters())
    w, bias = params["classifier.weight"], params["classifier.bias"]
    fixed = torch.zeros_like(bias)
    fixed[0] = 100.0
    trainer.personal.put(a, {"classifier.weight": torch.zeros_like(w), "classifier.bias": fixed})
    before = trainer.global_state()
    try:
        # Execute
        acc = trainer.evaluate_personal(0)
    finally:
        trainer.personal.put(a, {})
    # Assert
    test = trainer.data.test
    rest = np.concatenate([trainer.partition.test[c] for c in trainer.personal_eval_clients if c != a])
    right_rest = evaluate_model(trainer.fm.model, test, rest).accuracy * rest.size
    right_a = float((test.labels[trainer.partition.test[a]] == 0).sum())
    assert acc == pytest.approx((right_rest + right_a) / (rest.size + 20))
    assert b != a and all(torch.equal(before[n], v) for n, v in trainer.global_state().items())


def test_no_evaluated_clients_no_personal_accuracy(tmp_path):
    t = make_trainer(tmp_path, clients=0)
    assert t.personal_eval_clients.size == 0 and t.evaluate(0).personal_accuracy is None


@pytest.mark.slow
@pytest.mark.parametrize("params", [{}, {"local_finetune": {"layers": 1, "head": True, "steps": 2}}])
def test_tiny_fedlora_run_records_personal_accuracy(tiny_scenario, tmp_path, params):
    # Prepare: the tiny scenario with real training of tiny-bert on synthetic data
    import json

    from fedsim.engine.records import read_rounds
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    csv = _synthetic_csv(tmp_path / "syn.csv")
    sc = load_scenario(tiny_scenario, overrides=[
        "trainer.kind=torch", "data.dataset=file", f"data.train_file={csv}", f"data.cache_dir={tmp_path / 'cache'}",
        "data.max_length=16", "data.personal_eval_clients=5", "model.lora_rank=4", "train.threads=1",
        "data.partition.scheme=dirichlet", "data.partition.local_test=test_split", "engine.max_rounds=2",
        "method.name=fedlora", f"method.params={json.dumps(params)}"])[0].scenario
    # Execute
    simulate(sc, tmp_path / "out")
    rows = read_rounds(tmp_path / "out")
    # Assert
    assert len(rows["round"]) == 2
    assert np.isfinite(rows["accuracy"]).all() and np.isfinite(rows["personal_accuracy"]).all()
    assert ((rows["personal_accuracy"] >= 0) & (rows["personal_accuracy"] <= 1)).all()
