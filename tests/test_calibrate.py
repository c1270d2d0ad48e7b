"""``fedsim calibrate``: the fit recovers known host figures; a tiny model is measured and
its profile loads and runs in a scenario."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import TINY_SCENARIO
from fedsim.core.errors import FedsimError
from fedsim.fleet.profiles import default_profiles_dir, load_profiles
from fedsim.study.calibrate import CalibConfig, Measurement, calibrate, fit, parse_configs, table
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import build_fleet


def _m(flops, step_s, act, grads_optim, peak) -> Measurement:
    return Measurement(CalibConfig(64, 8), 6, step_s, peak, flops, grads_optim, act)


def test_fit_recovers_throughput_and_memory_line():
    # A host of exactly 20 GFLOP/s, 300 MB runtime and 1.5x the default activations.
    rows = [_m(f, f / 20e9, a, g, 300e6 + g + 1.5 * a) for f, a, g in ((1e9, 100e6, 5e6), (4e9, 400e6, 5e6), (2e9, 250e6, 9e6))]

    f = fit(rows)

    assert f.gflops_per_s == pytest.approx(20.0)
    assert f.runtime_bytes == pytest.approx(300e6) and f.act_scale == pytest.approx(1.5)
    assert np.abs(f.time_errors).max() < 1e-12 and np.abs(f.mem_errors).max() < 1e-9


def test_fit_is_least_squares_on_relative_time_error():
    # Measured 10 and 20 GFLOP/s: F = (10^2 + 20^2) / (10 + 20) = 16.67; errors -40% and +20%.
    f = fit([_m(10e9, 1.0, 1e6, 0, 1e6), _m(20e9, 1.0, 2e6, 0, 2e6)])

    assert f.gflops_per_s == pytest.approx(500 / 30)
    assert f.time_errors.tolist() == pytest.approx([10 / (500 / 30) - 1, 20 / (500 / 30) - 1])
    assert "step time |error| median" in table(f)


def test_parse_configs():
    assert parse_configs("64x8, 128x16x2") == (CalibConfig(64, 8), CalibConfig(128, 16, 2))
    for bad in ("64", "64x0", "ax8", "64x8x2x1"):
        with pytest.raises(ValueError, match="SEQxBATCH"):
            parse_configs(bad)


def test_tiny_model_calibration_writes_a_profile_a_scenario_uses(tmp_path, write_yaml):
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    shutil.copy(default_profiles_dir() / "networks.yaml", profiles)
    out = profiles / "lab-host.yaml"

    f = calibrate("tiny-bert", out, configs=(CalibConfig(16, 2), CalibConfig(32, 4, 2)), steps=1, isolate=False,
                  app_memory_gb=4.0, watts=20.0)

    cls = load_profiles(profiles).device("lab-host")
    assert cls.train_gflops_per_s.mean() == pytest.approx(f.gflops_per_s, rel=1e-3)  # 4 significant digits
    assert cls.app_memory_gb.mean() == 4.0
    assert [r["layers_run"] for r in f.rows] == [4, 2]
    assert all(r["meas_s"] > 0 for r in f.rows)
    text = TINY_SCENARIO.replace("devices: {jetson-tx2: 0.5, phone-high: 0.5}", "devices: {lab-host: 1.0}") \
        .replace("  network_by_device: {jetson-tx2: {ethernet: 1.0}}\n", f"  profiles_dir: {profiles}\n")
    sc = load_scenario(write_yaml("lab.yaml", text))[0].scenario
    _, fleet, _ = build_fleet(sc)
    assert np.all(fleet.flops_per_s == cls.train_gflops_per_s.mean() * 1e9)

    with pytest.raises(FedsimError, match="already exists"):
        calibrate("tiny-bert", out, configs=(CalibConfig(16, 2),), isolate=False)


def test_cli_refuses_bad_configs_and_existing_files(tmp_path):
    from typer.testing import CliRunner

    from fedsim.cli import app

    existing = tmp_path / "host.yaml"
    existing.write_text("devices: {}\n", encoding="utf-8")
    runner = CliRunner()

    bad = runner.invoke(app, ["calibrate", "--model", "tiny-bert", "--configs", "64", "--out", str(tmp_path / "x.yaml")])
    taken = runner.invoke(app, ["calibrate", "--model", "tiny-bert", "--out", str(existing)])

    assert bad.exit_code == 2 and "'64' is not SEQxBATCH" in bad.output
    assert taken.exit_code == 2 and "already exists" in taken.output and existing.read_text() == "devices: {}\n"
