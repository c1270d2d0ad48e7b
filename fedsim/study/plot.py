"""Accuracy against simulated time from run directories (they read only the run records),
and the style every study figure shares (:mod:`fedsim.study.figures` draws the others).

Runs that differ in their seed alone (:func:`fedsim.study.groups.group_runs`) are one
line: the mean over seeds, with the range over seeds shaded. Lines get distinct colour
and line-style pairs (40 before one repeats), the legend sits below the axes, and the
time axis is in s, min or h, whichever fits.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.engine.records import read_rounds, read_summary

__all__ = ["plot_time_to_accuracy", "time_unit", "style", "new_figure", "save", "legend_below", "tex_safe"]

_LINESTYLES = ("-", "--", ":", "-.")


def time_unit(max_s: float) -> tuple[float, str]:
    """``(seconds per unit, unit)`` that reads best for times up to ``max_s``: s, min or h."""
    if max_s < 120:
        return 1.0, "s"
    if max_s < 7200:
        return 60.0, "min"
    return 3600.0, "h"


def style(i: int) -> dict[str, Any]:
    """Colour and line style of the ``i``-th line: ten colours, then the next line style."""
    import matplotlib

    colours = matplotlib.colormaps["tab10"].colors
    return {"color": colours[i % 10], "linestyle": _LINESTYLES[(i // 10) % len(_LINESTYLES)]}


def tex_safe(label: str) -> str:
    """A label as written: a ``$`` would start matplotlib mathtext."""
    return label.replace("$", r"\$")


def new_figure(ncols: int = 1, width: float = 7.0, height: float = 4.2):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height), dpi=120, squeeze=False)
    return fig, list(axes[0])


def legend_below(fig, ax, n: int) -> None:
    """The legend under the axes, in as many columns as fit, never over the data."""
    if n == 0:
        return
    ncol = 1 if n <= 3 else 2 if n <= 10 else 3
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, fontsize=8, frameon=False)


def save(fig, out_file: str | Path, pdf: bool = True) -> list[Path]:
    """Write ``out_file`` (PNG) and, with ``pdf``, the same figure as PDF beside it."""
    import matplotlib.pyplot as plt

    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    written = [out_file]
    fig.savefig(out_file, bbox_inches="tight")
    if pdf and out_file.suffix.lower() != ".pdf":
        written.append(out_file.with_suffix(".pdf"))
        fig.savefig(written[-1], bbox_inches="tight")
    plt.close(fig)
    return written


def _step_mean(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean, min and max over runs of the last accuracy evaluated by each time, on the
    union of their evaluation times (a run holds its last value after it stops)."""
    grid = np.unique(np.concatenate([t for t, _ in curves]))
    start = max(t[0] for t, _ in curves)
    grid = grid[grid >= start]
    vals = np.stack([a[np.searchsorted(t, grid, side="right") - 1] for t, a in curves])
    return grid, vals.mean(axis=0), vals.min(axis=0), vals.max(axis=0)


def plot_time_to_accuracy(run_dirs: list[str | Path], out_file: str | Path, x: str = "time", target: float | None = None,
                          pdf: bool = False) -> Path:
    """Accuracy against simulated time (or round): one line per group of runs that differ
    in their seed alone, the mean over seeds with their range shaded; time to target in
    the legend. Returns the PNG (with ``pdf``, a PDF is written beside it)."""
    from fedsim.study.groups import group_runs, time_to

    for d in run_dirs:  # clean errors naming a bad record before anything is drawn
        read_summary(d)
    groups, _ = group_runs(run_dirs)
    fig, (ax,) = new_figure()
    curves = []
    for g in groups:
        per_run = []
        for d in g.runs:
            rounds = read_rounds(d)
            keep = ~np.isnan(rounds["accuracy"])
            xs = rounds["sim_time_s"][keep] if x == "time" else rounds["round"][keep] + 1
            if xs.size:
                per_run.append((xs, rounds["accuracy"][keep]))
        curves.append(per_run)
    max_s = max((float(c[0].max()) for per_run in curves for c in per_run), default=0.0)
    per, unit = time_unit(max_s) if x == "time" else (1.0, "")
    if target is None:
        target = next((read_summary(d).get("target_accuracy") for d in run_dirs if read_summary(d).get("target_accuracy")), None)
    for i, (g, per_run) in enumerate(zip(groups, curves)):
        if not per_run:
            continue
        label = tex_safe(g.label) + (f" ({len(g.runs)} seeds)" if len(g.runs) > 1 else "")
        if target is not None and x == "time":
            tta = np.array([time_to(d, target) for d in g.runs])
            reached = tta[np.isfinite(tta)]
            if reached.size:
                label += f"; target at {reached.mean() / per:.3g} {unit}" + (f" ({reached.size}/{tta.size})" if reached.size < tta.size else "")
        grid, mean, lo, hi = _step_mean(per_run)
        st = style(i)
        ax.plot(grid / per, mean, drawstyle="steps-post", linewidth=1.6, label=label, **st)
        if len(per_run) > 1:
            ax.fill_between(grid / per, lo, hi, step="post", alpha=0.18, color=st["color"], linewidth=0)
    if target:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.2f}")
    ax.set_xlabel(f"simulated time ({unit})" if x == "time" else "round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.set_title(("Accuracy over simulated time" if x == "time" else "Accuracy per round")
                 + (" (mean; shaded: range over seeds)" if any(len(g.runs) > 1 for g in groups) else ""), fontsize=10)
    legend_below(fig, ax, len(groups) + bool(target))
    return save(fig, out_file, pdf=pdf)[0]
