"""A round's fate as a value: which clients finish, how, when, and what it costs them.

:func:`draw_fate` is a pure function of the round's inputs and its draws: no SimPy,
no method, no trainer. It prices each client's plan with the cost model, draws
stragglers and drop-outs, closes the round and accounts for every phase, and returns a
frozen :class:`RoundFate`. The engine waits in simulated time until ``fate.end_s`` and
then hands the fate to its learning step.

How a round closes (the server's rules):

* a client whose plan needs more memory than its device has fails with ``oom`` when
  training would start (after its download); a client that drops out stops at a
  uniform random point of its round, unless it ran out of memory first; a client whose
  availability trace takes it offline mid-round drops out at that moment; a transfer that
  fails is retried after a back-off (:mod:`fedsim.engine.retries`), and a client whose retries
  all fail gives up with ``transfer_failed``, unless one of the others came first;
* the round closes at the first of: ``quota`` updates have arrived, the deadline, or
  every client has finished. A client that finished at or before that moment keeps its
  outcome; one still working is ``straggler`` (the deadline cut it) or ``surplus`` (the
  quota was already met).

An update that arrives but holds NaN or infinite values is marked ``rejected`` by the
engine's learning step, which never aggregates it (:meth:`RoundFate.reject`).

Times are summed phase by phase (``start + download + compute + upload``), in the order
a discrete-event clock adds them, so a fate closes at exactly the float a SimPy process
per client would reach.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from fedsim.core.costmodel import ClientTimes, PlanCost, client_times
from fedsim.core.rng import DeviceRandom
from fedsim.fleet.fleet import Fleet
from fedsim.core.plan import RoundPlans
from fedsim.engine.links import SharedLinks, share_phases
from fedsim.engine.retries import TransferSpec, draw_retries

__all__ = ["OUTCOMES", "RoundFate", "draw_fate", "draw_failures", "close_round", "spent_times", "selection_size"]

OUTCOMES = ("ok", "oom", "dropout", "straggler", "surplus", "rejected", "transfer_failed")
OK, OOM, DROPOUT, STRAGGLER, SURPLUS, REJECTED, TRANSFER_FAILED = range(7)
_FAILED_ALONE = (OOM, DROPOUT, TRANSFER_FAILED)  # failures a client meets by itself, before the round closes
_OUTCOME_NAMES = np.asarray(OUTCOMES, dtype=object)


@dataclass(frozen=True, eq=False)
class RoundFate:
    """Everything that happened to the clients of one round (arrays aligned with ``device_ids``).

    Attributes:
        round_idx: The round.
        model_version: Version of the global model the clients downloaded (rounds
            aggregated before this one).
        available: Devices that could have been selected.
        start_s: When the round started (simulated).
        end_s: When the server closed it (before any server overhead).
        device_ids: The selected devices.
        plans: Their plans.
        outcome: Codes into :data:`OUTCOMES`.
        duration_s: How long each client worked until it finished, failed or was cut.
        download_s, compute_s, upload_s: Time spent in each phase. A client that failed
            (``oom``, ``dropout``) carries the time it actually spent (an ``oom`` client:
            its download only); one that the server cut (``straggler``, ``surplus``) or
            that finished carries the cost model's time of every phase.
        bytes_down, bytes_up, energy_j: What the phases that took place moved and spent.
        peak_mem_bytes: Peak memory of each client's plan.
        retries: Failed transfer attempts (download and upload) each client began.
        left_out: Selected devices the method left out of the round (not among
            ``device_ids``: they were never asked to train).
    """

    round_idx: int
    model_version: int
    available: int
    start_s: float
    end_s: float
    device_ids: np.ndarray
    plans: RoundPlans
    outcome: np.ndarray
    duration_s: np.ndarray
    download_s: np.ndarray
    compute_s: np.ndarray
    upload_s: np.ndarray
    bytes_down: np.ndarray
    bytes_up: np.ndarray
    energy_j: np.ndarray
    peak_mem_bytes: np.ndarray
    retries: np.ndarray
    left_out: int = 0

    def __post_init__(self) -> None:
        for value in vars(self).values():
            if isinstance(value, np.ndarray):
                value.setflags(write=False)

    @property
    def size(self) -> int:
        return int(self.device_ids.size)

    @property
    def arrived(self) -> np.ndarray:
        """Positions of the clients whose updates reached the server."""
        return np.flatnonzero(self.outcome == OK)

    @property
    def outcome_names(self) -> np.ndarray:
        return _OUTCOME_NAMES[self.outcome]

    @property
    def client_end_s(self) -> np.ndarray:
        """When each client finished, failed or was cut."""
        return self.start_s + self.duration_s

    def reject(self, positions: np.ndarray) -> RoundFate:
        """This fate with the arrived clients at ``positions`` marked ``rejected``."""
        outcome = self.outcome.copy()
        outcome[positions] = REJECTED
        return replace(self, outcome=outcome)

    def counts(self) -> np.ndarray:
        """Clients per outcome, indexed like :data:`OUTCOMES`."""
        return np.bincount(self.outcome, minlength=len(OUTCOMES))


def selection_size(clients_per_round: int, over_selection: float, available: int) -> int:
    """``ceil(clients_per_round * over_selection)``, at most ``available``."""
    # round() first: 50 * 1.1 is 55.000000000000007 in binary floating point.
    return min(math.ceil(round(clients_per_round * over_selection, 6)), available)


def draw_slowdown(rng: np.random.Generator, fleet: Fleet, ids: np.ndarray, slowdown_dists: Sequence) -> np.ndarray:
    """Per client, the factor its compute time is stretched by (1 unless it straggles).
    Two uniforms per client, whether it straggles or not, so that with draws keyed by
    device (:class:`fedsim.core.rng.DeviceRandom`) each client's factor is its own."""
    n = ids.size
    slowdown = np.ones(n)
    straggling = rng.random(n) < fleet.straggle_prob[ids]
    u = rng.random(n)
    if straggling.any():
        classes = fleet.device_class[ids]
        for code in np.unique(classes[straggling]):
            sel = straggling & (classes == code)
            slowdown[sel] = slowdown_dists[code].quantile(u[sel])
    return slowdown


