"""The ``--grid`` syntax of ``fedsim sweep``: swept keys, profile scaling, seeds, point names.

``KEY=v1,v2,...`` sweeps a dotted scenario key over values (each read as YAML, so
``method={name: fedlora},{name: droppeft}`` and ``engine.round_deadline_s=300,600``
work); ``KIND.CLASS.FIELD*=f1,f2,...`` sweeps a factor on a profile field of every class
(``*``) or one class, without editing the profile files (``network.*.up_mbps*=1,0.25``,
``device.phone-low.train_gflops*=2``): it becomes the scenario key
``fleet.scale.KIND.CLASS.FIELD`` (:mod:`fedsim.fleet.scaling`). A grid adds its keys to
the scenario's own ``sweep:`` (replacing a key both name); the product is validated like
any sweep.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fedsim.core.configio import parse_yaml
from fedsim.core.errors import ConfigError
from fedsim.engine.rundir import safe_name
from fedsim.fleet.scaling import FIELD_ALIASES, DeviceFactors, NetworkFactors

__all__ = ["Axis", "parse_grid", "parse_seeds", "point_labels", "parse_names", "MAX_SEEDS"]

MAX_SEEDS = 1000
_KEY = re.compile(r"[A-Za-z0-9_-]+(\.[A-Za-z0-9_*-]+)*")
_KINDS = {"device": "device", "devices": "device", "network": "network", "networks": "network"}
_FIELDS = {"device": sorted(DeviceFactors.model_fields), "network": sorted(NetworkFactors.model_fields)}


@dataclass(frozen=True)
class Axis:
    """One swept scenario key, its values, and the short name labels use."""

    key: str
    values: tuple[Any, ...]
    name: str
    factor: bool = False  # values are factors (labels read ``x0.25``)


def _bad(text: str, value: Any, expected: str) -> ConfigError:
    return ConfigError("--grid", [(text[:80], None, value, expected)])


def parse_grid(text: str) -> Axis:
    """One ``--grid`` argument as an :class:`Axis`.

    Raises:
        ConfigError: not ``KEY=values`` / ``KIND.CLASS.FIELD*=factors``, an unknown
            profile field, no values, a value repeated, or a factor that is not positive.
    """
    if "=" not in text:
        raise _bad(text, text, "KEY=v1,v2,... or KIND.CLASS.FIELD*=f1,f2,... (e.g. network.*.up_mbps*=1,0.5,0.25)")
    key, raw = text.split("=", 1)
    key = key.strip()
    factor = key.endswith("*")
    if factor:
        key = key[:-1]
    if not _KEY.fullmatch(key):
        raise _bad(text, key, "a dotted key of letters, digits, '_' and '-' such as engine.round_deadline_s")
    values = _values(text, raw)
    if not factor:
        return Axis(key=key, values=values, name=key.split(".")[-1])
    parts = key.split(".")
    if len(parts) != 3 or parts[0] not in _KINDS:
        raise _bad(text, key, "a scaled field written KIND.CLASS.FIELD*=..., KIND device or network, CLASS a class name or *")
    kind, cls, field = _KINDS[parts[0]], parts[1], parts[2]
    canonical = FIELD_ALIASES.get(field, field)
    if canonical not in _FIELDS[kind]:
        short = sorted(a for a, f in FIELD_ALIASES.items() if f in _FIELDS[kind])
        raise _bad(text, field, f"a {kind} field to scale, one of {_FIELDS[kind]} (or {short})")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v <= 1e6:
            raise _bad(text, v, "factors that are numbers above 0 (and at most 1e6)")
    name = field if cls == "*" else f"{cls}.{field}"
    return Axis(key=f"fleet.scale.{kind}.{cls}.{canonical}", values=values, name=name, factor=True)


def _values(text: str, raw: str) -> tuple[Any, ...]:
    if not raw.strip():
        raise _bad(text, raw, "at least one value after '='")
    try:
        values, _ = parse_yaml(f"[{raw}]", "--grid")
    except ConfigError:
        raise _bad(text, raw, "comma-separated values, each a YAML scalar or flow mapping (quote values holding commas)") from None
    if not isinstance(values, list) or not values or any(v is None for v in values):
        raise _bad(text, raw, "comma-separated values, none of them empty")
    seen = [repr(v) for v in values]
    if len(set(seen)) != len(seen):
        raise _bad(text, raw, "each value once")
    return tuple(values)


def parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-4`` (inclusive), or both mixed: distinct non-negative seeds.

    Raises:
        ConfigError: anything else, or more than :data:`MAX_SEEDS` seeds.
    """
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d{1,18})\s*(?:-\s*(\d{1,18})\s*)?", part)
        if not m:
            raise ConfigError("--seeds", [(text[:80], None, part, "seeds such as 0,1,2 or 0-4")])
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if hi < lo or hi - lo + len(seeds) >= MAX_SEEDS:
            raise ConfigError("--seeds", [(text[:80], None, part, f"an increasing range; at most {MAX_SEEDS} seeds in all")])
        seeds += range(lo, hi + 1)
    if len(set(seeds)) != len(seeds):
        raise ConfigError("--seeds", [(text[:80], None, text[:80], "each seed once")])
    return seeds


def _value_label(axis_name: str, key: str, value: Any, factor: bool) -> str:
    if factor:
        return f"{axis_name}-x{value:g}"
    if isinstance(value, dict):
        inner = value.get("name") or "-".join(f"{k}{_plain(v)}" for k, v in value.items())
        params = value.get("params") if isinstance(value.get("params"), dict) else {}
        text = str(inner) + "".join(f"-{k}{_plain(v)}" for k, v in params.items())
        return text if key == "method" else f"{axis_name}-{text}"
    if key in ("method.name",):
        return _plain(value)
    return f"{axis_name}-{_plain(value)}"


def _plain(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def point_labels(axes: list[Axis], points: list[list[tuple[str, Any]]]) -> list[str]:
    """Short, readable, unique folder names: one per point (its swept values, seeds
    excluded), e.g. ``fedlora_up_mbps-x0.25``; ``point`` when nothing is swept."""
    by_key = {a.key: a for a in axes}
    names: dict[str, str] = {}
    keys = list(dict.fromkeys(k for p in points for k, _ in p))
    for k in keys:
        short = by_key[k].name if k in by_key else k.split(".")[-1]
        names[k] = short if sum(1 for o in keys if (by_key[o].name if o in by_key else o.split(".")[-1]) == short) == 1 else k
    labels = []
    for p in points:
        parts = [_value_label(names[k], k, v, k in by_key and by_key[k].factor) for k, v in p]
        labels.append(safe_name("_".join(parts)) if parts else "point")
    if len(set(labels)) != len(labels):
        labels = [f"{i:02d}-{label}" for i, label in enumerate(labels)]
    return labels


def parse_names(text: str, count: int) -> list[str]:
    """``--name-points a,b,c``: one safe folder name per point, in the order ``fedsim
    validate`` lists them.

    Raises:
        ConfigError: not one name per point, or two names alike once made safe.
    """
    names = [safe_name(n.strip()) for n in text.split(",")]
    if len(names) != count:
        raise ConfigError("--name-points", [(text[:80], None, len(names), f"one name per point: {count} names, comma-separated")])
    if len(set(names)) != len(names):
        raise ConfigError("--name-points", [(text[:80], None, names, "distinct names (after reducing them to A-Za-z0-9_.-)")])
    return names
