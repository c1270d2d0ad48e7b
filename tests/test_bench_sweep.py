"""benchmarks/bench_sweep.py: the scaled profiles it sweeps over."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import load_benchmark

from fedsim.fleet.profiles import load_profiles


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_sweep")


def test_scaled_profiles_divide_every_uplink_and_nothing_else(bench, tmp_path):
    # Execute
    base = load_profiles(None)
    quarter = load_profiles(bench.scaled_profiles(tmp_path / "p", 0.25))
    # Assert: the same seeded draws, uplinks a quarter, downlinks unchanged
    assert len(base.networks) >= 5
    for name in base.networks:
        a, b = base.network(name), quarter.network(name)
        up_a, up_b = a.uplink_mbps.sample(np.random.default_rng(1), 50), b.uplink_mbps.sample(np.random.default_rng(1), 50)
        np.testing.assert_allclose(up_b, up_a * 0.25, rtol=1e-12)
        down_a = a.downlink_mbps.sample(np.random.default_rng(1), 50)
        assert np.array_equal(down_a, b.downlink_mbps.sample(np.random.default_rng(1), 50))


def test_first_divergence_names_the_first_round_whose_arrivals_differ(bench):
    same, other = frozenset({1, 2}), frozenset({1, 3})
    assert bench.first_divergence([same, same], [same, same]) is None
    assert bench.first_divergence([same, same], [same, other]) == 1
