"""fedsim.study.parallel: independent runs side by side."""

from __future__ import annotations

import os

import pytest

from fedsim.study.parallel import run_all


def square_or_fail(x: int) -> int:
    if x < 0:
        raise ValueError(f"negative: {x}")
    return x * x


@pytest.mark.parametrize("jobs", [1, 2])
def test_every_task_comes_back_with_its_result_or_its_exception(jobs):
    # Execute
    out = dict(run_all(square_or_fail, [(3,), (-1,), (4,)], jobs=jobs))
    # Assert: a failing task does not stop the others
    assert out[(3,)] == 9 and out[(4,)] == 16
    assert isinstance(out[(-1,)], ValueError) and "negative" in str(out[(-1,)])


def test_in_process_runs_keep_the_task_order():
    assert [r for _, r in run_all(square_or_fail, [(1,), (2,), (3,)], jobs=1)] == [1, 4, 9]


def worker_threads(_: int) -> tuple[str | None, str | None, int]:
    import torch

    return os.environ.get("OMP_NUM_THREADS"), os.environ.get("TOKENIZERS_PARALLELISM"), torch.get_num_threads()


def test_workers_start_with_one_torch_thread_and_a_sequential_tokenizer(monkeypatch):
    # Prepare: nothing set by the caller
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(var, raising=False)
    # Execute
    out = [r for _, r in run_all(worker_threads, [(0,), (1,)], jobs=2)]
    # Assert
    assert out == [("1", "false", 1)] * 2


def test_jobs_must_be_positive():
    with pytest.raises(ValueError):
        list(run_all(square_or_fail, [(1,)], jobs=0))


_ORPHAN_SCRIPT = """
import os, sys, time
sys.path.insert(0, {root!r})
from fedsim.study.parallel import run_all

def sleeper(path):
    with open(path, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)

if __name__ == "__main__":
    for _ in run_all(sleeper, [({a!r},), ({b!r},)], jobs=2):
        pass
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\tZ" not in next(line for line in f if line.startswith("State:"))  # a zombie has stopped
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads process states from /proc (Linux)")
def test_workers_stop_when_the_parent_is_killed(tmp_path):
    # Prepare: a parent running two long tasks in workers
    import subprocess
    import sys
    import time
    from pathlib import Path

    a, b = tmp_path / "a.pid", tmp_path / "b.pid"
    script = tmp_path / "parent.py"
    script.write_text(_ORPHAN_SCRIPT.format(root=str(Path(__file__).resolve().parents[1]), a=str(a), b=str(b)))
    parent = subprocess.Popen([sys.executable, str(script)])
    deadline = time.monotonic() + 60
    while not (a.exists() and b.exists() and a.read_text() and b.read_text()):
        assert time.monotonic() < deadline, "workers did not start"
        time.sleep(0.2)
    workers = [int(a.read_text()), int(b.read_text())]
    # Execute: kill the parent outright (no clean-up runs)
    parent.kill()
    parent.wait()
    # Assert: the workers notice and stop within seconds, not after their 120 s task
    deadline = time.monotonic() + 30
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(w) for w in workers)
