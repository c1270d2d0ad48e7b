"""Checkpoints: everything a run needs to continue after its last completed round.

A checkpoint (``checkpoint.pkl`` in the run directory, replaced atomically) holds

* the engine's :class:`~fedsim.engine.Progress` (next round, simulated time, global
  model version, the rows so far, stop reason);
* the trainer's ``state_dict()`` (the surrogate's progress; the torch trainer's global
  parameters that aggregation has touched and its personal-layer store);
* the method object, pickled whole (bandit statistics, Caesar's per-device references,
  DropPEFT's pending rewards: whatever it holds). Its parameters are stored by
  reference and supplied again on load, and what its ``bind_trainer`` derives from
  the trainer is rebuilt by calling it again on the freshly built trainer;
* the byte sizes of ``clients.csv`` and ``rounds.csv`` when it was written: a resumed
  run cuts them back to these sizes, so rows of a round the checkpoint does not cover
  are written again, once.

Every random draw is keyed by round (and device; :mod:`fedsim.core.rng`), so a run resumed from round r
draws what the uninterrupted run drew and writes byte-identical records.

A checkpoint is a pickle: load only run directories you wrote.
"""

from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedsim.engine.sync import Progress
from fedsim.core.errors import FedsimError
from fedsim.methods.base import Method
from fedsim.engine.rundir import CHECKPOINT, atomic_write

__all__ = ["Checkpoint", "save", "load", "dump_method", "load_method", "CHECKPOINT"]

FORMAT = 2  # 2: draws keyed by device (fedsim.core.rng.DRAWS); a format-1 run resumed would mix schemes
_PARAMS = "method-params"
_TRAINER = "trainer"


@dataclass
class Checkpoint:
    progress: Progress
    trainer_state: Any
    method: bytes  # dump_method()
    offsets: dict[str, int]  # record file -> byte size
    format: int = FORMAT


class _Pickler(pickle.Pickler):
    def __init__(self, file, constants: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._constants = constants

    def persistent_id(self, obj: Any) -> str | None:
        return self._constants.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, constants: dict[str, Any]) -> None:
        super().__init__(file)
        self._constants = constants

    def persistent_load(self, pid: str) -> Any:
        return self._constants[pid]


def dump_method(method: Method, trainer: Any) -> bytes:
    """The method object as bytes. Its parameters (whose class a decorator may build at
    import time, out of pickle's reach) and any reference to the trainer are stored by
    reference and supplied again by :func:`load_method`."""
    buf = io.BytesIO()
    _Pickler(buf, {id(method.params): _PARAMS, id(trainer): _TRAINER}).dump(method)
    return buf.getvalue()


def load_method(data: bytes, params: Any, trainer: Any) -> Method:
    return _Unpickler(io.BytesIO(data), {_PARAMS: params, _TRAINER: trainer}).load()


def save(run_dir: str | Path, ckpt: Checkpoint) -> int:
    """Write ``ckpt`` atomically; returns its size in bytes."""
    data = pickle.dumps(ckpt, protocol=pickle.HIGHEST_PROTOCOL)
    atomic_write(Path(run_dir) / CHECKPOINT, data)
    return len(data)


def load(run_dir: str | Path) -> Checkpoint | None:
    """The run's checkpoint, or ``None`` if it has none yet.

    Raises:
        FedsimError: the file is not a checkpoint this version can read.
    """
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with open(path, "rb") as fh:
            ckpt = pickle.load(fh)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is the same problem
        raise FedsimError(f"{path} cannot be read ({exc}); replace the run (--force)") from None
    if not isinstance(ckpt, Checkpoint) or ckpt.format != FORMAT:
        raise FedsimError(f"{path} is not a checkpoint of this fedsim version; replace the run (--force)")
    return ckpt
