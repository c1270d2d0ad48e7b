"""benchmarks/calibrate_configurator.py: the configurator's calibration set runs and checks its options."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def calib():
    return load_benchmark("calibrate_configurator")


def test_a_short_run_scores_the_rows_asked_for(calib, capsys):
    assert calib.main(["--truths", "1", "--rounds", "2", "--rows", "5,7", "--noise", "1.0"]) == 0
    out = capsys.readouterr().out
    assert "gain noise sd 1" in out and "| learning off (prior only) |" in out and "arm_sd: 1" in out
    assert "knowledge gradient" not in out


def test_noisier_gains_change_what_learning_sees_and_not_the_prior(calib):
    kg, off = calib.ROWS[list(calib.ROWS)[0]], calib.ROWS["learning off (prior only)"]
    assert calib.episode(0, off, 3, noise=0.3) == pytest.approx(calib.episode(0, off, 3, noise=1.0))
    assert calib.episode(0, kg, 3, noise=0.3) != pytest.approx(calib.episode(0, kg, 3, noise=1.0))


def test_a_client_swing_makes_gains_harmful_and_leaves_the_prior_alone(calib):
    kg, off = calib.ROWS[list(calib.ROWS)[0]], calib.ROWS["learning off (prior only)"]
    assert calib.episode(0, off, 3, swing=1.0) == pytest.approx(calib.episode(0, off, 3))
    assert calib.episode(0, kg, 3, swing=1.0) != pytest.approx(calib.episode(0, kg, 3))
    assert list(calib.ROWS)[9] == "mean signed gains (worth_scale: mean)"
    assert calib.main(["--truths", "1", "--rounds", "2", "--rows", "10", "--swing", "2"]) == 0


@pytest.mark.parametrize("argv", [["--rows", "99"], ["--rows", "x"], ["--noise", "-1"], ["--noise", "nan"],
                                  ["--swing", "-1"], ["--swing", "nan"]])
def test_bad_options_are_refused(calib, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        calib.main(argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err