def draw_failures(
    rng: np.random.Generator, fleet: Fleet, ids: np.ndarray, times: ClientTimes, give_up_s: np.ndarray | None = None,
    online_s: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per client, its own fate (``OK``, ``OOM``, ``DROPOUT`` or, where ``give_up_s`` is
    finite, ``TRANSFER_FAILED``) and when, from its start, it comes. ``online_s``: how
    long each client stays online (its availability trace); one that leaves before its
    fate comes drops out then."""
    n = ids.size
    dropping = rng.random(n) < fleet.dropout_prob[ids]
    drop_frac = rng.random(n)
    total = times.total_s
    fail = np.full(n, OK, dtype=np.int8)
    fail_at = total.copy()
    fail[times.oom] = OOM
    fail_at[times.oom] = times.download_s[times.oom]
    # A drop-out before the OOM would show is a drop-out.
    drop_t = drop_frac * total
    is_drop = dropping & (~times.oom | (drop_t < fail_at))
    fail[is_drop] = DROPOUT
    fail_at[is_drop] = drop_t[is_drop]
    if online_s is not None:
        leaves = online_s < fail_at
        fail[leaves] = DROPOUT
        fail_at[leaves] = online_s[leaves]
    if give_up_s is not None:
        gives_up = give_up_s < fail_at
        fail[gives_up] = TRANSFER_FAILED
        fail_at[gives_up] = give_up_s[gives_up]
    return fail, fail_at


def close_round(
    start_s: float, times: ClientTimes, fail: np.ndarray, fail_at: np.ndarray, quota: int, deadline_s: float | None
) -> tuple[float, np.ndarray]:
    """When the server closes the round, and every client's outcome (see the module docstring)."""
    finish = np.where(fail == OK, start_s + times.download_s + times.compute_s + times.upload_s, start_s + fail_at)
    end = float(finish.max())
    ok_times = np.sort(finish[fail == OK])
    if ok_times.size >= quota:
        end = min(end, float(ok_times[quota - 1]))
    if deadline_s is not None:
        end = min(end, start_s + deadline_s)
    outcome = fail.copy()
    pending = finish > end
    arrived = int(np.count_nonzero((fail == OK) & ~pending))
    outcome[pending] = SURPLUS if arrived >= quota else STRAGGLER
    return end, outcome


def draw_fate(
    *,
    round_idx: int,
    model_version: int,
    available: int,
    start_s: float,
    ids: np.ndarray,
    plans: RoundPlans,
    costs: Sequence[PlanCost],
    fleet: Fleet,
    slowdown_dists: Sequence,
    rng: np.random.Generator | DeviceRandom,
    quota: int,
    deadline_s: float | None,
    transfers: TransferSpec | None = None,
    transfer_rng: np.random.Generator | DeviceRandom | None = None,
    online_s: np.ndarray | None = None,
    links: SharedLinks | None = None,
    left_out: int = 0,
) -> RoundFate:
    """The fate of one round: the clients ``ids`` running ``plans`` (priced as ``costs``)
    from ``start_s``; ``rng`` draws straggling and drop-outs, ``transfer_rng`` failing
    transfers when ``transfers`` has any (the engines pass draws keyed by device,
    :class:`fedsim.core.rng.DeviceRandom`, for ``ids``);
    ``online_s`` says how long each client stays online (availability trace), if known;
    ``links`` (:mod:`fedsim.engine.links`) stretches transfers that share a bottleneck;
    ``left_out``: selected devices the method did not dispatch (recorded only)."""
    slowdown = draw_slowdown(rng, fleet, ids, slowdown_dists)
    planned = client_times(fleet, ids, list(costs), plans.index, slowdown)
    if links is not None:
        planned = share_phases(links, planned, fleet, ids, start_s)
    dl, comp, up, n = planned.download_s, planned.compute_s, planned.upload_s, ids.size
    lat = fleet.latency_s[ids].astype(np.float64)
    wait_down = wait_up = np.zeros(n)
    give_up = retry_down = retry_up = None
    if transfers is not None and transfers.failure_prob > 0:
        retry_down, retry_up = draw_retries(transfer_rng, dl, transfers), draw_retries(transfer_rng, up, transfers)
        wait_down, wait_up = retry_down.wait_s, retry_up.wait_s
        give_up = np.where(retry_down.gave_up, wait_down, np.where(retry_up.gave_up, wait_down + dl + comp + wait_up, np.inf))
    times = planned if retry_down is None else replace(planned, download_s=wait_down + dl, upload_s=wait_up + up)
    fail, fail_at = draw_failures(rng, fleet, ids, times, give_up, online_s)
    end, outcome = close_round(start_s, times, fail, fail_at, quota, deadline_s)

    pending = (outcome == STRAGGLER) | (outcome == SURPLUS)
    elapsed = np.where(pending, end - start_s, fail_at)
    # Fractions of each phase's last attempt that took place, for bytes and energy.
    # Bytes flow after each transfer's latency.
    down_frac = np.clip((elapsed - wait_down - lat) / np.maximum(dl - lat, 1e-12), 0.0, 1.0)
    comp_frac = np.clip((elapsed - wait_down - dl) / np.maximum(comp, 1e-12), 0.0, 1.0)
    comp_frac[outcome == OOM] = 0.0
    up_frac = np.clip((elapsed - wait_down - dl - comp - wait_up - lat) / np.maximum(up - lat, 1e-12), 0.0, 1.0)
    bytes_down, bytes_up = planned.bytes_down * down_frac, planned.bytes_up * up_frac
    energy = planned.energy_j(fleet, ids, comp_frac, down_frac, up_frac)
    retries = np.zeros(n, dtype=np.int64)
    if retry_down is not None:
        up_elapsed = elapsed - wait_down - dl - comp
        wasted_down = retry_down.moved_bytes(dl, lat, planned.bytes_down, elapsed)
        wasted_up = retry_up.moved_bytes(up, lat, planned.bytes_up, up_elapsed)
        bytes_down, bytes_up = bytes_down + wasted_down, bytes_up + wasted_up
        energy = energy + wasted_down * fleet.joules_per_byte_down[ids] + wasted_up * fleet.joules_per_byte_up[ids]
        retries = retry_down.started_before(elapsed) + retry_up.started_before(up_elapsed)
    download_s, compute_s, upload_s = spent_times(times, outcome, elapsed)
    return RoundFate(
        round_idx=round_idx, model_version=model_version, available=available, start_s=start_s, end_s=end,
        device_ids=np.asarray(ids), plans=plans, outcome=outcome, duration_s=elapsed,
        download_s=download_s, compute_s=compute_s, upload_s=upload_s,
        bytes_down=bytes_down, bytes_up=bytes_up, energy_j=energy,
        peak_mem_bytes=planned.peak_mem_bytes, retries=retries, left_out=int(left_out),
    )


def spent_times(times: ClientTimes, outcome: np.ndarray, elapsed: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Download, compute and upload seconds (retries included): what failed clients
    actually spent, the whole phases otherwise."""
    failed = np.isin(outcome, _FAILED_ALONE)
    down = np.where(failed, np.minimum(times.download_s, elapsed), times.download_s)
    comp = np.where(failed, np.clip(elapsed - times.download_s, 0.0, times.compute_s), times.compute_s)
    comp[outcome == OOM] = 0.0
    up = np.where(failed, np.clip(elapsed - times.download_s - times.compute_s, 0.0, times.upload_s), times.upload_s)
    up[outcome == OOM] = 0.0
    return down, comp, up
