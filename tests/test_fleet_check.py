"""``fedsim profiles --check`` and ``--availability``: per-class costs before a run, and
the available share of a fleet over simulated time."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import TINY_SCENARIO
from fedsim.cli import app
from fedsim.core.costmodel import client_times, plan_cost
from fedsim.study.fleet_check import check_fleet, report
from fedsim.study.plot_availability import availability_share
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import build_base_plan, build_fleet, model_shape_for

# MiniLM-L6 at batch 32 and 256 tokens needs ~5.6 GB: phones cannot, an AGX Orin can.
HEAVY = TINY_SCENARIO.replace("devices: {jetson-tx2: 0.5, phone-high: 0.5}", "devices: {jetson-agx-orin: 0.5, phone-high: 0.5}") \
    .replace("network_by_device: {jetson-tx2: {ethernet: 1.0}}", "network_by_device: {jetson-agx-orin: {ethernet: 1.0}}") \
    .replace("name_or_path: tiny-bert", "name_or_path: minilm-l6").replace("max_length: 32", "max_length: 256") \
    .replace("batch_size: 4", "batch_size: 32")


@pytest.fixture
def cli():
    runner = CliRunner()
    return lambda *args: runner.invoke(app, [str(a) for a in args])


def test_classes_that_cannot_fit_are_named(write_yaml):
    sc = load_scenario(write_yaml("heavy.yaml", HEAVY))[0].scenario

    checks, note = check_fleet(sc)

    by = {c.name: c for c in checks}
    assert by["phone-high"].oom_share == 1.0 and by["phone-high"].verdict == "cannot take part (out of memory)"
    assert by["jetson-agx-orin"].oom_share == 0.0 and by["jetson-agx-orin"].verdict == "ok"
    assert by["phone-high"].devices + by["jetson-agx-orin"].devices == 60
    assert note == "plans: fedlora's first round"
    assert "cannot take part: phone-high" in report("fedlora", checks, note)


def test_percentiles_are_the_cost_models_times(write_yaml):
    sc = load_scenario(write_yaml("tiny.yaml", TINY_SCENARIO))[0].scenario
    _, fleet, _ = build_fleet(sc)
    shape = model_shape_for(sc)
    members = np.flatnonzero(fleet.device_class == fleet.device_names.index("jetson-tx2"))
    times = client_times(fleet, members, [plan_cost(shape, build_base_plan(sc, shape))], np.zeros(members.size, int))

    checks, _ = check_fleet(sc)

    tx2 = next(c for c in checks if c.name == "jetson-tx2")
    assert tx2.sampled == tx2.devices == members.size
    assert tx2.round_s == tuple(np.percentile(times.total_s, (10, 50, 90)))
    assert tx2.round_s[0] <= tx2.round_s[1] <= tx2.round_s[2]


def test_deadline_misses_count_as_late(write_yaml):
    text = TINY_SCENARIO.replace("max_rounds: 4", "max_rounds: 4\n  round_deadline_s: 0.000001")
    sc = load_scenario(write_yaml("late.yaml", text))[0].scenario

    checks, _ = check_fleet(sc)

    assert all(c.late_share == 1.0 and c.verdict.startswith("cannot take part") for c in checks)


def test_availability_share_follows_windows_and_traces(write_yaml, tmp_path):
    sc = load_scenario(write_yaml("tiny.yaml", TINY_SCENARIO))[0].scenario
    t_s, shares = availability_share(sc, days=1, step_s=3600)
    assert t_s.tolist() == [h * 3600.0 for h in range(25)]
    assert shares["jetson-tx2"].tolist() == [1.0] * 25  # lab boards: always

    ids = {str(i): [[0, 7200]] if i % 2 else [[3600, 10800]] for i in range(60)}
    (tmp_path / "iv.json").write_text(json.dumps(ids), encoding="utf-8")
    traced = TINY_SCENARIO.replace("  network_by_device:", f"  trace: {{availability: {tmp_path / 'iv.json'}}}\n  network_by_device:")
    sc = load_scenario(write_yaml("traced.yaml", traced))[0].scenario
    _, shares = availability_share(sc, days=0.25, step_s=1800)
    assert shares["all"].tolist() == [0.5, 0.5, 1.0, 1.0, 0.5, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]


def test_cli_check_and_availability_plot(cli, write_yaml, tmp_path):
    heavy = write_yaml("heavy.yaml", HEAVY)

    res = cli("profiles", "--check", heavy)
    png = tmp_path / "avail.png"
    plot = cli("profiles", "--availability", heavy, "--days", "2", "--out", png)

    assert res.exit_code == 0, res.output
    assert "round s p10/p50/p90" in res.output and "cannot take part: phone-high" in res.output
    assert plot.exit_code == 0, plot.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_check_of_a_bad_scenario_is_one_line(cli, write_yaml):
    bad = write_yaml("bad.yaml", TINY_SCENARIO.replace("size: 60", "size: 0"))

    res = cli("profiles", "--check", bad)

    assert res.exit_code == 2 and "fleet.size" in res.output and "Traceback" not in res.output
