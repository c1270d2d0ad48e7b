"""Seeded streams and draws keyed by device (common random numbers)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedsim.core.rng import DeviceRandom, Seeds


@settings(max_examples=60, deadline=None)
@given(ids=st.lists(st.integers(0, 10**6), min_size=1, max_size=30, unique=True), data=st.data())
def test_a_device_draws_the_same_numbers_whatever_devices_are_drawn_beside_it(ids, data):
    # Prepare: the same key, the devices in another order and a subset of them
    ids = np.array(ids)
    perm = data.draw(st.permutations(range(ids.size)))
    sub = np.array(perm[: data.draw(st.integers(1, ids.size))])
    full, part = DeviceRandom(7, ids), DeviceRandom(7, ids[sub])
    # Execute: the same sequence of calls
    a = [full.random(ids.size), full.random((ids.size, 3)), full.seeds()]
    b = [part.random(sub.size), part.random((sub.size, 3)), part.seeds()]
    # Assert: each device's numbers are its own
    for x, y in zip(a, b):
        assert np.array_equal(x[sub], y)


def test_device_draws_are_uniform_and_independent_across_devices_columns_and_keys():
    ids = np.arange(50_000)
    d = DeviceRandom(Seeds(0).int_seed("devices", 3), ids)
    u = d.random((ids.size, 2))
    other = DeviceRandom(Seeds(0).int_seed("devices", 4), ids).random(ids.size)

    assert np.all((u > 0) & (u < 1))
    assert stats.kstest(u[:, 0], "uniform").pvalue > 1e-3
    assert stats.kstest(u[:, 1], "uniform").pvalue > 1e-3
    # Neighbouring devices, neighbouring columns, neighbouring keys: no correlation
    for x, y in [(u[:-1, 0], u[1:, 0]), (u[:, 0], u[:, 1]), (u[:, 0], other)]:
        assert abs(np.corrcoef(x, y)[0, 1]) < 0.02
    # Pairs of columns fill the unit square evenly (10 x 10 cells)
    counts = np.histogram2d(u[:, 0], u[:, 1], bins=10, range=[[0, 1], [0, 1]])[0].ravel()
    assert stats.chisquare(counts).pvalue > 1e-3


def test_device_seeds_are_63_bit_and_distinct():
    s = DeviceRandom(11, np.arange(10_000)).seeds()
    assert s.dtype == np.int64 and s.min() >= 0 and np.unique(s).size == s.size


def test_the_smallest_priorities_pick_devices_uniformly_without_replacement():
    # Prepare: pick 3 of 12 devices in 6000 rounds
    ids, k, rounds = np.arange(12), 3, 6000
    seeds = Seeds(5)
    counts = np.zeros(ids.size)
    for r in range(rounds):
        picked = ids[np.argsort(seeds.devices("select", r, ids).priority())[:k]]
        assert np.unique(picked).size == k
        counts[picked] += 1
    # Assert: every device picked in a quarter of the rounds
    assert stats.chisquare(counts).pvalue > 1e-3


def test_device_random_refuses_a_size_other_than_its_devices():
    d = DeviceRandom(1, np.arange(4))
    with pytest.raises(ValueError, match="4 devices"):
        d.random(3)
    with pytest.raises(ValueError, match="4 devices"):
        d.random((4, 2, 2))
    with pytest.raises(ValueError, match="one-dimensional"):
        DeviceRandom(1, np.zeros((2, 2), dtype=int))
