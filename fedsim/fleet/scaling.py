"""Scaling whole device and network classes by a factor, without editing profile files.

A scenario's ``fleet.scale`` multiplies profile fields of every class (``*``) or of one
class by a positive factor, e.g. a 4x slower uplink everywhere and half the memory on
low-end phones::

    fleet:
      scale:
        network: {"*": {uplink_mbps: 0.25}}
        device: {phone-low: {app_memory_gb: 0.5}}

A distribution is scaled as the random variable it describes (``X`` becomes ``c * X``):
every location, spread and bound is multiplied (a lognormal's median and its min/max, a
normal's mean, std and bounds, a uniform's ends, a choice's values) while shape
parameters (a lognormal's sigma, a choice's weights) stay. Factors on ``*`` and on a
class multiply. The scaled class is validated again, so a factor that pushes a field
past its bounds (a probability above 1, a window longer than 24 h) is an error naming
the key.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Annotated, Any

from pydantic import AliasChoices, Field, ValidationError, model_serializer

from fedsim.core.configio import Spec
from fedsim.fleet.profiles import ProfileSet

__all__ = ["ScaleSpec", "DeviceFactors", "NetworkFactors", "ScaleError", "scale_profiles", "FIELD_ALIASES", "DIST_SCALED"]

Factor = Annotated[float, Field(gt=0.0, le=1e6)]

# What a scaled distribution multiplies, per form; every form of ``Dist`` must be here.
DIST_SCALED: dict[str, tuple[str, ...]] = {
    "constant": ("value",),
    "uniform": ("low", "high"),
    "normal": ("mean", "std", "min", "max"),
    "lognormal": ("median", "min", "max"),
    "choice": ("values",),
}

# Short names a user may write (``--grid 'network.*.up_mbps*=0.25'``) -> the profile field.
FIELD_ALIASES: dict[str, str] = {
    "up_mbps": "uplink_mbps",
    "down_mbps": "downlink_mbps",
    "latency": "latency_ms",
    "train_gflops": "train_gflops_per_s",
    "gflops": "train_gflops_per_s",
    "mem_gb": "app_memory_gb",
    "mem_cap": "app_memory_gb",
    "memory_gb": "app_memory_gb",
}

# Where a factor field lives inside a class (availability fields are nested).
_PATHS = {"window_len_h": ("availability", "window_len_h"), "skip_day_prob": ("availability", "skip_day_prob")}


def _factor(name: str):
    aliases = [a for a, f in FIELD_ALIASES.items() if f == name]
    return Field(None, validation_alias=AliasChoices(name, *aliases), description=f"factor on {name}")


class _Factors(Spec):
    @model_serializer(mode="wrap")
    def _only_given(self, handler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


class DeviceFactors(_Factors):
    """Factors on the fields of a device class (short names such as ``mem_cap`` accepted)."""

    train_gflops_per_s: Factor | None = _factor("train_gflops_per_s")
    app_memory_gb: Factor | None = _factor("app_memory_gb")
    straggle_prob: Factor | None = _factor("straggle_prob")
    straggle_slowdown: Factor | None = _factor("straggle_slowdown")
    dropout_prob: Factor | None = _factor("dropout_prob")
    joules_per_gflop: Factor | None = _factor("joules_per_gflop")
    window_len_h: Factor | None = _factor("window_len_h")
    skip_day_prob: Factor | None = _factor("skip_day_prob")


class NetworkFactors(_Factors):
    """Factors on the fields of a network class (``up_mbps``, ``down_mbps`` accepted)."""

    downlink_mbps: Factor | None = _factor("downlink_mbps")
    uplink_mbps: Factor | None = _factor("uplink_mbps")
    latency_ms: Factor | None = _factor("latency_ms")
    dropout_prob: Factor | None = _factor("dropout_prob")
    joules_per_mb_down: Factor | None = _factor("joules_per_mb_down")
    joules_per_mb_up: Factor | None = _factor("joules_per_mb_up")


class ScaleSpec(Spec):
    """``device`` / ``network``: class name (or ``*`` for all) -> factors."""

    device: dict[str, DeviceFactors] = Field(default_factory=dict)
    network: dict[str, NetworkFactors] = Field(default_factory=dict)

    def class_problems(self, profiles: ProfileSet) -> list[tuple[str, str, str]]:
        """``(path, value, expected)`` for class names the profiles lack."""
        problems = []
        for kind, known in (("device", profiles.devices), ("network", profiles.networks)):
            for name in getattr(self, kind):
                if name != "*" and name not in known:
                    problems.append((f"fleet.scale.{kind}.{name}", name, f"expected '*' or a {kind} class, one of {sorted(known)}"))
        return problems


class ScaleError(ValueError):
    """A scaled class is no longer valid; ``path`` is the scale key that made it so."""

    def __init__(self, path: str, value: Any, expected: str) -> None:
        super().__init__(f"{path} = {value}: {expected}")
        self.path, self.value, self.expected = path, value, expected


def _scaled_value(value: Any, factor: float) -> Any:
    if isinstance(value, dict):  # a distribution, dumped
        out = dict(value)
        for key in DIST_SCALED[value["dist"]]:
            v = out.get(key)
            if isinstance(v, list):
                out[key] = [x * factor for x in v]
            elif v is not None:
                out[key] = v * factor
        return out
    return value * factor


def scale_profiles(profiles: ProfileSet, scale: ScaleSpec | None) -> ProfileSet:
    """``profiles`` with the factors of ``scale`` applied (the same object when there are none).

    Raises:
        ScaleError: a class name the profiles lack, or a scaled class out of its bounds.
    """
    if scale is None or not (scale.device or scale.network):
        return profiles
    problems = scale.class_problems(profiles)
    if problems:
        raise ScaleError(*problems[0])
    tables = {"device": dict(profiles.devices), "network": dict(profiles.networks)}
    for kind, table in tables.items():
        wanted: dict[str, dict[str, tuple[float, str]]] = {}
        for cls_name, factors in getattr(scale, kind).items():
            for target in sorted(table) if cls_name == "*" else [cls_name]:
                for field, f in factors.model_dump().items():
                    prev, _ = wanted.setdefault(target, {}).get(field, (1.0, ""))
                    wanted[target][field] = (prev * f, f"fleet.scale.{kind}.{cls_name}.{field}")
        for target, fields in wanted.items():
            cls = table[target]
            data = copy.deepcopy(cls.model_dump(mode="json", by_alias=True))
            for field, (f, _) in fields.items():
                *parents, leaf = _PATHS.get(field, (field,))
                node = data
                for p in parents:
                    node = node[p]
                node[leaf] = _scaled_value(node[leaf], f)
            try:
                table[target] = type(cls).model_validate(data)
            except ValidationError as exc:
                err = exc.errors(include_url=False)[0]
                field = next((str(p) for p in err["loc"] if str(p) in fields), next(iter(fields)))
                factor, path = fields[field]
                msg = err["msg"].removeprefix("Value error, ")
                raise ScaleError(path, factor, f"a factor that keeps {kind} class '{target}' valid, but scaled by {factor:g}: {msg}") from None
    return replace(profiles, devices=tables["device"], networks=tables["network"])
