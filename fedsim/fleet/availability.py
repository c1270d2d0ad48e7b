"""Which devices can train at a given simulated time.

An availability model answers one question, vectorised over the whole fleet:
``model.available(t_s) -> bool array``. The diurnal model here follows the profile's
charging window; a trace-driven model (FedScale's availability trace) can replace it
behind the same method.

Randomness that must not depend on *when* or *how often* the question is asked (whether
device 17 skips Tuesday) comes from a counter-based hash of ``(seed, device, day)``, not
from a stateful generator: asking twice gives the same answer, and a resumed run sees the
same days as the original.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedsim.fleet.fleet import Fleet

__all__ = ["AvailabilityModel", "DiurnalAvailability", "AlwaysAvailable", "hash_uniform"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def hash_uniform(seed: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Uniform [0, 1) numbers that are a pure function of ``(seed, a, b)`` (splitmix64)."""
    with np.errstate(over="ignore"):
        x = np.asarray(a, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x ^= np.asarray(b, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF) * np.uint64(0xD1B54A32D192ED03)
        x ^= x >> np.uint64(30)
        x *= _M1
        x ^= x >> np.uint64(27)
        x *= _M2
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


class AvailabilityModel(Protocol):
    def available(self, t_s: float) -> np.ndarray:
        """Boolean mask over the fleet: which devices can start a round at ``t_s``."""
        ...


class AlwaysAvailable:
    """Every device, at every time (for tests and lab testbeds)."""

    def __init__(self, size: int) -> None:
        self._mask = np.ones(size, dtype=bool)

    def available(self, t_s: float) -> np.ndarray:
        return self._mask


class DiurnalAvailability:
    """Daily charging windows in each device's local time, with skipped days.

    Args:
        fleet: Supplies ``window_start_h``, ``window_len_h``, ``skip_day_prob`` and
            ``utc_offset_h``.
        seed: Seed of the skip-day hash.
        start_hour_utc: Hour of day (UTC) at simulated time 0.
    """

    def __init__(self, fleet: Fleet, seed: int, start_hour_utc: float = 0.0) -> None:
        self.fleet = fleet
        self.seed = int(seed)
        self.start_hour_utc = float(start_hour_utc)
        self._ids = np.arange(fleet.size, dtype=np.uint64)

    def available(self, t_s: float) -> np.ndarray:
        f = self.fleet
        local_h = np.float32(t_s / 3600.0 + self.start_hour_utc) + f.utc_offset_h
        since_open = np.mod(local_h - f.window_start_h, np.float32(24.0))
        mask = since_open < f.window_len_h
        # Skipped days only matter inside a window, and only where a class skips days.
        idx = np.flatnonzero(mask & (f.skip_day_prob > 0))
        if idx.size:
            # The day a window belongs to is the day it opened (a night window spans midnight).
            day = np.floor((local_h[idx] - since_open[idx]) / 24.0).astype(np.int64)
            skip = hash_uniform(self.seed, self._ids[idx], day.astype(np.uint64)) < f.skip_day_prob[idx]
            mask[idx[skip]] = False
        return mask
