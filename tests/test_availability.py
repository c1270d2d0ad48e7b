"""Diurnal availability windows, time zones, skipped days, and the counter-based hash."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.fleet.availability import AlwaysAvailable, DiurnalAvailability, hash_uniform
from fedsim.fleet.fleet import Fleet

H = 3600.0


def _fleet(start_h, len_h, skip=0.0, utc=0.0, n=None) -> Fleet:
    n = n or np.broadcast(np.asarray(start_h), np.asarray(len_h), np.asarray(skip), np.asarray(utc)).size
    f32 = lambda v: np.broadcast_to(np.asarray(v, dtype=np.float32), (n,)).copy()  # noqa: E731
    z64 = np.zeros(n)
    return Fleet(
        device_names=["d"], network_names=["n"],
        device_class=np.zeros(n, np.int16), network_class=np.zeros(n, np.int16),
        flops_per_s=z64, mem_cap_bytes=z64, down_bps=z64, up_bps=z64,
        latency_s=f32(0), straggle_prob=f32(0), dropout_prob=f32(0), joules_per_flop=f32(0),
        joules_per_byte_down=f32(0), joules_per_byte_up=f32(0),
        window_start_h=f32(start_h), window_len_h=f32(len_h), skip_day_prob=f32(skip), utc_offset_h=f32(utc),
    )


@pytest.mark.parametrize(
    "hour, expected",
    [(21.99, False), (22.0, True), (23.0, True), (0.0, True), (5.0, True), (5.99, True), (6.0, False), (12.0, False)],
)
def test_night_window_wraps_midnight(hour, expected):
    avail = DiurnalAvailability(_fleet(22, 8), seed=0, start_hour_utc=0.0)

    mask = avail.available(hour * H)

    assert mask.tolist() == [expected]


def test_start_hour_shifts_the_clock():
    avail = DiurnalAvailability(_fleet(22, 8), seed=0, start_hour_utc=22.0)

    assert avail.available(0.0).tolist() == [True]  # 22:00 at t=0
    assert avail.available(14 * H).tolist() == [False]  # 12:00 the next day


def test_utc_offset_shifts_local_time():
    # At 12:00 UTC: UTC+0 sees noon (out), UTC+12 sees midnight (in), UTC-7 sees 05:00 (in).
    avail = DiurnalAvailability(_fleet(22, 8, utc=[0, 12, -7]), seed=0, start_hour_utc=0.0)

    mask = avail.available(12 * H)

    assert mask.tolist() == [False, True, True]


def test_full_day_window_always_available():
    avail = DiurnalAvailability(_fleet(0, 24, n=5), seed=0)

    for t in np.linspace(0, 3 * 24 * H, 50):
        assert avail.available(t).all()


def test_skip_day_prob_one_never_available():
    avail = DiurnalAvailability(_fleet(22, 8, skip=1.0, n=100), seed=1)

    for t in np.arange(0, 10 * 24 * H, 0.5 * H):
        assert not avail.available(t).any()


def test_skip_day_prob_zero_available_every_window():
    avail = DiurnalAvailability(_fleet(22, 8, skip=0.0, n=100), seed=1, start_hour_utc=0.0)

    for day in range(10):
        assert avail.available((day * 24 + 23) * H).all()
        assert not avail.available((day * 24 + 12) * H).any()


def test_skip_is_per_window_not_per_calendar_day():
    # A skipped night is skipped on both sides of midnight: the window opened on one day.
    avail = DiurnalAvailability(_fleet(22, 8, skip=0.5, n=2000), seed=3, start_hour_utc=0.0)

    for day in range(5):
        evening = avail.available((day * 24 + 23) * H)
        morning = avail.available((day * 24 + 24 + 5) * H)
        np.testing.assert_array_equal(evening, morning)


def test_skip_fraction_matches_probability():
    avail = DiurnalAvailability(_fleet(22, 8, skip=0.3, n=20_000), seed=7, start_hour_utc=0.0)

    frac = np.mean([avail.available((d * 24 + 23) * H).mean() for d in range(5)])

    assert frac == pytest.approx(0.7, abs=0.01)


def test_skips_differ_between_days_and_devices():
    avail = DiurnalAvailability(_fleet(22, 8, skip=0.5, n=1000), seed=7, start_hour_utc=0.0)

    a = avail.available(23 * H)
    b = avail.available(47 * H)

    assert 0.4 < a.mean() < 0.6
    assert (a != b).mean() == pytest.approx(0.5, abs=0.07)  # independent days


def test_same_query_twice_same_mask():
    avail = DiurnalAvailability(_fleet(22, 8, skip=0.5, n=500), seed=11)
    t = 3 * 24 * H + 1234.5

    first = avail.available(t).copy()
    avail.available(99 * H)  # other queries in between change nothing
    second = avail.available(t)

    np.testing.assert_array_equal(first, second)


def test_seed_changes_skipped_days():
    f = _fleet(22, 8, skip=0.5, n=500)

    a = DiurnalAvailability(f, seed=1, start_hour_utc=0.0).available(23 * H)
    b = DiurnalAvailability(f, seed=2, start_hour_utc=0.0).available(23 * H)

    assert not np.array_equal(a, b)


def test_always_available():
    avail = AlwaysAvailable(4)

    assert avail.available(0.0).tolist() == [True] * 4
    assert avail.available(1e9).all()


def test_hash_uniform_deterministic():
    a = np.arange(1000, dtype=np.uint64)
    b = np.full(1000, 17, dtype=np.uint64)

    x = hash_uniform(42, a, b)
    y = hash_uniform(42, a, b)

    np.testing.assert_array_equal(x, y)
    assert not np.array_equal(x, hash_uniform(43, a, b))
    assert not np.array_equal(x, hash_uniform(42, a, b + np.uint64(1)))


def test_hash_uniform_is_uniform_ish():
    a = np.arange(100_000, dtype=np.uint64)

    x = hash_uniform(5, a, np.zeros_like(a))

    assert x.min() >= 0.0 and x.max() < 1.0
    assert x.mean() == pytest.approx(0.5, abs=0.005)
    counts = np.histogram(x, bins=20, range=(0, 1))[0]
    chi2 = ((counts - 5000) ** 2 / 5000).sum()
    assert chi2 < 50  # 19 d.o.f.: P(chi2 > 50) < 1e-4 for uniform data
    assert abs(np.corrcoef(x[:-1], x[1:])[0, 1]) < 0.02  # consecutive ids uncorrelated


def test_hash_uniform_scalar_inputs():
    x = hash_uniform(1, 3, 4)

    assert 0.0 <= float(x) < 1.0
    assert float(x) == float(hash_uniform(1, np.array([3]), np.array([4]))[0])
