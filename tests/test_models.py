"""fedsim.core.models: where minilm-l6 is read from, including the environment overrides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsim.core.models import MINILM_NAME, model_config_dict, model_dir, model_dir_env


def _model_dir(path: Path, layers: int = 3) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": layers}))
    return path


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("FEDSIM_MODEL_DIR_MINILM_L6", raising=False)
    monkeypatch.delenv("FEDSIM_MODELS", raising=False)
    return monkeypatch


def test_the_variable_name_follows_the_model_name():
    assert model_dir_env(MINILM_NAME) == "FEDSIM_MODEL_DIR_MINILM_L6"


def test_model_dir_variable_names_the_directory(clean_env, tmp_path):
    # Prepare
    clean_env.setenv("FEDSIM_MODEL_DIR_MINILM_L6", str(_model_dir(tmp_path / "copy", layers=3)))
    # Execute / Assert: the architecture comes from there (no torch, no package)
    assert model_dir(MINILM_NAME) == tmp_path / "copy"
    assert model_config_dict(MINILM_NAME)["num_hidden_layers"] == 3


def test_models_folder_holds_minilm_under_its_name_and_the_specific_variable_wins(clean_env, tmp_path):
    # Prepare
    _model_dir(tmp_path / "models" / MINILM_NAME, layers=2)
    clean_env.setenv("FEDSIM_MODELS", str(tmp_path / "models"))
    # Execute / Assert
    assert model_config_dict(MINILM_NAME)["num_hidden_layers"] == 2
    clean_env.setenv("FEDSIM_MODEL_DIR_MINILM_L6", str(_model_dir(tmp_path / "other", layers=5)))
    assert model_config_dict(MINILM_NAME)["num_hidden_layers"] == 5


@pytest.mark.parametrize("var", ["FEDSIM_MODEL_DIR_MINILM_L6", "FEDSIM_MODELS"])
def test_a_variable_naming_no_model_directory_says_which_variable(clean_env, tmp_path, var):
    # Prepare
    clean_env.setenv(var, str(tmp_path / "nothing"))
    # Execute / Assert
    with pytest.raises(ValueError, match=rf"\${var} is .*holds no config\.json"):
        model_dir(MINILM_NAME)


def test_other_names_ignore_the_variables(clean_env, tmp_path):
    # Prepare
    clean_env.setenv("FEDSIM_MODELS", str(tmp_path / "nothing"))
    local = _model_dir(tmp_path / "local")
    # Execute / Assert
    assert model_dir("tiny-bert") is None
    assert model_dir(str(local)) == local
