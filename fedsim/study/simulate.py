"""``simulate(scenario, out_dir)``: build every component from a scenario and run it.

The one entry point behind ``fedsim run``, the benchmarks and the notebooks. It always
writes the resolved configuration first and ``summary.json`` last, also when the run
fails (``status: failed`` with the error) or is interrupted (``status: interrupted``),
so no partial result is lost; while it runs, ``summary.json`` says ``running``. It
refuses a directory that already holds records unless told to overwrite or resume it
(:mod:`fedsim.engine.rundir`, :mod:`fedsim.engine.checkpoint`).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from fedsim.fleet.availability import AvailabilityModel, availability_model
from fedsim.core.costmodel import CostCoefficients, ModelShape
from fedsim.engine import checkpoint
from fedsim.engine.checkpoint import Checkpoint
from fedsim.engine.buffered import AsyncEngine
from fedsim.engine.sync import Progress, RunResult, SyncEngine
from fedsim.core.errors import ConfigError, FedsimError
from fedsim.fleet.fleet import Fleet, sample_fleet
from fedsim.methods.base import get_method
from fedsim.core.models import default_lora_targets, model_config_dict
from fedsim.core.plan import ClientPlan
from fedsim.fleet.profiles import ProfileSet, load_profiles
from fedsim.fleet.scaling import ScaleError, scale_profiles
from fedsim.engine.records import ASYNC_CLIENT_COLUMNS, CLIENT_COLUMNS, RunRecorder, config_text, read_summary
from fedsim.core.rng import DRAWS, Seeds
from fedsim.engine.rundir import Existing, Interrupted, clear, finished_ok, prepare
from fedsim.study.scenario import Scenario
from fedsim.learning.surrogate import SurrogateTrainer

__all__ = ["simulate", "build_base_plan", "build_fleet", "model_shape_for", "AUTO_RATIO"]

AUTO_RATIO = 20.0  # automatic checkpoints: run time between two >= this x the time one takes


def model_shape_for(sc: Scenario, num_labels: int | None = None) -> ModelShape:
    """The cost-model shape of the scenario's model (reads config.json only)."""
    try:
        config = model_config_dict(sc.model.name_or_path)
    except ValueError as exc:
        raise ConfigError(None, [("model.name_or_path", None, sc.model.name_or_path, str(exc))]) from None
    labels = num_labels if num_labels is not None else _default_labels(sc)
    return ModelShape.from_hf_config(config, num_labels=labels)


def build_fleet(sc: Scenario, seeds: Seeds | None = None) -> tuple[ProfileSet, Fleet, AvailabilityModel]:
    """The scenario's profiles, fleet and availability model, as a run builds them."""
    seeds = seeds or Seeds(sc.seed)
    try:
        profiles = scale_profiles(load_profiles(sc.fleet.profiles_dir), sc.fleet.scale)
    except ScaleError as exc:
        raise ConfigError(None, [(exc.path, None, exc.value, exc.expected)]) from None
    fleet = sample_fleet(sc.fleet, profiles, seeds.generator("fleet"))
    return profiles, fleet, availability_model(sc.fleet, fleet, seeds.int_seed("availability"), sc.engine.start_hour_utc)


def _default_labels(sc: Scenario) -> int:
    return {"20news": 20, "20news4": 4, "r8": 8}.get(sc.data.dataset, 2)


def build_base_plan(sc: Scenario, shape: ModelShape, lora_targets: tuple[str, ...] | None = None) -> ClientPlan:
    """The plan every client gets unless its method says otherwise."""
    targets = lora_targets or sc.model.lora_targets or default_lora_targets(shape.family)
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


