"""Shared fixtures: YAML files written into tmp_path, the shipped profiles, a tiny scenario."""

from __future__ import annotations

import importlib.util
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from fedsim.fleet.profiles import load_profiles

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


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def shipped_profiles():
    return load_profiles()


@pytest.fixture(scope="session")
def tokenizer():
    """``(tokenizer, identity)`` of ``tiny-bert`` (MiniLM's), for data loading tests."""
    from fedsim.learning.real.config import ModelSpec
    from fedsim.learning.real.data import tokenizer_identity
    from fedsim.learning.real.model import load_tokenizer

    tok, name = load_tokenizer(ModelSpec(name_or_path="tiny-bert"))
    return tok, tokenizer_identity(tok, name)


@pytest.fixture
def tiny_ctx():
    """``tiny_ctx(round_idx, n=8)``: a RoundContext over a small hand-made fleet.

    Device i has throughput (i + 1) GFLOP/s, memory cap 2 GB (devices 0 and 1: 0.3 GB),
    links of (i + 1) Mbit/s up and 4x that down, 20 ms latency.
    """
    import numpy as np

    from fedsim.core.costmodel import CostCoefficients, ModelShape
    from fedsim.fleet.fleet import Fleet
    from fedsim.methods.base import RoundContext
    from fedsim.core.plan import ClientPlan

    def make(round_idx: int = 0, n: int = 8, ids=None, deadline_s=None):
        f32 = lambda v: np.full(n, v, dtype=np.float32)  # noqa: E731
        i = np.arange(n, dtype=float)
        cap = np.full(n, 2e9)
        cap[:2] = 0.3e9
        fleet = Fleet(["d"], ["n"], np.zeros(n, np.int16), np.zeros(n, np.int16), (i + 1) * 1e9, cap,
                      4e6 * (i + 1), 1e6 * (i + 1), f32(0.02), f32(0), f32(0), f32(1e-9), f32(1e-7), f32(1e-7),
                      f32(0), f32(24), f32(0), f32(0))
        shape = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
        ids = np.arange(n) if ids is None else np.asarray(ids)
        return RoundContext(round_idx=round_idx, now_s=0.0, device_ids=ids, fleet=fleet, shape=shape,
                            base_plan=ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64),
                            coefficients=CostCoefficients(), deadline_s=deadline_s, rng=np.random.default_rng(0))

    return make


# ------------------------------------------------------------------ fuzz case counts

_FUZZ_CASES: Counter = Counter()


@pytest.fixture(scope="session")
def fuzz_cases() -> Counter:
    """Counts of generated cases per fuzz test, reported in the terminal summary."""
    return _FUZZ_CASES


def pytest_sessionfinish(session):
    # An xdist worker hands its counts to the controller (see pytest_testnodedown).
    if hasattr(session.config, "workeroutput"):
        session.config.workeroutput["fuzz_cases"] = dict(_FUZZ_CASES)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    _FUZZ_CASES.update(getattr(node, "workeroutput", {}).get("fuzz_cases", {}))


def pytest_terminal_summary(terminalreporter):
    if _FUZZ_CASES:
        parts = ", ".join(f"{name}: {n}" for name, n in sorted(_FUZZ_CASES.items()))
        terminalreporter.write_line(f"hypothesis fuzz cases: {sum(_FUZZ_CASES.values())} ({parts})")
