"""train.device: cpu is the default and changes nothing; cuda without a GPU is a clean error; auto falls back."""

from __future__ import annotations

import json
import numpy as np
import pytest
import torch

from fedsim.errors import ConfigError
from fedsim.plan import ClientPlan
from fedsim.training.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
from fedsim.training.model import resolve_device
from fedsim.training.trainer import TorchTrainer
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
