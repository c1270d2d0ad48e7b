"""The shipped device/network profiles, and malformed profile folders."""

from __future__ import annotations

import pytest
import yaml

from fedsim.core.errors import ConfigError
from fedsim.fleet.profiles import DeviceClass, NetworkClass, default_profiles_dir, load_profiles

DEVICE_CLASSES = ["phone-low", "phone-mid", "phone-high", "tablet", "jetson-tx2", "jetson-xavier-nx", "jetson-agx-orin"]
NETWORK_CLASSES = ["wifi", "5g", "4g", "3g"]

DEVICE = {
    "description": "test device",
    "source": "made up",
    "train_gflops_per_s": 10,
    "app_memory_gb": 2,
    "availability": {"window_start_h": 22, "window_len_h": 8},
    "straggle_prob": 0.1,
    "straggle_slowdown": {"dist": "uniform", "low": 1.0, "high": 2.0},
    "dropout_prob": 0.0,
    "joules_per_gflop": 0.1,
}
NETWORK = {
    "description": "test link",
    "source": "made up",
    "downlink_mbps": 10,
    "uplink_mbps": 5,
    "latency_ms": 20,
    "joules_per_mb_down": 1,
    "joules_per_mb_up": 2,
}


def _write_profiles(directory, name="p.yaml", device=None, network=None, devices=None, networks=None):
    """One profile file with one device class 'd' and one network class 'n' (fields replaced)."""
    directory.mkdir(parents=True, exist_ok=True)
    doc = {
        "devices": devices if devices is not None else {"d": {**DEVICE, **(device or {})}},
        "networks": networks if networks is not None else {"n": {**NETWORK, **(network or {})}},
    }
    path = directory / name
    path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    return path


def _line_of(path, text):
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if text in line:
            return i
    raise AssertionError(f"{text!r} not in {path}")


def test_shipped_profiles_have_required_classes(shipped_profiles):
    assert set(DEVICE_CLASSES) <= set(shipped_profiles.devices)
    assert set(NETWORK_CLASSES) <= set(shipped_profiles.networks)


def test_default_dir_is_the_shipped_folder(monkeypatch):
    monkeypatch.delenv("FEDSIM_PROFILES", raising=False)

    assert default_profiles_dir().name == "device_profiles"
    assert default_profiles_dir().is_dir()


def test_profiles_dir_from_environment(tmp_path, monkeypatch):
    _write_profiles(tmp_path / "mine")
    monkeypatch.setenv("FEDSIM_PROFILES", str(tmp_path / "mine"))

    ps = load_profiles()

    assert sorted(ps.devices) == ["d"]


@pytest.mark.parametrize("name", DEVICE_CLASSES + NETWORK_CLASSES)
def test_every_shipped_class_cites_a_source(shipped_profiles, name):
    cls = shipped_profiles.devices.get(name) or shipped_profiles.networks[name]

    assert cls.source and cls.source.strip()
    assert cls.description.strip()


def test_shipped_files_are_recorded(shipped_profiles):
    assert shipped_profiles.files["phone-mid"].endswith("phones.yaml")
    assert shipped_profiles.files["jetson-tx2"].endswith("jetsons.yaml")
    assert shipped_profiles.files["wifi"].endswith("networks.yaml")


def test_shipped_profiles_are_plausible(shipped_profiles):
    # Means in the units of the field names: orders of magnitude, not exact figures.
    phones = [shipped_profiles.devices[n] for n in ("phone-low", "phone-mid", "phone-high")]
    speeds = [p.train_gflops_per_s.mean() for p in phones]
    assert speeds == sorted(speeds)
    assert 0.1 < speeds[0] and speeds[-1] < 1000
    nets = shipped_profiles.networks
    for n in NETWORK_CLASSES:
        assert nets[n].uplink_mbps.mean() < nets[n].downlink_mbps.mean()
    assert nets["3g"].downlink_mbps.mean() < nets["4g"].downlink_mbps.mean() < nets["5g"].downlink_mbps.mean()


@pytest.mark.parametrize("name", DEVICE_CLASSES)
def test_shipped_device_class_round_trips_through_its_dump(shipped_profiles, name):
    cls = shipped_profiles.devices[name]

    dumped = yaml.safe_dump(cls.model_dump(mode="json", by_alias=True, exclude_none=True))

    assert DeviceClass.model_validate(yaml.safe_load(dumped)) == cls


