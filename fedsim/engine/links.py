"""Shared links: transfers behind the same bottleneck share it fairly.

Every transfer has its own rate cap (the device's link) and may cross shared links (the
server's ingress or egress, the cell or access point of its device). At every moment the
active transfers get the max-min fair rates (progressive filling: raise every transfer's
rate together; a transfer stops rising when its own cap or one of its links is full).
Rates change only when a transfer starts or finishes, so :func:`fair_finish_s` computes
every finish time exactly by stepping from one such event to the next: a pure function
of the transfers' start times, sizes, caps and links, with no SimPy. For one link and no
caps this is processor sharing.

:class:`SharedLinks` applies it to a round's planned phases (:func:`share_phases`): every
selected client downloads (bytes flow after its latency, as in the cost model), and every
client that does not run out of memory uploads once its compute ends. Failures are drawn
from these times afterwards, so a client that drops out or is cut keeps its share until
its planned transfer would have ended: an upper bound on the contention.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydantic import Field, model_validator

from fedsim.core.configio import Spec
from fedsim.core.costmodel import ClientTimes

__all__ = ["LinkSpec", "CellSpec", "SharedLinks", "maxmin_rates", "fair_finish_s", "share_phases"]

_MBPS = 1e6


class LinkSpec(Spec):
    """A shared link's capacity in each direction, from the clients' side (null: unlimited)."""

    down_mbps: float | None = Field(None, gt=0, description="capacity shared by the clients' downloads (Mbit/s)")
    up_mbps: float | None = Field(None, gt=0, description="capacity shared by the clients' uploads (Mbit/s)")

    @model_validator(mode="after")
    def _check(self):
        if self.down_mbps is None and self.up_mbps is None:
            raise ValueError("give down_mbps, up_mbps or both")
        return self


class CellSpec(LinkSpec):
    """Cells (or access points): every device is assigned to one, drawn uniformly with the run's seed."""

    count: int = Field(ge=1, description="number of cells the fleet is spread over")


def maxmin_rates(active: np.ndarray, cap_bps: np.ndarray, member: np.ndarray, capacity_bps: np.ndarray) -> np.ndarray:
    """Max-min fair rates of the ``active`` transfers (bit/s; 0 for the others).

    Args:
        active: ``(n,)`` which transfers are under way.
        cap_bps: ``(n,)`` each transfer's own cap (``inf``: none).
        member: ``(n, m)`` which shared links each transfer crosses.
        capacity_bps: ``(m,)`` the shared links' capacities.
    """
    rate = np.zeros(cap_bps.size)
    rising = active.copy()
    left = capacity_bps.astype(float)
    while rising.any():
        users = member[rising].sum(axis=0)
        level = np.min(np.where(users > 0, left / np.maximum(users, 1), np.inf))
        capped = rising & (cap_bps <= level)
        if capped.any():  # these stop below every link's level, which only rises without them
            rate[capped] = cap_bps[capped]
            left -= rate[capped] @ member[capped]
            rising &= ~capped
            continue
        full = (users > 0) & (left / np.maximum(users, 1) <= level * (1 + 1e-12))
        frozen = rising & member[:, full].any(axis=1)
        rate[frozen] = level
        left -= level * member[frozen].sum(axis=0)
        rising &= ~frozen
    return rate


