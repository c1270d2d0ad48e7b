"""Run records: the resolved configuration and append-only logs of what happened.

A run directory holds

* ``config.yaml``: the scenario as resolved (defaults filled in, overrides applied, seed);
* ``rounds.csv``: one row per round (:data:`ROUND_COLUMNS`);
* ``clients.csv``: one row per client and round (:data:`CLIENT_COLUMNS`);
* ``summary.json``: the outcome of the run, written last, also when the run fails.

Rows are appended and flushed as each round ends, ``clients.csv`` before ``rounds.csv``
(so ``rounds.csv`` is never ahead), and a killed run keeps every finished round;
``config.yaml`` and ``summary.json`` are replaced atomically. Plots, notebooks and
``fedsim compare`` read only these files.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from fedsim.core.configio import read_json_object
from fedsim.core.errors import FedsimError, format_value
from fedsim.engine.rundir import atomic_write

__all__ = [
    "RunRecorder", "RecordError", "config_text", "ROUND_COLUMNS", "CLIENT_COLUMNS", "ASYNC_CLIENT_COLUMNS", "read_rounds", "read_summary", "read_clients",
]

ROUND_COLUMNS = (
    "round", "start_s", "sim_time_s", "duration_s", "available", "selected", "participants",
    "failures", "oom", "dropout", "straggler", "surplus", "accuracy", "loss",
    "personal_accuracy", "bytes_up", "bytes_down", "energy_j", "train_loss", "rejected",
    "transfer_failed", "retries", "left_out",
)

# (name, printf format) of the per-client columns, in file order.
_CLIENT_FORMAT = (
    ("round", "%d"), ("device_id", "%d"), ("device_class", "%s"), ("network_class", "%s"),
    ("plan", "%s"), ("mean_drop", "%.4g"), ("start_s", "%.10g"), ("end_s", "%.10g"),
    ("download_s", "%.6g"), ("compute_s", "%.6g"), ("upload_s", "%.6g"), ("outcome", "%s"),
    ("bytes_down", "%d"), ("bytes_up", "%d"), ("energy_j", "%.6g"), ("peak_mem_bytes", "%d"),
    ("mem_cap_bytes", "%d"), ("num_examples", "%d"), ("retries", "%d"),
)
CLIENT_COLUMNS = tuple(name for name, _ in _CLIENT_FORMAT)
# Written only by the asynchronous driver: per update, aggregations between its download
# and its aggregation (empty for a client whose update was not aggregated).
ASYNC_CLIENT_COLUMNS = CLIENT_COLUMNS + ("staleness",)
_EXTRA_FORMAT = {"staleness": "%s"}


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def config_text(config: dict[str, Any]) -> str:
    """``config.yaml`` as written for ``config``."""
    return yaml.safe_dump(_jsonable(config), sort_keys=False)


class RunRecorder:
    """Writes one run directory. Use as a context manager or call :meth:`close`.

    With ``resume_offsets`` (the byte sizes of ``rounds.csv`` and ``clients.csv`` that a
    checkpoint saw) the logs are cut back to those sizes and appended to; the directory's
    ``config.yaml`` must be the one this run would write. ``client_columns``: those of
    ``clients.csv`` (:data:`CLIENT_COLUMNS`, or :data:`ASYNC_CLIENT_COLUMNS`).
    """

    def __init__(self, out_dir: str | Path, config: dict[str, Any], resume_offsets: dict[str, int] | None = None,
                 client_columns: tuple[str, ...] = CLIENT_COLUMNS) -> None:
        self.out_dir = Path(out_dir)
        formats = dict(_CLIENT_FORMAT) | _EXTRA_FORMAT
        self.client_columns = client_columns
        self._client_row = ",".join(formats[name] for name in client_columns) + "\n"
        self.out_dir.mkdir(parents=True, exist_ok=True)
        text = config_text(config)
        config_path = self.out_dir / "config.yaml"
        if resume_offsets is None:
            atomic_write(config_path, text)
        elif not config_path.is_file() or config_path.read_text(encoding="utf-8") != text:
            raise FedsimError(f"{self.out_dir} holds a run of another configuration (its config.yaml differs); "
                              "resume it with the same scenario, overrides and seed, or replace it (--force)")
        if resume_offsets is not None:
            for name, size in resume_offsets.items():
                _truncate(self.out_dir / name, size)
        # A resumed run keeps the columns its rounds.csv was begun with (an older version's
        # lack the ones added since), so every row matches the header.
        self._round_columns = _header(self.out_dir / "rounds.csv") if resume_offsets else ROUND_COLUMNS
        self._rounds = open(self.out_dir / "rounds.csv", "a" if resume_offsets else "w", newline="", encoding="utf-8")
        self._round_writer = csv.DictWriter(self._rounds, fieldnames=self._round_columns)
        self._clients = open(self.out_dir / "clients.csv", "a" if resume_offsets else "w", encoding="utf-8")
        if resume_offsets is None:
            self._round_writer.writeheader()
            self._clients.write(",".join(client_columns) + "\n")
            self._rounds.flush()
            self._clients.flush()

    def round(self, row: dict[str, Any]) -> None:
        self._round_writer.writerow({k: _fmt_cell(row.get(k)) for k in self._round_columns})
        self._rounds.flush()

    def clients(self, columns: dict[str, np.ndarray]) -> None:
        """Append the per-client rows of one round; arrays keyed by the recorder's ``client_columns``."""
        lists = [np.asarray(columns[name]).tolist() for name in self.client_columns]
        self._clients.write("".join(self._client_row % row for row in zip(*lists)))
        self._clients.flush()

    def offsets(self) -> dict[str, int]:
        """Byte sizes of the logs as written so far (what a checkpoint stores)."""
        return {"clients.csv": os.fstat(self._clients.fileno()).st_size, "rounds.csv": os.fstat(self._rounds.fileno()).st_size}

    def summary(self, summary: dict[str, Any]) -> None:
        atomic_write(self.out_dir / "summary.json", json.dumps(_jsonable(summary), indent=2) + "\n")

    def close(self) -> None:
        self._rounds.close()
        self._clients.close()

    def __enter__(self) -> RunRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _header(path: Path) -> tuple[str, ...]:
    """The columns a record's header names, those this version does not know left out."""
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    return tuple(c for c in header if c in ROUND_COLUMNS) or ROUND_COLUMNS


