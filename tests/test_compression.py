"""Top-k + quantisation: bytes on the wire, ratios, reconstruction error."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fedsim.learning.compression import Level, compress, compressed_bytes, decompress, roundtrip, roundtrip_state, state_ratio


def test_compressed_bytes_counts_values_range_and_cheapest_index():
    # dense fp32: 4 bytes a value, no index
    assert compressed_bytes(1000, Level(1.0, 32)) == 4000
    # 8-bit, all kept: 1000 codes + min/max
    assert compressed_bytes(1000, Level(1.0, 8)) == 1008
    # 10 % kept at 8 bits: 100 codes + 8 + min(bitmap 125 B, 100 * 10 bits = 125 B)
    assert compressed_bytes(1000, Level(0.1, 8)) == 100 + 8 + 125
    # 1 % kept: index list (10 * 10 bits = 13 B) beats the bitmap
    assert compressed_bytes(1000, Level(0.01, 8)) == 10 + 8 + 13
    assert compressed_bytes(0, Level(0.5, 8)) == 0


def test_payload_size_equals_formula_and_ratio_matches_roundtrip_bytes():
    # Prepare
    rng = np.random.default_rng(0)
    state = {"a": rng.normal(size=(8, 32)).astype(np.float32), "b": rng.normal(size=5).astype(np.float32)}
    level = Level(0.25, 4)
    # Execute
    c = compress(state["a"], level)
    _, nbytes = roundtrip_state(state, level)
    # Assert
    assert c.nbytes == compressed_bytes(256, level)
    assert c.index.size == 64
    assert nbytes == compressed_bytes(256, level) + compressed_bytes(5, level)
    assert state_ratio([256, 5], level) == pytest.approx(nbytes / (4 * 261))


def test_topk_keeps_the_largest_magnitudes_and_quantisation_error_is_bounded():
    # Prepare
    rng = np.random.default_rng(1)
    x = rng.normal(size=400).astype(np.float32)
    level = Level(0.1, 8)
    # Execute
    y = decompress(compress(x, level))
    # Assert
    kept = np.flatnonzero(y != 0)
    top = np.argsort(-np.abs(x))[:40]
    assert set(top) >= set(kept) and len(kept) >= 39  # a code may land exactly on 0
    vals = x[top]
    step = (vals.max() - vals.min()) / 255
    assert np.max(np.abs(y[top] - x[top])) <= step / 2 + 1e-6
    assert np.all(y[np.setdiff1d(np.arange(400), top)] == 0)


def test_identity_level_is_exact_and_torch_tensors_round_trip_as_tensors():
    x = torch.randn(3, 4)
    same, nbytes = roundtrip(x, Level())
    assert same is x and nbytes == 48
    y, nbytes = roundtrip(x, Level(1.0, 16))
    assert isinstance(y, torch.Tensor) and y.shape == x.shape and y.dtype == x.dtype
    assert torch.allclose(x, y, atol=float(x.max() - x.min()) / 65535)
    assert nbytes == 12 * 2 + 8


def test_ratios_fall_with_compression_and_levels_validate():
    sizes = [8 * 384, 384 * 8] * 12 + [384 * 384, 384, 384 * 4, 4]
    ratios = [state_ratio(sizes, lv) for lv in (Level(), Level(1.0, 8), Level(0.5, 8), Level(0.25, 8), Level(0.1, 8))]
    assert ratios[0] == 1.0
    assert all(a > b for a, b in zip(ratios, ratios[1:]))
    assert ratios[1] == pytest.approx(0.25, abs=0.001)
    assert math.isclose(ratios[4], 0.1 * 0.25 + 1 / 32, rel_tol=0.02)  # values + bitmap
    with pytest.raises(ValueError, match="keep_frac"):
        Level(0.0, 8)
    with pytest.raises(ValueError, match="bits"):
        Level(0.5, 3)
