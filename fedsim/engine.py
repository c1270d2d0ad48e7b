"""The synchronous round driver: a SimPy process per server, one per *selected* client.

Each round the server

1. asks the availability model which devices can train now, and samples
   ``ceil(clients_per_round * over_selection)`` of them;
2. asks the method for their plans and prices each distinct plan once with the cost
   model; per-client durations, memory and bytes are then numpy arrays;
3. starts one SimPy process per selected client: download, compute, upload, each a
   timeout. A plan whose peak memory exceeds the device's cap fails with ``oom`` when
   training would start; a device that drops out (profile probability) stops at a uniform
   random point of its round;
4. closes the round at the first of: ``clients_per_round`` updates have arrived, the
   deadline, or every client has finished. Clients still working are ``straggler`` (cut
   by the deadline) or ``surplus`` (the quota was already met);
5. has the trainer train the clients whose updates arrived, aggregate and evaluate, and
   writes the records.

Failures are outcomes in the records, never exceptions. Device state lives in the fleet's
arrays; nothing per device outlives a round.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy
from pydantic import Field

from fedsim.availability import AvailabilityModel
from fedsim.configio import Spec
from fedsim.costmodel import CostCoefficients, ModelShape, client_times, plan_cost
from fedsim.fleet import Fleet
from fedsim.methods.base import Method, RoundContext, RoundReport
from fedsim.plan import ClientPlan
from fedsim.profiles import ProfileSet
from fedsim.records import RunRecorder
from fedsim.rng import Seeds
from fedsim.trainers.base import EvalResult, Trainer

__all__ = ["EngineSpec", "SyncEngine", "RunResult", "OUTCOMES"]

OUTCOMES = ("ok", "oom", "dropout", "straggler", "surplus")
OK, OOM, DROPOUT, STRAGGLER, SURPLUS = range(5)
_PENDING = -1


class EngineSpec(Spec):
    """Round rules and stopping conditions."""

    clients_per_round: int = Field(10, ge=1, description="updates the server waits for")
    over_selection: float = Field(1.3, ge=1.0, le=10.0, description="selected = ceil(clients_per_round * this)")
    min_clients: int = Field(1, ge=1, description="fewest available devices to start a round")
    round_deadline_s: float | None = Field(None, gt=0, description="cut clients still working after this; null = none")
    max_rounds: int = Field(100, ge=1)
    max_sim_time_s: float | None = Field(None, gt=0, description="stop once simulated time passes this")
    target_accuracy: float | None = Field(None, gt=0, le=1, description="stop once reached")
    eval_every: int = Field(1, ge=1, description="evaluate every this many rounds (and the last)")
    start_hour_utc: float = Field(22.0, ge=0, lt=24, description="hour of day at simulated time 0")
    idle_wait_s: float = Field(300.0, gt=0, description="wait before trying again when too few devices are available")
    max_idle_s: float = Field(7 * 86400.0, gt=0, description="give up after this long without a round")
    server_overhead_s: float = Field(0.0, ge=0, description="aggregation time added to every round")


@dataclass
class RunResult:
    rounds: int
    sim_time_s: float
    final_accuracy: float | None
    best_accuracy: float | None
    time_to_target_s: float | None
    stop_reason: str
    wall_s: float
    train_wall_s: float


class _RoundState:
    """Shared by the client processes of one round (plain Python, no SimPy objects per client)."""

    __slots__ = ("done", "quota", "arrived", "finished", "n", "closed", "outcome")

    def __init__(self, env: simpy.Environment, n: int, quota: int) -> None:
        self.done = env.event()
        self.quota = quota
        self.arrived = 0
        self.finished = 0
        self.n = n
        self.closed = False
        self.outcome = np.full(n, _PENDING, dtype=np.int8)

    def finish(self, i: int, outcome: int) -> None:
        self.outcome[i] = outcome
        self.finished += 1
        if outcome == OK:
            self.arrived += 1
        if (self.arrived >= self.quota or self.finished >= self.n) and not self.done.triggered:
            self.done.succeed()


class SyncEngine:
    """Runs synchronous FL rounds until a stopping condition holds."""

    def __init__(
        self,
        *,
        spec: EngineSpec,
        fleet: Fleet,
        profiles: ProfileSet,
        availability: AvailabilityModel,
        method: Method,
        trainer: Trainer,
        shape: ModelShape,
        base_plan: ClientPlan,
        seeds: Seeds,
        recorder: RunRecorder | None = None,
        coefficients: CostCoefficients = CostCoefficients(),
        on_round: Callable[[dict], None] | None = None,
    ) -> None:
        self.spec = spec
        self.fleet = fleet
        self.profiles = profiles
        self.availability = availability
        self.method = method
        self.trainer = trainer
        self.shape = shape
        self.base_plan = base_plan
        self.seeds = seeds
        self.recorder = recorder
        self.coef = coefficients
        self.on_round = on_round
        self.rounds_done = 0
        self.history: list[dict] = []
        self._train_wall_s = 0.0
        self._slowdown_dists = [profiles.device(name).straggle_slowdown for name in fleet.device_names]
        method.bind_trainer(trainer)

    # -- public ----------------------------------------------------------------------
    def run(self) -> RunResult:
        t0 = time.perf_counter()
        env = simpy.Environment()
        self._result: dict = {"stop_reason": "max_rounds", "time_to_target_s": None}
        server = env.process(self._server(env))
        env.run(until=server)
        accs = [h["accuracy"] for h in self.history if h["accuracy"] is not None]
        return RunResult(
            rounds=self.rounds_done,
            sim_time_s=float(env.now),
            final_accuracy=accs[-1] if accs else None,
            best_accuracy=max(accs) if accs else None,
            time_to_target_s=self._result["time_to_target_s"],
            stop_reason=self._result["stop_reason"],
            wall_s=time.perf_counter() - t0,
            train_wall_s=self._train_wall_s,
        )

    # -- processes -------------------------------------------------------------------
    def _server(self, env: simpy.Environment):
        spec = self.spec
        idle_since = 0.0
        r = 0
        while r < spec.max_rounds:
            if spec.max_sim_time_s is not None and env.now >= spec.max_sim_time_s:
                self._result["stop_reason"] = "max_sim_time"
                return
            available = np.flatnonzero(self.availability.available(env.now))
            if available.size < spec.min_clients:
                if env.now - idle_since >= spec.max_idle_s:
                    self._result["stop_reason"] = "no_devices_available"
                    return
                yield env.timeout(spec.idle_wait_s)
                continue
            reached = yield from self._round(env, r, available)
            idle_since = env.now
            r += 1
            if reached:
                self._result["stop_reason"] = "target_accuracy"
                return

    def _client(self, env, i: int, st: _RoundState, dl: float, comp: float, up: float, fail_at: float, fail: int):
        if fail != OK:
            yield env.timeout(fail_at)
            if not st.closed:
                st.finish(i, fail)
            return
        yield env.timeout(dl)
        if st.closed:
            return
        yield env.timeout(comp)
        if st.closed:
            return
        yield env.timeout(up)
        if not st.closed:
            st.finish(i, OK)

    # -- one round -------------------------------------------------------------------
    def _round(self, env: simpy.Environment, r: int, available: np.ndarray):
        spec, fleet = self.spec, self.fleet
        start = env.now
        # round() first: 50 * 1.1 is 55.000000000000007 in binary floating point.
        n_sel = min(math.ceil(round(spec.clients_per_round * spec.over_selection, 6)), available.size)
        ids = self.seeds.generator("select", r).choice(available, size=n_sel, replace=False)

        ctx = RoundContext(
            round_idx=r, now_s=start, device_ids=ids, fleet=fleet, shape=self.shape,
            base_plan=self.base_plan, coefficients=self.coef, deadline_s=spec.round_deadline_s,
            rng=self.seeds.generator("method", r), quota=spec.clients_per_round,
        )
        plans = self.method.configure_round(ctx)
        costs = [plan_cost(self.shape, p, self.coef) for p in plans.plans]

        dev_rng = self.seeds.generator("devices", r)
        slowdown = np.ones(n_sel)
        straggling = dev_rng.random(n_sel) < fleet.straggle_prob[ids]
        if straggling.any():
            classes = fleet.device_class[ids]
            for code in np.unique(classes[straggling]):
                sel = straggling & (classes == code)
                slowdown[sel] = self._slowdown_dists[code].sample(dev_rng, int(sel.sum()))
        times = client_times(fleet, ids, costs, plans.index, slowdown)
        dropping = dev_rng.random(n_sel) < fleet.dropout_prob[ids]
        drop_frac = dev_rng.random(n_sel)

        total = times.total_s
        fail = np.full(n_sel, OK, dtype=np.int8)
        fail_at = total.copy()
        fail[times.oom] = OOM
        fail_at[times.oom] = times.download_s[times.oom]
        # A drop-out before the OOM would show is a drop-out.
        drop_t = drop_frac * total
        is_drop = dropping & (~times.oom | (drop_t < fail_at))
        fail[is_drop] = DROPOUT
        fail_at[is_drop] = drop_t[is_drop]

        st = _RoundState(env, n_sel, spec.clients_per_round)
        dl, cp, upl, fa, fl = (times.download_s.tolist(), times.compute_s.tolist(), times.upload_s.tolist(), fail_at.tolist(), fail.tolist())
        for i in range(n_sel):
            env.process(self._client(env, i, st, dl[i], cp[i], upl[i], fa[i], fl[i]))
        if spec.round_deadline_s is not None:
            yield st.done | env.timeout(spec.round_deadline_s)
        else:
            yield st.done
        st.closed = True
        closed_by_quota = st.arrived >= st.quota
        end = env.now
        if spec.server_overhead_s:
            yield env.timeout(spec.server_overhead_s)

        outcome = st.outcome.copy()
        pending = outcome == _PENDING
        outcome[pending] = SURPLUS if closed_by_quota else STRAGGLER
        elapsed = np.where(pending, end - start, fail_at)
        end_s = start + elapsed
        # Fractions of each phase that took place, for bytes and energy.
        # Bytes flow after each transfer's latency.
        lat = fleet.latency_s[ids].astype(np.float64)
        down_frac = np.clip((elapsed - lat) / np.maximum(times.download_s - lat, 1e-12), 0.0, 1.0)
        comp_frac = np.clip((elapsed - times.download_s) / np.maximum(times.compute_s, 1e-12), 0.0, 1.0)
        comp_frac[outcome == OOM] = 0.0
        up_frac = np.clip((elapsed - times.download_s - times.compute_s - lat) / np.maximum(times.upload_s - lat, 1e-12), 0.0, 1.0)
        bytes_down = times.bytes_down * down_frac
        bytes_up = times.bytes_up * up_frac
        energy = times.energy_j(fleet, ids, comp_frac, down_frac, up_frac)

        # Real (or surrogate) learning for the updates that arrived.
        ok_idx = np.flatnonzero(outcome == OK)
        train_seeds = self.seeds.generator("train", r).integers(0, 2**63 - 1, size=n_sel)
        t_train = time.perf_counter()
        results = self.trainer.train(r, ids[ok_idx], [plans[i] for i in ok_idx], train_seeds[ok_idx]) if ok_idx.size else []
        self.trainer.aggregate(r, results, self.method.aggregate_fn())
        last = r + 1 >= spec.max_rounds or (spec.max_sim_time_s is not None and env.now >= spec.max_sim_time_s)
        evaluation: EvalResult | None = None
        if (r + 1) % spec.eval_every == 0 or last or r == 0:
            evaluation = self.trainer.evaluate(r)
        train_wall = time.perf_counter() - t_train
        self._train_wall_s += train_wall

        report = RoundReport(
            round_idx=r, start_s=start, end_s=end, device_ids=ids, plans=plans,
            outcome=np.asarray(OUTCOMES, dtype=object)[outcome], duration_s=elapsed,
            results=results, evaluation=evaluation,
        )
        self.method.round_finished(report)

        counts = np.bincount(outcome, minlength=len(OUTCOMES))
        row = {
            "round": r,
            "start_s": start,
            "sim_time_s": env.now,
            "duration_s": env.now - start,
            "available": int(available.size),
            "selected": n_sel,
            "participants": int(counts[OK]),
            "failures": int(counts[OOM] + counts[DROPOUT] + counts[STRAGGLER]),
            "oom": int(counts[OOM]),
            "dropout": int(counts[DROPOUT]),
            "straggler": int(counts[STRAGGLER]),
            "surplus": int(counts[SURPLUS]),
            "accuracy": evaluation.accuracy if evaluation else None,
            "loss": evaluation.loss if evaluation else None,
            "personal_accuracy": evaluation.personal_accuracy if evaluation else None,
            "bytes_up": float(bytes_up.sum()),
            "bytes_down": float(bytes_down.sum()),
            "energy_j": float(energy.sum()),
            "train_loss": float(np.mean([x.train_loss for x in results])) if results else None,
        }
        self.history.append(row)
        self.rounds_done = r + 1
        if self.recorder is not None:
            self.recorder.round(row)
            plan_names = np.asarray([p.name or f"plan{k}" for k, p in enumerate(plans.plans)], dtype=object)
            plan_drop = np.asarray([p.mean_drop for p in plans.plans])
            self.recorder.clients({
                "round": np.full(n_sel, r),
                "device_id": ids,
                "device_class": fleet.class_of(ids),
                "network_class": fleet.network_of(ids),
                "plan": plan_names[plans.index],
                "mean_drop": plan_drop[plans.index],
                "start_s": np.full(n_sel, start),
                "end_s": end_s,
                "download_s": times.download_s,
                "compute_s": times.compute_s,
                "upload_s": times.upload_s,
                "outcome": np.asarray(OUTCOMES, dtype=object)[outcome],
                "bytes_down": np.rint(bytes_down).astype(np.int64),
                "bytes_up": np.rint(bytes_up).astype(np.int64),
                "energy_j": energy,
                "peak_mem_bytes": np.rint(times.peak_mem_bytes).astype(np.int64),
                "mem_cap_bytes": np.rint(fleet.mem_cap_bytes[ids]).astype(np.int64),
            })
        if self.on_round is not None:
            self.on_round(row)
        if evaluation is not None and spec.target_accuracy is not None and evaluation.accuracy >= spec.target_accuracy:
            if self._result["time_to_target_s"] is None:
                self._result["time_to_target_s"] = env.now
            return True
        return False
