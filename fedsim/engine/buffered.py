"""The buffered asynchronous driver (FedBuff, Nguyen et al. 2022) beside the synchronous one.

Up to ``fedbuff.concurrency`` clients work at once. Whenever a slot is free the server
dispatches an available device that is not already working: the method plans it alone
(a :class:`~fedsim.methods.base.RoundContext` of one device with ``quota=1``), and its
fate is drawn by :func:`~fedsim.engine.fate.draw_fate` as a round of one client (the
cost model's phases, stragglers, drop-outs, out-of-memory failures; ``round_deadline_s``
becomes a per-client timeout). The client downloads the global model's current version.
Every ``fedbuff.buffer_k`` arrived updates the server takes an aggregation step: each
update is scaled by ``(1 + s) ** -staleness_exponent`` (:mod:`fedsim.engine.staleness`,
``s``: steps taken since the client downloaded), aggregated, evaluated and reported to
the method; that step is a "round" of the records.

The client's update is a pure function of (the version it downloaded, client, plan,
seed), so it is trained when the client is dispatched, from the model as it is then,
and held until the client's simulated arrival: the version a client needs lives on in
its update, and nothing is trained for a client whose fate says its update never
arrives. Randomness is keyed by the dispatch number (selection, method, devices,
transfers, training).

Records keep their format: ``rounds.csv`` has a row per aggregation step (``start_s``:
the previous step; ``selected``: the clients that finished in between, failed or not;
``participants``: the updates aggregated); ``clients.csv`` a row per finished client
with its own start and end and an extra last column, ``staleness``. Between steps the
engine's state is an :class:`AsyncProgress` (in-flight clients and their updates
included), which a checkpoint stores like the synchronous driver's.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

import numpy as np
import simpy

from fedsim.core.costmodel import plan_cost
from fedsim.core.plan import ClientPlan, RoundPlans
from fedsim.engine.fate import OK, RoundFate, draw_fate
from fedsim.engine.staleness import staleness_weights
from fedsim.engine.sync import Progress, SyncEngine, _delay_to
from fedsim.learning.base import ClientResult, is_finite
from fedsim.methods.base import RoundContext

__all__ = ["AsyncEngine", "AsyncProgress", "Flight", "merge_fates"]


@dataclass
class Flight:
    """One dispatched client: its fate (a round of one), the model version it downloaded,
    and its update (trained at dispatch when the fate says it arrives)."""

    dispatch: int
    version: int
    fate: RoundFate
    result: ClientResult | None

    @property
    def end_s(self) -> float:
        return float(self.fate.client_end_s[0])


@dataclass
class AsyncProgress(Progress):
    """:class:`~fedsim.engine.sync.Progress` plus the clients at work and those that
    finished since the last aggregation step."""

    dispatched: int = 0
    step_start_s: float = 0.0
    in_flight: list[Flight] = field(default_factory=list)
    finished: list[Flight] = field(default_factory=list)  # since the last step, in order of arrival
    staleness: list[int | None] = field(default_factory=list)  # per finished client; None: not aggregated


def merge_fates(flights: list[Flight], round_idx: int, model_version: int, available: int, start_s: float,
                end_s: float) -> RoundFate:
    """The finished clients of one aggregation step as one fate (arrays in arrival order)."""
    fates = [f.fate for f in flights]
    distinct: dict[ClientPlan, int] = {}
    index = [distinct.setdefault(f.plans[0], len(distinct)) for f in fates]
    cat = lambda name: np.concatenate([getattr(f, name) for f in fates]) if fates else np.zeros(0)  # noqa: E731
    return RoundFate(
        round_idx=round_idx, model_version=model_version, available=available, start_s=start_s, end_s=end_s,
        device_ids=cat("device_ids").astype(np.int64), plans=RoundPlans(list(distinct), np.asarray(index, dtype=np.int64)),
        outcome=cat("outcome").astype(np.int8), duration_s=cat("duration_s"), download_s=cat("download_s"),
        compute_s=cat("compute_s"), upload_s=cat("upload_s"), bytes_down=cat("bytes_down"), bytes_up=cat("bytes_up"),
        energy_j=cat("energy_j"), peak_mem_bytes=cat("peak_mem_bytes"), retries=cat("retries").astype(np.int64),
    )


class AsyncEngine(SyncEngine):
    """Runs FedBuff's aggregation steps until a stopping condition holds (module docstring)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.progress = AsyncProgress()
        self._costs: dict[ClientPlan, object] = {}

    def _server(self, env: simpy.Environment):
        spec, p = self.spec, self.progress
        idle_since = env.now
        while p.stop_reason is None and p.next_round < spec.max_rounds:
            if spec.max_sim_time_s is not None and env.now >= spec.max_sim_time_s:
                p.stop_reason = "max_sim_time"
                return
            self._fill(env.now)
            if not p.in_flight:
                if env.now - idle_since >= spec.max_idle_s:
                    p.stop_reason = "no_devices_available"
                    return
                yield env.timeout(spec.idle_wait_s)
                continue
            nxt = min(p.in_flight, key=lambda f: (f.end_s, f.dispatch))
            if len(p.in_flight) < spec.fedbuff.concurrency and env.now + spec.idle_wait_s < nxt.end_s:
                yield env.timeout(spec.idle_wait_s)  # a free slot: look for devices again
                continue
            yield env.timeout(_delay_to(env.now, nxt.end_s))
            p.in_flight.remove(nxt)
            self.arrive(nxt, env.now)
            idle_since = env.now

    # -- dispatching -------------------------------------------------------------------
    def _fill(self, now_s: float) -> None:
        """Dispatch available idle devices until every slot is taken."""
        p, fb = self.progress, self.spec.fedbuff
        free = fb.concurrency - len(p.in_flight)
        if free <= 0:
            return
        mask = self.availability.available(now_s).copy()
        mask[[int(f.fate.device_ids[0]) for f in p.in_flight]] = False
        candidates = np.flatnonzero(mask)
        if candidates.size < self.spec.min_clients:
            return
        for _ in range(min(free, candidates.size)):
            d = p.dispatched
            pick = int(self.seeds.generator("select", d).integers(candidates.size))
            device, candidates = candidates[pick], np.delete(candidates, pick)
            p.in_flight.append(self.dispatch(d, int(device), now_s, candidates.size + 1))
            p.dispatched += 1

    def dispatch(self, d: int, device: int, now_s: float, available: int) -> Flight:
        """Plan dispatch ``d`` (``device`` alone), draw its fate, and train it if its update will arrive."""
        spec, p = self.spec, self.progress
        ids = np.array([device], dtype=np.int64)
        ctx = RoundContext(
            round_idx=p.next_round, now_s=now_s, device_ids=ids, fleet=self.fleet, shape=self.shape,
            base_plan=self.base_plan, coefficients=self.coef, deadline_s=spec.round_deadline_s,
            rng=self.seeds.generator("method", d), quota=1,
        )
        plans = self.method.configure_round(ctx)
        costs = [self._costs.setdefault(plan, plan_cost(self.shape, plan, self.coef)) for plan in plans.plans]
        fate = draw_fate(
            round_idx=p.next_round, model_version=p.model_version, available=available, start_s=now_s, ids=ids,
            plans=plans, costs=costs, fleet=self.fleet, slowdown_dists=self._slowdown_dists,
            rng=self.seeds.generator("devices", d), quota=1, deadline_s=spec.round_deadline_s, transfers=spec.transfers,
            transfer_rng=self.seeds.generator("transfers", d) if spec.transfers.failure_prob > 0 else None,
            online_s=self._online_for_s(now_s, ids),
        )
        result = None
        if fate.outcome[0] == OK:
            seed = self.seeds.generator("train", d).integers(0, 2**63 - 1, size=1)
            t = time.perf_counter()
            result = self.trainer.train(p.next_round, ids, [fate.plans[0]], seed)[0]
            p.train_wall_s += time.perf_counter() - t
            if not is_finite(result):  # the global model never takes a NaN or infinite update
                fate, result = fate.reject(np.array([0])), None
        return Flight(dispatch=d, version=p.model_version, fate=fate, result=result)

    # -- arriving and aggregating ------------------------------------------------------
    def arrive(self, flight: Flight, now_s: float) -> dict | None:
        """A client finished at ``now_s``; aggregate once ``buffer_k`` updates wait.
        Returns the ``rounds.csv`` row of the step it completed, if any."""
        p, fb = self.progress, self.spec.fedbuff
        staleness = p.model_version - flight.version if flight.result is not None else None
        if staleness is not None and fb.max_staleness is not None and staleness > fb.max_staleness:
            flight = replace(flight, fate=flight.fate.reject(np.array([0])), result=None)
            staleness = None
        p.finished.append(flight)
        p.staleness.append(staleness)
        if sum(s is not None for s in p.staleness) < fb.buffer_k:
            return None
        return self.step(now_s)

    def step(self, now_s: float) -> dict:
        """One aggregation step over the updates that arrived since the last one."""
        p, fb = self.progress, self.spec.fedbuff
        flights, stale = p.finished, p.staleness
        applied = [s for s in stale if s is not None]
        results = [f.result for f in flights if f.result is not None]
        available = int(np.count_nonzero(self.availability.available(now_s)))
        fate = merge_fates(flights, p.next_round, p.model_version, available, p.step_start_s, now_s)
        columns = {
            "start_s": np.array([f.fate.start_s for f in flights]),
            "end_s": np.array([f.end_s for f in flights]),
            "staleness": np.array(["" if s is None else str(s) for s in stale], dtype=object),
        }
        p.finished, p.staleness = [], []
        p.step_start_s = now_s
        return self.apply(fate, now_s, results, time.perf_counter(),
                          weights=staleness_weights(np.array(applied), fb.staleness_exponent), columns=columns)

