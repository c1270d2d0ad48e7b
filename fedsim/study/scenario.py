"""Scenarios: one validated YAML document describes a whole run (or a sweep of runs).

Top-level sections: ``fleet`` (:class:`~fedsim.fleet.FleetSpec`), ``model``, ``data``,
``train`` (:mod:`fedsim.learning.real.config`), ``local`` (:class:`LocalSpec`), ``trainer``
(:class:`TrainerSpec`), ``method`` (:class:`MethodSpec`), ``engine``
(:class:`~fedsim.engine.EngineSpec`) and ``sweep``. Unknown keys anywhere are errors.

``sweep`` maps dotted keys to lists of values; the scenario expands to the cartesian
product, one run per combination (desmod's factorial sweeps)::

    sweep:
      method: [{name: fedlora}, {name: stld-fixed, params: {mean_drop: 0.5}}]
      engine.round_deadline_s: [300, 600]
"""

from __future__ import annotations

import itertools
import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fedsim.core.configio import Spec, apply_overrides, read_yaml, validate
from fedsim.engine.sync import EngineSpec
from fedsim.core.errors import ConfigError
from fedsim.fleet.fleet import FleetSpec
from fedsim.methods.base import get_method, method_names
from fedsim.core.models import check_trainable
from fedsim.fleet.profiles import ProfileSet, load_profiles
from fedsim.fleet.scaling import ScaleError, scale_profiles
from fedsim.learning.reuse import MARKER
from fedsim.learning.surrogate import SurrogateSpec
from fedsim.learning.real.config import DataSpec, ModelSpec, TrainSpec

__all__ = [
    "Scenario", "LocalSpec", "TrainerSpec", "MethodSpec", "Variant", "load_scenario", "read_scenario", "validate_points",
    "expand", "sweep_points", "MAX_SWEEP_POINTS",
]

# Counted before any point is built: a sweep is a list of runs, and 10^7 of them is a typo.
MAX_SWEEP_POINTS = 10_000
# Retries of an idle server before it gives up (max_idle_s / idle_wait_s): each is a host step.
MAX_IDLE_TRIES = 100_000


class LocalSpec(Spec):
    """Local training per round (the base plan; methods may change it per client)."""

    batch_size: int = Field(16, ge=1, le=4096)
    local_steps: int = Field(10, ge=1, le=100_000)


class TrainerSpec(Spec):
    """Who produces learning progress: real PyTorch training or the analytic surrogate."""

    kind: Literal["torch", "surrogate"] = "torch"
    surrogate: SurrogateSpec = Field(default_factory=SurrogateSpec)
    examples_per_client: int = Field(20, ge=1, description="surrogate only: examples each client holds")


class MethodSpec(Spec):
    """A registered method and its parameters (validated against the method's schema)."""

    name: str = "fedlora"
    params: dict[str, Any] = Field(default_factory=dict)


class Scenario(Spec):
    """A whole simulation, validated."""

    name: str = Field("scenario", min_length=1, max_length=100)
    description: str = ""
    seed: int = Field(0, ge=0, le=2**63 - 1)
    fleet: FleetSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    local: LocalSpec = Field(default_factory=LocalSpec)
    trainer: TrainerSpec = Field(default_factory=TrainerSpec)
    method: MethodSpec = Field(default_factory=MethodSpec)
    engine: EngineSpec = Field(default_factory=EngineSpec)
    sweep: dict[str, list[Any]] = Field(default_factory=dict, description="dotted key -> values")

    def method_params(self):
        """The method's parameters as its own validated model."""
        return get_method(self.method.name).Params.model_validate(self.method.params)


