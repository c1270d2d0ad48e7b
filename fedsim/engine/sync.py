"""The synchronous round driver: one small SimPy process for the server.

Each round the server

1. asks the availability model which devices can train now, and samples
   ``ceil(clients_per_round * over_selection)`` of them;
2. asks the method for their plans;
3. draws the round's fate (:func:`fedsim.engine.fate.draw_fate`, a pure function: the cost
   model's phase times, stragglers, drop-outs, out-of-memory failures, when the round
   closes and what every client spent) and waits in simulated time until it closes,
   plus any server overhead;
4. hands the fate to :meth:`SyncEngine.learn`: train the clients whose updates arrived
   from the global model's current version, reject (outcome ``rejected``) any update
   with NaN or infinite values, aggregate the rest, evaluate, tell the method, and write
   the records (``clients.csv`` rows first, then the ``rounds.csv`` row).

Failures are outcomes in the records, never exceptions. Device state lives in the fleet's
arrays; nothing per device outlives a round. Between rounds everything the engine knows
is one :class:`Progress` value, which a checkpoint stores and :meth:`SyncEngine.run`
resumes from.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from typing import Literal

import numpy as np
import simpy
from pydantic import Field, model_validator

from fedsim.fleet.availability import AvailabilityModel
from fedsim.core.configio import Spec
from fedsim.core.costmodel import CostCoefficients, ModelShape, plan_cost
from fedsim.fleet.fleet import Fleet
from fedsim.methods.base import Method, RoundContext, RoundReport
from fedsim.core.plan import ClientPlan
from fedsim.fleet.profiles import ProfileSet
from fedsim.engine.records import RunRecorder
from fedsim.core.rng import Seeds
from fedsim.engine.fate import (
    DROPOUT, OK, OOM, OUTCOMES, REJECTED, STRAGGLER, SURPLUS, TRANSFER_FAILED, RoundFate, draw_fate, selection_size,
)
from fedsim.engine.links import CellSpec, LinkSpec, SharedLinks
from fedsim.engine.retries import TransferSpec
from fedsim.engine.staleness import FedBuffSpec
from fedsim.learning.base import EvalResult, Trainer, is_finite

__all__ = ["EngineSpec", "SyncEngine", "RunResult", "Progress", "OUTCOMES"]

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
    transfers: TransferSpec = Field(default_factory=TransferSpec, description="failing transfers and their retries")
    server_link: LinkSpec | None = Field(None, description="capacity the clients' transfers share (fedsim.engine.links); null: none")
    cells: CellSpec | None = Field(None, description="cells the devices are spread over, each a shared link; null: none")
    driver: Literal["sync", "async"] = Field("sync", description="synchronous rounds, or FedBuff's buffered asynchronous steps")
    fedbuff: FedBuffSpec = Field(default_factory=FedBuffSpec, description="the async driver's buffer, concurrency and staleness")

    @model_validator(mode="after")
    def _check(self):
        shared = self.server_link is not None or self.cells is not None
        if shared and self.transfers.failure_prob > 0:
            raise ValueError("shared links (server_link, cells) and failing transfers (transfers.failure_prob > 0) "
                             "cannot be combined; set one of them off")
        if shared and self.driver == "async":
            raise ValueError("shared links (server_link, cells) are modelled for the sync driver only")
        if self.driver == "async" and self.server_overhead_s > 0:
            raise ValueError("server_overhead_s must be 0 with driver: async (aggregation is instantaneous there)")
        return self


@dataclass
class Progress:
    """Where a run stands between two rounds: all a checkpoint needs of the engine."""

    next_round: int = 0
    now_s: float = 0.0
    model_version: int = 0  # aggregations applied to the global model
    history: list[dict] = field(default_factory=list)  # the rounds.csv rows so far
    stop_reason: str | None = None  # set once the run has stopped
    time_to_target_s: float | None = None
    train_wall_s: float = 0.0  # host seconds in training, aggregation and evaluation


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
        after_round: Callable[[Progress], None] | None = None,
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
        self.after_round = after_round  # e.g. write a checkpoint; called once the round is recorded
        self.progress = Progress()
        self._slowdown_dists = [profiles.device(name).straggle_slowdown for name in fleet.device_names]
        self.links = SharedLinks.from_specs(spec.server_link, spec.cells, fleet.size, seeds.generator("cells"))
        method.bind_trainer(trainer)

    @property
    def history(self) -> list[dict]:
        return self.progress.history

    @property
    def rounds_done(self) -> int:
        return self.progress.next_round

    # -- public ----------------------------------------------------------------------
    def run(self, progress: Progress | None = None) -> RunResult:
        """Run until a stopping condition holds, from the start or from ``progress``."""
        t0 = time.perf_counter()
        if progress is not None:
            self.progress = progress
        env = simpy.Environment(initial_time=self.progress.now_s)
        env.run(until=env.process(self._server(env)))
        p = self.progress
        accs = [h["accuracy"] for h in p.history if h["accuracy"] is not None]
        return RunResult(
            rounds=p.next_round,
            sim_time_s=float(env.now),
            final_accuracy=accs[-1] if accs else None,
            best_accuracy=max(accs) if accs else None,
            time_to_target_s=p.time_to_target_s,
            stop_reason=p.stop_reason or "max_rounds",
            wall_s=time.perf_counter() - t0,
            train_wall_s=p.train_wall_s,
        )

    def _server(self, env: simpy.Environment):
        spec, p = self.spec, self.progress
        idle_since = env.now
        while p.stop_reason is None and p.next_round < spec.max_rounds:
            if spec.max_sim_time_s is not None and env.now >= spec.max_sim_time_s:
                p.stop_reason = "max_sim_time"
                return
            available = np.flatnonzero(self.availability.available(env.now))
            if available.size < spec.min_clients:
                if env.now - idle_since >= spec.max_idle_s:
                    p.stop_reason = "no_devices_available"
                    return
                yield env.timeout(spec.idle_wait_s)
                continue
            fate = self.draw(p.next_round, env.now, available)
            yield env.timeout(_delay_to(env.now, fate.end_s))
            if spec.server_overhead_s:
                yield env.timeout(spec.server_overhead_s)
            self.learn(fate, env.now)
            idle_since = env.now

    # -- one round -------------------------------------------------------------------
    def draw(self, r: int, now_s: float, available: np.ndarray) -> RoundFate:
        """Select round ``r``'s clients, have the method plan them, and draw their fate."""
        spec = self.spec
        n_sel = selection_size(spec.clients_per_round, spec.over_selection, available.size)
        # Uniform without replacement: the available devices of smallest priority this round
        # (keyed by device), so one device more or less available changes at most one pick.
        priority = self.seeds.devices("select", r, available).priority()
        first = np.argpartition(priority, n_sel - 1)[:n_sel] if 0 < n_sel < priority.size else np.arange(priority.size)
        ids = available[first[np.argsort(priority[first], kind="stable")][:n_sel]]
        ctx = RoundContext(
            round_idx=r, now_s=now_s, device_ids=ids, fleet=self.fleet, shape=self.shape,
            base_plan=self.base_plan, coefficients=self.coef, deadline_s=spec.round_deadline_s,
            rng=self.seeds.generator("method", r), quota=spec.clients_per_round, may_leave_out=True,
            slowdown_dists=self._slowdown_dists,
        )
        plans = self.method.configure_round(ctx)
        left_out = plans.left_out
        if left_out:
            ids, plans = ids[plans.dispatch], plans.dispatched()
        # The method may close the round sooner (RoundPlans.quota), never later.
        quota = spec.clients_per_round if plans.quota is None else min(int(plans.quota), spec.clients_per_round)
        return draw_fate(
            round_idx=r, model_version=self.progress.model_version, available=int(available.size), start_s=now_s,
            ids=ids, plans=plans, costs=[plan_cost(self.shape, p, self.coef) for p in plans.plans],
            fleet=self.fleet, slowdown_dists=self._slowdown_dists, rng=self.seeds.devices("devices", r, ids),
            quota=quota, deadline_s=spec.round_deadline_s, transfers=spec.transfers,
            transfer_rng=self.seeds.devices("transfers", r, ids) if spec.transfers.failure_prob > 0 else None,
            online_s=self._online_for_s(now_s, ids),
            links=self.links, left_out=left_out,
        )

    def _online_for_s(self, now_s: float, ids: np.ndarray) -> np.ndarray | None:
        # Optional: an availability model that knows nothing of departures need not say so.
        online_for_s = getattr(self.availability, "online_for_s", None)
        return None if online_for_s is None else online_for_s(now_s, ids)

    def learn(self, fate: RoundFate, now_s: float) -> dict:
        """Consume a drawn round at ``now_s``: train the arrivals, aggregate, evaluate,
        tell the method, record. Returns the ``rounds.csv`` row."""
        p, r = self.progress, fate.round_idx
        if fate.model_version != p.model_version:
            raise RuntimeError(f"round {r} was drawn against global model version {fate.model_version}, "
                               f"but the model is at version {p.model_version}")
        ok = fate.arrived
        train_seeds = self.seeds.devices("train", r, fate.device_ids).seeds()
        t_train = time.perf_counter()
        results = self.trainer.train(r, fate.device_ids[ok], [fate.plans[i] for i in ok], train_seeds[ok]) if ok.size else []
        finite = np.array([is_finite(x) for x in results], dtype=bool)
        if not finite.all():  # the global model never takes a NaN or infinite update
            fate = fate.reject(ok[~finite])
            results = [x for x, keep in zip(results, finite) if keep]
        return self.apply(fate, now_s, results, t_train)

    def apply(self, fate: RoundFate, now_s: float, results: list, t_train: float,
              weights: np.ndarray | None = None, columns: dict[str, np.ndarray] | None = None) -> dict:
        """Aggregate the trained ``results`` of ``fate`` (each scaled by its entry of
        ``weights``, if given), evaluate, tell the method, record (``clients.csv`` columns
        replaced or added by ``columns``). ``t_train``: when the host began learning."""
        spec, p, r = self.spec, self.progress, fate.round_idx
        gain_examples = self.method.update_gain_examples()
        aggregate_fn = self.method.aggregate_fn()
        gains = round_gain = None
        if gain_examples and results:
            gains = self.trainer.update_gains(r, results, gain_examples, measure=self.method.update_gain_measure(),
                                              aggregate_fn=aggregate_fn, weights=weights)
            if self.method.round_gain_wanted():
                round_gain = float(self.trainer.update_gains(r, results, gain_examples, measure="round",
                                                             aggregate_fn=aggregate_fn, weights=weights)[0])
        if weights is None:
            self.trainer.aggregate(r, results, aggregate_fn)
        else:
            self.trainer.aggregate(r, results, aggregate_fn, weights=weights)
        p.model_version += 1
        last = r + 1 >= spec.max_rounds or (spec.max_sim_time_s is not None and now_s >= spec.max_sim_time_s)
        evaluation: EvalResult | None = None
        if (r + 1) % spec.eval_every == 0 or last or r == 0:
            evaluation = self.trainer.evaluate(r)
        p.train_wall_s += time.perf_counter() - t_train

        self.method.round_finished(RoundReport(
            round_idx=r, start_s=fate.start_s, end_s=fate.end_s, device_ids=fate.device_ids, plans=fate.plans,
            outcome=fate.outcome_names, duration_s=fate.duration_s, results=results, evaluation=evaluation,
            update_gains=gains, round_gain=round_gain,
        ))
        row = round_row(fate, now_s, evaluation, results)
        p.history.append(row)
        p.next_round, p.now_s = r + 1, now_s
        if evaluation is not None and spec.target_accuracy is not None and evaluation.accuracy >= spec.target_accuracy:
            p.time_to_target_s = now_s if p.time_to_target_s is None else p.time_to_target_s
            p.stop_reason = "target_accuracy"
        if self.recorder is not None:
            self.recorder.clients(client_columns(fate, self.fleet, self.trainer.num_examples(fate.device_ids)) | (columns or {}))
            self.recorder.round(row)
        if self.on_round is not None:
            self.on_round(row)
        if self.after_round is not None:
            self.after_round(p)
        return row


