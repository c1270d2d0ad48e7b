"""fedsim.study.grid: the --grid syntax, profile scaling keys, seeds and point names."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.core.errors import ConfigError
from fedsim.study.grid import Axis, parse_grid, parse_names, parse_seeds, point_labels


def test_plain_key_values_are_yaml():
    axis = parse_grid("engine.round_deadline_s=300,600.5")
    assert axis == Axis(key="engine.round_deadline_s", values=(300, 600.5), name="round_deadline_s")


def test_flow_mappings_hold_their_commas():
    axis = parse_grid("method={name: fedlora},{name: stld-fixed, params: {mean_drop: 0.5}}")
    assert axis.values == ({"name": "fedlora"}, {"name": "stld-fixed", "params": {"mean_drop": 0.5}})


@pytest.mark.parametrize("text, key, name", [
    ("network.*.up_mbps*=1,0.5,0.25", "fleet.scale.network.*.uplink_mbps", "up_mbps"),
    ("device.*.mem_cap*=0.5", "fleet.scale.device.*.app_memory_gb", "mem_cap"),
    ("device.phone-low.train_gflops*=2", "fleet.scale.device.phone-low.train_gflops_per_s", "phone-low.train_gflops"),
    ("networks.4g.latency_ms*=3", "fleet.scale.network.4g.latency_ms", "4g.latency_ms"),
])
def test_scaling_keys_become_fleet_scale_keys(text, key, name):
    axis = parse_grid(text)
    assert (axis.key, axis.name, axis.factor) == (key, name, True)


@pytest.mark.parametrize("text, says", [
    ("network.*.up_mbs*=0.5", "a network field to scale"),
    ("device.*.uplink_mbps*=0.5", "a device field to scale"),
    ("phone.*.mem_cap*=0.5", "KIND device or network"),
    ("network.*.up_mbps*=0,1", "above 0"),
    ("network.*.up_mbps*=fast", "above 0"),
    ("network.*.up_mbps*=true", "above 0"),
    ("engine.max_rounds=", "at least one value"),
    ("engine.max_rounds=3,3", "each value once"),
    ("engine.max_rounds=3,,4", "comma-separated values"),
    ("engine..max_rounds=3", "dotted key"),
    ("../../etc=3", "dotted key"),
    ("no-equals-sign", "KEY=v1,v2"),
    ("a=[unclosed", "comma-separated values"),
])
def test_bad_grids_are_one_clear_error(text, says):
    with pytest.raises(ConfigError) as err:
        parse_grid(text)
    assert says in str(err.value) and "--grid" in str(err.value)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=st.text(alphabet=st.sampled_from(list("ab.*=,{}[]:-_ 0.5x\"'&!|\n\\\x00é")), max_size=40))
def test_hostile_grid_text_parses_or_is_a_config_error(text):
    try:
        axis = parse_grid(text)
    except ConfigError as exc:
        assert "--grid" in str(exc)
    else:
        assert axis.values and "=" not in axis.key and ".." not in axis.key


def test_seeds_lists_and_ranges():
    assert parse_seeds("0,1,2") == [0, 1, 2]
    assert parse_seeds("3-5, 9") == [3, 4, 5, 9]
    for bad in ("", "a", "-1", "5-3", "1,1", "0-5000"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_default_point_labels_are_short_and_unique():
    axes = [parse_grid("method={name: fedlora},{name: stld-fixed, params: {mean_drop: 0.5}}"), parse_grid("network.*.up_mbps*=1,0.25")]
    points = [[(axes[0].key, m), (axes[1].key, f)] for m in axes[0].values for f in axes[1].values]
    assert point_labels(axes, points) == [
        "fedlora_up_mbps-x1", "fedlora_up_mbps-x0.25", "stld-fixed-mean_drop0.5_up_mbps-x1", "stld-fixed-mean_drop0.5_up_mbps-x0.25"]


def test_point_names_are_made_safe_and_counted():
    assert parse_names("base, slow/../up,x", 3) == ["base", "slow-..-up", "x"]
    with pytest.raises(ConfigError, match="one name per point"):
        parse_names("a,b", 3)
    with pytest.raises(ConfigError, match="distinct"):
        parse_names("a b,a-b", 2)