def test_valid_tmp_profile_loads(tmp_path):
    _write_profiles(tmp_path)

    ps = load_profiles(tmp_path)

    assert isinstance(ps.device("d"), DeviceClass)
    assert isinstance(ps.network("n"), NetworkClass)
    assert ps.device("d").app_memory_gb.mean() == 2.0
    assert ps.directory == str(tmp_path)


def test_unknown_key_names_file_path_and_line(tmp_path):
    path = _write_profiles(tmp_path, device={"colour": "red"})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    err = info.value
    assert err.file == str(path)
    (dotted, line, value, expected), = err.problems
    assert dotted == "devices.d.colour"
    assert line == _line_of(path, "colour:")
    assert value == "red"


def test_negative_bandwidth_rejected(tmp_path):
    path = _write_profiles(tmp_path, network={"downlink_mbps": -5})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    msg = str(info.value)
    assert str(path) in msg
    assert "downlink_mbps" in msg
    assert "-5" in msg


def test_probability_above_one_rejected(tmp_path):
    path = _write_profiles(tmp_path, device={"dropout_prob": 1.5})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    (dotted, line, value, expected), = info.value.problems
    assert dotted == "devices.d.dropout_prob"
    assert line == _line_of(path, "dropout_prob:")
    assert value == 1.5
    assert "less than or equal to 1" in expected


def test_skip_day_probability_above_one_rejected(tmp_path):
    _write_profiles(tmp_path, device={"availability": {"window_start_h": 1, "window_len_h": 8, "skip_day_prob": 1.5}})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    assert info.value.problems[0][0] == "devices.d.availability.skip_day_prob"


@pytest.mark.parametrize(
    "device, field",
    [
        # An unbounded normal for an hour of day: its support crosses 0 and 24.
        ({"availability": {"window_start_h": {"dist": "normal", "mean": 22, "std": 1}, "window_len_h": 8}}, "window_start_h"),
        ({"availability": {"window_start_h": 1, "window_len_h": 30}}, "window_len_h"),
        ({"availability": {"window_start_h": 1, "window_len_h": 8, "utc_offset_h": 20}}, "utc_offset_h"),
        ({"straggle_slowdown": {"dist": "uniform", "low": 0.5, "high": 2}}, "straggle_slowdown"),
        ({"straggle_slowdown": {"dist": "normal", "mean": 2, "std": 1}}, "straggle_slowdown"),
        ({"app_memory_gb": {"dist": "choice", "values": [-1, 2]}}, "app_memory_gb"),
        ({"train_gflops_per_s": 0}, "train_gflops_per_s"),
    ],
)
def test_distribution_support_crossing_a_bound_rejected(tmp_path, device, field):
    path = _write_profiles(tmp_path, device=device)

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    msg = str(info.value)
    assert str(path) in msg
    assert field in msg
    assert "add min/max" in msg


def test_clipping_brings_support_within_bounds(tmp_path):
    _write_profiles(tmp_path, device={"straggle_slowdown": {"dist": "normal", "mean": 2, "std": 1, "min": 1}})

    ps = load_profiles(tmp_path)

    assert ps.device("d").straggle_slowdown.support == (1.0, float("inf"))


@pytest.mark.parametrize(
    "network, field",
    [
        ({"latency_ms": {"dist": "normal", "mean": 20, "std": 5}}, "latency_ms"),
        ({"uplink_mbps": {"dist": "uniform", "low": 0, "high": 5}}, "uplink_mbps"),
        ({"joules_per_mb_up": -1}, "joules_per_mb_up"),
    ],
)
def test_network_support_crossing_a_bound_rejected(tmp_path, network, field):
    _write_profiles(tmp_path, network=network)

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    assert field in str(info.value)


def test_support_violation_points_at_the_field_line(tmp_path):
    path = _write_profiles(tmp_path, device={"straggle_slowdown": {"dist": "uniform", "low": 0.5, "high": 2}})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    (dotted, line, value, _), = info.value.problems
    assert dotted == "devices.d.straggle_slowdown"
    assert line == _line_of(path, "straggle_slowdown:")


def test_bad_distribution_parameters_point_at_the_field(tmp_path):
    path = _write_profiles(tmp_path, network={"uplink_mbps": {"dist": "lognormal", "median": 0, "sigma": 1}})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    (dotted, line, value, _), = info.value.problems
    assert dotted == "networks.n.uplink_mbps.median"  # the union tag 'lognormal' is not shown
    assert line == _line_of(path, "median:")
    assert value == 0


