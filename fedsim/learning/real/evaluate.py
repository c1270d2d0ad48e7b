"""Accuracy and loss of the model on a test split: batched, no gradient, every layer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.learning.base import EvalResult
from fedsim.learning.real.data import TokenizedSplit
from fedsim.learning.real.local import make_batch, to_device

__all__ = ["evaluate_model", "eval_indices"]


def eval_indices(n: int, subsample: int | None, seed: int) -> np.ndarray:
    """All of ``range(n)``, or a fixed sorted subsample of ``subsample`` of them."""
    if subsample is None or subsample >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=subsample, replace=False))


def evaluate_model(
    model: torch.nn.Module,
    data: TokenizedSplit,
    indices: np.ndarray | None = None,
    batch_size: int = 64,
) -> EvalResult:
    """Accuracy and mean cross-entropy on ``data[indices]`` (default: the whole split).

    The model is put in eval mode for the call and returned to its previous mode. Batches
    go to the model's device; per-batch sums come back to the host once, at the end.
    """
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    if idx.size == 0:
        return EvalResult(accuracy=float("nan"))
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct: list[torch.Tensor] = []
    losses: list[torch.Tensor] = []
    try:
        with torch.inference_mode():
            # Sorting by length makes batches of similar length: less padding, same results.
            order = idx[np.argsort(data.lengths[idx], kind="stable")]
            for start in range(0, order.size, batch_size):
                batch = to_device(make_batch(data, order[start : start + batch_size]), device)
                labels = batch.pop("labels")
                logits = model(**batch).logits
                losses.append(F.cross_entropy(logits, labels, reduction="sum"))
                correct.append((logits.argmax(-1) == labels).sum())
    finally:
        model.train(was_training)
    # Summed on the host in batch order, as Python floats: the same result as summing per batch.
    loss_sum = sum(torch.stack(losses).tolist(), 0.0)
    return EvalResult(accuracy=int(torch.stack(correct).sum()) / idx.size, loss=loss_sum / idx.size)
