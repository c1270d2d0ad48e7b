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


@pytest.mark.parametrize("scale", [None, "mean"])
def test_prints_the_arms_gains_and_each_seeds_plans(logged_row, scale, capsys):
    diag = load_benchmark("diag_plan_drift")
    assert diag.main([str(logged_row)] + (["--scale", scale] if scale else [])) == 0
    out = capsys.readouterr().out
    assert "2 runs" in out and "| none |" in out and "+1.00 | 1.00 | 1.00 |" in out  # the full arm over itself
    plans = [line for line in out.splitlines() if line.startswith("| seed")]
    assert [p.split(" | ")[0] for p in plans] == ["| seed", "| seed0", "| seed1"]
    assert all(0.0 <= float(x) <= 0.75 for p in plans[1:] for x in p.strip(" |").split(" | ")[2:])


def test_a_row_without_logged_gains_is_refused(tmp_path, capsys):
    diag = load_benchmark("diag_plan_drift")
    with pytest.raises(SystemExit) as exc:
        diag.main([str(tmp_path)])
    assert exc.value.code == 2 and "--log-gains" in capsys.readouterr().err