def _truncate(path: Path, size: int) -> None:
    if not path.is_file() or path.stat().st_size < size:
        raise FedsimError(f"{path} is shorter than its checkpoint says ({size} bytes); it cannot be resumed, replace it (--force)")
    with open(path, "r+b") as fh:
        fh.truncate(size)


def _fmt_cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return "" if not math.isfinite(v) else f"{float(v):.10g}"
    return v


class RecordError(FedsimError):
    """A run record is missing, truncated or corrupt; the message names the file."""


# Summary fields that must be numbers (or null) and texts (or null) for readers to trust them.
_SUMMARY_NUMBERS = (
    "seed", "rounds", "sim_time_s", "final_accuracy", "best_accuracy", "time_to_target_s",
    "target_accuracy", "wall_s", "train_wall_s", "overhead_fraction", "fleet_size",
)
_SUMMARY_TEXTS = ("scenario", "variant", "method", "status", "error", "trainer")
_CLIENT_TEXTS = ("device_class", "network_class", "plan", "outcome")
# Columns that records written by older versions lack; readers leave them out.
_ADDED_LATER = ("rejected", "transfer_failed", "retries", "num_examples", "staleness", "left_out")


def _read_csv(path: Path, columns: tuple[str, ...]) -> tuple[list[dict[str, str]], list[str]]:
    """Rows of a record CSV, every row complete, and which of ``columns`` it holds
    (all but those :data:`_ADDED_LATER` must be there)."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            header = reader.fieldnames or ()
            missing = [c for c in columns if c not in header and c not in _ADDED_LATER]
            if missing:
                raise RecordError(f"{path} is not a fedsim record: its header lacks {', '.join(missing)}; expected the columns {', '.join(columns)}.")
            rows = []
            for row in reader:
                if None in row.values() or None in row:
                    raise RecordError(f"{path}, line {reader.line_num}: the row is truncated or has extra cells; expected {len(columns)} cells.")
                rows.append(row)
    except FileNotFoundError:
        raise RecordError(f"{path} does not exist; expected a run directory written by 'fedsim run'.") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise RecordError(f"{path} cannot be read as a UTF-8 CSV record ({exc}).") from None
    return rows, [c for c in columns if c in header]


def _number(path: Path, line: int, column: str, text: str) -> float:
    try:
        return float(text) if text != "" else np.nan
    except ValueError:
        raise RecordError(f"{path}, line {line}: column '{column}' holds {format_value(text)}; expected a number.") from None


def read_rounds(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``rounds.csv`` as columns of floats (empty cells are NaN); a column that records
    written by an older version lack is left out.

    Raises:
        RecordError: the file is missing, truncated or holds a cell that is not a number.
    """
    path = Path(run_dir) / "rounds.csv"
    rows, columns = _read_csv(path, ROUND_COLUMNS)
    return {k: np.array([_number(path, i + 2, k, r[k]) for i, r in enumerate(rows)], dtype=float) for k in columns}


def read_clients(run_dir: str | Path) -> dict[str, np.ndarray]:
    """``clients.csv`` as columns (numbers as floats, names as strings); a column that
    records written by an older version lack is left out.

    Raises:
        RecordError: the file is missing, truncated or holds a bad number.
    """
    path = Path(run_dir) / "clients.csv"
    rows, columns = _read_csv(path, ASYNC_CLIENT_COLUMNS)
    out = {}
    for k in columns:
        if k in _CLIENT_TEXTS:
            out[k] = np.array([r[k] for r in rows], dtype=object)
        else:
            out[k] = np.array([_number(path, i + 2, k, r[k]) for i, r in enumerate(rows)], dtype=float)
    return out


def read_summary(run_dir: str | Path) -> dict[str, Any]:
    """``summary.json`` as a dict, its numbers and texts checked.

    Raises:
        RecordError: the file is missing, not JSON, not an object, or a field has the wrong type.
    """
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RecordError(f"{path} does not exist; expected a run directory written by 'fedsim run'.")
    try:
        summary = read_json_object(path, "a run summary")
    except ValueError as exc:
        raise RecordError(f"{exc}; is it truncated?") from None
    for key in _SUMMARY_NUMBERS:
        value = summary.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise RecordError(f"{path}: '{key}' is {format_value(value)}; expected a number or null.")
    for key in _SUMMARY_TEXTS:
        value = summary.get(key)
        if value is not None and not isinstance(value, str):
            raise RecordError(f"{path}: '{key}' is {format_value(value)}; expected a text or null.")
    return summary
