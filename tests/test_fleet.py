"""Sampling a fleet from profiles: seeding, shares, network mixes, SI units, drop-out."""

from __future__ import annotations

import time

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from fedsim.fleet.fleet import Fleet, FleetSpec, sample_fleet
from fedsim.fleet.profiles import load_profiles

ARRAYS = [
    "device_class", "network_class", "flops_per_s", "mem_cap_bytes", "down_bps", "up_bps", "latency_s",
    "straggle_prob", "dropout_prob", "joules_per_flop", "joules_per_byte_down", "joules_per_byte_up",
    "window_start_h", "window_len_h", "skip_day_prob", "utc_offset_h",
]

MIX = FleetSpec(
    size=2000,
    devices={"phone-low": 0.3, "phone-mid": 0.5, "jetson-tx2": 0.2},
    networks={"wifi": 0.6, "4g": 0.4},
)


@pytest.fixture(scope="module")
def const_profiles(tmp_path_factory):
    """Constant-valued classes, so unit conversions can be checked exactly."""
    d = tmp_path_factory.mktemp("const_profiles")
    doc = {
        "devices": {
            "dev": {
                "description": "constant device", "source": "test",
                "train_gflops_per_s": 12.5, "app_memory_gb": 1.5,
                "availability": {"window_start_h": 22, "window_len_h": 8, "skip_day_prob": 0.25, "utc_offset_h": -5},
                "straggle_prob": 0.1, "straggle_slowdown": 2, "dropout_prob": 0.2, "joules_per_gflop": 0.3,
            }
        },
        "networks": {
            "net": {
                "description": "constant link", "source": "test",
                "downlink_mbps": 40, "uplink_mbps": 8, "latency_ms": 50, "dropout_prob": 0.1,
                "joules_per_mb_down": 2, "joules_per_mb_up": 6,
            }
        },
    }
    (d / "p.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_profiles(d)


def test_same_seed_identical_arrays(shipped_profiles):
    a = sample_fleet(MIX, shipped_profiles, np.random.default_rng(5))
    b = sample_fleet(MIX, shipped_profiles, np.random.default_rng(5))

    for name in ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    assert a.device_names == b.device_names and a.network_names == b.network_names


def test_different_seed_different_arrays(shipped_profiles):
    a = sample_fleet(MIX, shipped_profiles, np.random.default_rng(5))
    b = sample_fleet(MIX, shipped_profiles, np.random.default_rng(6))

    assert not np.array_equal(a.device_class, b.device_class)
    assert not np.array_equal(a.flops_per_s, b.flops_per_s)


def test_array_lengths_and_dtypes(shipped_profiles):
    f = sample_fleet(MIX, shipped_profiles, np.random.default_rng(0))

    assert len(f) == f.size == 2000
    for name in ARRAYS:
        assert getattr(f, name).shape == (2000,), name
    assert f.device_class.dtype == np.int16
    assert f.flops_per_s.dtype == np.float64
    assert f.latency_s.dtype == np.float32
    assert np.all(np.isfinite(f.flops_per_s)) and np.all(f.flops_per_s > 0)


def test_class_shares_within_tolerance(shipped_profiles):
    spec = MIX.model_copy(update={"size": 100_000})

    f = sample_fleet(spec, shipped_profiles, np.random.default_rng(1))

    counts = np.bincount(f.device_class, minlength=3) / spec.size
    for code, name in enumerate(f.device_names):
        # Binomial std at n=1e5 is < 0.0016; 0.01 is more than 6 sigma.
        assert counts[code] == pytest.approx(spec.devices[name], abs=0.01), name
    net = np.bincount(f.network_class, minlength=2) / spec.size
    assert net[f.network_names.index("wifi")] == pytest.approx(0.6, abs=0.01)


def test_shares_are_normalised(shipped_profiles):
    spec = FleetSpec(size=50_000, devices={"phone-mid": 3, "phone-high": 1}, networks={"wifi": 7})

    f = sample_fleet(spec, shipped_profiles, np.random.default_rng(0))

    assert (f.device_class == f.device_names.index("phone-mid")).mean() == pytest.approx(0.75, abs=0.01)


def test_zero_share_class_never_sampled(shipped_profiles):
    spec = FleetSpec(size=5000, devices={"phone-mid": 1, "tablet": 0}, networks={"wifi": 1})

    f = sample_fleet(spec, shipped_profiles, np.random.default_rng(0))

    assert not np.any(f.device_class == f.device_names.index("tablet"))


def test_network_by_device_honoured(shipped_profiles):
    spec = FleetSpec(
        size=20_000,
        devices={"jetson-tx2": 0.3, "phone-mid": 0.7},
        networks={"wifi": 0.5, "4g": 0.5},
        network_by_device={"jetson-tx2": {"ethernet": 1.0}},
    )

    f = sample_fleet(spec, shipped_profiles, np.random.default_rng(2))

    jet = f.device_class == f.device_names.index("jetson-tx2")
    eth = f.network_class == f.network_names.index("ethernet")
    assert np.array_equal(jet, eth)  # every Jetson, and only Jetsons, on ethernet
    phone_wifi = (f.network_class[~jet] == f.network_names.index("wifi")).mean()
    assert phone_wifi == pytest.approx(0.5, abs=0.02)
    assert set(f.network_of(np.flatnonzero(jet))) == {"ethernet"}


def test_units_are_si(const_profiles):
    spec = FleetSpec(size=10, devices={"dev": 1}, networks={"net": 1})

    f = sample_fleet(spec, const_profiles, np.random.default_rng(0))

    np.testing.assert_array_equal(f.flops_per_s, 12.5e9)  # GFLOP/s -> FLOP/s
    np.testing.assert_array_equal(f.mem_cap_bytes, 1.5e9)  # GB -> bytes
    np.testing.assert_array_equal(f.down_bps, 40e6)  # Mbit/s -> bit/s
    np.testing.assert_array_equal(f.up_bps, 8e6)
    np.testing.assert_allclose(f.latency_s, 0.05, rtol=1e-6)  # ms -> s (float32)
    np.testing.assert_allclose(f.joules_per_flop, 0.3e-9, rtol=1e-6)  # J/GFLOP -> J/FLOP
    np.testing.assert_allclose(f.joules_per_byte_down, 2e-6, rtol=1e-6)  # J/MB -> J/byte
    np.testing.assert_allclose(f.joules_per_byte_up, 6e-6, rtol=1e-6)
    np.testing.assert_allclose(f.straggle_prob, 0.1, rtol=1e-6)
    np.testing.assert_array_equal(f.window_start_h, 22)
    np.testing.assert_array_equal(f.window_len_h, 8)
    np.testing.assert_array_equal(f.skip_day_prob, 0.25)
    np.testing.assert_array_equal(f.utc_offset_h, -5)


def test_combined_dropout(const_profiles):
    spec = FleetSpec(size=4, devices={"dev": 1}, networks={"net": 1})

    f = sample_fleet(spec, const_profiles, np.random.default_rng(0))

    # Device quits (0.2) or link breaks (0.1), independently: 1 - 0.8 * 0.9 = 0.28.
    np.testing.assert_allclose(f.dropout_prob, 1 - (1 - 0.2) * (1 - 0.1), rtol=1e-6)


def test_combined_dropout_per_class(shipped_profiles):
    f = sample_fleet(MIX, shipped_profiles, np.random.default_rng(0))

    for i in (0, 1, 2, 100, 1999):
        pd = shipped_profiles.device(f.device_names[f.device_class[i]]).dropout_prob
        pn = shipped_profiles.network(f.network_names[f.network_class[i]]).dropout_prob
        # float32 storage: about 7 significant digits.
        assert f.dropout_prob[i] == pytest.approx(1 - (1 - pd) * (1 - pn), rel=1e-5)


def test_values_within_profile_clips(shipped_profiles):
    f = sample_fleet(MIX, shipped_profiles, np.random.default_rng(0))

    low = f.device_class == f.device_names.index("phone-low")
    assert f.flops_per_s[low].min() >= 0.5e9 and f.flops_per_s[low].max() <= 15e9
    assert set(np.unique(f.mem_cap_bytes[low])) <= {0.5e9, 0.75e9, 1.0e9}


def test_key_order_does_not_change_the_fleet(shipped_profiles):
    forward = FleetSpec(
        size=3000, devices={"phone-low": 0.3, "phone-mid": 0.5, "jetson-tx2": 0.2},
        networks={"wifi": 0.6, "4g": 0.4}, network_by_device={"jetson-tx2": {"ethernet": 1.0}, "phone-low": {"wifi": 1.0}},
    )
    backward = FleetSpec(
        size=3000, devices={"jetson-tx2": 0.2, "phone-mid": 0.5, "phone-low": 0.3},
        networks={"4g": 0.4, "wifi": 0.6}, network_by_device={"phone-low": {"wifi": 1.0}, "jetson-tx2": {"ethernet": 1.0}},
    )

    a = sample_fleet(forward, shipped_profiles, np.random.default_rng(7))
    b = sample_fleet(backward, shipped_profiles, np.random.default_rng(7))

    assert list(a.class_of(np.arange(3000))) == list(b.class_of(np.arange(3000)))
    assert list(a.network_of(np.arange(3000))) == list(b.network_of(np.arange(3000)))
    np.testing.assert_array_equal(a.flops_per_s, b.flops_per_s)
    np.testing.assert_array_equal(a.up_bps, b.up_bps)


def test_summary_and_class_names(shipped_profiles):
    f = sample_fleet(MIX, shipped_profiles, np.random.default_rng(0))

    s = f.summary()

    assert sum(v["count"] for v in s.values()) == f.size
    assert 1 < s["phone-mid"]["median_gflops_per_s"] < 60
    ids = np.array([0, 5, 9])
    assert list(f.class_of(ids)) == [f.device_names[c] for c in f.device_class[ids]]


@pytest.mark.parametrize(
    "update",
    [
        {"size": 0},
        {"devices": {}},
        {"devices": {"phone-mid": -1, "tablet": 2}},
        {"networks": {"wifi": 0}},
        {"network_by_device": {"jetson-tx2": {}}},
        {"colour": "red"},
        {"size": True},
        {"devices": {"phone-mid": float("nan")}},
        {"devices": {"phone-mid": float("inf")}},
        {"networks": {"wifi": 1e308, "4g": 1e308}},
        {"network_by_device": {"phone-mid": {"wifi": float("nan")}}},
    ],
)
def test_invalid_spec_rejected(update):
    data = {"size": 10, "devices": {"phone-mid": 1}, "networks": {"wifi": 1}, **update}

    with pytest.raises(ValidationError):
        FleetSpec.model_validate(data)


def test_check_classes_reports_unknown_names(shipped_profiles):
    spec = FleetSpec(
        size=10, devices={"phone-mid": 1, "phone-ultra": 1}, networks={"wifi": 1, "6g": 1},
        network_by_device={"tablet": {"wifi": 1}, "phone-mid": {"lora": 1}},
    )

    paths = [p for p, _, _ in spec.check_classes(shipped_profiles)]

    assert paths == [
        "fleet.devices.phone-ultra", "fleet.networks.6g",
        "fleet.network_by_device.tablet", "fleet.network_by_device.phone-mid.lora",
    ]


def test_million_devices(shipped_profiles):
    spec = FleetSpec(
        size=1_000_000,
        devices={"phone-low": 0.3, "phone-mid": 0.45, "phone-high": 0.2, "tablet": 0.05},
        networks={"wifi": 0.5, "4g": 0.3, "5g": 0.15, "3g": 0.05},
    )
    t0 = time.perf_counter()

    f = sample_fleet(spec, shipped_profiles, np.random.default_rng(0))

    elapsed = time.perf_counter() - t0
    assert f.size == 1_000_000
    assert all(getattr(f, name).size == 1_000_000 for name in ARRAYS)
    assert f.nbytes() < 100e6
    assert elapsed < 10.0  # ~1 s on a laptop core; generous for loaded CI machines


def test_hand_made_fleet_nbytes():
    n = 3
    f = Fleet(
        device_names=["a"], network_names=["b"],
        device_class=np.zeros(n, np.int16), network_class=np.zeros(n, np.int16),
        **{k: np.zeros(n) for k in ARRAYS[2:]},
    )

    assert f.size == 3
    assert f.nbytes() == 2 * 3 * 2 + 14 * 3 * 8
