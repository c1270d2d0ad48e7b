"""Run directories that cannot lie: who may write one, where, and how.

* A directory that already holds a run's records is refused unless the caller says
  ``overwrite`` (its record files are removed first; other files are left alone) or
  ``resume`` (:mod:`fedsim.engine.checkpoint` continues it).
* ``summary.json``, ``config.yaml`` and checkpoints are written to a temporary file and
  moved into place with ``os.replace``: a reader sees the old file or the new one, never
  half of one.
* A run ended by a signal (SIGTERM, SIGHUP, Ctrl-C) raises :class:`Interrupted` (or
  ``KeyboardInterrupt``) inside the run, so ``summary.json`` says ``interrupted``.
* Names that become path components (a scenario's name, a sweep label) are reduced to
  ``[A-Za-z0-9_.-]`` without a leading dot, and :func:`child` refuses anything that
  would land outside its root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

from fedsim.core.errors import FedsimError

__all__ = [
    "RECORD_FILES", "Existing", "Interrupted", "atomic_write", "has_records", "prepare", "clear", "safe_name",
    "child", "finished_ok", "signals_interrupt",
]

CHECKPOINT = "checkpoint.pkl"
RECORD_FILES = ("config.yaml", "rounds.csv", "clients.csv", "summary.json", CHECKPOINT)
Existing = Literal["refuse", "overwrite", "resume"]


class Interrupted(BaseException):
    """The run was ended by a signal (a BaseException, like KeyboardInterrupt: not a failure of the run)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(f"interrupted by {signal.Signals(signum).name}")


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data.encode("utf-8") if isinstance(data, str) else data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def has_records(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in RECORD_FILES)


def clear(run_dir: str | Path) -> None:
    """Remove a run's record files (and leftover temporary files); nothing else."""
    run_dir = Path(run_dir)
    for name in RECORD_FILES:
        with contextlib.suppress(FileNotFoundError):
            (run_dir / name).unlink()
    for tmp in run_dir.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def prepare(run_dir: str | Path, existing: Existing = "refuse") -> None:
    """Make ``run_dir`` ready for a run under the ``existing`` rule (see the module docstring).

    Raises:
        FedsimError: the directory holds records and ``existing`` is ``refuse``.
    """
    run_dir = Path(run_dir)
    if existing not in ("refuse", "overwrite", "resume"):
        raise ValueError(f"existing must be 'refuse', 'overwrite' or 'resume', got {existing!r}")
    if has_records(run_dir):
        if existing == "refuse":
            raise FedsimError(f"{run_dir} already holds a run's records; resume it (--resume) or replace it (--force)")
        if existing == "overwrite":
            clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_name(text: str) -> str:
    """``text`` as one harmless path component: ``[A-Za-z0-9_.-]``, no leading dot or dash."""
    name = _UNSAFE.sub("-", str(text)).lstrip(".-").rstrip("-")
    return name or "x"


def child(root: str | Path, name: str) -> Path:
    """``root / safe_name(name)``, checked to lie inside ``root``."""
    root = Path(root)
    path = root / safe_name(name)
    if not path.resolve().is_relative_to(root.resolve()) or path.resolve() == root.resolve():
        raise FedsimError(f"{name!r} does not name a folder inside {root}")
    return path


def finished_ok(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that finished with ``status: ok``."""
    try:
        with open(Path(run_dir) / "summary.json", encoding="utf-8") as fh:
            return json.load(fh).get("status") == "ok"
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def signals_interrupt(signums: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within the block, ``signums`` raise :class:`Interrupted` in the main thread
    (Ctrl-C already raises ``KeyboardInterrupt``). Entry points only: this changes
    process-wide state, restored on exit."""

    def handler(signum, frame):
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
