"""benchmarks/bench_configurator.py: which finished runs it reuses, and its rows."""

from __future__ import annotations

import json

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


def test_probes_count_only_for_the_knowledge_gradient(bench):
    kg = bench.resolved_method({"name": "droppeft"})
    assert kg["probes"] == 4 and bench.comparable({**kg, "probes": 0}) != bench.comparable(kg)
    for row in ("droppeft-ids", "droppeft-thompson", "droppeft-greedy", "droppeft-no-learning"):
        other = bench.resolved_method(bench.method_rows()[row])
        assert bench.comparable({**other, "probes": 0}) == bench.comparable(other), row


def test_the_prior_as_a_hypothesis_counts_only_where_it_is_read_and_old_runs_are_the_no_null_row(bench):
    on = bench.resolved_method({"name": "droppeft"})
    assert on["point_null"] == 0.5 and bench.comparable({**on, "point_null": 0.0}) != bench.comparable(on)
    for row in ("droppeft-no-learning", "droppeft-flat", "droppeft-mean"):  # no learning, no curve, mean scale
        other = bench.resolved_method(bench.method_rows()[row])
        assert bench.comparable({**other, "point_null": 0.0}) == bench.comparable(other), row
    # A run of the default recorded before point_null existed is the row that switches it off
    no_null = bench.resolved_method(bench.method_rows()["droppeft-no-null"])
    older = {k: v for k, v in no_null.items() if k != "point_null"}
    assert bench.recorded_method({"method_resolved": older}, no_null) == bench.comparable(no_null)
    assert bench.recorded_method({"method_resolved": older}, on) != bench.comparable(on)


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
    told = bench.told_truth_row("minilm-iid")["params"]
    assert told["prior_beta"] == pytest.approx(2.4) and told["shape_depths"] == [2.0]
    assert told["returns_prior"] == pytest.approx(1.0)  # the surrogate's data_exponent: its returns, told too


def test_a_row_that_floors_harm_ignores_the_harm_prior_and_old_signed_runs_are_reused(bench):
    floored = bench.resolved_method({"name": "droppeft"})
    assert floored["signed_worth"] is False and floored["harm_prior"] == "pooled"
    assert bench.comparable({**floored, "harm_prior": "helps"}) == bench.comparable(floored)
    signed = bench.resolved_method(bench.method_rows()["droppeft-signed"])
    pooled = bench.resolved_method(bench.method_rows()["droppeft-pooled-harm"])
    assert bench.comparable(signed) != bench.comparable(pooled)
    # A signed run recorded before harm_prior existed ran with "helps": the row that asks for it reuses it
    # (had it run without probes and the prior as a hypothesis, as every run before they existed did)
    older = {k: v for k, v in signed.items() if k not in bench.ADDED_PARAMS}
    assert bench.comparable({**bench.ADDED_PARAMS, **older}) == bench.comparable({**signed, "probes": 0, "point_null": 0.0})
    assert bench.comparable({**bench.ADDED_PARAMS, **older}) != bench.comparable(signed)  # the default has probes now
    assert (bench.comparable({**bench.ADDED_PARAMS, **{k: v for k, v in pooled.items() if k not in bench.ADDED_PARAMS}})
            != bench.comparable(pooled))


def test_an_unordered_row_ignores_how_the_order_would_treat_draws_and_old_ordered_runs_are_reused(bench):
    plain = bench.resolved_method(bench.method_rows()["droppeft-unordered"])
    assert plain["monotone_worth"] is False
    assert bench.comparable({**plain, "monotone_draws": not plain["monotone_draws"]}) == bench.comparable(plain)
    ordered = bench.resolved_method(bench.method_rows()["droppeft-ordered"])
    estimates = bench.resolved_method(bench.method_rows()["droppeft-ordered-estimates"])
    assert ordered["monotone_draws"] and not estimates["monotone_draws"]
    assert bench.comparable(ordered) != bench.comparable(estimates)
    # An ordered run recorded before monotone_draws existed ordered its draws: its row reuses it
    older = {k: v for k, v in ordered.items() if k != "monotone_draws"}
    assert bench.recorded_method({"method_resolved": older}, ordered) == bench.comparable(ordered)
    assert bench.recorded_method({"method_resolved": older}, estimates) != bench.comparable(estimates)


