"""``fedsim compare``: a table of methods over seeds, read only from run records.

Each run directory (``summary.json``, ``rounds.csv``, ``clients.csv``, and the resolved
``config.yaml`` for the method's parameters) gives one row of metrics (:func:`run_metrics`);
runs whose resolved configurations differ only in their seed form a group, labelled by
what differs (:mod:`fedsim.study.groups`), and each group is reported as mean ± std over
its runs (:func:`compare_runs`). Tables are written as CSV
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
from fedsim.study.groups import SEED_RE, group_runs, method_label, time_to

__all__ = ["METRICS", "run_metrics", "group_key", "compare_runs", "compare_groups", "aggregate", "to_markdown", "write_csv", "find_runs"]

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

def group_key(summary: dict[str, Any], config: dict[str, Any] | None = None) -> str:
    """The label of one run's method: its method and method parameters, without the seed.

    From the resolved ``config.yaml`` when there is one (``droppeft[compression=caesar]``),
    else the variant label without its ``seed-N`` part and sweep index. Runs of the
    analytic surrogate are marked ``[surrogate]``. (Which runs form a group is
    :func:`fedsim.study.groups.group_runs`'s business: their whole configurations.)
    """
    config = config if isinstance(config, dict) else {}
    trainer = config.get("trainer").get("kind") if isinstance(config.get("trainer"), dict) else None
    mark = " [surrogate]" if (trainer or summary.get("trainer")) == "surrogate" else ""
    label = method_label(config)
    if label:
        return label + mark
    label = str(summary.get("variant") or summary.get("method") or "run")
    label = re.sub(r"^\d+-", "", SEED_RE.sub("", label)).strip("_-")
    return (label or str(summary.get("method", "run"))) + mark


def _last_finite(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x[-1]) if x.size else math.nan


def run_metrics(run_dir: str | Path, target: float | None = None) -> dict[str, Any]:
    """One run's metrics, raw units (seconds, bytes, joules); NaN where not available.
    With ``target``, time to target is recomputed from ``rounds.csv`` for that accuracy."""
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
        "time_to_target": (time_to(run_dir, target) if target is not None
                           else s.get("time_to_target_s") if s.get("time_to_target_s") is not None else math.nan),
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
        "failures": float(np.nansum(rounds["failures"])),
        "traffic_gb": float(np.nansum(rounds["bytes_up"]) + np.nansum(rounds["bytes_down"])),
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


def compare_runs(run_dirs: Iterable[str | Path], target: float | None = None) -> list[dict[str, Any]]:
    """One row per group of runs that differ in their seed alone
    (:func:`fedsim.study.groups.group_runs`): ``n`` runs, ``reached`` (runs that hit the
    target; ``target`` recomputes it for another accuracy), and for every metric of
    :data:`METRICS` its mean and std over the runs (``<key>`` / ``<key>_std``), scaled
    to the table's units. Time to target is averaged over the runs that reached it."""
    return compare_groups(run_dirs, target)[0]


def compare_groups(run_dirs: Iterable[str | Path], target: float | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """:func:`compare_runs`' rows and the configuration keys that differ between groups."""
    groups, differ = group_runs(run_dirs)
    rows = []
    for g in groups:
        runs = [run_metrics(d, target) for d in g.runs]
        rows.append({"group": g.label, "method": runs[0]["method"], **aggregate(runs, [(k, scale) for k, _, scale, _ in METRICS])})
    return rows, differ


def aggregate(runs: Sequence[dict[str, Any]], metrics: Sequence[tuple[str, float]]) -> dict[str, Any]:
    """``n``, ``reached`` and, for each ``(key, scale)``, the mean and sample std of the
    runs' finite values (``<key>``, ``<key>_std``) times ``scale``."""
    row: dict[str, Any] = {"n": len(runs), "reached": int(sum(np.isfinite(r["time_to_target"]) for r in runs))}
    for key, scale in metrics:
        vals = np.array([r[key] for r in runs], dtype=float) * scale
        vals = vals[np.isfinite(vals)]
        row[key] = float(vals.mean()) if vals.size else math.nan
        row[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else (0.0 if vals.size else math.nan)
    return row


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
