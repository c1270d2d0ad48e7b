"""Running independent simulations side by side on one machine.

``run_all(fn, tasks, jobs)`` calls ``fn(*task)`` for every task, in worker processes
when ``jobs > 1``, and yields ``(task, result)`` as each finishes. Runs share nothing:
each builds its own fleet, trainer and recorder from its scenario and writes its own
folder, so the order they finish in changes no result. Workers are *spawned*, not
forked (a forked child inherits torch's thread pool in an undefined state, and CUDA
cannot be used after a fork), and each sets its own torch thread count from its
scenario (``train.threads``). Workers start with one OpenMP thread and a sequential
tokenizer unless the environment says otherwise, so N workers do not start N x cores
threads. With ``train.device: cuda`` every worker opens its own CUDA context on the one
GPU (a few hundred MB each; a MiniLM-L6 run needs well under 1 GB). An exception in one
run comes back as its result (the run's ``summary.json`` already says ``status:
failed``); the others go on.

This is the single-machine seam that a distributed backend replaces: :func:`get_executor`
names one of ``local`` (this process, in order), ``process`` (:func:`run_all` in worker
processes) or ``ray`` (``fedsim.study.ray_executor.run_all_ray``, the same contract over
Ray tasks, imported only when asked for).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, TypeVar

from fedsim.core.errors import FedsimError

__all__ = ["run_all", "get_executor", "EXECUTORS"]

EXECUTORS = ("local", "process", "ray")

T = TypeVar("T", bound=Sequence[Any])


def _init_worker() -> None:
    # Read by torch and tokenizers when the worker first imports them (after this).
    for var, value in (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("TOKENIZERS_PARALLELISM", "false")):
        os.environ.setdefault(var, value)
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True, name="fedsim-parent-watch").start()


def _exit_with_parent(parent: int, every_s: float = 1.0, grace_s: float = 5.0) -> None:
    """A worker whose parent has gone (killed, say) stops too instead of running on
    unseen: it interrupts itself, so the run it was in records ``interrupted`` and can be
    resumed, and leaves after ``grace_s`` if that did not end it."""
    while os.getppid() == parent:
        time.sleep(every_s)
    os.kill(os.getpid(), signal.SIGINT)
    time.sleep(grace_s)
    os._exit(1)


def run_all(fn: Callable[..., Any], tasks: Iterable[T], jobs: int = 1) -> Iterator[tuple[T, Any]]:
    """``(task, fn(*task))`` for every task, ``jobs`` at a time, in the order they finish.

    With ``jobs == 1`` the tasks run in this process, in order. A task that raises
    yields its exception object as the result.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    tasks = list(tasks)
    if jobs == 1:
        for task in tasks:
            try:
                yield task, fn(*task)
            except Exception as exc:  # noqa: BLE001 - failures are results here
                yield task, exc
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)) or 1, mp_context=ctx, initializer=_init_worker) as pool:
        pending: dict[Future, T] = {pool.submit(fn, *task): task for task in tasks}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in finished:
                task = pending.pop(fut)
                exc = fut.exception()
                yield task, (exc if exc is not None else fut.result())


Executor = Callable[[Callable[..., Any], Iterable[T], int], Iterator[tuple[T, Any]]]


def get_executor(name: str, address: str | None = None) -> Executor:
    """``executor(fn, tasks, jobs)`` with :func:`run_all`'s contract, by name.

    ``local`` runs the tasks here, one after another (``jobs`` must be 1); ``process``
    is :func:`run_all`; ``ray`` runs them as Ray tasks on a local Ray started on the fly,
    or on the cluster at ``address``.

    Raises:
        FedsimError: an unknown name, an address for another executor, or Ray (or its
            executor module) not installed.
    """
    if name not in EXECUTORS:
        raise FedsimError(f"unknown executor {name!r}; expected one of {', '.join(EXECUTORS)}")
    if address is not None and name != "ray":
        raise FedsimError(f"a Ray address ({address}) needs the ray executor, not {name!r}")
    if name == "local":
        def local(fn, tasks, jobs=1):
            if jobs != 1:
                raise FedsimError(f"the local executor runs one task at a time; for --jobs {jobs} use --executor process or ray")
            return run_all(fn, tasks, 1)
        return local
    if name == "process":
        return run_all

    try:  # here, not at the top: Ray is an optional extra
        from fedsim.study.ray_executor import run_all_ray
    except ImportError as exc:
        raise FedsimError(f"the ray executor is not available ({exc}); install it with: pip install 'fedsim[ray]'") from None

    def ray(fn, tasks, jobs=1):
        return run_all_ray(fn, tasks, jobs, address=address)
    return ray
