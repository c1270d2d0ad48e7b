"""Plots from run directories (they read only the run records)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsim.records import read_rounds, read_summary

__all__ = ["plot_time_to_accuracy"]


def plot_time_to_accuracy(run_dirs: list[str | Path], out_file: str | Path, x: str = "time") -> Path:
    """Accuracy against simulated time (hours) or round, one line per run directory."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    target = None
    for run_dir in run_dirs:
        rounds = read_rounds(run_dir)
        summary = read_summary(run_dir) if (Path(run_dir) / "summary.json").exists() else {}
        target = target or summary.get("target_accuracy")
        acc = rounds["accuracy"]
        keep = ~np.isnan(acc)
        xs = rounds["sim_time_s"][keep] / 3600.0 if x == "time" else rounds["round"][keep] + 1
        # A "$" would start matplotlib mathtext: labels are shown as written.
        label = (summary.get("variant") or summary.get("method") or Path(run_dir).name).replace("$", r"\$")
        tta = summary.get("time_to_target_s")
        if tta is not None and x == "time":
            label += f" (target at {tta / 3600:.2f} h)"
        ax.plot(xs, acc[keep], marker=".", markersize=3, label=label)
    if target:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target:.2f}")
    ax.set_xlabel("simulated time (h)" if x == "time" else "round")
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
