"""Training reuse: a content-addressed cache of results that are pure functions of their inputs.

A client's local training result depends only on (global model state, client, plan, its
data shard, its seed, the optimiser settings and the code that trains): see
docs/design.md, *The split between timing and learning*. Sweep points that differ only
in timing (bandwidth, latency, a deadline that cuts nobody) therefore ask for the same
results; the trainer asks this cache first (:class:`ReuseCache`) under a key that hashes
every one of those inputs (:class:`Digest`), and stores what it had to compute. The same
holds for an evaluation of the global model.

On disk an entry is ``DIR/ab/abcdef....pkl`` (a pickle: share a cache only with runs
you trust, as with checkpoints). Writers write a temporary file in the same folder and
rename it into place, so concurrent processes (sweep points, Ray workers on one machine)
never see half an entry; two writers of one key write the same bytes. Reading an entry
refreshes its modification time; when the entries' bytes exceed ``max_bytes`` the least
recently used are removed. ``DIR/FEDSIM-REUSE-CACHE`` marks the folder, so that
:func:`clear_cache` only ever empties a folder this module made.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Digest", "ReuseCache", "ReuseStats", "clear_cache", "code_version", "MARKER"]

MARKER = "FEDSIM-REUSE-CACHE"
_SUFFIX = ".pkl"


class Digest:
    """An incremental BLAKE2b hash over labelled values (arrays, tensors, JSON-able data)."""

    def __init__(self, *parts: Any) -> None:
        self._h = hashlib.blake2b(digest_size=32)
        for part in parts:
            self.add(part)

    def add(self, value: Any) -> Digest:
        """Fold ``value`` in: a tensor or array by dtype, shape and bytes, a dict of them by
        sorted name, anything else by its canonical JSON text."""
        if hasattr(value, "detach"):  # a torch tensor: its bytes on the host, whatever its dtype
            t = value.detach().cpu().contiguous().reshape(-1)
            self._tag("tensor", str(t.dtype), tuple(value.shape))
            self._h.update(t.view(_uint8()).numpy().tobytes())
        elif isinstance(value, np.ndarray):
            a = np.ascontiguousarray(value)
            self._tag("array", a.dtype.str, a.shape)
            self._h.update(a.tobytes())
        elif isinstance(value, dict) and any(hasattr(v, "detach") or isinstance(v, np.ndarray) for v in value.values()):
            self._tag("dict", len(value))
            for name in sorted(value):
                self._tag("key", name)
                self.add(value[name])
        else:
            self._tag("json", json.dumps(value, sort_keys=True, default=repr))
        return self

    def _tag(self, *fields: Any) -> None:
        text = json.dumps(fields, default=repr).encode()
        self._h.update(len(text).to_bytes(8, "little") + text)

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def _uint8():
    import torch

    return torch.uint8


def _source_files() -> list[Path]:
    """The code a training or evaluation result depends on: fedsim.learning and the plan."""
    root = Path(__file__).resolve().parent.parent
    return sorted((root / "learning").rglob("*.py")) + [root / "core" / "plan.py", root / "core" / "models.py"]


@functools.cache
def code_version() -> str:
    """fedsim's version, the libraries that compute, and a hash of the learning sources."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for name in ("fedsim", "torch", "transformers", "peft", "numpy"):
        try:
            versions[name] = version(name)
        except PackageNotFoundError:
            versions[name] = None
    h = hashlib.blake2b(digest_size=16)
    root = Path(__file__).resolve().parent.parent
    for path in _source_files():
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return json.dumps({"versions": versions, "sources": h.hexdigest()}, sort_keys=True)


@dataclass
class ReuseStats:
    """Lookups of one run (or one trainer), by kind (``train``, ``eval``, ``gains``)."""

    hits: dict[str, int]
    misses: dict[str, int]

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {"hits": dict(self.hits), "misses": dict(self.misses)}


class ReuseCache:
    """A folder of pickled results under content keys, bounded to ``max_bytes`` (LRU).

    Args:
        root: The cache folder (made, and marked, if missing). A non-empty folder
            without the marker is refused: it is somebody else's.
        max_bytes: Bound on the entries' total size; the least recently read or written
            entries go first once it is passed.
    """

    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root).expanduser()
        self.max_bytes = int(max_bytes)
        self.stats = ReuseStats(hits={}, misses={})
        marker = self.root / MARKER
        if not marker.exists():
            if self.root.exists() and any(self.root.iterdir()):
                raise ValueError(f"{self.root} is not empty and holds no {MARKER} file: not a fedsim reuse cache")
            self.root.mkdir(parents=True, exist_ok=True)
            marker.write_text("fedsim training-reuse cache; 'fedsim cache clear DIR' empties it\n", encoding="utf-8")
        self._bytes: int | None = None  # entries' total as this process last knew it

    def path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}{_SUFFIX}"

    def get(self, key: str, kind: str = "train") -> Any | None:
        """The value stored under ``key``, or ``None`` (missing, evicted, or unreadable)."""
        path = self.path(key)
        try:
            blob = path.read_bytes()
            value = pickle.loads(blob)
        except Exception:  # noqa: BLE001 - missing, evicted meanwhile or damaged: computed again
            self.stats.misses[kind] = self.stats.misses.get(kind, 0) + 1
            return None
        try:
            os.utime(path)  # recently used
        except OSError:
            pass
        self.stats.hits[kind] = self.stats.hits.get(kind, 0) + 1
        return value

    def put(self, key: str, value: Any) -> None:
        """Store ``value`` under ``key`` (atomically; an existing entry is the same value)."""
        path = self.path(key)
        if path.exists():
            return
        blob = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=_SUFFIX)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(blob)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        if self._bytes is None:
            self._bytes = self.size_bytes()
        else:
            self._bytes += len(blob)
        if self._bytes > self.max_bytes:
            self._bytes = self.evict(self.max_bytes)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(modification time, bytes, path) of every entry; entries removed meanwhile are skipped."""
        out = []
        for path in self.root.glob(f"??/*{_SUFFIX}"):
            if path.name.startswith("."):
                continue
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            out.append((st.st_mtime, st.st_size, path))
        return out

    def size_bytes(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self, max_bytes: int) -> int:
        """Remove least recently used entries until at most ``max_bytes`` remain; the total left."""
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        for _, size, path in entries:
            if total <= max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
        return total


def clear_cache(root: str | Path) -> tuple[int, int]:
    """Remove every entry of the cache at ``root``: (files, bytes).

    Raises:
        ValueError: ``root`` is not a fedsim reuse cache (no marker file).
    """
    root = Path(root).expanduser()
    if not (root / MARKER).is_file():
        raise ValueError(f"{root} is not a fedsim reuse cache (no {MARKER} file); nothing removed")
    files = removed = 0
    for path in root.glob(f"??/*{_SUFFIX}"):
        if path.name.startswith("."):
            continue  # another process is writing it
        try:
            size = path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            continue
        files, removed = files + 1, removed + size
    for sub in root.glob("??"):
        if sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    return files, removed
