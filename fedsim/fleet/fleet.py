"""A fleet of devices as a structure of numpy arrays.

Device ``i`` is row ``i`` of every array; there are no per-device Python objects, so a
million devices cost a few tens of MB and sample in about a second. A fleet is built from
a :class:`FleetSpec` (a mix of device and network classes) by :func:`sample_fleet`; a trace
(:mod:`fedsim.fleet.traces`) overwrites the arrays it measured.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from pydantic import Field, field_validator, model_serializer

from fedsim.core.configio import Spec

from fedsim.fleet.profiles import ProfileSet
from fedsim.fleet.scaling import ScaleSpec
from fedsim.fleet.traces import TraceSpec, trace_arrays

__all__ = ["FleetSpec", "Fleet", "sample_fleet"]

GB = 1e9
MBIT = 1e6
MB = 1e6


class FleetSpec(Spec):
    """The fleet part of a scenario."""

    size: int = Field(ge=1, le=100_000_000, description="number of devices")
    devices: dict[str, float] = Field(description="device class -> share of the fleet")
    networks: dict[str, float] = Field(description="network class -> share of the fleet")
    network_by_device: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="device class -> its own network mix (e.g. Jetsons on ethernet)",
    )
    profiles_dir: str | None = Field(None, description="profile folder (default: device_profiles/)")
    scale: ScaleSpec | None = Field(None, description="factors on profile fields (fedsim.fleet.scaling)")
    trace: TraceSpec | None = Field(None, description="device capacity / availability trace files (docs/traces.md)")

    @model_serializer(mode="wrap")
    def _without_unset_options(self, handler) -> dict:
        # Absent unless given: the resolved config.yaml of every run without them stays as it was.
        data = handler(self)
        for key in ("scale", "trace"):
            if data.get(key) is None:
                data.pop(key, None)
        return data

    @field_validator("devices", "networks")
    @classmethod
    def _check_mix(cls, mix: dict[str, float]) -> dict[str, float]:
        _check_shares(mix)
        return mix

    @field_validator("network_by_device")
    @classmethod
    def _check_nested(cls, mixes: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for mix in mixes.values():
            _check_shares(mix)
        return mixes

    def check_classes(self, profiles: ProfileSet) -> list[tuple[str, str, str]]:
        """Problems ``(path, value, expected)`` for class names the profiles lack."""
        problems = []
        known_d, known_n = sorted(profiles.devices), sorted(profiles.networks)
        for name in self.devices:
            if name not in profiles.devices:
                problems.append((f"fleet.devices.{name}", name, f"expected a device class, one of {known_d}"))
        for name in self.networks:
            if name not in profiles.networks:
                problems.append((f"fleet.networks.{name}", name, f"expected a network class, one of {known_n}"))
        for dname, mix in self.network_by_device.items():
            if dname not in self.devices:
                problems.append((f"fleet.network_by_device.{dname}", dname, f"expected a device class of fleet.devices, one of {sorted(self.devices)}"))
            for nname in mix:
                if nname not in profiles.networks:
                    problems.append((f"fleet.network_by_device.{dname}.{nname}", nname, f"expected a network class, one of {known_n}"))
        if self.scale is not None:
            problems += self.scale.class_problems(profiles)
        return problems


def _check_shares(mix: dict[str, float]) -> None:
    if not mix:
        raise ValueError("at least one class with a positive share")
    total = sum(mix.values())
    if any(v < 0 for v in mix.values()) or not 0 < total < float("inf"):
        raise ValueError("shares must be non-negative numbers, not all zero, with a finite sum (they are normalised)")


@dataclass
class Fleet:
    """Per-device arrays, all of length ``size``, in SI units.

    ``device_class`` and ``network_class`` index into ``device_names`` / ``network_names``.
    Per-round randomness (straggling factors, drop-outs) is drawn by the engine from the
    class profiles, not stored here.
    """

    device_names: list[str]
    network_names: list[str]
    device_class: np.ndarray  # int16
    network_class: np.ndarray  # int16
    flops_per_s: np.ndarray  # float64, effective training throughput
    mem_cap_bytes: np.ndarray  # float64, memory the training app may use
    down_bps: np.ndarray  # float64, bit/s
    up_bps: np.ndarray  # float64, bit/s
    latency_s: np.ndarray  # float32
    straggle_prob: np.ndarray  # float32
    dropout_prob: np.ndarray  # float32, device and link combined, per round
    joules_per_flop: np.ndarray  # float32
    joules_per_byte_down: np.ndarray  # float32
    joules_per_byte_up: np.ndarray  # float32
    window_start_h: np.ndarray  # float32, local hour the availability window opens
    window_len_h: np.ndarray  # float32
    skip_day_prob: np.ndarray  # float32
    utc_offset_h: np.ndarray  # float32

    @property
    def size(self) -> int:
        return int(self.device_class.size)

    def __len__(self) -> int:
        return self.size

    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray))

    def class_of(self, device_ids: np.ndarray) -> np.ndarray:
        """Device class names of ``device_ids`` (an object array, for records)."""
        return np.asarray(self.device_names, dtype=object)[self.device_class[device_ids]]

    def network_of(self, device_ids: np.ndarray) -> np.ndarray:
        return np.asarray(self.network_names, dtype=object)[self.network_class[device_ids]]

    def summary(self) -> dict:
        """Counts and medians per device class, for ``fedsim profiles`` and run logs."""
        out = {}
        for code, name in enumerate(self.device_names):
            sel = self.device_class == code
            if not sel.any():
                continue
            out[name] = {
                "count": int(sel.sum()),
                "median_gflops_per_s": float(np.median(self.flops_per_s[sel]) / 1e9),
                "median_mem_cap_gb": float(np.median(self.mem_cap_bytes[sel]) / GB),
                "median_up_mbps": float(np.median(self.up_bps[sel]) / MBIT),
                "median_down_mbps": float(np.median(self.down_bps[sel]) / MBIT),
            }
        return out


def _draw_classes(rng: np.random.Generator, mix: dict[str, float], names: list[str], n: int) -> np.ndarray:
    # By name, not in the order the YAML file lists the classes: reordering keys must
    # not change the fleet a seed gives.
    keys = sorted(mix)
    codes = np.array([names.index(k) for k in keys], dtype=np.int16)
    p = np.array([mix[k] for k in keys], dtype=float)
    return codes[rng.choice(len(codes), size=n, p=p / p.sum())]


def sample_fleet(spec: FleetSpec, profiles: ProfileSet, rng: np.random.Generator) -> Fleet:
    """Sample ``spec.size`` devices from the class mix, vectorised per class.

    Args:
        spec: Fleet part of a scenario (class names must exist in ``profiles``).
        profiles: Loaded device and network classes.
        rng: The fleet's own generator; the same seed gives the same fleet.
    """
    n = spec.size
    device_names = sorted(spec.devices)
    network_names = sorted(set(spec.networks).union(*spec.network_by_device.values()))
    device_class = _draw_classes(rng, spec.devices, device_names, n)
    network_class = _draw_classes(rng, spec.networks, network_names, n)
    for dname, mix in sorted(spec.network_by_device.items()):
        sel = np.flatnonzero(device_class == device_names.index(dname))
        network_class[sel] = _draw_classes(rng, mix, network_names, sel.size)

    f64 = lambda: np.empty(n, dtype=np.float64)  # noqa: E731
    f32 = lambda: np.empty(n, dtype=np.float32)  # noqa: E731
    fleet = Fleet(
        device_names=device_names,
        network_names=network_names,
        device_class=device_class,
        network_class=network_class,
        flops_per_s=f64(),
        mem_cap_bytes=f64(),
        down_bps=f64(),
        up_bps=f64(),
        latency_s=f32(),
        straggle_prob=f32(),
        dropout_prob=f32(),
        joules_per_flop=f32(),
        joules_per_byte_down=f32(),
        joules_per_byte_up=f32(),
        window_start_h=f32(),
        window_len_h=f32(),
        skip_day_prob=f32(),
        utc_offset_h=f32(),
    )
    device_drop = np.empty(n, dtype=np.float32)
    for code, name in enumerate(device_names):
        idx = np.flatnonzero(device_class == code)
        k = idx.size
        if k == 0:
            continue
        cls = profiles.device(name)
        fleet.flops_per_s[idx] = cls.train_gflops_per_s.sample(rng, k) * 1e9
        fleet.mem_cap_bytes[idx] = cls.app_memory_gb.sample(rng, k) * GB
        fleet.joules_per_flop[idx] = cls.joules_per_gflop.sample(rng, k) / 1e9
        fleet.straggle_prob[idx] = cls.straggle_prob
        device_drop[idx] = cls.dropout_prob
        av = cls.availability
        fleet.window_start_h[idx] = av.window_start_h.sample(rng, k)
        fleet.window_len_h[idx] = av.window_len_h.sample(rng, k)
        fleet.skip_day_prob[idx] = av.skip_day_prob
        fleet.utc_offset_h[idx] = av.utc_offset_h.sample(rng, k)
    link_drop = np.empty(n, dtype=np.float32)
    for code, name in enumerate(network_names):
        idx = np.flatnonzero(network_class == code)
        k = idx.size
        if k == 0:
            continue
        cls = profiles.network(name)
        fleet.down_bps[idx] = cls.downlink_mbps.sample(rng, k) * MBIT
        fleet.up_bps[idx] = cls.uplink_mbps.sample(rng, k) * MBIT
        fleet.latency_s[idx] = cls.latency_ms.sample(rng, k) / 1e3
        fleet.joules_per_byte_down[idx] = cls.joules_per_mb_down.sample(rng, k) / MB
        fleet.joules_per_byte_up[idx] = cls.joules_per_mb_up.sample(rng, k) / MB
        link_drop[idx] = cls.dropout_prob
    if spec.trace is not None and spec.trace.availability is not None:
        device_drop[:] = 0.0  # the trace says when a device leaves
    # The device quits or the link breaks: independent causes of the same outcome.
    fleet.dropout_prob[:] = 1.0 - (1.0 - device_drop) * (1.0 - link_drop)
    if spec.trace is not None:
        for name, values in trace_arrays(spec.trace, n).items():
            getattr(fleet, name)[:] = values
    return fleet
