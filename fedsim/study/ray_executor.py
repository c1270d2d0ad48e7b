"""Running independent simulations as Ray tasks: on this machine, or on a Ray cluster.

``run_all_ray(fn, tasks, jobs, address)`` keeps the contract of
:func:`fedsim.study.parallel.run_all`: ``fn(*task)`` for every task, ``(task, result)``
yielded as each finishes, an exception (raised by ``fn``, or Ray's own when a worker
died) returned as the result while the other tasks go on. Each task takes one CPU, and
its worker starts with one OpenMP thread and a sequential tokenizer unless the
environment says otherwise (as :func:`fedsim.study.parallel.run_all`'s workers do), so
``jobs`` tasks do not start ``jobs`` x cores threads.

Without ``address`` a private Ray of ``jobs`` CPUs is started on the fly (no dashboard,
workers' output not echoed) and shut down afterwards; with ``address`` (``auto`` or
``ray://host:10001``) the tasks go to that cluster, whose size decides how many run at
once. The caller's SIGTERM handler, which ``ray.init`` replaces, is restored. Ray is an optional dependency (``pip install 'fedsim[ray]'``), imported only here.

Runs share nothing but their output folders (and, when set, the training-reuse cache,
which is safe for concurrent writers on one machine), so the order they finish in
changes no result: the records are byte-identical to :func:`run_all`'s.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

__all__ = ["run_all_ray"]

T = TypeVar("T", bound=Sequence[Any])

_WORKER_ENV = (("OMP_NUM_THREADS", "1"), ("MKL_NUM_THREADS", "1"), ("TOKENIZERS_PARALLELISM", "false"))


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as exc:  # noqa: BLE001 - failures are results here
        return exc


def run_all_ray(
    fn: Callable[..., Any], tasks: Iterable[T], jobs: int = 1, address: str | None = None
) -> Iterator[tuple[T, Any]]:
    """``(task, fn(*task))`` for every task, as Ray tasks, in the order they finish.

    Args:
        fn: A function Ray can pickle (a module-level function of an importable module).
        tasks: Argument tuples.
        jobs: CPUs of the Ray started on the fly (tasks at once); ignored with ``address``.
        address: A running Ray cluster to use instead; ``None``: start one here.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be >= 1, got {jobs}")
    try:
        import ray
    except ImportError:
        raise ImportError("the ray executor needs Ray: pip install 'fedsim[ray]'") from None
    tasks = list(tasks)
    env = {var: os.environ.get(var, default) for var, default in _WORKER_ENV}
    # ray.init installs its own SIGTERM handler and ray.shutdown leaves it: ours is put back.
    sigterm = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    started = not ray.is_initialized()
    pending: dict = {}
    try:
        if started and address is None:
            ray.init(num_cpus=jobs, include_dashboard=False, log_to_driver=False, configure_logging=False,
                     runtime_env={"env_vars": env})
        elif started:
            ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": env})
        remote = ray.remote(num_cpus=1, max_retries=0)(_call)
        pending = {remote.remote(fn, *task): task for task in tasks}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                task = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except Exception as exc:  # noqa: BLE001 - a worker that died, a task Ray could not run
                    result = exc
                yield task, result
    finally:
        for ref in pending:
            ray.cancel(ref, force=True)
        if started:
            ray.shutdown()
            if sigterm is not None:
                signal.signal(signal.SIGTERM, sigterm)
