"""fedsim.study.ray_executor: sweep points as Ray tasks, records identical to the local executor."""

from __future__ import annotations

import pytest

import signal

from fedsim.study.parallel import run_all
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate

ray = pytest.importorskip("ray")

from fedsim.study.ray_executor import run_all_ray  # noqa: E402

FILES = ("config.yaml", "rounds.csv", "clients.csv")


@pytest.mark.slow
def test_a_surrogate_sweep_on_ray_writes_the_local_executors_bytes(tmp_path, write_yaml):
    # Prepare: a four-point surrogate sweep (deadline x over-selection), and a task that
    # fails (its output folder is a file)
    from conftest import TINY_SCENARIO

    path = write_yaml("sweep.yaml", TINY_SCENARIO + "sweep:\n  engine.round_deadline_s: [30, 3000]\n"
                      "  engine.over_selection: [1.0, 2.0]\n")
    variants = load_scenario(path)

    def tasks(root):
        return [(v.scenario, root / v.label) for v in variants]

    # Execute
    (tmp_path / "a-file").write_text("not a folder")
    bad = (variants[0].scenario, tmp_path / "a-file")
    handler = signal.getsignal(signal.SIGTERM)
    local = {task[1].name: r for task, r in run_all(simulate, tasks(tmp_path / "local"), jobs=1)}
    on_ray = {task[1].name: r for task, r in run_all_ray(simulate, [bad, *tasks(tmp_path / "ray")], jobs=2)}
    # Assert: the failure is a result, and every point ran, with the same bytes
    assert isinstance(on_ray.pop("a-file"), Exception)
    assert len(variants) == 4 and len(on_ray) == 4
    assert not any(isinstance(r, Exception) for r in [*local.values(), *on_ray.values()])
    for v in variants:
        for f in FILES:
            assert (tmp_path / "ray" / v.label / f).read_bytes() == (tmp_path / "local" / v.label / f).read_bytes()
    assert not ray.is_initialized()  # the Ray started on the fly is gone
    assert signal.getsignal(signal.SIGTERM) is handler  # and so is its SIGTERM handler


def test_jobs_must_be_positive():
    with pytest.raises(ValueError):
        list(run_all_ray(simulate, [(1,)], jobs=0))
