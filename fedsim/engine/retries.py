"""Transfers that fail and are retried: attempts, back-off and what they waste (pure).

Each attempt of a transfer (a client's download or upload) fails with probability
``failure_prob``, after a uniform random share of the transfer's time (moving the bytes
that share carried past the latency). After the j-th failed attempt the client waits
``backoff_s * backoff_factor ** j`` and tries again; after ``retries`` retries have
failed too it gives up, and the client fails with outcome ``transfer_failed`` at that
moment. With ``failure_prob: 0`` (the default) nothing is drawn and nothing changes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydantic import Field, model_validator

from fedsim.core.configio import Spec

__all__ = ["TransferSpec", "Retries", "draw_retries"]

# Longest sum of back-off waits of one transfer (about 30 years of simulated time).
MAX_TOTAL_BACKOFF_S = 1e9


class TransferSpec(Spec):
    """Failing transfers and their retries (``engine.transfers`` in a scenario)."""

    failure_prob: float = Field(0.0, ge=0.0, lt=1.0, description="probability that one attempt of a transfer fails")
    retries: int = Field(3, ge=0, le=100, description="attempts after the first before the client gives up")
    backoff_s: float = Field(2.0, ge=0.0, description="wait before the first retry")
    backoff_factor: float = Field(2.0, ge=1.0, le=10.0, description="each further wait is this times the previous")

    @model_validator(mode="after")
    def _bounded_waits(self) -> TransferSpec:
        # backoff_factor ** retries grows fast: 10 ** 100 s would overflow simulated time.
        total = self.backoff_s * sum(self.backoff_factor**j for j in range(self.retries))
        if total > MAX_TOTAL_BACKOFF_S:
            raise ValueError(
                f"the waits of all retries add up to {total:.3g} s; expected at most {MAX_TOTAL_BACKOFF_S:.0e} s "
                "(lower backoff_s, backoff_factor or retries)"
            )
        return self


@dataclass(frozen=True)
class Retries:
    """The failed attempts of one transfer per client (rows: clients, columns: attempts).

    Attributes:
        failed: How many attempts failed (``retries + 1``: the client gave up).
        wait_s: Time from the transfer's start until its last attempt starts, or, for a
            client that gave up, until it gave up.
        start_s: Start of each failed attempt, from the transfer's start (NaN: none).
        length_s: How long each failed attempt ran (0: none).
    """

    failed: np.ndarray
    wait_s: np.ndarray
    start_s: np.ndarray
    length_s: np.ndarray
    gave_up: np.ndarray

    def moved_bytes(self, transfer_s: np.ndarray, latency_s: np.ndarray, nbytes: np.ndarray, until_s: np.ndarray) -> np.ndarray:
        """Bytes the failed attempts carried before ``until_s`` (from the transfer's start)."""
        end = np.minimum(self.start_s + self.length_s, until_s[:, None])
        share = (end - self.start_s - latency_s[:, None]) / np.maximum(transfer_s - latency_s, 1e-12)[:, None]
        return nbytes * np.nansum(np.clip(share, 0.0, 1.0), axis=1)

    def started_before(self, until_s: np.ndarray) -> np.ndarray:
        """Failed attempts that had started by ``until_s`` (from the transfer's start)."""
        return np.sum(self.start_s < until_s[:, None], axis=1)


def draw_retries(rng: np.random.Generator, transfer_s: np.ndarray, spec: TransferSpec) -> Retries:
    """The failed attempts of one transfer of ``transfer_s`` seconds for each client."""
    n, slots = transfer_s.size, spec.retries + 1
    fails = rng.random((n, slots)) < spec.failure_prob
    share = rng.random((n, slots))
    failed = np.where(fails.all(axis=1), slots, np.argmin(fails, axis=1))
    used = np.arange(slots) < failed[:, None]
    length = np.where(used, share * transfer_s[:, None], 0.0)
    backoff = spec.backoff_s * spec.backoff_factor ** np.arange(slots)
    step = length + np.where(used, backoff, 0.0)
    start = np.concatenate([np.zeros((n, 1)), np.cumsum(step, axis=1)[:, :-1]], axis=1)
    gave_up = failed > spec.retries
    wait = np.where(gave_up, start[:, -1] + length[:, -1], np.cumsum(step, axis=1)[np.arange(n), np.maximum(failed - 1, 0)] * (failed > 0))
    return Retries(failed=failed, wait_s=wait, start_s=np.where(used, start, np.nan), length_s=length, gave_up=gave_up)
