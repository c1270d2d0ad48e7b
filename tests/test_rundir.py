"""Run directories: refusal, overwrite, atomic files, names as paths, signals."""

from __future__ import annotations

import os
import signal

import pytest

from fedsim.core.errors import FedsimError
from fedsim.engine.records import read_summary
from fedsim.engine.rundir import Interrupted, atomic_write, child, finished_ok, prepare, safe_name, signals_interrupt
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate


def _scenario(path):
    (v,) = load_scenario(path)
    return v.scenario


def test_atomic_write_replaces_and_leaves_no_temporary_file(tmp_path):
    atomic_write(tmp_path / "summary.json", "old")

    atomic_write(tmp_path / "summary.json", b"new")

    assert (tmp_path / "summary.json").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_prepare_refuses_records_and_overwrite_removes_only_them(tmp_path):
    (tmp_path / "rounds.csv").write_text("round\n")
    (tmp_path / "mine.txt").write_text("keep")

    with pytest.raises(FedsimError, match="--resume.*--force"):
        prepare(tmp_path, "refuse")
    prepare(tmp_path, "overwrite")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]
    prepare(tmp_path, "refuse")  # nothing left to protect


def test_simulate_refuses_an_existing_run(tiny_scenario, tmp_path):
    simulate(_scenario(tiny_scenario), tmp_path / "run")

    with pytest.raises(FedsimError, match="already holds"):
        simulate(_scenario(tiny_scenario), tmp_path / "run")
    assert simulate(_scenario(tiny_scenario), tmp_path / "run", existing="overwrite").rounds == 4


@pytest.mark.parametrize(("name", "safe"), [("..", "x"), ("../../etc", "etc"), (".hidden", "hidden"), ("a b/c", "a-b-c"),
                                            ("fedlora", "fedlora"), ("mean_drop-0.5", "mean_drop-0.5"), ("", "x")])
def test_safe_name(name, safe):
    assert safe_name(name) == safe


def test_child_stays_inside_its_root(tmp_path):
    assert child(tmp_path, "../..") == tmp_path / "x"
    assert child(tmp_path, "/etc/passwd").parent == tmp_path


def test_sigterm_marks_the_run_interrupted(tiny_scenario, tmp_path):
    seen = []

    def on_round(row):
        seen.append(read_summary(tmp_path / "run")["status"])
        if row["round"] == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    with signals_interrupt(), pytest.raises(Interrupted):
        simulate(_scenario(tiny_scenario), tmp_path / "run", on_round=on_round)

    summary = read_summary(tmp_path / "run")
    assert seen == ["running", "running"]
    assert (summary["status"], summary["error"], summary["rounds"]) == ("interrupted", "interrupted by SIGTERM", 2)
    assert "traceback" not in summary
    assert not finished_ok(tmp_path / "run")
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is gone after the block
