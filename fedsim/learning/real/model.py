"""Building the sequence-classification model with LoRA adapters, and finding its layers.

Sources (:class:`~fedsim.learning.real.config.ModelSpec`): the packaged all-MiniLM-L6-v2
(``minilm-l6``), a randomly initialised tiny BERT (``tiny-bert``, for tests), or a local
Hugging Face directory of the BERT, RoBERTa, DistilBERT or MPNet family. Nothing is ever
downloaded.

LoRA is injected with peft (``inject_adapter_in_model``, so parameter names stay the
model's own plus ``.lora_A.default`` / ``.lora_B.default``). The classification head
(everything outside the backbone, plus the pooler if there is one) is trainable by
unfreezing it.

Per-layer LoRA ranks (LEGEND): the model is built once with the same rank ``R =
ModelSpec.lora_rank`` on every layer. A client plan asking for rank ``r_l <= R`` on layer
``l`` is applied at training time by masking (see :mod:`fedsim.learning.real.local`): the first
``r_l`` rows of ``lora_A`` and columns of ``lora_B`` are used and trained, the rest are held
at zero for that client; ``r_l = 0`` freezes the layer's adapters. The LoRA scaling stays
``alpha / R``. One model object and one global-state layout therefore serve every plan.
(peft's ``rank_pattern`` / ``layers_to_transform`` could build a fixed heterogeneous layout
instead, but then every distinct plan would need its own model.)
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from fedsim.core.errors import ConfigError
from fedsim.core.models import MINILM_NAME, TINY_BERT, TINY_BERT_NAME, default_lora_targets, model_dir
from fedsim.learning.real.config import ModelSpec

__all__ = [
    "FedModel",
    "build_model",
    "load_tokenizer",
    "resolve_device",
    "find_layers",
    "layer_of",
    "default_lora_targets",
    "tiny_bert_config",
    "MINILM_NAME",
    "TINY_BERT_NAME",
]

_LAYER_RE = re.compile(r"(?:^|\.)(?:encoder|transformer)\.layer\.(\d+)\.")


def layer_of(param_name: str) -> int | None:
    """Transformer layer index of a parameter, or ``None`` (embeddings, pooler, head).

    Works for the BERT, RoBERTa, MPNet (``<base>.encoder.layer.<i>.``) and DistilBERT
    (``distilbert.transformer.layer.<i>.``) naming, with or without a peft wrapper prefix.
    """
    m = _LAYER_RE.search(param_name)
    return int(m.group(1)) if m else None


def find_layers(model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """Locate the ModuleList of transformer layers.

    Returns:
        ``(parent, attribute, layers)`` with ``getattr(parent, attribute) is layers``, so a
        caller can temporarily swap the list (see :mod:`fedsim.learning.real.stld`).

    Raises:
        ValueError: No ``encoder.layer`` / ``transformer.layer`` ModuleList exists.
    """
    for name, module in model.named_modules():
        if name.endswith(("encoder", "transformer")) and isinstance(getattr(module, "layer", None), nn.ModuleList):
            return module, "layer", module.layer
    raise ValueError(
        f"cannot find the transformer layers of {type(model).__name__}: expected an "
        f"'encoder.layer' or 'transformer.layer' ModuleList (BERT, RoBERTa, DistilBERT, MPNet)"
    )


def resolve_device(requested: str) -> torch.device:
    """The torch device ``train.device`` names: ``cpu``, ``cuda`` or ``auto``.

    Raises:
        ConfigError: ``cuda`` on a host where torch sees no CUDA GPU.
    """
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if requested == "auto":
        return torch.device("cpu")
    build = f"torch {torch.__version__}" + (" (a CPU-only build)" if torch.version.cuda is None else "")
    raise ConfigError(None, [("train.device", None, requested,
                              f"expected a CUDA GPU, but {build} sees none on this host; use cpu, or auto "
                              f"to take a GPU only when there is one")])


def load_tokenizer(spec: ModelSpec) -> tuple[Any, str]:
    """The fast tokenizer of the model and a name for cache keys.

    ``tiny-bert`` uses the MiniLM tokenizer (its vocabulary sizes the embedding).
    """
    from transformers import AutoTokenizer

    path = model_dir(spec.name_or_path) or model_dir(MINILM_NAME)
    assert path is not None
    tok = AutoTokenizer.from_pretrained(str(path), use_fast=True)
    name = MINILM_NAME if spec.name_or_path in (MINILM_NAME, TINY_BERT_NAME) else path.name
    return tok, name


def tiny_bert_config(vocab_size: int, num_labels: int) -> Any:
    """The test model of :data:`fedsim.core.models.TINY_BERT` (4 layers, hidden 32, 2 heads, FFN 64)."""
    from transformers import BertConfig

    fields = {k: v for k, v in TINY_BERT.items() if k != "model_type"}
    return BertConfig(**{**fields, "vocab_size": vocab_size, "num_labels": num_labels})


@dataclass
class FedModel:
    """A LoRA-wrapped classifier plus what training needs to know about it.

    Attributes:
        model: The torch module (LoRA injected, base weights frozen).
        config: Its Hugging Face config (for the cost model).
        num_layers: Number of transformer layers.
        lora_rank: Rank ``R`` the adapters were built with.
        lora_targets: Adapted module names.
        param_layer: Parameter name -> layer index or ``None``.
        base_trainable: Names trainable between rounds (LoRA adapters and head).
    """

    model: nn.Module
    config: Any
    num_layers: int
    lora_rank: int
    lora_targets: tuple[str, ...]
    param_layer: dict[str, int | None] = field(default_factory=dict)
    base_trainable: tuple[str, ...] = ()

    @property
    def device(self) -> torch.device:
        """Where the parameters live (see :func:`resolve_device`)."""
        return next(self.model.parameters()).device

    @property
    def layers(self) -> tuple[nn.Module, str, nn.ModuleList]:
        return find_layers(self.model)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Copies of the global trainable parameters (LoRA and head)."""
        params = dict(self.model.named_parameters())
        return {name: params[name].detach().clone() for name in self.base_trainable}

    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        """Copy values into the named parameters (any subset of the model's parameters)."""
        params = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(torch.as_tensor(value, dtype=params[name].dtype))

    def set_base_trainable(self) -> None:
        """Make exactly the between-rounds trainable set require gradients."""
        keep = set(self.base_trainable)
        for name, p in self.model.named_parameters():
            p.requires_grad_(name in keep)


