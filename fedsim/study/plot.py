"""Plots from run directories (they read only the run records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsim.engine.records import read_rounds, read_summary

__all__ = ["plot_time_to_accuracy", "time_unit"]


def time_unit(max_s: float) -> tuple[float, str]:
    """``(seconds per unit, unit)`` that reads best for times up to ``max_s``: s, min or h."""
    if max_s < 120:
        return 1.0, "s"
    if max_s < 7200:
        return 60.0, "min"
    return 3600.0, "h"


def plot_time_to_accuracy(run_dirs: list[str | Path], out_file: str | Path, x: str = "time") -> Path:
    """Accuracy against simulated time (in s, min or h, whichever reads best) or round,
    one line per run directory. Runs of the surrogate trainer are labelled as such."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    target = None
    runs = [(read_rounds(d), read_summary(d) if (Path(d) / "summary.json").exists() else {}, d) for d in run_dirs]
    max_s = max((float(np.nanmax(r["sim_time_s"])) for r, _, _ in runs if len(r["sim_time_s"])), default=0.0)
    per, unit = time_unit(max_s)
    for rounds, summary, run_dir in runs:
        target = target or summary.get("target_accuracy")
        acc = rounds["accuracy"]
        keep = ~np.isnan(acc)
        xs = rounds["sim_time_s"][keep] / per if x == "time" else rounds["round"][keep] + 1
        # A "$" would start matplotlib mathtext: labels are shown as written.
        label = (summary.get("variant") or summary.get("method") or Path(run_dir).name).replace("$", r"\$")
        if summary.get("trainer") == "surrogate":
            label += " [surrogate]"
        tta = summary.get("time_to_target_s")
        if tta is not None and x == "time":
            label += f" (target at {tta / per:.1f} {unit})"
        ax.plot(xs, acc[keep], marker=".", markersize=3, label=label)
    if target:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.2f}")
    ax.set_xlabel(f"simulated time ({unit})" if x == "time" else "round")
    ax.set_ylabel("test accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Time to accuracy" if x == "time" else "Accuracy per round")
    fig.tight_layout()
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_file)
    plt.close(fig)
    return out_file
