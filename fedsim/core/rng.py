"""Seeded random streams: one root seed, independent named streams, keyed by round.

Every random draw in a run comes from ``Seeds(seed).generator(stream, *keys)``. A stream
is a pure function of ``(seed, stream, keys)``: round 17's client selection does not
depend on how many numbers round 16 drew, so a run resumed at round 17 draws exactly what
the uninterrupted run drew, and two sweep points that differ only in timing still train
the same clients with the same seeds wherever their rounds coincide.

Draws about devices are keyed by device too (:class:`DeviceRandom`): what device 17
draws in round 5 (whether it straggles, drops out, which seed it trains with, its
priority for selection) does not depend on which other devices the round holds or in
what order. Two runs that differ only in their method (one leaves a device out, or plans
other arms) then see the same device fates wherever their rounds hold the same devices:
common random numbers, so that comparing methods on the same seeds compares the methods
rather than the luck of the draws (Law, *Simulation Modeling and Analysis*, 5th ed.,
section 11.2).
"""

from __future__ import annotations

import numpy as np

__all__ = ["Seeds", "STREAMS", "DeviceRandom", "DRAWS"]

# The scheme of the draws, recorded in summary.json: records made under another scheme
# (before 2026-11-27: positional, the field absent) are not common random numbers with these.
DRAWS = "keyed-by-device"

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

    def devices(self, stream: str, key: int, ids: np.ndarray) -> "DeviceRandom":
        """Draws keyed by device for the devices ``ids`` (:class:`DeviceRandom`) in stream
        ``stream`` under ``key`` (a round, say)."""
        return DeviceRandom(self.int_seed(stream, key), ids)


_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_COLUMN = np.uint64(0xD1B54A32D192ED03)


def _mix64(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser (Steele, Lea and Flood, OOPSLA 2014): a bijection of 64-bit
    words whose every output bit depends on every input bit. ``z``: uint64 array (wraps)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class DeviceRandom:
    """Random numbers keyed by device: a counter-based stream per device.

    Column ``c`` of device ``d`` is a pure function of ``(key, d, c)`` (two rounds of
    SplitMix64's mixer), so a device draws the same numbers whichever other devices are
    drawn beside it, and in any order. It offers the part of ``numpy.random.Generator``
    that per-device code uses: each call of :meth:`random` with size ``n`` (the number of
    devices) or ``(n, k)`` takes the next ``1`` or ``k`` columns of every device.
    Vectorised: no Python object per device.
    """

    def __init__(self, key: int, ids: np.ndarray) -> None:
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"ids must be one-dimensional, got shape {ids.shape}")
        with np.errstate(over="ignore"):
            self._base = _mix64(np.uint64(int(key) & _MASK64) ^ (ids.astype(np.uint64) * _GOLDEN))
        self._next = 0

    @property
    def size(self) -> int:
        return int(self._base.size)

    def _words(self, k: int) -> np.ndarray:
        cols = np.arange(self._next + 1, self._next + 1 + k, dtype=np.uint64)
        self._next += k
        with np.errstate(over="ignore"):
            return _mix64(self._base[:, None] + cols[None, :] * _COLUMN)

    def random(self, size: int | tuple[int, ...] | None = None) -> np.ndarray:
        """Uniforms in the open interval (0, 1): ``size`` is ``n`` or ``(n, k)``."""
        n = self.size
        shape = (n,) if size is None else ((int(size),) if np.ndim(size) == 0 else tuple(int(x) for x in size))
        if shape[0] != n or len(shape) > 2:
            raise ValueError(f"DeviceRandom draws (n,) or (n, k) with n = {n} devices, got size {size}")
        k = shape[1] if len(shape) == 2 else 1
        u = ((self._words(k) >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
        return u.reshape(shape)

    def seeds(self) -> np.ndarray:
        """One 63-bit seed per device (the next column)."""
        return (self._words(1)[:, 0] >> np.uint64(1)).astype(np.int64)

    def priority(self) -> np.ndarray:
        """One uniform per device (the next column): the ``n`` smallest of them pick ``n``
        devices uniformly without replacement."""
        return self.random(self.size)
