"""What-if sweeps: a scenario, a grid of swept keys and seeds, one run folder each.

:func:`plan_sweep` reads the scenario, adds the grid (:mod:`fedsim.study.grid`) to its
``sweep:``, and validates every point and seed before anything runs; :func:`run_sweep`
runs the plan on an executor (:func:`fedsim.study.parallel.get_executor`). Run folders
are ``OUT/<point>_seed-<seed>``; ``OUT/sweep.yaml`` holds every run's configuration, so
``fedsim run --resume OUT`` (or ``fedsim sweep ... --resume``) finishes a sweep that was
stopped. The study table is :mod:`fedsim.study.table`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedsim.core.errors import ConfigError, FedsimError
from fedsim.engine.rundir import Existing, atomic_write, child, has_records
from fedsim.study.grid import Axis, parse_grid, parse_names, point_labels
from fedsim.study.parallel import get_executor
from fedsim.study.scenario import Scenario, Variant, read_scenario, sweep_points, validate_points

__all__ = ["SweepRun", "SweepPlan", "plan_sweep", "run_sweep", "write_sweep_file", "run_one"]


@dataclass(frozen=True)
class SweepRun:
    """One run of a sweep: a point, a seed, its folder and its validated scenario."""

    point: str
    seed: int
    label: str
    run_dir: Path
    scenario: Scenario


@dataclass(frozen=True)
class SweepPlan:
    """Every run of a sweep, validated, in order (points, then seeds within a point)."""

    root: Path
    axes: tuple[Axis, ...]
    points: tuple[str, ...]
    values: dict[str, dict[str, Any]]  # point -> swept key -> value
    seeds: tuple[int, ...]
    runs: tuple[SweepRun, ...] = field(repr=False)

    @property
    def variants(self) -> list[Variant]:
        return [Variant(label=r.label, scenario=r.scenario) for r in self.runs]


def _axes(grid: Sequence[str | Axis], sweep: dict) -> list[Axis]:
    axes = [g if isinstance(g, Axis) else parse_grid(g) for g in grid]
    keys = [a.key for a in axes]
    for k in keys:
        if k.split(".")[0] in ("seed", "sweep"):
            raise ConfigError("--grid", [(k, None, k, "a scenario key; seeds are given with --seeds")])
        if keys.count(k) > 1:
            raise ConfigError("--grid", [(k, None, k, "each key in one --grid only")])
    own = [Axis(key=k, values=tuple(v) if isinstance(v, list) else (v,), name=str(k).split(".")[-1], factor=str(k).startswith("fleet.scale."))
           for k, v in sweep.items() if k not in keys and k != "seed"]
    return own + axes


def plan_sweep(
    scenario: str | Path,
    out: str | Path,
    grid: Sequence[str | Axis] = (),
    seeds: Sequence[int] | None = None,
    overrides: Sequence[str] = (),
    names: Sequence[str] | str | None = None,
) -> SweepPlan:
    """Read, expand and validate a sweep; nothing runs and nothing is written.

    ``grid``: ``--grid`` texts (or axes) added to the scenario's ``sweep:``; ``seeds``:
    every point runs once per seed (default: the scenario's ``sweep.seed``, else its
    ``seed``); ``names``: one folder name per point instead of the readable default.

    Raises:
        ConfigError: a bad grid, seed list or name list, a grid over
            :data:`~fedsim.study.scenario.MAX_SWEEP_POINTS` runs (with its size), or any
            point that would not run.
    """
    data, lines = read_scenario(scenario, list(overrides))
    sweep = data.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise ConfigError(scenario, [("sweep", lines.get(("sweep",)), sweep, "a mapping from dotted keys to lists of values")])
    axes = _axes(grid, sweep)
    if seeds is None:
        own = sweep.get("seed")
        seeds = own if isinstance(own, list) and own else [data.get("seed", 0)]
    seeds = list(seeds)
    full = {**data, "sweep": {**{a.key: list(a.values) for a in axes}, "seed": seeds}}
    combos = sweep_points(full, file=scenario)
    per_point = [combos[i] for i in range(0, len(combos), len(seeds))]
    point_values = [[(k, v) for k, v in over if k != "seed"] for over, _ in per_point]
    if names is not None:
        labels = parse_names(names if isinstance(names, str) else ",".join(names), len(per_point))
    else:
        labels = point_labels(axes, point_values)
    root = Path(out)
    labelled = []
    for i, (over, raw) in enumerate(combos):
        point, seed = labels[i // len(seeds)], dict(over)["seed"]
        labelled.append((f"{point}_seed-{seed}", raw))
    variants = validate_points(labelled, scenario, lines)
    runs = tuple(
        SweepRun(point=labels[i // len(seeds)], seed=v.scenario.seed, label=v.label, run_dir=child(root, v.label), scenario=v.scenario)
        for i, v in enumerate(variants)
    )
    values = {label: dict(vals) for label, vals in zip(labels, point_values)}
    return SweepPlan(root=root, axes=tuple(axes), points=tuple(labels), values=values, seeds=tuple(seeds), runs=runs)


def write_sweep_file(root: Path, variants: Sequence[Variant], existing: Existing) -> None:
    """``sweep.yaml``: every variant's resolved configuration, so ``fedsim run --resume``
    can finish the sweep without the scenario file, skipping the runs that finished.

    Raises:
        FedsimError: resuming a folder whose ``sweep.yaml`` describes other runs.
    """
    from fedsim.engine.records import config_text

    configs = [{**v.scenario.model_dump(mode="json", exclude={"sweep"}), "variant": v.label} for v in variants]
    text = config_text({"variants": configs})
    path = root / "sweep.yaml"
    if existing == "resume" and path.is_file():
        if path.read_text(encoding="utf-8") != text:
            raise FedsimError(f"{root} holds a sweep of another configuration (its sweep.yaml differs)")
        return
    root.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text)


def run_one(scenario: Scenario, run_dir: Path, label: str, existing: Existing, on_round: Callable[[dict], None] | None = None):
    """One run of a sweep (the task each executor runs; importable, so picklable)."""
    from fedsim.study.simulate import simulate

    return simulate(scenario, run_dir, label=label, existing=existing, on_round=on_round)


def run_sweep(
    plan: SweepPlan,
    *,
    executor: str = "local",
    jobs: int = 1,
    address: str | None = None,
    existing: Existing = "refuse",
    on_done: Callable[[SweepRun, Any], None] | None = None,
    on_round: Callable[[SweepRun, dict], None] | None = None,
) -> list[tuple[SweepRun, Any]]:
    """Run every run of ``plan``; ``(run, RunResult or the exception it raised)`` each,
    in plan order. ``existing`` is :func:`fedsim.study.simulate.simulate`'s rule; with
    ``refuse``, a folder holding records or a ``sweep.yaml`` stops the sweep before it
    starts. ``on_done`` is called as each run finishes; ``on_round`` with each round's
    ``rounds.csv`` row, by the ``local`` executor only (other executors run elsewhere).
    """
    if existing == "refuse":
        taken = [d for d in [plan.root, *(r.run_dir for r in plan.runs)] if has_records(d) or (d / "sweep.yaml").exists()]
        if taken:
            raise FedsimError(f"{taken[0]} already holds a run's records; resume the sweep (--resume) or replace it (--force)")
    run = get_executor(executor, address)
    write_sweep_file(plan.root, plan.variants, existing)
    by_label = {r.label: r for r in plan.runs}
    tasks = [(r.scenario, r.run_dir, r.label, existing) for r in plan.runs]
    if on_round is not None and executor == "local":
        tasks = [(*t, lambda row, r=r: on_round(r, row)) for t, r in zip(tasks, plan.runs)]
    results: dict[str, Any] = {}
    for task, result in run(run_one, tasks, jobs):
        r = by_label[task[2]]
        results[r.label] = result
        if on_done is not None:
            on_done(r, result)
    return [(r, results[r.label]) for r in plan.runs]
