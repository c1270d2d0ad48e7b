"""Shared fixtures: YAML files written into tmp_path, the shipped profiles, a tiny scenario."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from fedsim.profiles import load_profiles

# A scenario that runs in milliseconds: surrogate trainer, tiny-bert shape (config only),
# a 60-device fleet of lab boards (always available, so every round has clients).
TINY_SCENARIO = """\
name: tiny
seed: 3
fleet:
  size: 60
  devices: {jetson-tx2: 0.5, phone-high: 0.5}
  networks: {wifi: 1.0}
  network_by_device: {jetson-tx2: {ethernet: 1.0}}
model:
  name_or_path: tiny-bert
data:
  max_length: 32
local:
  batch_size: 4
  local_steps: 2
trainer:
  kind: surrogate
  surrogate: {noise_std: 0.01}
engine:
  clients_per_round: 4
  over_selection: 1.5
  max_rounds: 4
"""


@pytest.fixture
def write_yaml(tmp_path: Path):
    """``write_yaml(name, text)`` writes dedented ``text`` to ``tmp_path/name``."""

    def write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return write


@pytest.fixture
def tiny_scenario(write_yaml) -> Path:
    return write_yaml("tiny.yaml", TINY_SCENARIO)


@pytest.fixture(scope="session")
def shipped_profiles():
    return load_profiles()