class Variant(BaseModel):
    """One run of a (possibly swept) scenario."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)
    label: str
    scenario: Scenario


def _check_semantics(sc: Scenario, file, lines, profiles: ProfileSet, label: str = "", memo: dict | None = None) -> None:
    """Every check that needs no training: class names, the model, data files, and the
    method built against the model's shape (as :func:`fedsim.study.simulate.simulate` builds it).

    ``memo`` keeps what was learnt about data files across the points of a sweep."""
    problems = []
    engine = sc.engine
    if engine.max_idle_s / engine.idle_wait_s > MAX_IDLE_TRIES:
        problems.append((
            "engine.idle_wait_s", lines.get(("engine", "idle_wait_s")), engine.idle_wait_s,
            f"at least max_idle_s / {MAX_IDLE_TRIES:,} = {engine.max_idle_s / MAX_IDLE_TRIES:g} s, "
            "so that a fleet with no available device gives up in reasonable host time",
        ))
    for path, value, expected in sc.fleet.check_classes(profiles):
        key = tuple(path.split("."))
        problems.append((path, lines.get(key) or lines.get(key[:-1]), value, expected))
    if not problems:
        try:
            scale_profiles(profiles, sc.fleet.scale)
        except ScaleError as exc:
            problems.append((exc.path, lines.get(tuple(exc.path.split("."))), exc.value, exc.expected))
    memo = {} if memo is None else memo
    problems += _data_problems(sc, lines, memo)
    problems += _trace_problems(sc, lines, memo)
    shape, model_problems = _model_shape(sc, lines)
    problems += model_problems
    if sc.method.name not in method_names():
        problems.append(("method.name", lines.get(("method", "name")), sc.method.name, f"one of the registered methods {method_names()}"))
    else:
        try:
            params = validate(get_method(sc.method.name).Params, sc.method.params, file=file, lines=lines, prefix=("method", "params"))
        except ConfigError as exc:
            problems.extend(exc.problems)
        else:
            if shape is not None:
                problems += _method_problems(sc, params, shape, lines)
    if problems:
        if label:
            problems = [(path, line, value, f"{expected} (sweep point {label})") for path, line, value, expected in problems]
        raise ConfigError(file, problems)


def _model_shape(sc: Scenario, lines):
    """The model's cost-model shape, or ``None`` and the problems finding it."""
    from fedsim.study.simulate import model_shape_for  # simulate builds on this module

    at = ("model.name_or_path", lines.get(("model", "name_or_path")), sc.model.name_or_path)
    try:
        shape = model_shape_for(sc)
    except ConfigError as exc:
        return None, [(*at, exc.problems[0][3])]
    except ValueError as exc:
        return None, [(*at, str(exc))]
    bad = [f for f in ("num_layers", "hidden", "heads", "ffn", "vocab", "max_positions")
           if isinstance(getattr(shape, f), bool) or not isinstance(getattr(shape, f), int) or getattr(shape, f) < 1]
    if bad:
        return None, [(*at, f"a model config.json with positive integer architecture sizes; {', '.join(bad)} missing or invalid")]
    if sc.trainer.kind == "torch":
        try:
            check_trainable(sc.model.name_or_path)
        except ValueError as exc:
            return shape, [(*at, f"a model a torch run can load ({exc})")]
    return shape, []


def _method_problems(sc: Scenario, params, shape, lines) -> list:
    """Build the method against the model shape, as a run would before its first round."""
    from fedsim.study.simulate import build_base_plan

    try:
        get_method(sc.method.name)(params, shape, build_base_plan(sc, shape))
    except ValueError as exc:
        return [("method.params", lines.get(("method", "params")) or lines.get(("method",)), sc.method.params, f"parameters that fit the model ({str(exc).rstrip('.')})")]
    return []


def _trace_problems(sc: Scenario, lines, memo: dict) -> list:
    """Trace files the fleet is built from: readable, valid, enough clients."""
    from fedsim.fleet.traces import TraceError, load_availability_trace, load_device_trace

    spec = sc.fleet.trace
    if spec is None:
        return []
    problems = []
    for key, load in (("capacity", load_device_trace), ("availability", load_availability_trace)):
        path = getattr(spec, key)
        if path is None:
            continue
        seen = ("trace", key, str(path))
        if seen not in memo:
            try:
                memo[seen] = load(path).size
            except TraceError as exc:
                memo[seen] = exc
        where = (f"fleet.trace.{key}", lines.get(("fleet", "trace", key)), str(path))
        if isinstance(memo[seen], TraceError):
            problems.append((*where, f"a valid trace file ({str(memo[seen]).rstrip('.')})"))
        elif key == "capacity" and memo[seen] < sc.fleet.size:
            problems.append((*where, f"a trace of at least fleet.size = {sc.fleet.size:,} clients; it holds {memo[seen]:,}"))
    if spec.reference_model is not None:
        try:
            spec.reference_flops()
        except ValueError as exc:
            problems.append(("fleet.trace.reference_model", lines.get(("fleet", "trace", "reference_model")),
                             spec.reference_model, f"a model whose architecture the cost model knows ({exc})"))
    return problems


def _data_problems(sc: Scenario, lines, memo: dict) -> list:
    """Data files and cache folder a torch run will read (the surrogate reads none)."""
    if sc.trainer.kind != "torch":
        return []
    problems = []
    cache = sc.data.cache_dir
    if cache is not None and cache.exists() and not cache.is_dir():
        problems.append(("data.cache_dir", lines.get(("data", "cache_dir")), str(cache), "a folder for tokenised data, but it is a file"))
    reuse = sc.train.reuse.cache_dir.expanduser() if sc.train.reuse.cache_dir is not None else None
    if reuse is not None and reuse.exists() and (not reuse.is_dir() or (any(reuse.iterdir()) and not (reuse / MARKER).is_file())):
        problems.append(("train.reuse.cache_dir", lines.get(("train", "reuse", "cache_dir")), str(reuse),
                         f"a new folder or a fedsim reuse cache (holding {MARKER}), but it is another file or folder"))
    from fedsim.learning.real.data import DataError, packaged_files, read_table  # no torch: plain file reading

    if sc.data.dataset != "file":
        try:
            packaged_files(sc.data.dataset)
        except DataError as exc:
            problems.append(("data.dataset", lines.get(("data", "dataset")), sc.data.dataset, f"a data set that is installed ({str(exc).rstrip('.')})"))
        return problems
    for key in ("train_file", "test_file"):
        path = getattr(sc.data, key)
        if path is None:
            continue
        seen = (str(path), sc.data.text_column, sc.data.label_column)
        if seen not in memo:
            try:
                read_table(path, sc.data.text_column, sc.data.label_column)
                memo[seen] = None
            except DataError as exc:
                memo[seen] = f"a readable data file ({str(exc).rstrip('.')})"
        if memo[seen] is not None:
            problems.append((f"data.{key}", lines.get(("data", key)), str(path), memo[seen]))
    return problems