def fair_finish_s(start_s: np.ndarray, bits: np.ndarray, cap_bps: np.ndarray, member: np.ndarray,
                  capacity_bps: np.ndarray) -> np.ndarray:
    """When each transfer ends, sharing the links max-min fairly (see the module docstring).

    ``start_s`` and ``bits`` are ``(n,)``; ``cap_bps``, ``member`` and ``capacity_bps`` are
    as in :func:`maxmin_rates`.
    """
    start_s = np.asarray(start_s, dtype=float)
    left = np.asarray(bits, dtype=float).copy()
    n = start_s.size
    finish = np.where(left <= 0, start_s, np.nan)
    done = left <= 0
    order = np.argsort(start_s, kind="stable")
    k, t = 0, float(start_s.min()) if n else 0.0
    while not done.all():
        while k < n and start_s[order[k]] <= t:
            k += 1
        active = ~done & (start_s <= t)
        if not active.any():
            t = float(start_s[order[k]])
            continue
        rate = maxmin_rates(active, cap_bps, member, capacity_bps)
        to_end = np.where(active, left / np.where(active, rate, 1.0), np.inf)
        dt_end = float(to_end.min())
        t_next = float(start_s[order[k]]) if k < n else np.inf
        if t + dt_end <= t_next:
            ending = active & (to_end <= dt_end * (1 + 1e-12))
            left[active] -= rate[active] * dt_end
            t = t + dt_end
            finish[ending], left[ending], done[ending] = t, 0.0, True
        else:
            left[active] -= rate[active] * (t_next - t)
            t = t_next
    return finish


@dataclass(frozen=True)
class SharedLinks:
    """The server's link and the cells, as a round's transfers see them (bit/s; ``inf``: unlimited)."""

    server_down_bps: float = np.inf
    server_up_bps: float = np.inf
    cell_down_bps: float = np.inf
    cell_up_bps: float = np.inf
    cell_of: np.ndarray | None = None  # per device of the fleet, its cell

    @classmethod
    def from_specs(cls, server: LinkSpec | None, cells: CellSpec | None, fleet_size: int,
                   rng: np.random.Generator | None) -> SharedLinks | None:
        """``None`` when neither is given (the engine's default: independent links)."""
        if server is None and cells is None:
            return None
        bps = lambda mbps: np.inf if mbps is None else mbps * _MBPS  # noqa: E731
        kw = {}
        if server is not None:
            kw.update(server_down_bps=bps(server.down_mbps), server_up_bps=bps(server.up_mbps))
        if cells is not None:
            kw.update(cell_down_bps=bps(cells.down_mbps), cell_up_bps=bps(cells.up_mbps),
                      cell_of=rng.integers(0, cells.count, size=fleet_size))
        return cls(**kw)

    def members(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(n, 1 + cells)`` membership of the clients ``ids`` (server link first) and the cells' codes."""
        if self.cell_of is None:
            return np.ones((ids.size, 1), dtype=bool), np.zeros(0, dtype=np.int64)
        cells, local = np.unique(self.cell_of[ids], return_inverse=True)
        member = np.zeros((ids.size, 1 + cells.size), dtype=bool)
        member[:, 0] = True
        member[np.arange(ids.size), 1 + local] = True
        return member, cells

    def finish_s(self, ids: np.ndarray, start_s: np.ndarray, bits: np.ndarray, cap_bps: np.ndarray, up: bool) -> np.ndarray:
        member, cells = self.members(ids)
        server, cell = (self.server_up_bps, self.cell_up_bps) if up else (self.server_down_bps, self.cell_down_bps)
        capacity = np.concatenate([[server], np.full(cells.size, cell)])
        return fair_finish_s(start_s, bits, cap_bps, member, capacity)


def share_phases(links: SharedLinks, times: ClientTimes, fleet, ids: np.ndarray, start_s: float) -> ClientTimes:
    """``times`` with download and upload stretched by the shared links (module docstring)."""
    lat = fleet.latency_s[ids].astype(np.float64)
    flow_down = start_s + lat
    end_down = links.finish_s(ids, flow_down, 8.0 * times.bytes_down, fleet.down_bps[ids].astype(float), up=False)
    download_s = lat + (end_down - flow_down)
    uploads = ~times.oom
    upload_s = times.upload_s.copy()
    if uploads.any():
        u = np.flatnonzero(uploads)
        flow_up = start_s + download_s[u] + times.compute_s[u] + lat[u]
        end_up = links.finish_s(ids[u], flow_up, 8.0 * times.bytes_up[u], fleet.up_bps[ids[u]].astype(float), up=True)
        upload_s[u] = lat[u] + (end_up - flow_up)
    return replace(times, download_s=download_s, upload_s=upload_s)
