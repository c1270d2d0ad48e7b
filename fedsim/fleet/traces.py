"""Device and availability traces in FedScale's formats, read into numpy arrays.

Two kinds of file (FedScale, Lai et al. ICML 2022, ``benchmark/dataset/data/device_info``):

* a **device capacity** file (FedScale's ``client_device_capacity``): a mapping from client
  id to ``{'computation': ms per sample, 'communication': kbit/s}``, as a pickle or JSON;
  ``computation`` is the time one sample of the trace's *reference model* takes forward
  (FedScale multiplies it by 3 for training), ``communication`` the link's bandwidth
  both ways;
* an **availability** file: FedScale's ``client_behave_trace`` (a pickle or JSON mapping
  client id to ``{'active': [s, ...], 'inactive': [s, ...], 'finish_time': s, ...}``: the
  client is online from ``active[k]`` until ``inactive[k]``, and the whole trace repeats
  every ``finish_time`` seconds), or a simple form without repetition: JSON
  ``{client_id: [[start_s, end_s], ...]}`` or CSV rows ``client_id,start_s,end_s``.

Everything is validated: a missing field, a bandwidth or latency that is not a finite
positive number, intervals that are empty, unsorted, overlapping or beyond
``finish_time`` are refused with a :class:`TraceError` naming the file, the client and
the field. Pickles are read by an unpickler that builds only plain containers, numbers
and strings, so a hostile pickle is refused before it can run anything.

The results are arrays, never per-client objects: a 500,000-client file loads in a few
seconds (docs/traces.md quotes the measurement).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator

from fedsim.core.configio import Spec
from fedsim.core.costmodel import ModelShape, forward_flops_per_example
from fedsim.core.errors import FedsimError
from fedsim.core.models import model_config_dict

__all__ = [
    "TraceSpec", "TraceError", "DeviceTrace", "AvailabilityTrace",
    "load_device_trace", "load_availability_trace", "trace_arrays", "safe_load_pickle",
]

KBIT = 1e3


class TraceError(FedsimError):
    """A trace file that cannot be used; the message names file, client and field."""

    def __init__(self, path: str | Path, what: str, client: Any = None, field: str | None = None) -> None:
        self._parts = (path, what, client, field)
        where = f"client {client!r}" if client is not None else ""
        if field:
            where = f"{where}, field '{field}'" if where else f"field '{field}'"
        super().__init__(f"Invalid trace {path}: {where + ': ' if where else ''}{what}.")

    def __reduce__(self):
        return (type(self), self._parts)  # crosses process boundaries whole (ConfigError's)


class TraceSpec(Spec):
    """Trace files a fleet is built from (``fleet.trace`` in a scenario).

    The device classes of ``fleet.devices`` still give what a trace lacks (memory,
    energy, stragglers, latency). The capacity trace replaces the sampled training
    throughput and bandwidths; the availability trace replaces the diurnal windows and
    the devices' drop-out probability (a device drops out when its trace takes it
    offline).
    """

    capacity: Path | None = Field(None, description="FedScale client_device_capacity file (.pkl, .pickle or .json)")
    availability: Path | None = Field(None, description="FedScale client_behave_trace (.pkl/.json) or intervals (.json/.csv)")
    reference_gflops_per_sample: float | None = Field(
        None, gt=0, le=1e6, description="forward GFLOPs of one sample of the model the capacity trace timed")
    reference_model: str | None = Field(
        None, description="or that model (name or directory), priced by the cost model at reference_seq_len")
    reference_seq_len: int = Field(128, ge=1, le=1_000_000, description="sequence length of reference_model's samples")

    @model_validator(mode="after")
    def _check(self) -> TraceSpec:
        if self.capacity is None and self.availability is None:
            raise ValueError("a trace needs a capacity file, an availability file or both")
        refs = (self.reference_gflops_per_sample is not None) + (self.reference_model is not None)
        if self.capacity is not None and refs != 1:
            raise ValueError("a capacity trace needs exactly one of reference_gflops_per_sample and reference_model: "
                             "what the trace's ms per sample were measured on (see docs/traces.md)")
        return self

    def reference_flops(self) -> float:
        """Forward FLOPs per sample of the reference model (see docs/traces.md)."""
        if self.reference_gflops_per_sample is not None:
            return self.reference_gflops_per_sample * 1e9
        shape = ModelShape.from_hf_config(model_config_dict(self.reference_model))
        return forward_flops_per_example(shape, self.reference_seq_len)


@dataclass(frozen=True)
class DeviceTrace:
    """One row per client of a capacity file, in file order."""

    source: str
    client_ids: list
    ms_per_sample: np.ndarray  # float64
    kbit_per_s: np.ndarray  # float64

    @property
    def size(self) -> int:
        return len(self.client_ids)


@dataclass(frozen=True)
class AvailabilityTrace:
    """Online intervals per client (client ``j``: ``start_s[offsets[j]:offsets[j+1]]``)."""

    source: str
    client_ids: list
    offsets: np.ndarray  # int64, size + 1
    start_s: np.ndarray  # float64, sorted within a client
    end_s: np.ndarray  # float64
    period_s: np.ndarray  # float64 per client; inf = the trace does not repeat

    @property
    def size(self) -> int:
        return len(self.client_ids)


# -- reading files -------------------------------------------------------------------------

_SAFE_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "complex"}
_NUMPY_MODULES = {"numpy.core.multiarray", "numpy._core.multiarray", "numpy"}


def _numeric_scalar(dtype, data):
    # numpy floats and ints in a pickle (a trace written from numpy arrays) are rebuilt
    # from their bytes; any other dtype (object!) could carry code, so it is refused.
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf":
        raise pickle.UnpicklingError(f"holds a numpy scalar of dtype {dtype!r}; expected numbers")
    return np.frombuffer(data, dtype=dtype)[0].item()


class _PlainUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _SAFE_BUILTINS:
            return getattr(__import__("builtins"), name)
        if module in _NUMPY_MODULES and name == "scalar":
            return _numeric_scalar
        if module in _NUMPY_MODULES and name == "dtype":
            return np.dtype
        raise pickle.UnpicklingError(f"refers to {module}.{name}, which a trace file never needs")


def safe_load_pickle(path: str | Path) -> Any:
    """Unpickle plain data only (dicts, lists, numbers, strings); refuse anything else.

    Raises:
        TraceError: the file is unreadable, not a pickle, or names any other class or
            function (a hostile pickle: it is refused before anything runs).
    """
    try:
        with open(path, "rb") as fh:
            return _PlainUnpickler(fh).load()
    except OSError as exc:
        raise TraceError(path, f"cannot be read ({exc.strerror or exc})") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, MemoryError) as exc:
        raise TraceError(path, f"is not a plain-data pickle ({exc}); expected a dict of client id -> dict of numbers") from None


def _read_mapping(path: Path) -> dict:
    suffix = path.suffix.lower()
    if suffix in (".pkl", ".pickle"):
        data = safe_load_pickle(path)
    elif suffix == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise TraceError(path, f"cannot be read ({exc.strerror or exc})") from None
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise TraceError(path, f"is not JSON ({exc})") from None
    else:
        raise TraceError(path, f"has suffix {suffix or '(none)'!r}; expected .pkl, .pickle or .json")
    if not isinstance(data, dict):
        raise TraceError(path, f"holds a {type(data).__name__}; expected a mapping from client id to its entry")
    if not data:
        raise TraceError(path, "holds no clients")
    return data


def _number(path, cid, field, value) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TraceError(path, f"{value!r} is not a number", cid, field)
    return float(value)


def load_device_trace(path: str | Path) -> DeviceTrace:
    """Read a FedScale ``client_device_capacity`` file (pickle or JSON).

    Raises:
        TraceError: a missing field, or a value that is not a finite positive number.
    """
    path = Path(path)
    data = _read_mapping(path)
    n = len(data)
    comp, comm = np.empty(n), np.empty(n)
    ids = list(data)
    for i, (cid, entry) in enumerate(data.items()):
        if not isinstance(entry, dict):
            raise TraceError(path, f"is a {type(entry).__name__}; expected {{'computation': ms, 'communication': kbit/s}}", cid)
        for field, out in (("computation", comp), ("communication", comm)):
            if field not in entry:
                raise TraceError(path, "missing; expected ms per sample (computation) and kbit/s (communication)", cid, field)
            out[i] = _number(path, cid, field, entry[field])
    for field, values, unit in (("computation", comp, "ms per sample"), ("communication", comm, "kbit/s")):
        bad = np.flatnonzero(~(np.isfinite(values) & (values > 0)))
        if bad.size:
            i = int(bad[0])
            more = f" ({bad.size - 1} more clients like it)" if bad.size > 1 else ""
            raise TraceError(path, f"{float(values[i])!r}; expected a finite positive number of {unit}{more}", ids[i], field)
    return DeviceTrace(source=str(path), client_ids=ids, ms_per_sample=comp, kbit_per_s=comm)


def load_availability_trace(path: str | Path) -> AvailabilityTrace:
    """Read an availability trace: FedScale's behaviour trace, JSON intervals or CSV.

    Raises:
        TraceError: a missing field; an interval that is empty, unsorted, overlapping,
            negative or past ``finish_time``; a value that is not a finite number.
    """
    path = Path(path)
    if path.suffix.lower() == ".csv":
        ids, starts, ends, periods = _read_csv_intervals(path)
    else:
        data = _read_mapping(path)
        first = next(iter(data.values()))
        if isinstance(first, dict):
            ids, starts, ends, periods = _fedscale_intervals(path, data)
        else:
            ids, starts, ends, periods = _pair_intervals(path, data)
    lengths = np.fromiter((len(s) for s in starts), dtype=np.int64, count=len(ids))
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    start = _flat(path, ids, offsets, starts, "active")
    end = _flat(path, ids, offsets, ends, "inactive")
    period = np.asarray(periods, dtype=np.float64)
    if start.size == 0:
        raise TraceError(path, "has no online interval for any client; expected at least one")
    _check_intervals(path, ids, offsets, start, end, period)
    return AvailabilityTrace(source=str(path), client_ids=ids, offsets=offsets, start_s=start, end_s=end, period_s=period)


def _fedscale_intervals(path, data):
    ids, starts, ends, periods = list(data), [], [], []
    for cid, entry in data.items():
        if not isinstance(entry, dict):
            raise TraceError(path, f"is a {type(entry).__name__}; expected {{'active': [...], 'inactive': [...], 'finish_time': s}}", cid)
        for field in ("active", "inactive", "finish_time"):
            if field not in entry:
                raise TraceError(path, "missing; a behaviour trace entry has active, inactive and finish_time", cid, field)
        act, ina = entry["active"], entry["inactive"]
        for field, seq in (("active", act), ("inactive", ina)):
            if not isinstance(seq, list | tuple):
                raise TraceError(path, f"is a {type(seq).__name__}; expected a list of times in seconds", cid, field)
        if len(act) != len(ina):
            raise TraceError(path, f"has {len(ina)} times but active has {len(act)}; expected one end per start", cid, "inactive")
        finish = _number(path, cid, "finish_time", entry["finish_time"])
        if not (math.isfinite(finish) and finish > 0):
            raise TraceError(path, f"{finish!r}; expected a finite positive number of seconds", cid, "finish_time")
        starts.append(act)
        ends.append(ina)
        periods.append(finish)
    return ids, starts, ends, periods


def _pair_intervals(path, data):
    ids, starts, ends = list(data), [], []
    for cid, pairs in data.items():
        if not isinstance(pairs, list) or not all(isinstance(p, list | tuple) and len(p) == 2 for p in pairs):
            raise TraceError(path, "expected a list of [start_s, end_s] pairs", cid, "intervals")
        starts.append([p[0] for p in pairs])
        ends.append([p[1] for p in pairs])
    return ids, starts, ends, [math.inf] * len(ids)


def _read_csv_intervals(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TraceError(path, f"cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise TraceError(path, f"is not UTF-8 text ({exc})") from None
    reader = csv.DictReader(io.StringIO(text))
    need = ("client_id", "start_s", "end_s")
    if reader.fieldnames is None or any(c not in reader.fieldnames for c in need):
        raise TraceError(path, f"has columns {reader.fieldnames}; expected a header with {', '.join(need)}")
    grouped: dict[str, tuple[list, list]] = {}
    for row in reader:
        cid = row["client_id"]
        pair = grouped.setdefault(cid, ([], []))
        for field, out in (("start_s", pair[0]), ("end_s", pair[1])):
            try:
                out.append(float(row[field]))
            except (TypeError, ValueError):
                raise TraceError(path, f"{row[field]!r} on line {reader.line_num} is not a number", cid, field) from None
    if not grouped:
        raise TraceError(path, "holds no intervals")
    ids = list(grouped)
    return ids, [grouped[c][0] for c in ids], [grouped[c][1] for c in ids], [math.inf] * len(ids)


def _flat(path, ids, offsets, seqs, field) -> np.ndarray:
    flat = list(itertools.chain.from_iterable(seqs))
    if not set(map(type, flat)) <= {int, float}:
        i = next(k for k, v in enumerate(flat) if type(v) not in (int, float))
        cid = ids[int(np.searchsorted(offsets, i, side="right")) - 1]
        raise TraceError(path, f"holds {flat[i]!r}; expected times in seconds (numbers)", cid, field)
    return np.asarray(flat, dtype=np.float64)


def _check_intervals(path, ids, offsets, start, end, period) -> None:
    owner = np.repeat(np.arange(len(ids)), np.diff(offsets))
    first = np.zeros(start.size, dtype=bool)
    first[offsets[:-1][np.diff(offsets) > 0]] = True
    checks = (
        (~np.isfinite(start) | (start < 0), "active", "a start time that is not a finite number >= 0"),
        (~np.isfinite(end), "inactive", "an end time that is not a finite number"),
        (end <= start, "inactive", "an interval that ends at or before it starts"),
        (np.r_[False, start[1:] < start[:-1]] & ~first, "active", "start times out of order; expected them sorted"),
        (np.r_[False, start[1:] < end[:-1]] & ~first, "active", "intervals that overlap; expected each to start after the previous one ends"),
        (end > period[owner], "inactive", "an end time past finish_time (the trace's period)"),
    )
    for bad, field, what in checks:
        hit = np.flatnonzero(bad)
        if hit.size:
            k = int(hit[0])
            j = int(owner[k])
            raise TraceError(path, f"{what} (interval {k - int(offsets[j])}: [{start[k]:g}, {end[k]:g}])", ids[j], field)


# -- what a fleet takes from a trace -------------------------------------------------------------


def trace_arrays(spec: TraceSpec, size: int) -> dict[str, np.ndarray]:
    """The fleet arrays a capacity trace sets, for devices ``0 .. size-1`` (file order).

    A device's training throughput is the reference model's forward FLOPs per sample over
    its measured seconds per sample: a device is assumed to sustain the same FLOP/s on
    the simulated model as on the reference (docs/traces.md). Bandwidth is the same both
    ways, as in FedScale.

    Raises:
        TraceError: the file is bad, or holds fewer clients than the fleet has devices.
    """
    if spec.capacity is None:
        return {}
    trace = load_device_trace(spec.capacity)
    if trace.size < size:
        raise TraceError(spec.capacity, f"holds {trace.size:,} clients; the fleet has {size:,} devices "
                         "(set fleet.size to at most the number of clients)")
    flops = spec.reference_flops()
    bps = trace.kbit_per_s[:size] * KBIT
    return {"flops_per_s": flops / (trace.ms_per_sample[:size] / 1e3), "down_bps": bps, "up_bps": bps.copy()}
