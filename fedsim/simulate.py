"""``simulate(scenario, out_dir)``: build every component from a scenario and run it.

The one entry point behind ``fedsim run``, the benchmarks and the notebooks. It always
writes the resolved configuration first and ``summary.json`` last, also when the run
fails (``status: failed`` with the error), so no partial result is lost.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsim.availability import DiurnalAvailability
from fedsim.costmodel import CostCoefficients, ModelShape
from fedsim.engine import RunResult, SyncEngine
from fedsim.errors import ConfigError, FedsimError
from fedsim.fleet import sample_fleet
from fedsim.methods.base import get_method
from fedsim.models import model_config_dict
from fedsim.plan import ClientPlan
from fedsim.profiles import load_profiles
from fedsim.records import RunRecorder
from fedsim.rng import Seeds
from fedsim.scenario import Scenario
from fedsim.trainers.surrogate import SurrogateTrainer

__all__ = ["simulate", "build_base_plan", "model_shape_for"]


def model_shape_for(sc: Scenario, num_labels: int | None = None) -> ModelShape:
    """The cost-model shape of the scenario's model (reads config.json only)."""
    try:
        config = model_config_dict(sc.model.name_or_path)
    except ValueError as exc:
        raise ConfigError(None, [("model.name_or_path", None, sc.model.name_or_path, str(exc))]) from None
    labels = num_labels if num_labels is not None else _default_labels(sc)
    return ModelShape.from_hf_config(config, num_labels=labels)


def _default_labels(sc: Scenario) -> int:
    return {"20news": 20, "20news4": 4, "r8": 8}.get(sc.data.dataset, 2)


def build_base_plan(sc: Scenario, shape: ModelShape, lora_targets: tuple[str, ...] | None = None) -> ClientPlan:
    """The plan every client gets unless its method says otherwise."""
    targets = lora_targets or sc.model.lora_targets or _family_targets(shape.family)
    return ClientPlan.uniform(
        shape.num_layers,
        drop_prob=0.0,
        lora_rank=sc.model.lora_rank,
        lora_targets=tuple(targets),
        batch_size=sc.local.batch_size,
        seq_len=sc.data.max_length,
        local_steps=sc.local.local_steps,
        name="full",
    )


def _family_targets(family: str) -> tuple[str, ...]:
    return {"distilbert": ("q_lin", "v_lin"), "mpnet": ("q", "v")}.get(family, ("query", "value"))


def _build_trainer(sc: Scenario, seeds: Seeds, fleet_size: int):
    """The trainer and the model shape the cost model should price."""
    if sc.trainer.kind == "surrogate":
        shape = model_shape_for(sc)
        examples = np.full(fleet_size, sc.trainer.examples_per_client, dtype=np.int64)
        return SurrogateTrainer(sc.trainer.surrogate, shape.num_layers, examples, seeds.int_seed("trainer")), shape
    from fedsim.training.trainer import TorchTrainer  # torch is imported only here

    trainer = TorchTrainer(data=sc.data, model=sc.model, train=sc.train, num_clients=fleet_size, rng=seeds.generator("data"))
    shape = ModelShape.from_hf_config(trainer.model_config)
    return trainer, shape


def simulate(
    sc: Scenario,
    out_dir: str | Path,
    *,
    label: str = "",
    on_round: Callable[[dict], None] | None = None,
    coefficients: CostCoefficients = CostCoefficients(),
) -> RunResult | None:
    """Run one scenario variant and write its records to ``out_dir``.

    Returns the :class:`RunResult`, or raises after writing ``summary.json`` with
    ``status: failed`` (a :class:`FedsimError` for bad input, anything else for a bug).
    """
    out_dir = Path(out_dir)
    config = sc.model_dump(mode="json", exclude={"sweep"})
    config["variant"] = label
    recorder = RunRecorder(out_dir, config)
    summary = {
        "scenario": sc.name,
        "variant": label,
        "method": sc.method.name,
        "seed": sc.seed,
        "status": "running",
        "target_accuracy": sc.engine.target_accuracy,
    }
    t0 = time.perf_counter()
    try:
        seeds = Seeds(sc.seed)
        profiles = load_profiles(sc.fleet.profiles_dir)
        fleet = sample_fleet(sc.fleet, profiles, seeds.generator("fleet"))
        availability = DiurnalAvailability(fleet, seeds.int_seed("availability"), sc.engine.start_hour_utc)
        trainer, shape = _build_trainer(sc, seeds, fleet.size)
        base_plan = build_base_plan(sc, shape, getattr(trainer, "lora_targets", None))
        method_cls = get_method(sc.method.name)
        try:
            method = method_cls(sc.method_params(), shape, base_plan)
        except ValueError as exc:
            raise ConfigError(None, [("method.params", None, sc.method.params, str(exc))]) from None
        engine = SyncEngine(
            spec=sc.engine, fleet=fleet, profiles=profiles, availability=availability, method=method,
            trainer=trainer, shape=shape, base_plan=base_plan, seeds=seeds, recorder=recorder,
            coefficients=coefficients, on_round=on_round,
        )
        result = engine.run()
        summary.update(
            status="ok",
            rounds=result.rounds,
            sim_time_s=result.sim_time_s,
            final_accuracy=result.final_accuracy,
            best_accuracy=result.best_accuracy,
            time_to_target_s=result.time_to_target_s,
            stop_reason=result.stop_reason,
            wall_s=result.wall_s,
            train_wall_s=result.train_wall_s,
            # Host time spent outside training, aggregation and evaluation: the simulator's cost.
            overhead_fraction=(result.wall_s - result.train_wall_s) / result.wall_s if result.wall_s > 0 else 0.0,
            fleet_size=fleet.size,
            model={"family": shape.family, "layers": shape.num_layers, "params": shape.total_params},
        )
        return result
    except BaseException as exc:
        summary.update(status="failed", error=str(exc) or type(exc).__name__, wall_s=time.perf_counter() - t0)
        if not isinstance(exc, FedsimError):
            summary["traceback"] = traceback.format_exc()
        rounds = getattr(locals().get("engine"), "history", [])
        summary["rounds"] = len(rounds)
        if rounds:
            summary["sim_time_s"] = rounds[-1]["sim_time_s"]
            accs = [r["accuracy"] for r in rounds if r["accuracy"] is not None]
            summary["final_accuracy"] = accs[-1] if accs else None
        summary.setdefault("time_to_target_s", None)
        raise
    finally:
        recorder.summary(summary)
        recorder.close()