def _is_head(name: str, base_prefix: str) -> bool:
    return not name.startswith(base_prefix + ".") or ".pooler." in name


@contextlib.contextmanager
def _quiet_load() -> Iterator[None]:
    """No load report ("classifier.weight | MISSING": the head is new by design), no
    sharding notes and no "Loading weights" bar while a pretrained model loads: the
    ``transformers`` loggers say only errors then; restored afterwards."""
    from transformers.utils import logging as hf_logging

    loggers = [logging.getLogger("transformers")]
    levels = [lg.level for lg in loggers]
    bars = hf_logging.is_progress_bar_enabled()
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)
        if bars:
            hf_logging.enable_progress_bar()


def build_model(
    spec: ModelSpec, num_labels: int, seed: int, vocab_size: int | None = None, device: str | torch.device = "cpu"
) -> FedModel:
    """Load or create the classifier and inject LoRA adapters.

    Args:
        spec: Which model and which LoRA settings.
        num_labels: Number of classes.
        seed: Seeds the new weights (classifier head, LoRA ``A``, all of ``tiny-bert``)
            without touching torch's global random state.
        vocab_size: Vocabulary of ``tiny-bert`` (default: the MiniLM tokenizer's).
        device: Where the model is put once built (built on the CPU, so the new weights
            are the same on every device).

    Returns:
        The model in train mode with only LoRA adapters and the head trainable.
    """
    from peft import LoraConfig, inject_adapter_in_model
    from transformers import AutoModelForSequenceClassification, BertForSequenceClassification

    path = model_dir(spec.name_or_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if path is None:
            if vocab_size is None:
                vocab_size = len(load_tokenizer(spec)[0])
            model = BertForSequenceClassification(tiny_bert_config(vocab_size, num_labels))
        else:
            # float32 whatever the files hold (transformers 5 would keep fp16 weights fp16).
            with _quiet_load():
                model = AutoModelForSequenceClassification.from_pretrained(
                    str(path), num_labels=num_labels, dtype=torch.float32
                )
        config = model.config
        targets = tuple(spec.lora_targets) if spec.lora_targets else default_lora_targets(config.model_type)
        lora = LoraConfig(
            r=spec.lora_rank,
            lora_alpha=spec.lora_alpha,
            lora_dropout=spec.lora_dropout,
            target_modules=list(targets),
            bias="none",
        )
        try:
            model = inject_adapter_in_model(lora, model)
        except ValueError as exc:
            raise ValueError(
                f"cannot put LoRA on modules {list(targets)} of {config.model_type} model "
                f"'{spec.name_or_path}': {exc}"
            ) from None
    base_prefix = model.base_model_prefix
    trainable = []
    for name, p in model.named_parameters():
        is_trainable = "lora_" in name or _is_head(name, base_prefix)
        p.requires_grad_(is_trainable)
        if is_trainable:
            trainable.append(name)
    model.to(device)
    model.train()
    _, _, layers = find_layers(model)
    return FedModel(
        model=model,
        config=config,
        num_layers=len(layers),
        lora_rank=spec.lora_rank,
        lora_targets=targets,
        param_layer={name: layer_of(name) for name, _ in model.named_parameters()},
        base_trainable=tuple(trainable),
    )


def model_fingerprint(fm: FedModel) -> str:
    """Hash of the trainable state (handy in tests and logs)."""
    h = hashlib.sha256()
    for name, t in sorted(fm.trainable_state().items()):
        h.update(name.encode())
        h.update(t.cpu().numpy().tobytes())
    return h.hexdigest()[:16]
