"""Device and network classes, loaded from the YAML files in ``device_profiles/``.

A profile directory holds any number of ``*.yaml`` files, each with a ``devices:`` and/or
a ``networks:`` mapping from class name to class. Each numeric field is a distribution
(:mod:`fedsim.fleet.distributions`), sampled per device when a fleet is built. Units are in the
field names and are the ones reports quote (GFLOP/s, GB, Mbit/s, ms); the fleet converts
them to SI units.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field, ValidationInfo, field_validator

from fedsim.core.configio import Spec, read_yaml, validate
from fedsim.fleet.distributions import Constant, Dist
from fedsim.core.errors import ConfigError

__all__ = [
    "DeviceClass",
    "NetworkClass",
    "Availability",
    "ProfileSet",
    "ProfileFile",
    "load_profiles",
    "default_profiles_dir",
]


# Finite upper bounds too: a value beyond them is a typo, and would overflow the
# products the cost model forms (time, energy) into infinity.
_BOUNDS = {
    "window_start_h": (0.0, 24.0),
    "window_len_h": (0.0, 24.0),
    "utc_offset_h": (-12.0, 14.0),
    "train_gflops_per_s": (1e-06, 1e9),
    "app_memory_gb": (0.001, 1e6),
    "straggle_slowdown": (1.0, 1e6),
    "joules_per_gflop": (0.0, 1e6),
    "downlink_mbps": (1e-06, 1e9),
    "uplink_mbps": (1e-06, 1e9),
    "latency_ms": (0.0, 1e9),
    "joules_per_mb_down": (0.0, 1e6),
    "joules_per_mb_up": (0.0, 1e6),
}


def _within(dist, low: float, high: float, what: str):
    lo, hi = dist.support[0], dist.reach
    if lo < low or hi > high:
        raise ValueError(f"{what} must stay within [{low:g}, {high:g}], but this distribution reaches [{lo:g}, {hi:g}] (add min/max)")
    return dist


class Availability(Spec):
    """When a device can train: a daily window in local time (on charger, idle, on Wi-Fi).

    A device is available while its local hour of day lies in
    ``[window_start_h, window_start_h + window_len_h)`` (wrapping at midnight), except on
    days it skips, each with probability ``skip_day_prob``. ``window_len_h: 24`` means
    always available (a lab board on mains power).
    """

    window_start_h: Dist = Field(description="local hour the window opens, 0-24")
    window_len_h: Dist = Field(description="window length in hours, 0-24")
    skip_day_prob: float = Field(0.0, ge=0.0, le=1.0, description="probability a day has no window")
    utc_offset_h: Dist = Field(Constant(value=0.0), description="time zone of the device, hours from UTC")
    source: str | None = None

    @field_validator("window_start_h", "window_len_h", "utc_offset_h")
    @classmethod
    def _in_range(cls, dist, info: ValidationInfo):
        low, high = _BOUNDS[info.field_name]
        return _within(dist, low, high, info.field_name)


class DeviceClass(Spec):
    """A kind of device: compute, memory, availability, reliability and energy."""

    description: str
    source: str | None = Field(None, description="where the figures come from")
    train_gflops_per_s: Dist = Field(description="effective fp32 training throughput, GFLOP/s")
    app_memory_gb: Dist = Field(description="memory the training app may use, GB (1e9 bytes)")
    availability: Availability
    straggle_prob: float = Field(ge=0.0, le=1.0, description="chance a round runs slowly")
    straggle_slowdown: Dist = Field(description="compute-time factor of a slow round, >= 1")
    dropout_prob: float = Field(ge=0.0, le=1.0, description="chance the device quits mid-round")
    joules_per_gflop: Dist = Field(description="energy of one GFLOP of training")

    @field_validator("train_gflops_per_s", "app_memory_gb", "straggle_slowdown", "joules_per_gflop")
    @classmethod
    def _in_range(cls, dist, info: ValidationInfo):
        low, high = _BOUNDS[info.field_name]
        return _within(dist, low, high, info.field_name)


class NetworkClass(Spec):
    """A kind of network link: asymmetric bandwidth, latency, reliability and energy."""

    description: str
    source: str | None = None
    downlink_mbps: Dist = Field(description="download bandwidth, Mbit/s")
    uplink_mbps: Dist = Field(description="upload bandwidth, Mbit/s")
    latency_ms: Dist = Field(description="round-trip latency per transfer, ms")
    dropout_prob: float = Field(0.0, ge=0.0, le=1.0, description="chance the link drops mid-round")
    joules_per_mb_down: Dist = Field(description="radio energy per MB (1e6 bytes) received")
    joules_per_mb_up: Dist = Field(description="radio energy per MB (1e6 bytes) sent")

    @field_validator("downlink_mbps", "uplink_mbps", "latency_ms", "joules_per_mb_down", "joules_per_mb_up")
    @classmethod
    def _in_range(cls, dist, info: ValidationInfo):
        low, high = _BOUNDS[info.field_name]
        return _within(dist, low, high, info.field_name)


class ProfileFile(Spec):
    """One profile YAML file: device and/or network classes by name."""

    devices: dict[str, DeviceClass] = Field(default_factory=dict)
    networks: dict[str, NetworkClass] = Field(default_factory=dict)


@dataclass(frozen=True)
class ProfileSet:
    """All device and network classes of a profile directory, with their source files."""

    devices: dict[str, DeviceClass]
    networks: dict[str, NetworkClass]
    files: dict[str, str]  # class name -> file it came from
    directory: str

    def device(self, name: str) -> DeviceClass:
        return self.devices[name]

    def network(self, name: str) -> NetworkClass:
        return self.networks[name]


def default_profiles_dir() -> Path:
    """``$FEDSIM_PROFILES``, else the ``device_profiles/`` folder of this checkout."""
    env = os.environ.get("FEDSIM_PROFILES")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "device_profiles"


def load_profiles(directory: str | Path | None = None) -> ProfileSet:
    """Load and validate every ``*.yaml`` file in ``directory``.

    Raises:
        ConfigError: a file is malformed, a value impossible, or a class defined twice.
    """
    directory = Path(directory) if directory is not None else default_profiles_dir()
    if directory.exists() and not directory.is_dir():
        raise ConfigError(directory, [("", None, ConfigError.MISSING, "is a file; expected a directory of device profile YAML files")])
    if not directory.is_dir():
        raise ConfigError(
            directory,
            [("", None, ConfigError.MISSING, "a directory of device profile YAML files; it does not exist (set fleet.profiles_dir or FEDSIM_PROFILES)")],
        )
    devices: dict[str, DeviceClass] = {}
    networks: dict[str, NetworkClass] = {}
    files: dict[str, str] = {}
    paths = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not paths:
        raise ConfigError(directory, [("", None, ConfigError.MISSING, "at least one *.yaml profile file; the directory has none")])
    for path in paths:
        data, lines = read_yaml(path)
        parsed = validate(ProfileFile, data or {}, file=path, lines=lines)
        for kind, source, target in (("devices", parsed.devices, devices), ("networks", parsed.networks, networks)):
            for name, cls in source.items():
                if name in target:
                    raise ConfigError(
                        path,
                        [(f"{kind}.{name}", lines.get((kind, name)), ConfigError.MISSING, f"a class name not already defined in {files[name]}")],
                    )
                target[name] = cls
                files[name] = str(path)
    return ProfileSet(devices=devices, networks=networks, files=files, directory=str(directory))
