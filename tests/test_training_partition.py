"""Partitioning invariants: coverage, sizes, seeds, skew, replication, local splits and test shards."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.learning.real.config import PartitionSpec
from fedsim.learning.real.partition import (
    Shards,
    label_allocation,
    local_test_from_split,
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


# -- local test shards drawn from the test split ---------------------------------------


def test_label_allocation_sums_to_size_and_follows_the_proportions():
    # Prepare
    counts = np.array([[9, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 5], [0, 0, 0, 0]])
    # Execute
    alloc = label_allocation(counts, 20)
    # Assert
    assert alloc.sum(axis=1).tolist() == [20, 20, 20, 0]
    assert alloc[0].tolist() == [18, 2, 0, 0] and alloc[2].tolist() == [0, 0, 0, 20]
    assert sorted(alloc[1][:3].tolist()) == [6, 7, 7] and alloc[1][3] == 0
    share = counts[:3] / counts[:3].sum(axis=1, keepdims=True)
    assert np.abs(alloc[:3] / 20 - share).max() < 1 / 20


def test_local_test_from_split_has_size_and_label_mix_of_each_train_shard():
    # Prepare: 1,000 clients on 4,000 training examples, alpha 0.1; a test split of 1,500
    train_labels = _labels(4000)
    test_labels = _labels(1500, seed=1)
    spec = PartitionSpec(scheme="dirichlet", alpha=0.1, local_test="test_split", local_test_examples=20)
    # Execute
    part = make_partition(train_labels, 1000, spec, np.random.default_rng(3), test_labels=test_labels)
    # Assert: 20 test-split examples a client, distinct, the client's label proportions within 1/20
    assert part.test_source == "test"
    assert (part.test.sizes == 20).all() and part.test.indices.max() < 1500
    assert np.array_equal(np.sort(part.train.indices), np.arange(4000))  # nothing held out of training
    for i in range(0, 1000, 7):
        train_mix = np.bincount(train_labels[part.train[i]], minlength=4) / part.train.sizes[i]
        test_mix = np.bincount(test_labels[part.test[i]], minlength=4) / 20
        assert np.abs(test_mix - train_mix).max() < 1 / 20 + 1e-9
        assert np.unique(part.test[i]).size == 20


def test_local_test_from_split_is_seeded_and_wraps_only_when_a_class_is_short():
    # Prepare: a test split with 3 examples of class 1
    train_labels = np.array([0] * 50 + [1] * 50)
    test_labels = np.array([0] * 40 + [1] * 3)
    train = partition_iid(100, 4, np.random.default_rng(0))
    # Execute
    a = local_test_from_split(train_labels, train, test_labels, 20, np.random.default_rng(5))
    b = local_test_from_split(train_labels, train, test_labels, 20, np.random.default_rng(5))
    c = local_test_from_split(train_labels, train, test_labels, 20, np.random.default_rng(6))
    # Assert
    assert np.array_equal(a.indices, b.indices) and not np.array_equal(a.indices, c.indices)
    assert (a.sizes == 20).all()
    for i in range(4):
        ones = a[i][test_labels[a[i]] == 1]
        assert set(ones.tolist()) == {40, 41, 42}  # every class-1 example, then repeats


def test_local_test_from_split_skips_classes_the_test_split_lacks():
    # Prepare: client 0 holds only class 2, which the test split lacks
    train = Shards.from_sizes(np.array([3, 3]), np.arange(6))
    train_labels = np.array([2, 2, 2, 0, 1, 1])
    test_labels = np.array([0, 0, 1, 1, 1, 0])
    # Execute
    test = local_test_from_split(train_labels, train, test_labels, 6, np.random.default_rng(0))
    # Assert: client 0 falls back to the test split's mix; client 1 keeps 1/3 : 2/3
    assert test.sizes.tolist() == [6, 6]
    assert np.bincount(test_labels[test[0]], minlength=2).tolist() == [3, 3]
    assert np.bincount(test_labels[test[1]], minlength=2).tolist() == [2, 4]


def test_test_split_local_shards_need_the_test_labels():
    spec = PartitionSpec(local_test="test_split")
    with pytest.raises(ValueError, match="test split"):
        make_partition(_labels(100), 5, spec, np.random.default_rng(0))
