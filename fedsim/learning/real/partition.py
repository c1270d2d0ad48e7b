"""Splitting a training set among thousands of clients (client i = device i).

Pure numpy; all randomness comes from the ``numpy.random.Generator`` passed in.

Shards are stored in CSR form (:class:`Shards`: ``offsets`` + ``indices``), so a fleet of
100,000 clients costs two arrays, not 100,000 Python lists.

Schemes (sizes first, then content):

* ``iid``: equal sizes (differing by at most one), examples dealt from a permutation.
* ``quantity``: sizes ``min + Multinomial(rest, Dirichlet(alpha * 1_N))``; content IID.
* ``dirichlet``: equal sizes; client i draws its label mix ``p_i ~ Dirichlet(alpha * 1_C)``
  and fills its shard class by class from what is left of each class. When a class runs
  out, the client's mix is renormalised over the classes still available (so the last
  clients filled are less skewed). This is client-centric and always terminates, unlike
  the "resample until every client has min examples" recipe, which stalls for large N.

Large fleets: when ``num_clients * min_examples_per_client`` exceeds the data set size
``n``, the index set is replicated ``k = ceil(N * min / n)`` times (each copy shuffled)
before partitioning, so every example is assigned exactly ``k`` times across the fleet
and clients share examples; this is the large-fleet analogue of sampling with
replacement, and it keeps every client at or above the minimum. With ``k = 1`` (enough
data) every example is assigned exactly once.

Local test shards (personalised evaluation), two sources:

* ``holdout`` (default): a ``local_test_fraction`` of each client's shard is held out
  (:func:`split_local`); on a fleet of 1,000 clients sharing 10,000 examples that is about
  2 examples a client.
* ``test_split``: each client keeps its whole shard for training and gets
  ``local_test_examples`` examples of the *test* split with its train shard's label
  proportions (:func:`local_test_from_split`). The test split is never trained on, so
  clients may share test examples (20news4: 1,000 clients x 20 draws from 6,421) and the
  global test set is not touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsim.learning.real.config import PartitionSpec

__all__ = [
    "Shards",
    "Partition",
    "replication_factor",
    "equal_sizes",
    "quantity_sizes",
    "partition_iid",
    "partition_dirichlet",
    "partition_quantity",
    "split_local",
    "label_allocation",
    "local_test_from_split",
    "make_partition",
]


@dataclass(frozen=True)
class Shards:
    """Example indices of every client in CSR form.

    Client ``i`` holds ``indices[offsets[i]:offsets[i + 1]]``.
    """

    offsets: np.ndarray
    indices: np.ndarray

    @property
    def num_clients(self) -> int:
        return int(self.offsets.shape[0] - 1)

    @property
    def sizes(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, client: int) -> np.ndarray:
        return self.indices[self.offsets[client] : self.offsets[client + 1]]

    def __len__(self) -> int:
        return self.num_clients

    @classmethod
    def from_sizes(cls, sizes: np.ndarray, indices: np.ndarray) -> Shards:
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        if offsets[-1] != len(indices):
            raise ValueError(f"shard sizes sum to {offsets[-1]} but {len(indices)} indices were given")
        return cls(offsets, np.asarray(indices, dtype=np.int64))


@dataclass(frozen=True)
class Partition:
    """Every client's local train and local test shard, plus the replication factor.

    ``test_source`` names the split ``test`` indexes: ``train`` (held out of the client's
    shard) or ``test`` (drawn from the test split).
    """

    train: Shards
    test: Shards
    replication: int = 1
    test_source: str = "train"

    @property
    def num_clients(self) -> int:
        return self.train.num_clients


def replication_factor(n: int, num_clients: int, min_examples: int) -> int:
    """How many times each example must be used so that every client gets ``min_examples``."""
    if n < 1:
        raise ValueError("cannot partition an empty data set")
    return max(1, math.ceil(num_clients * min_examples / n))


def _replicated_permutation(n: int, k: int, rng: np.random.Generator) -> np.ndarray:
    return np.concatenate([rng.permutation(n) for _ in range(k)])


def equal_sizes(total: int, num_clients: int, rng: np.random.Generator) -> np.ndarray:
    """Sizes summing to ``total`` that differ by at most one (the larger ones at random)."""
    sizes = np.full(num_clients, total // num_clients, dtype=np.int64)
    sizes[rng.choice(num_clients, size=total % num_clients, replace=False)] += 1
    return sizes


def quantity_sizes(
    total: int, num_clients: int, alpha: float, min_examples: int, rng: np.random.Generator
) -> np.ndarray:
    """Skewed sizes: each client gets ``min_examples`` plus a Dirichlet(alpha) share of the rest."""
    rest = total - num_clients * min_examples
    if rest < 0:
        raise ValueError(f"{total} examples cannot give {num_clients} clients {min_examples} each")
    share = _dirichlet_rows(np.full((1, num_clients), alpha), rng)[0]
    return min_examples + rng.multinomial(rest, share).astype(np.int64)


def _dirichlet_rows(alpha: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dirichlet draws row by row via Gamma variates, robust to tiny alpha.

    ``rng.dirichlet`` returns NaN when every Gamma variate underflows to 0 (alpha << 1);
    such a row becomes one-hot on a random entry, which is the alpha -> 0 limit.
    """
    g = rng.gamma(alpha)
    total = g.sum(axis=1, keepdims=True)
    dead = total[:, 0] <= 0
    if dead.any():
        g[dead] = 0.0
        g[np.flatnonzero(dead), rng.integers(0, alpha.shape[1], size=int(dead.sum()))] = 1.0
        total = g.sum(axis=1, keepdims=True)
    return g / total


