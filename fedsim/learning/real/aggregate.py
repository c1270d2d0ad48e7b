"""Pure aggregation maths: FedAvg per transformer layer.

Works on any array type with ``+``, ``-``, ``*`` and scalar division (torch tensors or
numpy arrays); no torch import.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from fedsim.learning.base import ClientResult

__all__ = ["fedavg_per_layer", "layer_weights"]


def _default_layer_of(name: str) -> int | None:
    from fedsim.learning.real.model import layer_of

    return layer_of(name)


def layer_weights(
    name: str, results: Sequence[ClientResult], layer_of: Callable[[str], int | None]
) -> list[tuple[ClientResult, float]]:
    """The clients that trained parameter ``name`` and their FedAvg weights (``num_examples``).

    A client trained a parameter when its delta holds the name and, for a parameter inside
    transformer layer ``l``, ``layer_steps[l] > 0``.
    """
    layer = layer_of(name)
    out = []
    for r in results:
        if r.delta is None or name not in r.delta or r.num_examples <= 0:
            continue
        if layer is not None and r.layer_steps[layer] <= 0:
            continue
        out.append((r, float(r.num_examples)))
    return out


def fedavg_per_layer(
    global_state: dict[str, Any],
    results: Sequence[ClientResult],
    layer_of: Callable[[str], int | None] | None = None,
) -> dict[str, Any]:
    """FedAvg of deltas, parameter by parameter, over the clients that trained each one.

    ``new[p] = global[p] + sum_k n_k * delta_k[p] / sum_k n_k`` over the clients ``k`` that
    trained ``p`` (see :func:`layer_weights`): a layer is averaged over the clients that
    ran it, head parameters over every client that sent them, and a parameter nobody
    trained keeps its global value. Compatible with
    :data:`fedsim.learning.base.AggregateFn` (``layer_of`` has a default).

    Args:
        global_state: Parameter name -> current global value. Not modified.
        results: Client results with ``delta`` dicts.
        layer_of: Parameter name -> layer index or ``None``; default
            :func:`fedsim.learning.real.model.layer_of`.

    Returns:
        A new dict with the same keys as ``global_state``.
    """
    layer_of = layer_of or _default_layer_of
    new_state: dict[str, Any] = {}
    for name, value in global_state.items():
        contributors = layer_weights(name, results, layer_of)
        total = sum(w for _, w in contributors)
        if total <= 0:
            new_state[name] = value
            continue
        acc = None
        for r, w in contributors:
            term = r.delta[name] * (w / total)  # type: ignore[index]
            acc = term if acc is None else acc + term
        new_state[name] = value + acc
    return new_state
