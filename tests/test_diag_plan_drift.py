"""benchmarks/diag_plan_drift.py: a row's logged gains, arm by arm, and the plans they lead to."""

from __future__ import annotations

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def logged_row(tmp_path_factory):
    bench = load_benchmark("bench_configurator")
    row = tmp_path_factory.mktemp("runs") / "surrogate" / "minilm-iid" / "droppeft"
    for seed in (0, 1):
        assert bench.run_one(row / f"seed{seed}", "minilm-iid", bench.method_rows()["droppeft"], seed, "surrogate",
                             ["engine.max_rounds=5"], log_gains=True) == "ok"
    return row


@pytest.mark.parametrize("extra", [[], ["--scale", "mean"], ["--monotone", "false"], ["--monotone", "noisy"]])
def test_prints_the_arms_gains_and_each_seeds_plans(logged_row, extra, capsys):
    diag = load_benchmark("diag_plan_drift")
    assert diag.main([str(logged_row)] + extra) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "| none |" in out and "+1.00 | 1.00 | 1.00 |" in out  # the full arm over itself
    plans = [line for line in out.splitlines() if line.startswith("| seed")]
    assert [p.split(" | ")[0] for p in plans] == ["| seed", "| seed0", "| seed1"]
    for p in plans[1:]:
        cells = p.strip(" |").split(" | ")
        assert all(0.0 <= float(x) <= 0.75 for x in cells[2:5])  # mean dropout: run, median's plan, prior's
        assert len(cells[5]) == 5 and set(cells[5]) <= ({"0"} if extra == ["--monotone", "false"] else {"0", "1"})


def test_a_row_without_logged_gains_is_refused(tmp_path, capsys):
    diag = load_benchmark("diag_plan_drift")
    with pytest.raises(SystemExit) as exc:
        diag.main([str(tmp_path)])
    assert exc.value.code == 2 and "--log-gains" in capsys.readouterr().err


def test_compare_prints_each_rows_first_rounds(logged_row, tmp_path, capsys):
    diag = load_benchmark("diag_plan_drift")
    empty = tmp_path / "minilm-iid" / "never-run"
    empty.mkdir(parents=True)
    assert diag.main(["--compare", str(logged_row), str(empty), "--first", "3"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| minilm-iid/")]
    run, none = lines
    cells = run.strip(" |").split(" | ")
    assert cells[0] == "minilm-iid/droppeft" and cells[1] == "2"
    assert float(cells[2]) > 0 and 0.0 <= float(cells[6]) <= 0.75  # a round's length; dropout of the arms run
    assert none == "| minilm-iid/never-run | 0 | - | - | - | - | - |"


@pytest.mark.parametrize("argv", [["--compare", "/no/such/row"], ["somewhere", "--compare", "."], [], ["--compare", ".", "--first", "0"]])
def test_compare_refuses_what_it_cannot_read(argv, capsys):
    diag = load_benchmark("diag_plan_drift")
    with pytest.raises(SystemExit) as exc:
        diag.main(argv)
    assert exc.value.code == 2 and capsys.readouterr().err.strip()
