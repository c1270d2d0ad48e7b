"""Partitioning invariants: coverage, sizes, seeds, skew, replication, local splits."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.training.config import PartitionSpec
from fedsim.training.partition import (
    make_partition,
    partition_dirichlet,
    partition_iid,
    partition_quantity,
    replication_factor,
    split_local,
)


def _labels(n: int = 2000, classes: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, classes, size=n)


def test_iid_assigns_every_example_exactly_once_in_equal_shards():
    # Execute
    shards = partition_iid(1003, 10, np.random.default_rng(1))
    # Assert
    assert np.array_equal(np.sort(shards.indices), np.arange(1003))
    assert shards.sizes.max() - shards.sizes.min() <= 1
    assert shards.num_clients == 10


def test_dirichlet_assigns_every_example_exactly_once():
    # Prepare
    labels = _labels()
    # Execute
    shards = partition_dirichlet(labels, 50, 0.1, np.random.default_rng(2), min_examples=5)
    # Assert
    assert np.array_equal(np.sort(shards.indices), np.arange(labels.size))
    assert shards.sizes.min() >= 5


def test_dirichlet_small_alpha_skews_labels_more_than_iid():
    # Prepare
    labels = _labels(4000, classes=10)

    def mean_top_share(shards) -> float:
        return float(np.mean([np.bincount(labels[shards[i]], minlength=10).max() / len(shards[i])
                              for i in range(shards.num_clients)]))

    # Execute
    skewed = partition_dirichlet(labels, 40, 0.05, np.random.default_rng(3))
    iid = partition_iid(labels.size, 40, np.random.default_rng(3))
    # Assert: with alpha=0.05 most of a client's examples share one label
    assert mean_top_share(skewed) > 0.6
    assert mean_top_share(iid) < 0.25


def test_quantity_skew_keeps_minimum_and_total():
    # Execute
    shards = partition_quantity(1000, 20, 0.3, np.random.default_rng(4), min_examples=10)
    # Assert
    assert shards.sizes.min() >= 10
    assert shards.sizes.sum() == 1000
    assert shards.sizes.max() > 3 * shards.sizes.min()
    assert np.array_equal(np.sort(shards.indices), np.arange(1000))


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_same_seed_same_partition_other_seed_other_partition(scheme):
    # Prepare
    labels = _labels(500)
    spec = PartitionSpec(scheme=scheme, alpha=0.5)
    # Execute
    a = make_partition(labels, 7, spec, np.random.default_rng(5))
    b = make_partition(labels, 7, spec, np.random.default_rng(5))
    c = make_partition(labels, 7, spec, np.random.default_rng(6))
    # Assert
    assert np.array_equal(a.train.indices, b.train.indices) and np.array_equal(a.train.offsets, b.train.offsets)
    assert np.array_equal(a.test.indices, b.test.indices)
    assert not np.array_equal(a.train.indices, c.train.indices)


@pytest.mark.parametrize("scheme", ["iid", "dirichlet", "quantity"])
def test_large_fleet_replicates_examples_evenly(scheme):
    # Prepare: 3,000 clients x 4 examples needs 12,000 slots from 1,000 examples
    labels = _labels(1000)
    spec = PartitionSpec(scheme=scheme, alpha=0.3, min_examples_per_client=4, local_test_fraction=0.25)
    # Execute
    part = make_partition(labels, 3000, spec, np.random.default_rng(7))
    # Assert
    k = replication_factor(1000, 3000, 4)
    assert part.replication == k == 12
    everything = np.concatenate([part.train.indices, part.test.indices])
    assert np.array_equal(np.bincount(everything, minlength=1000), np.full(1000, k))
    assert (part.train.sizes + part.test.sizes).min() >= 4
    assert part.train.offsets.shape == (3001,)


def test_split_local_keeps_shards_and_at_least_one_train_example():
    # Prepare
    shards = partition_quantity(300, 30, 0.2, np.random.default_rng(8), min_examples=1)
    # Execute
    train, test = split_local(shards, 0.2, np.random.default_rng(9))
    # Assert
    for i in range(shards.num_clients):
        assert sorted(np.concatenate([train[i], test[i]])) == sorted(shards[i])
        assert len(train[i]) >= 1
        assert len(test[i]) == min(round(len(shards[i]) * 0.2), len(shards[i]) - 1)