def _slug(value: Any) -> str:
    if isinstance(value, dict):
        value = value.get("name", "-".join(f"{k}{_slug(v)}" for k, v in value.items()))
    text = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(value)).strip("-")
    return text or "x"


def sweep_points(data: dict, file=None) -> list[tuple[list[tuple[str, Any]], dict]]:
    """``(the (key, value) of each swept key, raw scenario)`` for every sweep combination
    (one with no keys if there is no sweep); a sweep over more than
    :data:`MAX_SWEEP_POINTS` runs is refused from the lengths of its lists."""
    sweep = data.get("sweep") or {}
    if not isinstance(sweep, dict):
        raise ConfigError(file, [("sweep", None, sweep, "a mapping from dotted keys to lists of values")])
    base = {k: v for k, v in data.items() if k != "sweep"}
    if not sweep:
        return [([], base)]
    keys = list(sweep)
    for k in keys:
        if not isinstance(sweep[k], list) or not sweep[k]:
            raise ConfigError(file, [(f"sweep.{k}", None, sweep[k], "a non-empty list of values")])
    points = math.prod(len(sweep[k]) for k in keys)
    if points > MAX_SWEEP_POINTS:
        sizes = " x ".join(str(len(sweep[k])) for k in keys)
        raise ConfigError(file, [("sweep", None, ConfigError.MISSING, f"has {sizes} = {points:,} points; expected at most {MAX_SWEEP_POINTS:,} runs")])
    out = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        overrides = list(zip(keys, combo))
        raw = base
        for k, v in overrides:
            raw = _set(raw, k, v, file)
        out.append((overrides, raw))
    return out


def expand(data: dict, file=None) -> list[tuple[str, dict]]:
    """The (label, raw scenario) pairs of every sweep combination (one if no sweep)."""
    out = []
    for overrides, raw in sweep_points(data, file):
        keys = [k for k, _ in overrides]
        label = "_".join(_slug(v) if len(keys) == 1 or k == "method" else f"{k.split('.')[-1]}-{_slug(v)}" for k, v in overrides)
        out.append((label, raw))
    labels = [label for label, _ in out]
    if len(set(labels)) != len(labels):
        out = [(f"{i:02d}-{label}", raw) for i, (label, raw) in enumerate(out)]
    return out


def _set(data: dict, dotted: str, value: Any, file) -> dict:
    import copy

    data = copy.deepcopy(data)
    parts = dotted.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(file, [(f"sweep.{dotted}", None, value, f"a key inside a mapping, but '{part}' is not one")])
        node = nxt
    node[parts[-1]] = value
    return data


def read_scenario(path: str | Path, overrides: list[str] | None = None, seed: int | None = None) -> tuple[dict, dict]:
    """A scenario file's raw data (overrides and seed applied) and its line map."""
    data, lines = read_yaml(path)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, [("", 1, type(data).__name__, "a mapping of sections (fleet, method, engine, ...)")])
    if overrides:
        data = apply_overrides(data, overrides, file=path)
    if seed is not None:
        data["seed"] = seed
    return data, lines


def load_scenario(path: str | Path, overrides: list[str] | None = None, seed: int | None = None) -> list[Variant]:
    """Load, override, expand and validate a scenario file; one :class:`Variant` per run.

    Raises:
        ConfigError: anything wrong in the file, the overrides or the profile folder.
    """
    data, lines = read_scenario(path, overrides, seed)
    return validate_points(expand(data, file=path), path, lines)


def validate_points(labelled: list[tuple[str, dict]], path: str | Path, lines: dict) -> list[Variant]:
    """Validate every ``(label, raw scenario)`` (schema, then every check that needs no
    training); one :class:`Variant` each.

    Raises:
        ConfigError: the first point with a problem, naming it.
    """
    variants = []
    profiles_cache: dict[Any, ProfileSet] = {}
    data_memo: dict = {}
    for label, raw in labelled:
        sc = validate(Scenario, raw, file=path, lines=lines)
        key = sc.fleet.profiles_dir
        if key is not None and not Path(key).is_dir():
            line = lines.get(("fleet", "profiles_dir"))
            # The path in full (a value would be shortened): the user must see where it looked.
            raise ConfigError(path, [("fleet.profiles_dir", line, ConfigError.MISSING, f"expected a folder of device profile YAML files; there is none at {key}")])
        if key not in profiles_cache:
            profiles_cache[key] = load_profiles(key)
        _check_semantics(sc, path, lines, profiles_cache[key], label, data_memo)
        variants.append(Variant(label=label or sc.method.name, scenario=sc))
    return variants
