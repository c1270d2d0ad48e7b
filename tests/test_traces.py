"""Trace files in FedScale's formats: loading, validation, availability and drop-outs."""

from __future__ import annotations

import json
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fedsim.core.costmodel import ModelShape, forward_flops_per_example
from fedsim.core.models import TINY_BERT
from fedsim.engine.records import read_clients
from fedsim.fleet.availability import TraceAvailability
from fedsim.fleet.traces import (
    TraceError, TraceSpec, load_availability_trace, load_device_trace, safe_load_pickle, trace_arrays,
)
from test_engine import make_engine, make_fleet
from test_fuzz_inputs import fuzz


def _json(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _pickle(tmp_path: Path, name: str, data) -> Path:
    path = tmp_path / name
    path.write_bytes(pickle.dumps(data))
    return path


CAPACITY = {1: {"computation": 100.0, "communication": 8000.0}, 7: {"computation": 250, "communication": 1000.5}}


# -- device capacity -------------------------------------------------------------------------


@pytest.mark.parametrize("writer", [_json, _pickle])
def test_capacity_loads_in_file_order(tmp_path, writer):
    path = writer(tmp_path, "cap.json" if writer is _json else "cap.pkl", CAPACITY)

    trace = load_device_trace(path)

    assert [str(c) for c in trace.client_ids] == ["1", "7"]
    assert trace.ms_per_sample.tolist() == [100.0, 250.0]
    assert trace.kbit_per_s.tolist() == [8000.0, 1000.5]


def test_capacity_becomes_throughput_and_bandwidth(tmp_path):
    path = _json(tmp_path, "cap.json", CAPACITY)
    spec = TraceSpec(capacity=path, reference_gflops_per_sample=2.0)

    arrays = trace_arrays(spec, 2)

    # 2 GFLOP per sample in 0.1 s and 0.25 s: 20 and 8 GFLOP/s; kbit/s both ways.
    assert arrays["flops_per_s"].tolist() == [20e9, 8e9]
    assert arrays["down_bps"].tolist() == arrays["up_bps"].tolist() == [8e6, 1000.5e3]


def test_reference_model_is_priced_by_the_cost_model(tmp_path):
    spec = TraceSpec(capacity=tmp_path / "x.json", reference_model="tiny-bert", reference_seq_len=16)
    shape = ModelShape.from_hf_config(TINY_BERT, num_labels=2)

    # 4 layers * (16 * (8 * 32^2 + 4 * 32 * 64) + 4 * 16^2 * 32) + 2 * head (32*32+32 + 32*2+2)
    assert spec.reference_flops() == forward_flops_per_example(shape, 16) == 4 * (16 * (8192 + 8192) + 32768) + 2 * 1122


def test_capacity_needs_one_reference(tmp_path):
    with pytest.raises(ValueError, match="exactly one of reference_gflops_per_sample and reference_model"):
        TraceSpec(capacity=tmp_path / "x.json")


def test_fleet_larger_than_trace_is_refused(tmp_path):
    spec = TraceSpec(capacity=_json(tmp_path, "cap.json", CAPACITY), reference_gflops_per_sample=1.0)

    with pytest.raises(TraceError, match="holds 2 clients; the fleet has 3 devices"):
        trace_arrays(spec, 3)


@pytest.mark.parametrize(
    "entry, field, what",
    [
        ({"computation": 10.0}, "communication", "missing"),
        ({"communication": 10.0}, "computation", "missing"),
        ({"computation": 10.0, "communication": 0.0}, "communication", "0.0; expected a finite positive number of kbit/s"),
        ({"computation": 10.0, "communication": -5}, "communication", "-5.0; expected a finite positive"),
        ({"computation": float("nan"), "communication": 5}, "computation", "nan; expected a finite positive number of ms"),
        ({"computation": 10.0, "communication": float("inf")}, "communication", "inf; expected a finite positive"),
        ({"computation": "12", "communication": 5}, "computation", "'12' is not a number"),
        ({"computation": True, "communication": 5}, "computation", "True is not a number"),
    ],
)
@pytest.mark.parametrize("writer", [_json, _pickle])
def test_bad_capacity_names_file_client_and_field(tmp_path, writer, entry, field, what):
    name = "cap.json" if writer is _json else "cap.pkl"
    path = writer(tmp_path, name, {"1": CAPACITY[1], "phone-42": entry})

    with pytest.raises(TraceError) as exc:
        load_device_trace(path)

    msg = str(exc.value)
    assert str(path) in msg and "client 'phone-42'" in msg and f"field '{field}'" in msg and what in msg


@pytest.mark.parametrize("data, what", [([1, 2], "holds a list; expected a mapping"), ({}, "holds no clients"),
                                        ({"a": 5}, "client 'a': is a int")])
def test_capacity_of_the_wrong_shape(tmp_path, data, what):
    with pytest.raises(TraceError, match=what):
        load_device_trace(_json(tmp_path, "cap.json", data))


def test_not_json_and_unknown_suffix(tmp_path):
    bad = tmp_path / "cap.json"
    bad.write_text("{nope", encoding="utf-8")
    with pytest.raises(TraceError, match="is not JSON"):
        load_device_trace(bad)
    with pytest.raises(TraceError, match="expected .pkl, .pickle or .json"):
        load_device_trace(tmp_path / "cap.txt")
    with pytest.raises(TraceError, match="cannot be read"):
        load_device_trace(tmp_path / "missing.pkl")


class _Hostile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_hostile_pickle_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = _pickle(tmp_path, "cap.pkl", {"1": _Hostile(marker)})

    with pytest.raises(TraceError) as exc:
        load_device_trace(path)

    assert not marker.exists()
    assert str(path) in str(exc.value) and "which a trace file never needs" in str(exc.value)


def test_numpy_numbers_in_a_pickle_are_plain_numbers(tmp_path):
    path = _pickle(tmp_path, "cap.pkl", {1: {"computation": np.float64(3.5), "communication": np.int64(9)}})

    trace = load_device_trace(path)

    assert trace.ms_per_sample.tolist() == [3.5] and trace.kbit_per_s.tolist() == [9.0]


def test_numpy_object_arrays_are_refused(tmp_path):
    path = _pickle(tmp_path, "cap.pkl", {1: np.array([1.0])})

    with pytest.raises(TraceError, match="never needs"):
        safe_load_pickle(path)


# -- availability ----------------------------------------------------------------------------


def _behave(active, inactive, finish=100):
    return {"duration": finish, "active": active, "inactive": inactive, "finish_time": finish, "model": "x"}


def test_fedscale_behaviour_trace_repeats_every_finish_time(tmp_path):
    path = _pickle(tmp_path, "behave.pkl", {5: _behave([10, 50], [20, 100]), 6: _behave([0], [30], finish=40)})
    avail = TraceAvailability(load_availability_trace(path), 2)

    at = {t: avail.available(t).tolist() for t in (0, 9.99, 10, 19.99, 20, 50, 99.9, 100, 110, 140, 170)}

    assert at == {
        0: [False, True], 9.99: [False, True], 10: [True, True], 19.99: [True, True], 20: [False, True],
        50: [True, True], 99.9: [True, True], 100: [False, True], 110: [True, False], 140: [False, True],
        170: [True, True],
    }


@pytest.mark.parametrize("suffix", [".json", ".csv"])
def test_simple_interval_forms_do_not_repeat(tmp_path, suffix):
    if suffix == ".json":
        path = _json(tmp_path, "iv.json", {"a": [[0, 5], [10, 20]], "b": [[3, 4]]})
    else:
        path = tmp_path / "iv.csv"
        path.write_text("client_id,start_s,end_s\na,0,5\nb,3,4\na,10,20\n", encoding="utf-8")
    avail = TraceAvailability(load_availability_trace(path), 3)  # device 2 follows client a again

    assert avail.available(3).tolist() == [True, True, True]
    assert avail.available(4).tolist() == [True, False, True]
    assert avail.available(12).tolist() == [True, False, True]
    assert avail.available(1e9).tolist() == [False, False, False]


def test_interval_edges_are_exact_among_many_clients(tmp_path):
    # Far from 0, shifted float keys blur; the answer must still be exact at the edges.
    n = 50_000
    data = {str(i): [[1e6 + 0.25, 1e6 + 0.5]] for i in range(n)}
    avail = TraceAvailability(load_availability_trace(_json(tmp_path, "iv.json", data)), n)

    assert not avail.available(1e6 + 0.25 - 1e-9).any()
    assert avail.available(1e6 + 0.25).all()
    assert avail.available(np.nextafter(1e6 + 0.5, 0)).all()
    assert not avail.available(1e6 + 0.5).any()


def test_online_for_s_runs_to_the_interval_end_and_across_the_period(tmp_path):
    trace = {1: _behave([10, 50], [20, 100]), 2: _behave([0, 80], [30, 100]), 3: _behave([0], [100])}
    avail = TraceAvailability(load_availability_trace(_pickle(tmp_path, "b.pkl", trace)), 3)

    left = avail.online_for_s(85.0, np.array([0, 1, 2]))

    # 1: online until 100, then offline until 110; 2: [80, 100) then [0, 30) again: 15 + 30;
    # 3: online for the whole period, for ever.
    assert left.tolist() == [15.0, 45.0, math.inf]
    assert avail.online_for_s(25.0, np.array([0])).tolist() == [0.0]  # offline already


@pytest.mark.parametrize(
    "entry, field, what",
    [
        (_behave([10, 5], [20, 30]), "active", "start times out of order"),
        (_behave([10, 15], [20, 30]), "active", "intervals that overlap"),
        (_behave([10], [10]), "inactive", "ends at or before it starts"),
        (_behave([10], [120]), "inactive", "past finish_time"),
        (_behave([-1], [10]), "active", "not a finite number >= 0"),
        (_behave([10, 20], [15]), "inactive", "has 1 times but active has 2"),
        (_behave([10], [float("nan")]), "inactive", "not a finite number"),
        (_behave([10], ["15"]), "inactive", "holds '15'"),
        (_behave([10], [20], finish=0), "finish_time", "expected a finite positive number of seconds"),
        ({"active": [1], "inactive": [2]}, "finish_time", "missing"),
        ({"active": 1, "inactive": [2], "finish_time": 9}, "active", "expected a list of times"),
    ],
)
def test_bad_behaviour_trace_names_file_client_and_field(tmp_path, entry, field, what):
    path = _pickle(tmp_path, "behave.pkl", {"ok": _behave([1], [2]), "c9": entry})

    with pytest.raises(TraceError) as exc:
        load_availability_trace(path)

    msg = str(exc.value)
    assert str(path) in msg and "client 'c9'" in msg and f"field '{field}'" in msg and what in msg


def test_bad_csv_intervals(tmp_path):
    path = tmp_path / "iv.csv"
    path.write_text("client_id,start_s\na,1\n", encoding="utf-8")
    with pytest.raises(TraceError, match="expected a header with client_id, start_s, end_s"):
        load_availability_trace(path)
    path.write_text("client_id,start_s,end_s\na,1,x\n", encoding="utf-8")
    with pytest.raises(TraceError, match="client 'a', field 'end_s': 'x' on line 2 is not a number"):
        load_availability_trace(path)
    path.write_text("client_id,start_s,end_s\na,5,9\na,1,3\n", encoding="utf-8")
    with pytest.raises(TraceError, match="client 'a', field 'active': start times out of order"):
        load_availability_trace(path)


@fuzz(60)
@given(st.dictionaries(
    st.text(max_size=4),
    st.lists(st.lists(st.one_of(st.floats(allow_nan=True), st.integers(-5, 50), st.text(max_size=2), st.none()),
                      max_size=3), max_size=4),
    max_size=4,
))
def test_any_interval_file_loads_or_says_why(tmp_path_factory, data):
    path = _json(tmp_path_factory.mktemp("fuzz"), "iv.json", data)

    try:
        trace = load_availability_trace(path)
    except TraceError as exc:
        assert str(path) in str(exc)
        return
    assert np.all(trace.end_s > trace.start_s)
    avail = TraceAvailability(trace, 3)
    assert avail.available(10.0).dtype == bool


# -- the engine: a device its trace takes offline mid-round drops out then ---------------------


def test_device_leaving_mid_round_drops_out_at_that_time(tmp_path, shipped_profiles):
    from fedsim.engine.records import RunRecorder

    # Clients take 1.5 s down, 2/4/6/8 s compute, 1.5 s up. Device 1 is online until 3 s.
    path = _json(tmp_path, "iv.json", {"a": [[0, 1000]], "b": [[0, 3]], "c": [[0, 1000]], "d": [[0, 1000]]})
    fleet = make_fleet()
    rec = RunRecorder(tmp_path / "run", {"name": "trace"})
    engine = make_engine(fleet, shipped_profiles, availability=TraceAvailability(load_availability_trace(path), 4),
                         recorder=rec, clients_per_round=4, max_rounds=2)

    engine.run()
    rec.close()

    clients = read_clients(tmp_path / "run")
    log = [(int(r), int(d), o, float(e)) for r, d, o, e in zip(clients["round"], clients["device_id"], clients["outcome"], clients["end_s"])]
    assert sorted(log) == [
        (0, 0, "ok", 5.0), (0, 1, "dropout", 3.0), (0, 2, "ok", 9.0), (0, 3, "ok", 11.0),
        (1, 0, "ok", 16.0), (1, 2, "ok", 20.0), (1, 3, "ok", 22.0),
    ]
    assert [h["available"] for h in engine.history] == [4, 3]


# -- scenarios -------------------------------------------------------------------------------------


def test_scenario_names_a_bad_trace_file(tmp_path, write_yaml):
    from conftest import TINY_SCENARIO
    from fedsim.core.errors import ConfigError
    from fedsim.study.scenario import load_scenario

    cap = _json(tmp_path, "cap.json", {"1": {"computation": 5, "communication": 0}})
    text = TINY_SCENARIO.replace("  network_by_device:", f"  trace: {{capacity: {cap}, reference_gflops_per_sample: 1}}\n  network_by_device:")

    with pytest.raises(ConfigError) as exc:
        load_scenario(write_yaml("bad.yaml", text))

    msg = str(exc.value)
    assert "'fleet.trace.capacity'" in msg and "client '1', field 'communication'" in msg and "line 7" in msg


def test_scenario_fleet_larger_than_capacity_trace(tmp_path, write_yaml):
    from conftest import TINY_SCENARIO
    from fedsim.core.errors import ConfigError
    from fedsim.study.scenario import load_scenario

    cap = _json(tmp_path, "cap.json", CAPACITY)
    text = TINY_SCENARIO.replace("  network_by_device:", f"  trace: {{capacity: {cap}, reference_gflops_per_sample: 1}}\n  network_by_device:")

    with pytest.raises(ConfigError, match="a trace of at least fleet.size = 60 clients; it holds 2"):
        load_scenario(write_yaml("bad.yaml", text))


def test_shipped_trace_scenario_runs(tmp_path, monkeypatch):
    from fedsim.engine.records import read_rounds
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import build_fleet, simulate

    monkeypatch.chdir(Path(__file__).resolve().parents[1])  # the scenario names its traces from the repository root
    variant = load_scenario("scenarios/traces.yaml", overrides=["engine.max_rounds=3"])[0]
    _, fleet, _ = build_fleet(variant.scenario)

    simulate(variant.scenario, tmp_path / "run")

    # MiniLM-L6 forward at 128 tokens (2.87 GFLOP) over the first client's 61.9 ms per sample.
    first = load_device_trace("scenarios/traces/device_capacity.json")
    assert fleet.flops_per_s[0] == pytest.approx(variant.scenario.fleet.trace.reference_flops() / (first.ms_per_sample[0] / 1e3))
    assert len(read_rounds(tmp_path / "run")["round"]) == 3


@fuzz(60)
@given(st.dictionaries(
    st.one_of(st.integers(), st.text(max_size=3)),
    st.one_of(
        st.fixed_dictionaries({}, optional={
            "computation": st.one_of(st.floats(allow_nan=True), st.integers(-3, 3), st.booleans(), st.text(max_size=2), st.none()),
            "communication": st.one_of(st.floats(allow_nan=True), st.integers(-3, 3), st.booleans(), st.none()),
        }),
        st.integers(), st.lists(st.integers(), max_size=2),
    ),
    max_size=4,
))
def test_any_capacity_pickle_loads_or_says_why(tmp_path_factory, data):
    path = _pickle(tmp_path_factory.mktemp("fuzz"), "cap.pkl", data)

    try:
        trace = load_device_trace(path)
    except TraceError as exc:
        assert str(path) in str(exc)
        return
    assert np.all(np.isfinite(trace.ms_per_sample) & (trace.ms_per_sample > 0) & (trace.kbit_per_s > 0))


def test_available_matches_a_plain_loop_over_clients(tmp_path):
    rng = np.random.default_rng(5)
    data = {}
    for c in range(300):
        edges = np.unique(rng.integers(0, 10_000, size=2 * rng.integers(0, 6)))
        edges = edges[: edges.size // 2 * 2].astype(float)
        period = float(rng.choice([10_000, 12_345]))
        data[c] = _behave(edges[0::2].tolist(), edges[1::2].tolist(), finish=period)
    trace = load_availability_trace(_pickle(tmp_path, "b.pkl", data))
    avail = TraceAvailability(trace, 450)

    for t in rng.uniform(0, 50_000, 40).tolist() + [0.0, 10_000.0, 12_345.0]:
        expected = []
        for i in range(450):
            e = data[i % 300]
            x = t % e["finish_time"]
            expected.append(any(a <= x < b for a, b in zip(e["active"], e["inactive"])))
        assert avail.available(t).tolist() == expected
