"""train.device: cpu is the default and changes nothing; cuda without a GPU is a clean error; auto falls back."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from fedsim.core.errors import ConfigError
from fedsim.core.plan import ClientPlan
from fedsim.learning.real.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
from fedsim.learning.real.model import resolve_device
from fedsim.learning.real.trainer import TorchTrainer
from test_training_trainer import _synthetic_csv

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="this host has a CUDA GPU")


@pytest.fixture(scope="module")
def data_spec(tmp_path_factory) -> DataSpec:
    tmp = tmp_path_factory.mktemp("syn")
    return DataSpec(dataset="file", train_file=_synthetic_csv(tmp / "syn.csv"), max_length=16, cache_dir=tmp / "cache",
                    partition=PartitionSpec(scheme="dirichlet", alpha=1.0))


def _rounds(data_spec: DataSpec, train: TrainSpec, rounds: int = 2):
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert", lora_rank=4), train, num_clients=6,
                           rng=np.random.default_rng(3))
    plan = ClientPlan.uniform(trainer.num_layers, drop_prob=0.25, lora_rank=4, batch_size=8, local_steps=3, seq_len=16)
    rng = np.random.default_rng(4)
    out = []
    for r in range(rounds):
        results = trainer.train(r, rng.choice(6, size=3, replace=False), [plan] * 3, rng.integers(0, 2**31, size=3))
        trainer.aggregate(r, results, None)
        out.append((results, trainer.evaluate(r)))
    return trainer, out


def test_default_device_is_cpu_and_explicit_cpu_gives_identical_results(data_spec):
    # Execute
    t_default, default = _rounds(data_spec, TrainSpec(lr=5e-3, threads=1))
    t_cpu, cpu = _rounds(data_spec, TrainSpec(lr=5e-3, threads=1, device="cpu"))
    # Assert: every number a run records, bit for bit
    assert TrainSpec().device == "cpu" and t_default.device == t_cpu.device == torch.device("cpu")
    for (res_a, ev_a), (res_b, ev_b) in zip(default, cpu):
        assert (ev_a.accuracy, ev_a.loss) == (ev_b.accuracy, ev_b.loss)
        for a, b in zip(res_a, res_b):
            assert a.train_loss == b.train_loss
            assert np.array_equal(a.grad_norms, b.grad_norms) and np.array_equal(a.layer_steps, b.layer_steps)
            assert a.delta.keys() == b.delta.keys() and all(torch.equal(a.delta[k], b.delta[k]) for k in a.delta)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@no_gpu
def test_cuda_without_a_gpu_is_one_paragraph_naming_the_field(data_spec):
    # Execute
    with pytest.raises(ConfigError) as err:
        TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert"), TrainSpec(device="cuda"), 6, np.random.default_rng(0))
    # Assert
    message = str(err.value)
    assert "'train.device' = 'cuda'" in message and "auto" in message and "\n" not in message


@no_gpu
def test_cuda_without_a_gpu_through_the_cli_is_a_clean_error(tiny_scenario, tmp_path):
    # Prepare
    from typer.testing import CliRunner

    from fedsim.cli import app

    # Execute
    res = CliRunner().invoke(app, ["run", str(tiny_scenario), "--out", str(tmp_path / "out"),
                                   "--set", "trainer.kind=torch", "--set", "train.device=cuda"])
    # Assert: a failed run (status 1) with the message and no traceback, in the output and the records
    assert res.exit_code == 1, res.output
    assert "'train.device' = 'cuda'" in res.output and "Traceback" not in res.output
    summary = json.loads(next((tmp_path / "out").rglob("summary.json")).read_text())
    assert summary["status"] == "failed" and "train.device" in summary["error"] and "traceback" not in summary


def test_auto_falls_back_to_cpu_without_a_gpu(data_spec):
    # Execute
    trainer = TorchTrainer(data_spec, ModelSpec(name_or_path="tiny-bert"), TrainSpec(device="auto", threads=1), 6,
                           np.random.default_rng(0))
    # Assert
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert trainer.device.type == expected and trainer.fm.device.type == expected
    assert trainer.evaluate(0).accuracy >= 0.0


def test_trainspec_rejects_an_unknown_device():
    with pytest.raises(ValueError, match="device"):
        TrainSpec(device="tpu")


@pytest.mark.skipif(not torch.__version__.startswith("2.13.0"), reason="golden values of the locked torch 2.13.0")
def test_cpu_training_and_evaluation_reproduce_the_values_before_the_device_option():
    # Prepare: a fixed tokenised split and a tiny BERT; no partition, no engine
    import hashlib

    from fedsim.learning.real.data import TokenizedSplit
    from fedsim.learning.real.evaluate import evaluate_model
    from fedsim.learning.real.local import train_client
    from fedsim.learning.real.model import build_model

    rng = np.random.default_rng(0)
    n, width = 40, 12
    lengths = rng.integers(3, width + 1, size=n).astype(np.int16)
    ids = rng.integers(1000, 2000, size=(n, width)).astype(np.int16)
    ids[np.arange(width)[None, :] >= lengths[:, None]] = 0
    data = TokenizedSplit(ids, lengths, (np.arange(n) % 3).astype(np.int64), 0)
    fm = build_model(ModelSpec(name_or_path="tiny-bert", lora_rank=4), num_labels=3, seed=1, vocab_size=30522)
    plan = ClientPlan.uniform(fm.num_layers, drop_prob=0.25, lora_rank=4, batch_size=8, local_steps=3, seq_len=10)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # Execute
        res = train_client(fm, data, np.arange(30), plan.with_(lora_rank=(4, 2, 4, 0)), TrainSpec(lr=5e-3), seed=5)
        ev = evaluate_model(fm.model, data, np.arange(30, 40), batch_size=4)
    finally:
        torch.set_num_threads(threads)
    h = hashlib.sha256()
    for k in sorted(res.delta):
        h.update(k.encode())
        h.update(res.delta[k].numpy().tobytes())
    # Assert: exactly what the code computed before train.device existed (one float() per step)
    assert res.train_loss == 1.1092516581217449
    assert res.grad_norms.tolist() == [0.00218804516775653, 0.0011604111902371473, 0.004445085746890238, 0.0]
    assert res.layer_steps.tolist() == [1, 2, 3, 3] and h.hexdigest()[:16] == "273b7cd201447fb6"
    assert (ev.accuracy, ev.loss) == (0.3, 1.0991397857666017)