def test_unknown_distribution_kind(tmp_path):
    _write_profiles(tmp_path, device={"app_memory_gb": {"dist": "gamma", "k": 3}})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    assert info.value.problems[0][0] == "devices.d.app_memory_gb"
    assert "gamma" in str(info.value)


def test_duplicate_class_across_files(tmp_path):
    first = _write_profiles(tmp_path, name="a.yaml")
    second = _write_profiles(tmp_path, name="b.yaml", networks={})

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    err = info.value
    assert err.file == str(second)
    (dotted, line, _, expected), = err.problems
    assert dotted == "devices.d"
    assert line == _line_of(second, "d:")
    assert str(first) in expected


def test_duplicate_class_within_one_file(tmp_path):
    (tmp_path / "p.yaml").write_text(
        "devices:\n  d: " + yaml.safe_dump(DEVICE, default_flow_style=True).strip()
        + "\n  d: " + yaml.safe_dump({**DEVICE, "dropout_prob": 0.5}, default_flow_style=True).strip() + "\n",
        encoding="utf-8",
    )

    with pytest.raises(ConfigError):
        load_profiles(tmp_path)


def test_empty_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    assert info.value.file == str(tmp_path)
    assert "*.yaml" in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path / "nope")

    assert str(tmp_path / "nope") in str(info.value)
    assert "does not exist" in str(info.value)


def test_yaml_syntax_error_in_profile_names_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("devices:\n  d: {description: x\n", encoding="utf-8")

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    assert info.value.file == str(bad)
    assert "not valid YAML" in str(info.value)


def test_files_in_a_folder_are_merged(tmp_path):
    _write_profiles(tmp_path, name="a.yaml", networks={})
    _write_profiles(tmp_path, name="b.yaml", devices={})

    ps = load_profiles(tmp_path)

    assert ps.files["d"].endswith("a.yaml")
    assert ps.files["n"].endswith("b.yaml")


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    "device, network, key",
    [
        ({"train_gflops_per_s": NAN}, None, "devices.d.train_gflops_per_s"),
        ({"app_memory_gb": NAN}, None, "devices.d.app_memory_gb"),
        ({"app_memory_gb": INF}, None, "devices.d.app_memory_gb"),
        ({"straggle_prob": NAN}, None, "devices.d.straggle_prob"),
        ({"dropout_prob": NAN}, None, "devices.d.dropout_prob"),
        ({"availability": {"window_start_h": NAN, "window_len_h": 8}}, None, "devices.d.availability.window_start_h"),
        ({"train_gflops_per_s": {"dist": "lognormal", "median": NAN, "sigma": 0.5, "max": 80}}, None, "devices.d.train_gflops_per_s.median"),
        ({"train_gflops_per_s": {"dist": "lognormal", "median": 5, "sigma": 0.5, "max": INF}}, None, "devices.d.train_gflops_per_s.max"),
        ({"train_gflops_per_s": {"dist": "lognormal", "median": 5, "sigma": 0.5, "min": NAN, "max": 9}}, None, "devices.d.train_gflops_per_s.min"),
        ({"train_gflops_per_s": {"dist": "lognormal", "median": 1e300, "sigma": 500}}, None, "devices.d.train_gflops_per_s"),
        ({"app_memory_gb": {"dist": "choice", "values": [1, 2], "weights": [NAN, 1]}}, None, "devices.d.app_memory_gb.weights.0"),
        ({"app_memory_gb": {"dist": "constant", "value": True}}, None, "devices.d.app_memory_gb"),
        (None, {"latency_ms": NAN}, "networks.n.latency_ms"),
        (None, {"uplink_mbps": {"dist": "uniform", "low": 1, "high": INF}}, "networks.n.uplink_mbps.high"),
        (None, {"downlink_mbps": {"dist": "normal", "mean": 10, "std": NAN, "min": 1, "max": 20}}, "networks.n.downlink_mbps.std"),
    ],
)
def test_nan_inf_and_booleans_rejected_where_a_finite_number_is_meant(tmp_path, device, network, key):
    path = _write_profiles(tmp_path, device=device, network=network)

    with pytest.raises(ConfigError) as info:
        load_profiles(tmp_path)

    assert key in [p[0] for p in info.value.problems], info.value.problems
    assert str(path) in str(info.value)


def test_profile_folder_that_is_a_file(tmp_path):
    path = tmp_path / "profiles"
    path.write_text("devices: {}\n")

    with pytest.raises(ConfigError, match="is a file; expected a directory"):
        load_profiles(path)