def partition_iid(n: int, num_clients: int, rng: np.random.Generator, min_examples: int = 1) -> Shards:
    """Equal-size shards dealt from a (replicated, see module doc) permutation."""
    k = replication_factor(n, num_clients, min_examples)
    order = _replicated_permutation(n, k, rng)
    return Shards.from_sizes(equal_sizes(n * k, num_clients, rng), order)


def partition_quantity(
    n: int, num_clients: int, alpha: float, rng: np.random.Generator, min_examples: int = 1
) -> Shards:
    """Quantity skew: Dirichlet(alpha) client sizes, IID content."""
    k = replication_factor(n, num_clients, min_examples)
    order = _replicated_permutation(n, k, rng)
    return Shards.from_sizes(quantity_sizes(n * k, num_clients, alpha, min_examples, rng), order)


def partition_dirichlet(
    labels: np.ndarray, num_clients: int, alpha: float, rng: np.random.Generator, min_examples: int = 1
) -> Shards:
    """Label skew: each client's label mix ~ Dirichlet(alpha); equal client sizes.

    Args:
        labels: ``(n,)`` integer class of every example.
        num_clients: Number of clients.
        alpha: Concentration; small alpha = each client sees few classes.
        rng: Source of randomness.
        min_examples: Minimum examples per client (triggers replication, see module doc).
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    k = replication_factor(n, num_clients, min_examples)
    classes, inverse = np.unique(labels, return_inverse=True)
    num_classes = classes.shape[0]
    # Per class, a shuffled pool of example indices (replicated k times) and a read pointer.
    pools = []
    for c in range(num_classes):
        members = np.flatnonzero(inverse == c)
        pools.append(np.concatenate([rng.permutation(members) for _ in range(k)]))
    remaining = np.array([p.shape[0] for p in pools], dtype=np.int64)
    taken = np.zeros(num_classes, dtype=np.int64)

    sizes = equal_sizes(n * k, num_clients, rng)
    mixes = _dirichlet_rows(np.full((num_clients, num_classes), alpha), rng)
    out = np.empty(n * k, dtype=np.int64)
    pos = 0
    for i in range(num_clients):
        counts = np.zeros(num_classes, dtype=np.int64)
        need = int(sizes[i])
        mix = mixes[i]
        while need > 0:
            avail = remaining - counts
            p = np.where(avail > 0, mix, 0.0)
            if p.sum() <= 0:  # the client's classes are exhausted: fall back to what is left
                p = avail.astype(float)
            draw = rng.multinomial(need, p / p.sum())
            draw = np.minimum(draw, avail)
            counts += draw
            need -= int(draw.sum())
        for c in np.flatnonzero(counts):
            m = int(counts[c])
            out[pos : pos + m] = pools[c][taken[c] : taken[c] + m]
            taken[c] += m
            pos += m
        remaining -= counts
    return Shards.from_sizes(sizes, out)


def split_local(shards: Shards, test_fraction: float, rng: np.random.Generator) -> tuple[Shards, Shards]:
    """Split every client's shard into local train and local test.

    A client keeps ``round(size * test_fraction)`` examples for testing, but always at
    least one for training.
    """
    sizes = shards.sizes
    n_test = np.minimum(np.rint(sizes * test_fraction).astype(np.int64), np.maximum(sizes - 1, 0))
    n_train = sizes - n_test
    # Shuffle within each shard at once: sort by (client, random key).
    owner = np.repeat(np.arange(shards.num_clients), sizes)
    order = np.lexsort((rng.random(owner.shape[0]), owner))
    shuffled = shards.indices[order]
    rank = np.arange(owner.shape[0]) - shards.offsets[owner]
    is_test = rank < n_test[owner]
    return (
        Shards.from_sizes(n_train, shuffled[~is_test]),
        Shards.from_sizes(n_test, shuffled[is_test]),
    )


def label_allocation(counts: np.ndarray, size: int) -> np.ndarray:
    """Split ``size`` examples over the classes in proportion to each row of ``counts``.

    Largest remainder: every class gets ``floor(size * p)`` and the rest go one each to
    the classes with the largest fractional parts (ties: the lower class index), so each
    class's share is within ``1 / size`` of ``p``. A row of zeros gets zeros.

    Args:
        counts: ``(clients, classes)`` non-negative counts (or weights).
        size: Examples per row.
    """
    counts = np.asarray(counts, dtype=float)
    total = counts.sum(axis=1, keepdims=True)
    share = np.divide(counts, total, out=np.zeros_like(counts), where=total > 0) * size
    base = np.floor(share).astype(np.int64)
    rest = np.where(total[:, 0] > 0, size - base.sum(axis=1), 0)
    rank = np.argsort(np.argsort(-(share - base), axis=1, kind="stable"), axis=1, kind="stable")
    return base + (rank < rest[:, None])


def local_test_from_split(
    train_labels: np.ndarray, train: Shards, test_labels: np.ndarray, size: int, rng: np.random.Generator
) -> Shards:
    """Every client's local test shard: ``size`` test-split examples, its label mix kept.

    Client ``i`` gets :func:`label_allocation` of its train shard's label counts; classes
    absent from the test split are left out (the rest renormalised). Per class, one
    seeded permutation of the class's test examples; a client reads its examples of that
    class as a window of the permutation at a random start, so they are distinct unless
    it needs more than the class holds (then the window wraps). Vectorised: no loop over
    clients.

    Args:
        train_labels: ``(n_train,)`` class of every training example.
        train: The clients' train shards (indices into ``train_labels``).
        test_labels: ``(n_test,)`` class of every test example.
        size: Local test examples per client.
        rng: Source of randomness.
    """
    train_labels = np.asarray(train_labels)
    test_labels = np.asarray(test_labels)
    classes = np.union1d(np.unique(train_labels), np.unique(test_labels))
    num_classes = classes.size
    n = train.num_clients
    owner = np.repeat(np.arange(n), train.sizes)
    cls_train = np.searchsorted(classes, train_labels[train.indices])
    counts = np.zeros((n, num_classes), dtype=np.int64)
    np.add.at(counts, (owner, cls_train), 1)
    cls_test = np.searchsorted(classes, test_labels)
    pool_sizes = np.bincount(cls_test, minlength=num_classes)
    if pool_sizes.sum() == 0:
        raise ValueError("the test split is empty: no local test shard can be drawn from it")
    weights = counts * (pool_sizes > 0)
    weights[weights.sum(axis=1) == 0] = pool_sizes  # no class of the client is in the test split
    need = label_allocation(weights, size)  # (clients, classes)
    pools = np.concatenate([rng.permutation(np.flatnonzero(cls_test == c)) for c in range(num_classes)])
    pool_start = np.concatenate([[0], np.cumsum(pool_sizes)[:-1]])
    starts = rng.integers(0, np.maximum(pool_sizes, 1), size=(n, num_classes))
    block = np.repeat(np.arange(n * num_classes), need.ravel())  # (client, class) of every draw, client-major
    rank = np.arange(block.size) - np.repeat(np.cumsum(need.ravel()) - need.ravel(), need.ravel())
    c = block % num_classes
    picked = pools[pool_start[c] + (starts.ravel()[block] + rank) % np.maximum(pool_sizes[c], 1)]
    return Shards.from_sizes(need.sum(axis=1), picked)


def make_partition(
    labels: np.ndarray,
    num_clients: int,
    spec: PartitionSpec,
    rng: np.random.Generator,
    test_labels: np.ndarray | None = None,
) -> Partition:
    """Partition a training set as a :class:`PartitionSpec` says.

    Args:
        labels: ``(n,)`` class of every training example.
        num_clients: Number of clients (= devices).
        spec: Scheme, alpha, local test source and size, minimum size.
        rng: Source of randomness (use a stream of its own, e.g. from ``spawn``).
        test_labels: Class of every test-split example; needed with ``local_test: test_split``.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    n = int(np.asarray(labels).shape[0])
    m = spec.min_examples_per_client
    if spec.scheme == "iid":
        shards = partition_iid(n, num_clients, rng, m)
    elif spec.scheme == "quantity":
        shards = partition_quantity(n, num_clients, spec.alpha, rng, m)
    else:
        shards = partition_dirichlet(labels, num_clients, spec.alpha, rng, m)
    k = replication_factor(n, num_clients, m)
    if spec.local_test == "test_split":
        if test_labels is None:
            raise ValueError("local_test 'test_split' needs the test split's labels")
        test = local_test_from_split(labels, shards, test_labels, spec.local_test_examples, rng)
        return Partition(shards, test, k, test_source="test")
    train, test = split_local(shards, spec.local_test_fraction, rng)
    return Partition(train, test, k)
