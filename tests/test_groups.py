"""fedsim.study.groups: runs group only when their configurations differ in the seed alone."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from fedsim.cli import app
from fedsim.engine.records import read_rounds
from fedsim.study.compare import compare_groups
from fedsim.study.groups import flatten, group_runs, time_to


def _cli(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two deadlines, each run with seeds 1 and 2 by separate `fedsim run` calls (same labels)."""
    from tests.conftest import TINY_SCENARIO

    root = tmp_path_factory.mktemp("groups")
    sc = root / "tiny.yaml"
    sc.write_text(TINY_SCENARIO, encoding="utf-8")
    for deadline in (5, 600):
        for seed in (1, 2):
            res = _cli("run", sc, "--out", root / "runs" / f"d{deadline}s{seed}", "-q", "--seed", seed,
                       "--set", f"engine.round_deadline_s={deadline}", "--set", "engine.max_rounds=6")
            assert res.exit_code == 0, res.output
    return root / "runs"


def test_flatten_keeps_lists_and_empty_mappings_as_values():
    assert flatten({"a": {"b": 1, "c": [1, 2], "d": {}}}) == {"a.b": 1, "a.c": [1, 2], "a.d": {}}


def test_runs_that_differ_beyond_the_seed_are_not_pooled(runs):
    # Execute
    groups, differ = group_runs(sorted(runs.glob("*/fedlora")))
    # Assert: one group per deadline, each with its two seeds, labelled by what differs
    assert differ == ["engine.round_deadline_s"]
    assert sorted(g.label for g in groups) == ["fedlora, round_deadline_s=5 [surrogate]", "fedlora, round_deadline_s=600 [surrogate]"]
    assert all(len(g.runs) == 2 for g in groups)


def test_compare_prints_which_keys_differ(runs):
    res = _cli("compare", runs, "--out", runs.parent)
    assert res.exit_code == 0, res.output
    assert "| fedlora, round_deadline_s=5 [surrogate] | 2 |" in res.stdout
    assert "groups differ in: engine.round_deadline_s" in res.stdout


def test_target_recomputes_time_to_any_accuracy(runs):
    # Prepare: an accuracy some round reached
    run = next(runs.glob("d600s1/fedlora"))
    rounds = read_rounds(run)
    target = float(rounds["accuracy"][2])
    first = int(min(i for i, a in enumerate(rounds["accuracy"]) if a >= target))
    # Execute
    rows, _ = compare_groups([run], target=target)
    # Assert
    assert time_to(run, target) == rounds["sim_time_s"][first] == rows[0]["time_to_target"]
    assert math.isnan(time_to(run, 0.999))
    res = _cli("compare", runs, "--target", target, "--out", runs.parent)
    assert res.exit_code == 0 and f"to accuracy {target:g}" in res.stdout


def test_plot_takes_parent_folders_and_aggregates_seeds(runs, tmp_path):
    # Execute
    res = _cli("plot", runs, "--out", tmp_path / "plots", "--target", 0.3)
    single = _cli("plot", runs, "--out", tmp_path / "acc.png")
    # Assert
    assert res.exit_code == 0, res.output
    for name in ("accuracy_vs_time", "time_to_target", "resources_by_class", "participation_by_class", "timeline"):
        assert (tmp_path / "plots" / f"{name}.png").is_file() and (tmp_path / "plots" / f"{name}.pdf").is_file()
    assert single.exit_code == 0 and (tmp_path / "acc.png").read_bytes()[:4] == b"\x89PNG"
    assert "groups differ in: engine.round_deadline_s" in res.stdout
