"""Lossy compression of model tensors: top-k sparsification plus uniform quantisation.

Pure numpy (torch tensors are converted on the way in and out, torch is imported only
when one is given). Used by Caesar (:mod:`fedsim.methods.caesar`) for both directions.

A :class:`Level` keeps the ``ceil(keep_frac * n)`` entries of largest magnitude of each
tensor and quantises the kept values to ``bits`` bits, uniformly between their minimum and
maximum (nearest level; ``bits = 32`` sends fp32 values as they are). The wire format of
one tensor, whose size :func:`compressed_bytes` gives exactly, is

* the values: ``ceil(k * bits / 8)`` bytes, plus 8 bytes (fp32 minimum and maximum) when
  quantised;
* the positions, when ``k < n``: a bitmap (``ceil(n / 8)`` bytes) or ``k`` indices of
  ``ceil(log2 n)`` bits, whichever is smaller.

Shapes are known to both sides (the model layout), so they are not sent. Ratios are
relative to the dense fp32 tensor (``4 n`` bytes), the unit of the cost model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Level", "Compressed", "compressed_bytes", "state_ratio", "compress", "decompress", "roundtrip", "roundtrip_state"]

DENSE_BYTES_PER_VALUE = 4


@dataclass(frozen=True)
class Level:
    """A compression setting: fraction of entries kept and bits per kept value."""

    keep_frac: float = 1.0
    bits: int = 32

    def __post_init__(self) -> None:
        if not 0.0 < self.keep_frac <= 1.0:
            raise ValueError(f"Level.keep_frac must be in (0, 1], got {self.keep_frac}")
        if self.bits not in (1, 2, 4, 8, 16, 32):
            raise ValueError(f"Level.bits must be one of 1, 2, 4, 8, 16, 32, got {self.bits}")

    @property
    def is_identity(self) -> bool:
        return self.keep_frac >= 1.0 and self.bits == 32

    @property
    def tag(self) -> str:
        """Short label for plan names, e.g. ``k25q8`` (25 % kept, 8 bits)."""
        return "dense" if self.is_identity else f"k{round(self.keep_frac * 100):d}q{self.bits}"


def kept_count(n: int, keep_frac: float) -> int:
    return n if keep_frac >= 1.0 else max(1, min(n, math.ceil(keep_frac * n - 1e-9)))


def compressed_bytes(n: int, level: Level) -> int:
    """Bytes on the wire for a tensor of ``n`` values at ``level`` (see the module docstring)."""
    if n <= 0:
        return 0
    k = kept_count(n, level.keep_frac)
    values = math.ceil(k * level.bits / 8) + (8 if level.bits < 32 else 0)
    if k >= n:
        return values
    index_bits = max(1, math.ceil(math.log2(n)))
    return values + min(math.ceil(n / 8), math.ceil(k * index_bits / 8))


def state_ratio(sizes: Iterable[int], level: Level) -> float:
    """Compressed bytes / dense fp32 bytes of a state made of tensors of ``sizes`` values."""
    sizes = [int(s) for s in sizes if s > 0]
    dense = DENSE_BYTES_PER_VALUE * sum(sizes)
    if dense == 0:
        return 1.0
    return min(1.0, sum(compressed_bytes(s, level) for s in sizes) / dense)


@dataclass(frozen=True)
class Compressed:
    """One tensor as sent: kept positions, quantised codes and the range of the codes."""

    shape: tuple[int, ...]
    level: Level
    index: np.ndarray  # int64 flat positions of the kept entries (all of them when dense)
    codes: np.ndarray  # uint codes (quantised) or float32 values (bits = 32)
    lo: float
    hi: float

    @property
    def nbytes(self) -> int:
        return compressed_bytes(int(np.prod(self.shape, dtype=np.int64)), self.level)


def compress(x: np.ndarray, level: Level) -> Compressed:
    """Top-k by magnitude, then uniform quantisation of the kept values."""
    flat = np.asarray(x, dtype=np.float32).ravel()
    n = flat.size
    k = kept_count(n, level.keep_frac)
    if k >= n:
        index = np.arange(n, dtype=np.int64)
    else:
        index = np.sort(np.argpartition(np.abs(flat), n - k)[n - k :]).astype(np.int64)
    values = flat[index]
    if level.bits == 32 or values.size == 0:
        return Compressed(tuple(np.shape(x)), level, index, values.copy(), 0.0, 0.0)
    lo, hi = float(values.min()), float(values.max())
    steps = (1 << level.bits) - 1
    scale = (hi - lo) / steps if hi > lo else 1.0
    codes = np.rint((values - lo) / scale).astype(np.uint32 if level.bits > 16 else np.uint16)
    return Compressed(tuple(np.shape(x)), level, index, codes, lo, hi)


def decompress(c: Compressed) -> np.ndarray:
    """The dense float32 tensor the receiver reconstructs (zeros where nothing was kept)."""
    n = int(np.prod(c.shape, dtype=np.int64))
    out = np.zeros(n, dtype=np.float32)
    if c.level.bits == 32:
        out[c.index] = c.codes
    else:
        steps = (1 << c.level.bits) - 1
        scale = (c.hi - c.lo) / steps if c.hi > c.lo else 1.0
        out[c.index] = (c.lo + c.codes.astype(np.float64) * scale).astype(np.float32)
    return out.reshape(c.shape)


def roundtrip(x: Any, level: Level) -> tuple[Any, int]:
    """``(decompress(compress(x)), bytes sent)``; a torch tensor comes back as one."""
    if level.is_identity:
        n = int(np.prod(np.shape(x), dtype=np.int64))
        return x, DENSE_BYTES_PER_VALUE * n
    is_torch = hasattr(x, "detach")
    arr = x.detach().cpu().numpy() if is_torch else np.asarray(x)
    c = compress(arr, level)
    out = decompress(c)
    if is_torch:
        import torch

        return torch.from_numpy(out).to(dtype=x.dtype, device=x.device), c.nbytes
    return out.astype(arr.dtype, copy=False), c.nbytes


def roundtrip_state(state: Mapping[str, Any], level: Level) -> tuple[dict[str, Any], int]:
    """:func:`roundtrip` of every tensor of a state dict; the total bytes sent."""
    out, total = {}, 0
    for name, x in state.items():
        out[name], nbytes = roundtrip(x, level)
        total += nbytes
    return out, total
