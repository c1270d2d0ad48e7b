"""benchmarks/diag_arm_spread.py: logs the gains a DropPEFT run observes and replays them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import load_benchmark

LOG = Path(__file__).resolve().parents[1] / "docs" / "bench" / "gains-minilm-dir01-seed1.jsonl"


@pytest.fixture(scope="module")
def diag():
    return load_benchmark("diag_arm_spread")


def test_replays_the_documented_log(diag, capsys):
    assert diag.main(["--replay", str(LOG), "--after", "4"]) == 0
    out = capsys.readouterr().out
    assert "| 4 | learnt spreads |" in out and "| 4 | one spread (arm_sd 1) |" in out and "14 rounds" in out


def test_a_surrogate_run_logs_one_line_per_round(diag, tmp_path, capsys):
    log = tmp_path / "gains.jsonl"
    assert diag.main(["--env", "minilm-iid", "--trainer", "surrogate", "--rounds", "3", "--log", str(log),
                      "--after", "3"]) == 0
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1, 2]
    assert all(len(r["arms"]) == len(r["gains"]) > 0 for r in rows)
    # the default closes rounds early: each line says how, and the aggregate's gain
    assert all(r["round_gain"] > 0 and 1 <= r["quota"] <= 10 and 0 <= r["returns"] <= 1 for r in rows)
    assert rows[0]["returns"] == 0.5  # the prior, before any round was seen
    assert "| 3 | learnt spreads |" in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["--replay", "no/such/file"], ["--env", "nope"], ["--after", "x"],
                                  ["--rounds", "0"]])
def test_bad_options_are_refused(diag, argv, capsys):
    with pytest.raises(SystemExit) as exc:
        diag.main(argv)
    assert exc.value.code == 2 and "error" in capsys.readouterr().err
