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
