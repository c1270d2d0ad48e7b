"""FedBuff's rules as data and pure functions: the buffer, the concurrency limit and how
much a stale update counts.

An update trained from global model version ``v`` and applied when the model is at
version ``V`` has staleness ``s = V - v``; it is scaled by ``(1 + s) ** -exponent``
before aggregation (Nguyen et al., 2022, use ``1 / sqrt(1 + s)``: exponent 0.5), and
dropped if ``s`` exceeds ``max_staleness``.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from fedsim.core.configio import Spec

__all__ = ["FedBuffSpec", "staleness_weights"]


class FedBuffSpec(Spec):
    """``engine.fedbuff``: the asynchronous driver's rules (``engine.driver: async``)."""

    buffer_k: int = Field(10, ge=1, description="the server aggregates every this many arrived updates")
    concurrency: int = Field(13, ge=1, description="clients training at once")
    staleness_exponent: float = Field(0.5, ge=0.0, le=4.0, description="an update of staleness s weighs (1 + s) ** -this")
    max_staleness: int | None = Field(None, ge=0, description="drop updates staler than this (outcome rejected); null: none")


def staleness_weights(staleness: np.ndarray, exponent: float) -> np.ndarray:
    """``(1 + s) ** -exponent`` per update."""
    return (1.0 + np.asarray(staleness, dtype=float)) ** -float(exponent)
