"""Accuracy and loss of the model on a test split: batched, no gradient, every layer."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from fedsim.trainers.base import EvalResult
from fedsim.training.data import TokenizedSplit
from fedsim.training.local import make_batch

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

    The model is put in eval mode for the call and returned to its previous mode.
    """
    idx = np.arange(len(data)) if indices is None else np.asarray(indices)
    if idx.size == 0:
        return EvalResult(accuracy=float("nan"))
    was_training = model.training
    model.eval()
    correct = 0
    loss_sum = 0.0
    try:
        with torch.inference_mode():
            # Sorting by length makes batches of similar length: less padding, same results.
            order = idx[np.argsort(data.lengths[idx], kind="stable")]
            for start in range(0, order.size, batch_size):
                batch = make_batch(data, order[start : start + batch_size])
                labels = batch.pop("labels")
                logits = model(**batch).logits
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
                correct += int((logits.argmax(-1) == labels).sum())
    finally:
        model.train(was_training)
    return EvalResult(accuracy=correct / idx.size, loss=loss_sum / idx.size)
