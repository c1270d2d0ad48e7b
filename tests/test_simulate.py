"""simulate(): records of a whole run, reproducibility, and failures that keep their records."""

from __future__ import annotations

import csv
import json

import pytest
import yaml

from fedsim.core.errors import ConfigError
from fedsim.engine.records import read_rounds, read_summary
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate
from fedsim.learning.surrogate import SurrogateTrainer


def _scenario(path, **kw):
    (v,) = load_scenario(path, **kw)
    return v.scenario


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_run_writes_all_records(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario)

    result = simulate(sc, tmp_path / "run", label="fedlora")

    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "rounds.csv", "clients.csv", "summary.json"}
    summary = read_summary(run)
    assert summary["status"] == "ok"
    assert summary["rounds"] == result.rounds == 4
    assert summary["stop_reason"] == "max_rounds"
    assert summary["fleet_size"] == 60
    assert summary["model"]["family"] == "bert" and summary["model"]["layers"] == 4
    assert summary["trainer"] == "surrogate"
    assert summary["sim_time_s"] == pytest.approx(result.sim_time_s)
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["seed"] == 3 and config["variant"] == "fedlora"
    assert config["engine"]["max_rounds"] == 4
    assert "sweep" not in config
    assert len(_rows(run / "rounds.csv")) == 4
    clients = _rows(run / "clients.csv")
    assert len(clients) == 4 * 6  # ceil(4 * 1.5) selected per round
    assert {r["device_class"] for r in clients} <= {"jetson-tx2", "phone-high"}


def test_resolved_config_reloads_as_the_same_scenario(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario)
    simulate(sc, tmp_path / "run")
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    config.pop("variant")
    (tmp_path / "again.yaml").write_text(yaml.safe_dump(config))

    again = _scenario(tmp_path / "again.yaml")

    assert again == sc


def test_same_seed_byte_identical_clients_csv(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario)

    simulate(sc, tmp_path / "a")
    simulate(sc, tmp_path / "b")

    assert (tmp_path / "a" / "clients.csv").read_bytes() == (tmp_path / "b" / "clients.csv").read_bytes()
    assert (tmp_path / "a" / "config.yaml").read_bytes() == (tmp_path / "b" / "config.yaml").read_bytes()


def test_same_seed_identical_rounds_except_wall_clock(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario)

    simulate(sc, tmp_path / "a")
    simulate(sc, tmp_path / "b")

    strip = lambda rows: [{k: v for k, v in r.items() if k != "train_wall_s"} for r in rows]  # noqa: E731
    assert strip(_rows(tmp_path / "a" / "rounds.csv")) == strip(_rows(tmp_path / "b" / "rounds.csv"))


def test_same_seed_byte_identical_rounds_csv(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario)

    simulate(sc, tmp_path / "a")
    simulate(sc, tmp_path / "b")

    assert (tmp_path / "a" / "rounds.csv").read_bytes() == (tmp_path / "b" / "rounds.csv").read_bytes()


def test_different_seed_different_records(tiny_scenario, tmp_path):
    simulate(_scenario(tiny_scenario, seed=1), tmp_path / "a")
    simulate(_scenario(tiny_scenario, seed=2), tmp_path / "b")

    assert (tmp_path / "a" / "clients.csv").read_bytes() != (tmp_path / "b" / "clients.csv").read_bytes()
    a, b = read_rounds(tmp_path / "a"), read_rounds(tmp_path / "b")
    assert list(a["sim_time_s"]) != list(b["sim_time_s"])


def test_stld_runs_and_records_its_plan(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario, overrides=["method={name: stld-fixed, params: {mean_drop: 0.5}}"])

    simulate(sc, tmp_path / "run")

    clients = _rows(tmp_path / "run" / "clients.csv")
    assert {r["plan"] for r in clients} == {"stld-uniform-0.5"}
    assert {float(r["mean_drop"]) for r in clients} == {0.5}


def test_failure_mid_run_keeps_finished_rounds(tiny_scenario, tmp_path, monkeypatch):
    sc = _scenario(tiny_scenario)
    original = SurrogateTrainer.evaluate

    def evaluate(self, round_idx):
        if round_idx >= 2:
            raise RuntimeError("disk on fire")
        return original(self, round_idx)

    monkeypatch.setattr(SurrogateTrainer, "evaluate", evaluate)

    with pytest.raises(RuntimeError, match="disk on fire"):
        simulate(sc, tmp_path / "run")

    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    assert [int(r["round"]) for r in _rows(run / "rounds.csv")] == [0, 1]
    assert {int(r["round"]) for r in _rows(run / "clients.csv")} == {0, 1}
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] == "disk on fire"
    assert summary["rounds"] == 2
    assert "RuntimeError" in summary["traceback"]
    assert summary["final_accuracy"] is not None
    assert summary["sim_time_s"] == pytest.approx(float(_rows(run / "rounds.csv")[-1]["sim_time_s"]))


def test_bad_input_fails_with_config_error_and_summary(tiny_scenario, tmp_path):
    # load_scenario refuses a missing model; one built in code reaches simulate.
    sc = _scenario(tiny_scenario)
    sc = sc.model_copy(update={"model": sc.model.model_copy(update={"name_or_path": "/no/such/model"})})

    with pytest.raises(ConfigError) as info:
        simulate(sc, tmp_path / "run")

    assert "model.name_or_path" in str(info.value)
    summary = read_summary(tmp_path / "run")
    assert summary["status"] == "failed"
    assert "model.name_or_path" in summary["error"]
    assert "traceback" not in summary  # user errors are not bugs
    assert summary["rounds"] == 0
    assert (tmp_path / "run" / "config.yaml").is_file()


def test_on_round_called_per_round(tiny_scenario, tmp_path):
    seen = []

    simulate(_scenario(tiny_scenario), tmp_path / "run", on_round=lambda row: seen.append(row["round"]))

    assert seen == [0, 1, 2, 3]
