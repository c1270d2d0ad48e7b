"""Stochastic transformer layer dropout (STLD, DropPEFT).

At every local step each transformer layer is skipped with its own probability from the
plan. A skipped layer is removed from the forward pass altogether: the encoder's layer
``ModuleList`` is temporarily replaced by a list of the kept layers, so the skipped ones
cost no forward or backward compute, hold no activations and receive no gradient. The
swap is undone in a ``finally``; evaluation always runs every layer.

Swapping the list (rather than looping over layers ourselves) keeps each family's own
encoder code in charge of masks and position bias (MPNet computes its relative position
bias once in the encoder, independent of the number of layers), so with every layer kept
the output is exactly the stock forward's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from torch import nn

from fedsim.core.plan import draw_layers
from fedsim.learning.real.model import find_layers

__all__ = ["draw_kept", "draw_schedule", "exact_schedule", "kept_layers"]


def draw_kept(drop_prob: np.ndarray | tuple[float, ...], rng: np.random.Generator) -> np.ndarray:
    """Which layers run at one step: ``kept[l]`` is True with probability ``1 - drop_prob[l]``.

    Systematic sampling (:func:`fedsim.core.plan.draw_layers`): exact marginals, and a step
    never runs more than ``ceil(sum(1 - drop_prob))`` layers, the bound the cost model
    uses for peak activation memory.
    """
    return draw_layers(1.0 - np.asarray(drop_prob, dtype=float), rng)


def draw_schedule(drop_prob: np.ndarray | tuple[float, ...], steps: int, rng: np.random.Generator) -> np.ndarray:
    """Kept-layer masks for ``steps`` steps at once: a ``(steps, num_layers)`` bool array."""
    keep = 1.0 - np.asarray(drop_prob, dtype=float)
    return np.stack([draw_layers(keep, rng) for _ in range(steps)]) if steps else np.ones((0, keep.size), dtype=bool)


def exact_schedule(num_layers: int, drop_ratio: float, steps: int, rng: np.random.Generator) -> np.ndarray:
    """A low-variance schedule: over ``steps`` steps exactly ``drop_ratio`` of the layer slots drop.

    Step ``t`` drops ``floor((t+1)·r·L) - floor(t·r·L)`` layers chosen uniformly, so every
    layer's marginal drop probability is ``r`` as in :func:`draw_schedule`, but the number
    dropped per step hardly varies. Used by the benchmark to time a given mean ratio.
    """
    kept = np.ones((steps, num_layers), dtype=bool)
    per = drop_ratio * num_layers
    for t in range(steps):
        d = int(np.floor((t + 1) * per + 1e-9) - np.floor(t * per + 1e-9))
        kept[t, rng.choice(num_layers, size=min(d, num_layers), replace=False)] = False
    return kept


@contextmanager
def kept_layers(model: nn.Module, kept: np.ndarray | None) -> Iterator[None]:
    """Run the forward passes inside the block with only the ``kept`` layers.

    Args:
        model: A model whose layers :func:`~fedsim.learning.real.model.find_layers` can find.
        kept: Bool mask over layers; ``None`` leaves the model untouched. Any mask (all
            True included) runs through the swapped list, so tests exercise one path.

    The backward pass may run after the block: autograd holds the graph of the layers
    that ran, and the skipped layers were never part of it.
    """
    if kept is None:
        yield
        return
    parent, attr, layers = find_layers(model)
    if len(kept) != len(layers):
        raise ValueError(f"kept mask has {len(kept)} entries but the model has {len(layers)} layers")
    subset = nn.ModuleList([layer for layer, keep in zip(layers, kept) if keep])
    # Register-free swap: assigning a ModuleList attribute replaces the child module.
    setattr(parent, attr, subset)
    try:
        yield
    finally:
        setattr(parent, attr, layers)
