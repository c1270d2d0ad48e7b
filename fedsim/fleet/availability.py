"""Which devices can train at a given simulated time.

An availability model answers one question, vectorised over the whole fleet:
``model.available(t_s) -> bool array``. The diurnal model follows the profiles' charging
windows; the trace model (:class:`TraceAvailability`) follows per-device online intervals
read from a trace file (:mod:`fedsim.fleet.traces`). A model may also say when devices
that are online now go offline (``online_for_s``): the engine makes a client whose trace
takes it offline mid-round drop out at that moment. The diurnal model does not (its
windows say when a device may *start*; drop-outs come from the profiles' probability).

Randomness that must not depend on *when* or *how often* the question is asked (whether
device 17 skips Tuesday) comes from a counter-based hash of ``(seed, device, day)``, not
from a stateful generator: asking twice gives the same answer, and a resumed run sees the
same days as the original.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from fedsim.fleet.fleet import Fleet, FleetSpec
from fedsim.fleet.traces import AvailabilityTrace, load_availability_trace

__all__ = [
    "AvailabilityModel", "DiurnalAvailability", "AlwaysAvailable", "TraceAvailability", "availability_model",
    "hash_uniform",
]

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

    def online_for_s(self, t_s: float, ids: np.ndarray) -> np.ndarray | None:
        """Optional: how long each of ``ids`` (online at ``t_s``) stays online; ``None``: not known."""
        ...


class AlwaysAvailable:
    """Every device, at every time (for tests and lab testbeds)."""

    def __init__(self, size: int) -> None:
        self._mask = np.ones(size, dtype=bool)

    def available(self, t_s: float) -> np.ndarray:
        return self._mask

    def online_for_s(self, t_s: float, ids: np.ndarray) -> None:
        return None


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

    def online_for_s(self, t_s: float, ids: np.ndarray) -> None:
        return None


class TraceAvailability:
    """Online intervals from a trace; device ``i`` follows trace client ``i mod m``.

    Devices map to the trace's clients in file order, cycling when the fleet is larger
    (FedScale maps its clients to behaviour traces the same way). A client whose trace
    repeats (FedScale's ``finish_time``) is online at ``t`` when ``t mod finish_time``
    lies in one of its intervals ``[start, end)``; a trace without a period is online
    only inside its intervals.

    Args:
        trace: The loaded intervals.
        size: Number of devices in the fleet.
    """

    def __init__(self, trace: AvailabilityTrace, size: int) -> None:
        self.trace = trace
        m = trace.size
        self._client = np.arange(size) % m
        counts = np.diff(trace.offsets)
        owner = np.repeat(np.arange(m), counts)
        finite = trace.period_s[np.isfinite(trace.period_s)]
        top = max(float(trace.end_s.max(initial=0.0)), float(finite.max(initial=0.0)))
        # One sorted array for all clients: client j's starts shifted by j * width. The
        # float keys may be off by a hair at an interval's edge; positions are then
        # corrected against the exact times (see _interval).
        self._width = top + 1.0
        self._keys = owner * self._width + trace.start_s

    def _norm(self, t_s: float, clients: np.ndarray) -> np.ndarray:
        period = self.trace.period_s[clients]
        return np.where(np.isfinite(period), np.mod(t_s, np.where(np.isfinite(period), period, 1.0)), t_s)

    def _interval(self, norm: np.ndarray, clients: np.ndarray) -> np.ndarray:
        """Index of the last interval of each client starting at or before ``norm``
        (``offsets[client] - 1`` when none does)."""
        tr = self.trace
        lo, hi = tr.offsets[clients], tr.offsets[clients + 1]
        q = clients * self._width + np.minimum(norm, self._width - 0.5)
        k = np.searchsorted(self._keys, q, side="right") - 1
        k = np.clip(k, lo - 1, hi - 1)
        for _ in range(2):  # the float keys are at most a position off
            has = k >= lo
            back = has & (tr.start_s[np.maximum(k, 0)] > norm)
            k = np.where(back, k - 1, k)
            nxt = k + 1
            fwd = (nxt < hi) & (tr.start_s[np.minimum(nxt, tr.start_s.size - 1)] <= norm)
            k = np.where(fwd, nxt, k)
        return k

    def available(self, t_s: float) -> np.ndarray:
        clients = self._client
        norm = self._norm(t_s, clients)
        k = self._interval(norm, clients)
        inside = k >= self.trace.offsets[clients]
        return inside & (norm < self.trace.end_s[np.maximum(k, 0)])

    def online_for_s(self, t_s: float, ids: np.ndarray) -> np.ndarray:
        """Seconds from ``t_s`` until each device's interval ends (``inf``: never within the
        trace; 0: offline already). An interval that reaches the end of the period runs on
        into one that starts the next period at 0."""
        tr = self.trace
        clients = self._client[np.asarray(ids, dtype=np.int64)]
        norm = self._norm(t_s, clients)
        k = self._interval(norm, clients)
        out = np.zeros(clients.size)
        for pos, (j, kk, x) in enumerate(zip(clients, k, norm)):
            lo, hi, period = int(tr.offsets[j]), int(tr.offsets[j + 1]), float(tr.period_s[j])
            if kk < lo or x >= tr.end_s[kk]:
                continue
            left = float(tr.end_s[kk]) - x
            # Carry over the period's end: [.., period) then [0, ..) is one stay.
            if kk == hi - 1 and np.isfinite(period) and tr.end_s[kk] >= period and tr.start_s[lo] <= 0.0:
                left = np.inf if lo == kk else left + float(tr.end_s[lo])
            out[pos] = left
        return out


def availability_model(spec: FleetSpec, fleet: Fleet, seed: int, start_hour_utc: float) -> AvailabilityModel:
    """The scenario's availability: its trace if ``fleet.trace.availability`` names one,
    else the profiles' diurnal windows (trace time 0 is simulated time 0)."""
    if spec.trace is not None and spec.trace.availability is not None:
        return TraceAvailability(load_availability_trace(spec.trace.availability), fleet.size)
    return DiurnalAvailability(fleet, seed, start_hour_utc)
