"""fedsim.fleet.scaling: factors on whole device and network classes (fleet.scale)."""

from __future__ import annotations

import typing

import numpy as np
import pytest

from fedsim.core.errors import ConfigError
from fedsim.fleet import distributions
from fedsim.fleet.fleet import FleetSpec, sample_fleet
from fedsim.fleet.scaling import DIST_SCALED, ScaleError, ScaleSpec, scale_profiles
from fedsim.study.scenario import load_scenario

FORMS = [
    ({"dist": "constant", "value": 2.0}, {"dist": "constant", "value": 1.0}),
    ({"dist": "uniform", "low": 2.0, "high": 4.0}, {"dist": "uniform", "low": 1.0, "high": 2.0}),
    ({"dist": "normal", "mean": 8.0, "std": 2.0, "min": 2.0, "max": 14.0},
     {"dist": "normal", "mean": 4.0, "std": 1.0, "min": 1.0, "max": 7.0}),
    ({"dist": "lognormal", "median": 6.0, "sigma": 0.5, "min": 1.0, "max": 20.0},
     {"dist": "lognormal", "median": 3.0, "sigma": 0.5, "min": 0.5, "max": 10.0}),
    ({"dist": "choice", "values": [1.0, 2.0], "weights": [0.25, 0.75]},
     {"dist": "choice", "values": [0.5, 1.0], "weights": [0.25, 0.75]}),
]


def test_every_distribution_form_has_a_scaling_rule():
    forms = {typing.get_args(m.model_fields["dist"].annotation)[0] for m in typing.get_args(typing.get_args(distributions.Dist)[0])}
    assert forms == set(DIST_SCALED)


@pytest.mark.parametrize("before, after", FORMS, ids=[f[0]["dist"] for f in FORMS])
def test_each_form_scales_as_its_random_variable(shipped_profiles, before, after):
    # Prepare: phone-mid's uplink... on the 4g class, replaced by the form under test
    net = shipped_profiles.networks["4g"]
    profiles = type(shipped_profiles)(
        devices=shipped_profiles.devices, files=shipped_profiles.files, directory=shipped_profiles.directory,
        networks={**shipped_profiles.networks, "4g": type(net).model_validate({**net.model_dump(by_alias=True), "uplink_mbps": before})})
    # Execute
    scaled = scale_profiles(profiles, ScaleSpec.model_validate({"network": {"4g": {"up_mbps": 0.5}}}))
    # Assert: the scaled field only, of the named class only
    dumped = scaled.networks["4g"].uplink_mbps.model_dump(by_alias=True, exclude_none=True)
    assert dumped == {k: v for k, v in after.items() if v is not None}
    assert scaled.networks["wifi"] == profiles.networks["wifi"]
    assert scaled.networks["4g"].downlink_mbps == net.downlink_mbps


def test_star_and_class_factors_multiply(shipped_profiles):
    spec = ScaleSpec.model_validate({"device": {"*": {"mem_cap": 0.5}, "phone-low": {"app_memory_gb": 0.5}}})
    scaled = scale_profiles(shipped_profiles, spec)
    assert scaled.devices["phone-low"].app_memory_gb.values == [0.125, 0.1875, 0.25]
    assert scaled.devices["phone-high"].app_memory_gb.values == [1.25, 1.5, 2.0]


def test_a_fleet_of_scaled_profiles_has_scaled_arrays(shipped_profiles):
    # Prepare: same seed, with and without a 4x slower uplink everywhere
    spec = FleetSpec(size=500, devices={"phone-mid": 1.0}, networks={"4g": 0.5, "wifi": 0.5})
    slow = scale_profiles(shipped_profiles, ScaleSpec.model_validate({"network": {"*": {"uplink_mbps": 0.25}}}))
    # Execute
    a = sample_fleet(spec, shipped_profiles, np.random.default_rng(1))
    b = sample_fleet(spec, slow, np.random.default_rng(1))
    # Assert
    np.testing.assert_allclose(b.up_bps, a.up_bps * 0.25)
    np.testing.assert_array_equal(b.down_bps, a.down_bps)


def test_no_scale_leaves_config_dump_as_before():
    spec = FleetSpec(size=5, devices={"phone-mid": 1.0}, networks={"4g": 1.0})
    assert "scale" not in spec.model_dump(mode="json")
    given = FleetSpec(size=5, devices={"phone-mid": 1.0}, networks={"4g": 1.0}, scale={"network": {"*": {"up_mbps": 0.5}}})
    assert given.model_dump(mode="json")["scale"] == {"device": {}, "network": {"*": {"uplink_mbps": 0.5}}}


@pytest.mark.parametrize("scale, path, says", [
    ("{network: {4gg: {up_mbps: 0.5}}}", "fleet.scale.network.4gg", "a network class"),
    ("{network: {'*': {up_mbs: 0.5}}}", "fleet.scale.network.*.up_mbs", "is not a known key"),
    ("{device: {'*': {dropout_prob: 30}}}", "fleet.scale.device.*.dropout_prob", "less than or equal to 1"),
    ("{device: {'*': {window_len_h: 5}}}", "fleet.scale.device.*.window_len_h", "within [0, 24]"),
    ("{network: {'*': {up_mbps: 0}}}", "fleet.scale.network.*.up_mbps", "greater than 0"),
    ("{network: {'*': {up_mbps: true}}}", "fleet.scale.network.*.up_mbps", "number"),
])
def test_bad_scales_name_the_key(write_yaml, scale, path, says):
    sc = write_yaml("s.yaml", f"""\
        fleet: {{size: 10, devices: {{phone-mid: 1}}, networks: {{4g: 1}}, scale: {scale}}}
        trainer: {{kind: surrogate}}
        """)
    with pytest.raises(ConfigError) as err:
        load_scenario(sc)
    assert path in str(err.value) and says in str(err.value)


def test_scale_error_is_a_value(shipped_profiles):
    with pytest.raises(ScaleError) as err:
        scale_profiles(shipped_profiles, ScaleSpec.model_validate({"device": {"*": {"skip_day_prob": 9}}}))
    assert err.value.path == "fleet.scale.device.*.skip_day_prob" and err.value.value == 9