def test_log_gains_writes_what_a_learning_run_observed_and_changes_no_record(bench, tmp_path):
    learn, off = bench.method_rows()["droppeft"], bench.method_rows()["droppeft-no-learning"]
    for name, method in (("droppeft", learn), ("droppeft-no-learning", off)):
        for logged in (False, True):
            out = tmp_path / ("logged" if logged else "plain") / "surrogate" / "minilm-iid" / name / "seed0"
            assert bench.run_one(out, "minilm-iid", method, 0, "surrogate", ["engine.max_rounds=4"],
                                 log_gains=logged) == "ok"
    base = tmp_path / "logged" / "surrogate" / "minilm-iid"
    rows = [json.loads(line) for line in (base / "droppeft" / "seed0" / "gains.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2, 3] and all(len(r["arms"]) == len(r["gains"]) > 0 for r in rows)
    assert not (base / "droppeft-no-learning" / "seed0" / "gains.jsonl").exists()  # it measures no gains
    for name in ("droppeft", "droppeft-no-learning"):
        for f in ("rounds.csv", "clients.csv"):
            plain = tmp_path / "plain" / "surrogate" / "minilm-iid" / name / "seed0" / f
            assert (base / name / "seed0" / f).read_bytes() == plain.read_bytes()


def test_rows_only_runs_the_rows_asked_for_and_nothing_else(bench, tmp_path, capsys):
    out = tmp_path / "runs"
    assert bench.main(["--envs", "minilm-iid", "--seeds", "0", "--rows", "droppeft-no-learning", "--rows-only",
                       "--top-arms", "1", "--set", "engine.max_rounds=3", "--out", str(out)]) == 0
    env = out / "surrogate" / "minilm-iid"
    assert sorted(p.name for p in env.iterdir()) == ["droppeft-no-learning"]
    # droppeft has no runs: its goals against learning off are not measured, not met
    printed = capsys.readouterr().out
    assert "not measured: droppeft against learning off" in printed and "than learning off: ok" not in printed
    # Without it, FedLoRA and the fixed arms run beside the row
    assert bench.main(["--envs", "minilm-iid", "--seeds", "0", "--rows", "droppeft-no-learning",
                       "--top-arms", "1", "--set", "engine.max_rounds=3", "--out", str(out)]) == 0
    assert {"fedlora", "stld-uniform-0.5", "droppeft-told-truth"} <= {p.name for p in env.iterdir()}


def test_rows_only_may_name_fedlora_which_then_runs_on_every_seed_and_no_other_arm(bench, tmp_path, capsys):
    out = tmp_path / "runs"
    assert bench.main(["--envs", "minilm-iid", "--seeds", "0,1", "--rows", "fedlora,droppeft-no-learning",
                       "--rows-only", "--top-arms", "0", "--set", "engine.max_rounds=3", "--out", str(out)]) == 0
    env = out / "surrogate" / "minilm-iid"
    assert sorted(p.name for p in env.iterdir()) == ["droppeft-no-learning", "fedlora"]
    assert sorted(p.name for p in (env / "fedlora").iterdir()) == ["seed0", "seed1"]
    # an unknown row is refused, naming the rows there are
    with pytest.raises(SystemExit):
        bench.main(["--envs", "minilm-iid", "--rows", "fedlora-x", "--rows-only", "--out", str(out)])
    assert "unknown ['fedlora-x']" in capsys.readouterr().err


def test_without_fixed_arms_or_fedlora_the_goals_against_them_are_not_measured(bench, tmp_path, capsys):
    # Execute: droppeft alone, nothing to compare it with
    assert bench.main(["--envs", "minilm-iid", "--seeds", "0", "--rows", "droppeft", "--rows-only", "--top-arms", "0",
                       "--set", "engine.max_rounds=3", "--out", str(tmp_path / "runs")]) == 0
    # Assert: said so, never "met" over an empty set, no ratio to an infinite mean
    printed = capsys.readouterr().out
    assert "not measured: minilm-iid: droppeft against the oracle" in printed
    assert "not measured: minilm-iid: droppeft against fedlora" in printed
    assert "met: minilm-iid" not in printed and "inf" not in printed


def test_an_environment_whose_weights_are_not_installed_is_named_with_the_fix(bench, tmp_path, monkeypatch):
    # Prepare: MPNet's five packages missing (whatever this machine has), nothing unpacked
    import importlib.metadata

    from fedsim.core import models

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FEDSIM_MODEL_DIR_MPNET_BASE", raising=False)
    monkeypatch.delenv("FEDSIM_MODELS", raising=False)
    monkeypatch.setattr(models.importlib.metadata, "distribution", missing)
    # Execute
    out = bench.untrainable(["minilm-iid", "mpnet-12l"])
    # Assert: MiniLM trains; MPNet is left out with the command that installs it
    assert list(out) == ["mpnet-12l"] and "make mpnet" in out["mpnet-12l"]


def test_a_run_made_with_positional_draws_is_rerun_and_named_in_the_table(bench, tmp_path, capsys):
    # Prepare: a finished run, then its summary made to look as written before draws keyed by device
    args = ["--envs", "minilm-iid", "--seeds", "0", "--rows", "droppeft-no-learning", "--rows-only", "--top-arms", "0",
            "--set", "engine.max_rounds=3", "--out", str(tmp_path / "runs")]
    assert bench.main(args) == 0
    run = tmp_path / "runs" / "surrogate" / "minilm-iid" / "droppeft-no-learning" / "seed0"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["draws"] == "keyed-by-device"
    del summary["draws"]
    (run / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    # Execute: the table alone, then the run
    assert bench.main([*args, "--table-only"]) == 0
    table = capsys.readouterr().out
    assert bench.main(args) == 0
    # Assert: the table says which run drew positionally; the run is made again, the old one kept
    assert "1 of these runs drew positionally" in table and "droppeft-no-learning/seed0" in table
    assert json.loads((run / "summary.json").read_text())["draws"] == "keyed-by-device"
    assert (run.parent / "seed0.old-1" / "summary.json").exists()
    # A table made after the rerun names none
    capsys.readouterr()
    assert bench.main([*args, "--table-only"]) == 0
    assert "drew positionally" not in capsys.readouterr().out


def test_rows_before_arrival_draws_reuse_their_runs(bench):
    """A run recorded before arrival_draws existed planned at the cost model's times: the
    no-draws rows reuse it, the default does not, and a row that waits for its quota
    (which never reads the draws) reuses it whatever the parameter says."""
    for row, old_row in (("droppeft-no-draws", "droppeft"), ("droppeft-no-learning-no-draws", "droppeft-no-learning")):
        now = bench.resolved_method(bench.method_rows()[row])
        older = {k: v for k, v in now.items() if k != "arrival_draws"}
        assert bench.comparable({**bench.ADDED_PARAMS, **older}) == bench.comparable(now)
        default = bench.resolved_method(bench.method_rows()[old_row])
        assert bench.comparable({**bench.ADDED_PARAMS, **older}) != bench.comparable(default)
    fixed = bench.resolved_method(bench.method_rows()["droppeft-fixed-quota"])
    assert fixed["arrival_draws"] == 32
    assert bench.comparable({**fixed, "arrival_draws": 0}) == bench.comparable(fixed)
