"""The study table of a sweep: one row per point (runs that differ in their seed alone).

Per point: time to target (mean ± std over the seeds that reached it, and how many
did), final accuracy, traffic (up + down), energy and failed clients, each as mean ± std
over seeds. :func:`study_rows` reads only run records; :func:`render` prints the table
within a width (80 columns by default: long point names wrap, numbers never do);
:func:`write_study_csv` writes it with one column per swept key.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from fedsim.study.compare import aggregate, run_metrics
from fedsim.study.groups import group_runs
from fedsim.study.plot import time_unit

__all__ = ["STUDY_METRICS", "study_rows", "render", "write_study_csv"]

# (key in run_metrics, CSV column, scale to the column's unit)
STUDY_METRICS: tuple[tuple[str, str, float], ...] = (
    ("time_to_target", "time_to_target_s", 1.0),
    ("final_accuracy", "final_accuracy", 1.0),
    ("traffic_gb", "traffic_gb", 1e-9),
    ("energy_kj", "energy_kj", 1e-3),
    ("failures", "failures", 1.0),
)


def study_rows(run_dirs: Iterable[str | Path], target: float | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per group of runs (``point``, ``n``, ``reached``, metric means and stds,
    and the value of every key that differs between groups) and those keys."""
    groups, differ = group_runs(run_dirs)
    rows = []
    for g in groups:
        runs = [run_metrics(d, target) for d in g.runs]
        row = {"point": g.label, **aggregate(runs, [(k, scale) for k, _, scale in STUDY_METRICS])}
        row["values"] = g.values
        row["runs"] = [str(d) for d in g.runs]
        rows.append(row)
    return rows, differ


def _digits(x: float) -> int:
    x = abs(x)
    return 0 if x >= 100 else 1 if x >= 10 else 2 if x >= 1 or x == 0 else 3


def _pm(mean: float, std: float, digits: int | None = None) -> str:
    if not math.isfinite(mean):
        return "-"
    d = _digits(mean) if digits is None else digits
    if not math.isfinite(std) or std == 0:
        return f"{mean:.{d}f}"
    return f"{mean:.{d}f}±{std:.{d}f}"


def _wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width``, broken after ``_`` where possible."""
    pieces = [p + "_" for p in text.split("_")]
    pieces[-1] = pieces[-1][:-1]
    lines, line = [], ""
    for piece in pieces:
        while len(piece) > width:
            if line:
                lines.append(line)
                line = ""
            lines.append(piece[:width])
            piece = piece[width:]
        if len(line) + len(piece) > width:
            lines.append(line)
            line = ""
        line += piece
    return [*lines, line] if line or not lines else lines


def render(rows: Sequence[dict[str, Any]], width: int = 80) -> str:
    """The table as text no wider than ``width`` (a point name too long for its
    column gets a line of its own; numbers never wrap): mean±std over seeds; time to target in the unit that fits, with ``reached/runs``."""
    tmax = max((r["time_to_target"] for r in rows if math.isfinite(r["time_to_target"])), default=0.0)
    per, unit = time_unit(tmax)
    mark = " [surrogate]"
    surrogate = bool(rows) and all(r["point"].endswith(mark) for r in rows)
    head = [("", "point"), ("to target", f"({unit})"), ("", "hit"), ("final", "acc"), ("traffic", "GB"), ("energy", "kJ"), ("", "failures")]
    body = []
    for r in rows:
        body.append([
            r["point"].removesuffix(mark) if surrogate else r["point"],
            _pm(r["time_to_target"] / per, r["time_to_target_std"] / per, 1 if unit != "s" else 0),
            f"{r['reached']}/{r['n']}",
            _pm(r["final_accuracy"], r["final_accuracy_std"], 3),
            _pm(r["traffic_gb"], r["traffic_gb_std"]),
            _pm(r["energy_kj"], r["energy_kj_std"]),
            _pm(r["failures"], r["failures_std"], None if r["failures"] >= 10 or not r["failures_std"] else 1),
        ])
    widths = [max(len(h[0]), len(h[1]), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    rest = sum(widths[1:]) + 2 * (len(head) - 1)
    widths[0] = max(12, min(widths[0], width - rest))

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [line([h[0] for h in head]), line([h[1] for h in head]), "-" * min(width, sum(widths) + 2 * (len(head) - 1))]
    for b in body:
        if len(b[0]) > widths[0]:  # the name on a line of its own, the numbers under it
            lines += _wrap(b[0], width)
            b = ["", *b[1:]]
        lines.append(line(b))
    note = "mean±std over seeds (to target: over those that reached it)"
    lines.append(note + ("; surrogate" if surrogate else ""))
    return "\n".join(lines) + "\n"


def write_study_csv(rows: Sequence[dict[str, Any]], differ: Sequence[str], path: str | Path) -> Path:
    """``study.csv``: point, the differing keys' values, n, reached, each metric's mean and std."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["point", *differ, "n", "reached"] + [c for _, col, _ in STUDY_METRICS for c in (col, f"{col}_std")]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(cols)
        for r in rows:
            cells = [r["point"], *(_csv_value(r["values"].get(k)) for k in differ), r["n"], r["reached"]]
            for key, _, _ in STUDY_METRICS:
                cells += [_csv_value(r[key]), _csv_value(r[f"{key}_std"])]
            w.writerow(cells)
    return path


def _csv_value(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return ""
    if v is None:
        return ""
    return v if isinstance(v, int | float | str) else str(v)
