"""Real federated training: data, partitioning, LoRA models, layer dropout, FedAvg.

Modules: :mod:`~fedsim.learning.real.config` (settings), :mod:`~fedsim.learning.real.data`,
:mod:`~fedsim.learning.real.partition`, :mod:`~fedsim.learning.real.model`,
:mod:`~fedsim.learning.real.stld`, :mod:`~fedsim.learning.real.local`,
:mod:`~fedsim.learning.real.aggregate`, :mod:`~fedsim.learning.real.evaluate` and
:mod:`~fedsim.learning.real.trainer`.

Names are re-exported lazily: ``import fedsim.learning.real.config`` (which the scenario
schema does) never imports torch; only touching a torch-backed name does.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "DataError",
    "DataSpec",
    "FedModel",
    "ModelSpec",
    "Partition",
    "PartitionSpec",
    "Shards",
    "TextData",
    "TokenizedSplit",
    "TorchTrainer",
    "TrainSpec",
    "build_model",
    "draw_kept",
    "draw_schedule",
    "evaluate_model",
    "fedavg_per_layer",
    "find_layers",
    "kept_layers",
    "layer_of",
    "load_data",
    "load_tokenizer",
    "make_partition",
    "train_client",
]

_WHERE = {
    "fedavg_per_layer": "aggregate",
    "DataSpec": "config",
    "ModelSpec": "config",
    "PartitionSpec": "config",
    "TrainSpec": "config",
    "DataError": "data",
    "TextData": "data",
    "TokenizedSplit": "data",
    "load_data": "data",
    "evaluate_model": "evaluate",
    "train_client": "local",
    "FedModel": "model",
    "build_model": "model",
    "find_layers": "model",
    "layer_of": "model",
    "load_tokenizer": "model",
    "Partition": "partition",
    "Shards": "partition",
    "make_partition": "partition",
    "draw_kept": "stld",
    "draw_schedule": "stld",
    "kept_layers": "stld",
    "TorchTrainer": "trainer",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"fedsim.learning.real.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'fedsim.learning.real' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