def _delay_to(now_s: float, t_s: float) -> float:
    """The delay ``d`` with ``now_s + d == t_s`` exactly (``t_s - now_s`` may miss by an ulp)."""
    d = t_s - now_s
    for _ in range(4):
        if now_s + d == t_s:
            break
        d = float(np.nextafter(d, np.inf if now_s + d < t_s else -np.inf))
    return d


def round_row(fate: RoundFate, now_s: float, evaluation: EvalResult | None, results: list) -> dict:
    """The ``rounds.csv`` row of a round that the server finished at ``now_s``."""
    counts = fate.counts()
    return {
        "round": fate.round_idx,
        "start_s": fate.start_s,
        "sim_time_s": now_s,
        "duration_s": now_s - fate.start_s,
        "available": fate.available,
        "selected": fate.size,
        "participants": int(counts[OK]),
        "failures": int(counts[OOM] + counts[DROPOUT] + counts[STRAGGLER] + counts[REJECTED] + counts[TRANSFER_FAILED]),
        "oom": int(counts[OOM]),
        "dropout": int(counts[DROPOUT]),
        "straggler": int(counts[STRAGGLER]),
        "surplus": int(counts[SURPLUS]),
        "accuracy": evaluation.accuracy if evaluation else None,
        "loss": evaluation.loss if evaluation else None,
        "personal_accuracy": evaluation.personal_accuracy if evaluation else None,
        "bytes_up": float(fate.bytes_up.sum()),
        "bytes_down": float(fate.bytes_down.sum()),
        "energy_j": float(fate.energy_j.sum()),
        "train_loss": float(np.mean([x.train_loss for x in results])) if results else None,
        "rejected": int(counts[REJECTED]),
        "transfer_failed": int(counts[TRANSFER_FAILED]),
        "retries": int(fate.retries.sum()),
        "left_out": fate.left_out,
    }


