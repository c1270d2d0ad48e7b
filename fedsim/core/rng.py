"""Seeded random streams: one root seed, independent named streams, keyed by round.

Every random draw in a run comes from ``Seeds(seed).generator(stream, *keys)``. A stream
is a pure function of ``(seed, stream, keys)``: round 17's client selection does not
depend on how many numbers round 16 drew, so a run resumed at round 17 draws exactly what
the uninterrupted run drew, and two sweep points that differ only in timing still train
the same clients with the same seeds wherever their rounds coincide.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Seeds", "STREAMS"]

STREAMS = {
    "fleet": 1,
    "availability": 2,
    "select": 3,
    "devices": 4,
    "train": 5,
    "method": 6,
    "data": 7,
    "trainer": 8,
    "transfers": 9,
    "check": 11,  # fedsim profiles --check: which devices it prices
    "cells": 10,
}


class Seeds:
    """Factory of independent generators derived from one root seed."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        self.seed = int(seed)

    def generator(self, stream: str, *keys: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, STREAMS[stream], *(int(k) for k in keys)])

    def int_seed(self, stream: str, *keys: int) -> int:
        """A 63-bit integer seed (for torch or a hash), from the same derivation."""
        return int(self.generator(stream, *keys).integers(0, 2**63 - 1))