def _build_trainer(sc: Scenario, seeds: Seeds, fleet_size: int):
    """The trainer and the model shape the cost model should price."""
    if sc.trainer.kind == "surrogate":
        shape = model_shape_for(sc)
        examples = np.full(fleet_size, sc.trainer.examples_per_client, dtype=np.int64)
        return SurrogateTrainer(sc.trainer.surrogate, shape.num_layers, examples, seeds.int_seed("trainer")), shape
    from fedsim.learning.real.trainer import TorchTrainer  # torch is imported only here

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
    existing: Existing = "refuse",
    checkpoint_every: int | None = None,
) -> RunResult | None:
    """Run one scenario variant and write its records to ``out_dir``.

    ``existing`` says what to do when ``out_dir`` already holds records: ``refuse``
    (raise :class:`FedsimError`), ``overwrite`` (remove them first) or ``resume``
    (continue from the last checkpoint; a finished run is left as it is). A checkpoint is
    written after every ``checkpoint_every`` rounds and after the last, and removed when
    the run finishes; ``None`` (the default) writes one after a round once the host time
    since the previous one is at least ``AUTO_RATIO`` times what that one took, so
    checkpoints cost at most about 1/AUTO_RATIO of the run (every round when rounds train
    for real; every few dozen rounds of the surrogate, whose rounds take a millisecond).

    Returns the :class:`RunResult`, or raises after writing ``summary.json`` with
    ``status: failed`` (a :class:`FedsimError` for bad input, anything else for a bug)
    or ``status: interrupted`` (a signal or Ctrl-C).
    """
    if checkpoint_every is not None and checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    out_dir = Path(out_dir)
    config = sc.model_dump(mode="json", exclude={"sweep"})
    config["variant"] = label
    if existing == "resume" and finished_ok(out_dir):
        return _finished_result(out_dir, config)
    prepare(out_dir, existing)
    ckpt = checkpoint.load(out_dir) if existing == "resume" else None
    if existing == "resume" and ckpt is None:
        clear(out_dir)  # killed before its first checkpoint: nothing to keep
    asynchronous = sc.engine.driver == "async"
    recorder = RunRecorder(out_dir, config, resume_offsets=ckpt.offsets if ckpt else None,
                           client_columns=ASYNC_CLIENT_COLUMNS if asynchronous else CLIENT_COLUMNS)
    summary = {
        "scenario": sc.name,
        "variant": label,
        "method": sc.method.name,
        "seed": sc.seed,
        "trainer": sc.trainer.kind,
        "draws": DRAWS,
        "status": "running",
        "target_accuracy": sc.engine.target_accuracy,
    }
    if ckpt is not None:
        summary["resumed_at_round"] = ckpt.progress.next_round
    recorder.summary(summary)
    t0 = time.perf_counter()
    saved = {"n": 0, "wall_s": 0.0, "bytes": 0, "since": t0, "last_s": 0.0}
    trainer = None
    try:
        seeds = Seeds(sc.seed)
        profiles, fleet, availability = build_fleet(sc, seeds)
        trainer, shape = _build_trainer(sc, seeds, fleet.size)
        base_plan = build_base_plan(sc, shape, getattr(trainer, "lora_targets", None))
        try:
            params = sc.method_params()
            method = get_method(sc.method.name)(params, shape, base_plan) if ckpt is None else None
        except ValueError as exc:
            raise ConfigError(None, [("method.params", None, sc.method.params, str(exc))]) from None
        if ckpt is not None:
            method = checkpoint.load_method(ckpt.method, params, trainer)

        def save_checkpoint(progress: Progress) -> None:
            t = time.perf_counter()
            last = progress.stop_reason is not None or progress.next_round >= sc.engine.max_rounds
            if checkpoint_every is None:  # automatic: host time writing checkpoints stays under 1/AUTO_RATIO
                due = t - saved["since"] >= AUTO_RATIO * saved["last_s"]
            else:
                due = progress.next_round % checkpoint_every == 0
            if not (due or last):
                return
            saved["bytes"] = checkpoint.save(out_dir, Checkpoint(
                progress=progress, trainer_state=trainer.state_dict(), method=checkpoint.dump_method(method, trainer),
                offsets=recorder.offsets()))
            saved["since"] = time.perf_counter()
            saved["last_s"] = saved["since"] - t
            saved["n"] += 1
            saved["wall_s"] += saved["last_s"]

        engine = (AsyncEngine if asynchronous else SyncEngine)(
            spec=sc.engine, fleet=fleet, profiles=profiles, availability=availability, method=method,
            trainer=trainer, shape=shape, base_plan=base_plan, seeds=seeds, recorder=recorder,
            coefficients=coefficients, on_round=on_round, after_round=save_checkpoint,
        )
        if ckpt is not None:
            trainer.load_state_dict(ckpt.trainer_state)  # after bind_trainer: see Method.bind_trainer
        result = engine.run(ckpt.progress if ckpt is not None else None)
        (out_dir / checkpoint.CHECKPOINT).unlink(missing_ok=True)
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
        if getattr(trainer, "cache", None) is not None:
            summary["reuse"] = trainer.cache.stats.as_dict()  # lookups that found (hits) or computed (misses)
        return result
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt | Interrupted)
        summary.update(status="interrupted" if interrupted else "failed", error=str(exc) or type(exc).__name__,
                       wall_s=time.perf_counter() - t0)
        if not isinstance(exc, FedsimError) and not interrupted:
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
        if hasattr(trainer, "close"):
            trainer.close()  # its worker processes, if any
        summary.update(checkpoints=saved["n"], checkpoint_wall_s=saved["wall_s"], checkpoint_bytes=saved["bytes"])
        recorder.summary(summary)
        recorder.close()


def _finished_result(out_dir: Path, config: dict) -> RunResult:
    """The result of a run that already finished in ``out_dir`` (resuming it does nothing)."""
    if (out_dir / "config.yaml").read_text(encoding="utf-8") != config_text(config):
        raise FedsimError(f"{out_dir} holds a finished run of another configuration (its config.yaml differs)")
    s = read_summary(out_dir)
    return RunResult(rounds=s["rounds"], sim_time_s=s["sim_time_s"], final_accuracy=s["final_accuracy"],
                     best_accuracy=s["best_accuracy"], time_to_target_s=s["time_to_target_s"],
                     stop_reason=s["stop_reason"], wall_s=s["wall_s"], train_wall_s=s["train_wall_s"])
