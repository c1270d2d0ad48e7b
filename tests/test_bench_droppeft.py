"""The DropPEFT benchmark's non-IID rows and goal line (no run: made-up metrics)."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_droppeft")


def test_noniid_rows_share_the_local_test_shards_and_finetune_what_ptls_keeps(bench):
    rows = {label: (method, part) for label, method, part in bench.rows({"noniid"})}
    assert set(rows) == {"a0.1-fedlora", "a0.1-fedlora-ft", "a0.1-droppeft", "a0.1-droppeft-ptls",
                         "a0.1-droppeft-ptls-layers"}
    assert all(part["local_test"] == "test_split" and part["local_test_examples"] >= 20 for _, part in rows.values())
    ft = rows["a0.1-fedlora-ft"][0]["params"]["local_finetune"]
    ptls = rows["a0.1-droppeft-ptls"][0]["params"]
    assert (ft["layers"], ft["head"]) == (ptls["personal_layers"], ptls["personal_head"])


def _metrics(personal: float, glob: float = 0.8) -> dict:
    return {"last_personal_acc": personal, "last_acc": glob, "traffic_total_mb": 100.0, "up_mb_per_client": 0.5,
            "traffic_to_own_target_mb": None}


@pytest.mark.parametrize(("ptls", "verdict"), [([0.93, 0.91], "met"), ([0.92, 0.90], "missed")])
def test_goal_line_compares_ptls_with_the_finetuning_baseline_per_seed(bench, ptls, verdict):
    # Prepare: the baseline at 0.90 / 0.89 on two seeds
    runs = {"a0.1-fedlora-ft": [_metrics(0.90), _metrics(0.89)],
            "a0.1-droppeft-ptls": [_metrics(p) for p in ptls],
            "a0.1-fedlora": [_metrics(0.6), _metrics(0.6)]}
    # Execute
    lines = bench.noniid_goals(runs.get, 0.8)
    # Assert
    goal = next(line for line in lines if line.startswith("PTLS at least 2 points"))
    assert goal.endswith(verdict)
    assert any(line.strip().startswith("fedlora: personalised 0.600") for line in lines)


def test_overrides_reach_the_scenario_written_for_a_row(bench, tmp_path, monkeypatch):
    # Prepare: stop before simulating
    import importlib

    def stop(*args, **kwargs):
        raise RuntimeError("stopped before simulating")

    monkeypatch.setattr(importlib.import_module("fedsim.study.simulate"), "simulate", stop)
    label, method, part = bench.rows({"noniid"})[1]
    # Execute
    with pytest.raises(FileNotFoundError):  # no summary.json: the run was stopped
        bench.run_one(tmp_path / label / "seed0", method, part, 0, "torch", None,
                      ["train.threads=2", "data.personal_eval_clients=50"])
    # Assert
    import yaml

    raw = yaml.safe_load((tmp_path / label / "seed0" / "scenario.yaml").read_text())
    assert raw["train"]["threads"] == 2 and raw["data"]["personal_eval_clients"] == 50
    assert raw["data"]["partition"]["local_test"] == "test_split" and raw["method"] == method
