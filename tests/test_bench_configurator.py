"""benchmarks/bench_configurator.py: which finished runs it reuses, and its rows."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_configurator")


@pytest.mark.parametrize("param, other", [("gain_measure", "alone"), ("signed_worth", True), ("arm_sd", 1.0)])
def test_a_row_that_does_not_learn_ignores_how_gains_are_measured_and_learnt(bench, param, other):
    off = bench.resolved_method({"name": "droppeft", "params": {"learning": False}})
    older = {k: v for k, v in off.items() if k != param}  # recorded before the parameter existed
    assert bench.comparable(older) == bench.comparable(off)
    assert bench.comparable({**off, param: other}) == bench.comparable(off)
    assert bench.comparable({**off, "prior_beta": 2.0}) != bench.comparable(off)  # what it plans with still counts


def test_a_learning_row_reruns_when_how_gains_are_measured_changes(bench):
    on = bench.resolved_method({"name": "droppeft"})
    assert on["gain_measure"] == "loo"
    assert bench.comparable({**on, "gain_measure": "alone"}) != bench.comparable(on)
    assert bench.comparable({k: v for k, v in on.items() if k != "gain_measure"}) != bench.comparable(on)
    assert on["signed_worth"] is False and bench.comparable({**on, "signed_worth": True}) != bench.comparable(on)
    assert on["arm_sd"] is None and bench.comparable({**on, "arm_sd": 1.0}) != bench.comparable(on)


def test_every_environment_has_a_scenario_and_no_told_truth_where_no_curve_is_true(bench):
    assert all((bench.ENV_DIR / f"{e}.yaml").exists() for e in bench.ENVS)
    assert bench.SURROGATE_ONLY <= set(bench.ENVS) and bench.PRIOR_WRONG <= set(bench.ENVS)
    assert bench.told_truth_row("minilm-mixharm") is None and bench.told_truth_row("minilm-shift") is None
    assert bench.told_truth_row("minilm-iid")["params"]["prior_beta"] == pytest.approx(2.4)