def client_columns(fate: RoundFate, fleet: Fleet, num_examples: np.ndarray) -> dict[str, np.ndarray]:
    """The ``clients.csv`` columns of a round (``num_examples``: each client's training examples)."""
    ids, n, plans = fate.device_ids, fate.size, fate.plans
    plan_names = np.asarray([p.name or f"plan{k}" for k, p in enumerate(plans.plans)], dtype=object)
    plan_drop = np.asarray([p.mean_drop for p in plans.plans])
    return {
        "round": np.full(n, fate.round_idx),
        "device_id": ids,
        "device_class": fleet.class_of(ids),
        "network_class": fleet.network_of(ids),
        "plan": plan_names[plans.index],
        "mean_drop": plan_drop[plans.index],
        "start_s": np.full(n, fate.start_s),
        "end_s": fate.client_end_s,
        "download_s": fate.download_s,
        "compute_s": fate.compute_s,
        "upload_s": fate.upload_s,
        "outcome": fate.outcome_names,
        "bytes_down": np.rint(fate.bytes_down).astype(np.int64),
        "bytes_up": np.rint(fate.bytes_up).astype(np.int64),
        "energy_j": fate.energy_j,
        "peak_mem_bytes": np.rint(fate.peak_mem_bytes).astype(np.int64),
        "mem_cap_bytes": np.rint(fleet.mem_cap_bytes[ids]).astype(np.int64),
        "num_examples": np.asarray(num_examples, dtype=np.int64),
        "retries": fate.retries,
    }
