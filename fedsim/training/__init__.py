"""Real federated training: data, partitioning, LoRA models, layer dropout, FedAvg.

Importing this package imports torch; the rest of fedsim does not need it.
"""

from fedsim.training.aggregate import fedavg_per_layer
from fedsim.training.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
from fedsim.training.data import DataError, TextData, TokenizedSplit, load_data
from fedsim.training.evaluate import evaluate_model
from fedsim.training.local import train_client
from fedsim.training.model import FedModel, build_model, find_layers, layer_of, load_tokenizer
from fedsim.training.partition import Partition, Shards, make_partition
from fedsim.training.stld import draw_kept, draw_schedule, kept_layers
from fedsim.training.trainer import TorchTrainer

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
