"""benchmarks/bench_planner.py: planning host time, this tree beside a git revision's."""

from __future__ import annotations

import subprocess

import pytest
from conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_planner")


def _in_git(root) -> bool:
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "--verify", "HEAD"], capture_output=True)
    return done.returncode == 0


def test_it_runs_both_codes_and_compares_their_records(bench, capsys):
    if not _in_git(bench.ROOT):
        pytest.skip("not a git checkout: no revision to compare with")
    assert bench.main(["--envs", "minilm-iid", "--policies", "thompson", "--rounds", "2", "--baseline", "HEAD"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| minilm-iid | thompson |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 8 and cells[5] == "yes"  # HEAD plans as this tree does: the same records
    assert all(float(c) > 0 for c in (cells[2], cells[3], cells[6]))
    assert "wrote the same records: yes" in out


@pytest.mark.parametrize("args, says", [(["--rounds", "0"], "--rounds"), (["--envs", "nowhere"], "no environment"),
                                        (["--policies", "ucb"], "--policies")])
def test_bad_arguments_are_refused_in_one_line(bench, capsys, args, says):
    with pytest.raises(SystemExit) as exc:
        bench.main(args)
    assert exc.value.code == 2 and says in capsys.readouterr().err


def test_an_unknown_revision_is_a_clear_error(bench):
    if not _in_git(bench.ROOT):
        pytest.skip("not a git checkout")
    with pytest.raises(SystemExit, match="no-such-revision"):
        bench.main(["--envs", "minilm-iid", "--policies", "thompson", "--rounds", "1", "--baseline", "no-such-revision"])
