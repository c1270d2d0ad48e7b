"""``fedsim compare``: a table of methods over seeds, read only from run records.

Each run directory (``summary.json``, ``rounds.csv``, ``clients.csv``, and the resolved
``config.yaml`` for the method's parameters) gives one row of metrics (:func:`run_metrics`);
runs that differ only in their seed form a group (method and its parameters, prefixed by
the scenario name when several scenarios are compared; see :func:`group_key`), and each group is
reported as mean ± std over its runs (:func:`compare_runs`). Tables are written as CSV
(one column per statistic) and Markdown.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.core.configio import read_yaml
from fedsim.engine.records import read_clients, read_rounds, read_summary

__all__ = ["METRICS", "run_metrics", "group_key", "compare_runs", "to_markdown", "write_csv", "find_runs"]

# (key, column title, scale applied to the raw value, digits)
METRICS: tuple[tuple[str, str, float, int], ...] = (
    ("time_to_target", "time to target (s)", 1.0, 0),
    ("final_accuracy", "final acc", 1.0, 3),
    ("personal_accuracy", "personal acc", 1.0, 3),
    ("best_accuracy", "best acc", 1.0, 3),
    ("rounds", "rounds", 1.0, 0),
    ("sim_time", "sim time (s)", 1.0, 0),
    ("peak_mem_gb", "peak mem GB (max, ok)", 1e-9, 2),
    ("mean_mem_gb", "mem GB (mean)", 1e-9, 2),
    ("traffic_up_gb", "up GB", 1e-9, 3),
    ("traffic_down_gb", "down GB", 1e-9, 3),
    ("energy_kj", "energy kJ", 1e-3, 1),
    ("oom", "oom", 1.0, 0),
    ("straggler", "straggler", 1.0, 0),
    ("dropout", "dropout", 1.0, 0),
)

_SEED_RE = re.compile(r"(^|[_-])seed-?\d+")


def group_key(summary: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The label of a run's group: its method and method parameters, without the seed.

    From the resolved ``config.yaml`` when there is one (``droppeft[compression=caesar]``),
    else the variant label without its ``seed-N`` part and sweep index. Runs of the
    analytic surrogate are marked ``[surrogate]``, so they never share a group (or a
    label) with real training.
    """
    config = config if isinstance(config, dict) else {}
    trainer = config.get("trainer").get("kind") if isinstance(config.get("trainer"), dict) else None
    mark = " [surrogate]" if (trainer or summary.get("trainer")) == "surrogate" else ""
    method = config.get("method")
    if isinstance(method, dict) and method.get("name"):
        params = method.get("params") if isinstance(method.get("params"), dict) else {}
        inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(params.items()))
        return (f"{method['name']}[{inner}]" if inner else str(method["name"])) + mark
    label = str(summary.get("variant") or summary.get("method") or "run")
    label = re.sub(r"^\d+-", "", _SEED_RE.sub("", label)).strip("_-")
    return (label or str(summary.get("method", "run"))) + mark


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_short(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def _last_finite(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x[-1]) if x.size else math.nan


def run_metrics(run_dir: str | Path) -> dict[str, Any]:
    """One run's metrics, raw units (seconds, bytes, joules); NaN where not available."""
    run_dir = Path(run_dir)
    s = read_summary(run_dir)
    rounds = read_rounds(run_dir)
    config = read_yaml(run_dir / "config.yaml")[0] if (run_dir / "config.yaml").is_file() else None
    out: dict[str, Any] = {
        "run": str(run_dir),
        "scenario": s.get("scenario"),
        "group": group_key(s, config),
        "method": s.get("method"),
        "seed": s.get("seed"),
        "status": s.get("status"),
        "time_to_target": s.get("time_to_target_s") if s.get("time_to_target_s") is not None else math.nan,
        "final_accuracy": s.get("final_accuracy") if s.get("final_accuracy") is not None else math.nan,
        "best_accuracy": s.get("best_accuracy") if s.get("best_accuracy") is not None else math.nan,
        "personal_accuracy": _last_finite(rounds["personal_accuracy"]),
        "rounds": float(len(rounds["round"])),
        "sim_time": _last_finite(rounds["sim_time_s"]) if len(rounds["round"]) else math.nan,
        "traffic_up_gb": float(np.nansum(rounds["bytes_up"])),
        "traffic_down_gb": float(np.nansum(rounds["bytes_down"])),
        "energy_kj": float(np.nansum(rounds["energy_j"])),
        "oom": float(np.nansum(rounds["oom"])),
        "straggler": float(np.nansum(rounds["straggler"])),
        "dropout": float(np.nansum(rounds["dropout"])),
    }
    clients = read_clients(run_dir) if (run_dir / "clients.csv").is_file() else None
    if clients is not None and len(clients["round"]):
        mem = clients["peak_mem_bytes"].astype(float)
        ok = clients["outcome"] == "ok"
        out["peak_mem_gb"] = float(mem[ok].max()) if ok.any() else math.nan
        out["mean_mem_gb"] = float(mem.mean())
    else:
        out["peak_mem_gb"] = out["mean_mem_gb"] = math.nan
    return out


def compare_runs(run_dirs: Iterable[str | Path]) -> list[dict[str, Any]]:
    """One row per group: ``n`` runs, ``reached`` (runs that hit the target), and for every
    metric of :data:`METRICS` its mean and std over the runs (``<key>`` / ``<key>_std``),
    scaled to the table's units. Time to target is averaged over the runs that reached it."""
    per_run = [run_metrics(d) for d in run_dirs]
    if len({m["scenario"] for m in per_run}) > 1:
        for m in per_run:
            m["group"] = f"{m['scenario']}/{m['group']}"
    groups: dict[str, list[dict[str, Any]]] = {}
    for m in per_run:
        groups.setdefault(m["group"], []).append(m)
    rows = []
    for name, runs in groups.items():
        row: dict[str, Any] = {"group": name, "method": runs[0]["method"], "n": len(runs),
                               "reached": int(sum(np.isfinite(r["time_to_target"]) for r in runs))}
        for key, _, scale, _ in METRICS:
            vals = np.array([r[key] for r in runs], dtype=float) * scale
            vals = vals[np.isfinite(vals)]
            row[key] = float(vals.mean()) if vals.size else math.nan
            row[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else (0.0 if vals.size else math.nan)
        rows.append(row)
    return rows


def _cell(mean: float, std: float, digits: int) -> str:
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(std) or std == 0:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def to_markdown(rows: Sequence[dict[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """A Markdown table (mean ± std; time to target with ``reached/n``)."""
    chosen = [m for m in METRICS if metrics is None or m[0] in metrics]
    head = ["method", "runs"] + [title for _, title, _, _ in chosen]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [str(r["group"]), str(r["n"])]
        for key, _, _, digits in chosen:
            cell = _cell(r[key], r[f"{key}_std"], digits)
            if key == "time_to_target":
                cell = f"{cell} ({r['reached']}/{r['n']})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cols = ["group", "method", "n", "reached"] + [c for key, *_ in METRICS for c in (key, f"{key}_std")]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()})
    return path


def find_runs(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories (holding ``summary.json`` and ``rounds.csv``) at or below ``paths``."""
    found: list[Path] = []
    for p in map(Path, paths):
        if (p / "summary.json").is_file() and (p / "rounds.csv").is_file():
            found.append(p)
        elif p.is_dir():
            found += sorted(d.parent for d in p.rglob("summary.json") if (d.parent / "rounds.csv").is_file())
    return list(dict.fromkeys(found))
