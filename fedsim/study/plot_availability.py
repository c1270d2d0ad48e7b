"""The share of a scenario's fleet that is available over a simulated day or week.

Reads only the scenario: the fleet and availability model are built as a run builds them
(:func:`fedsim.study.simulate.build_fleet`), then asked who is available every
``step_s`` seconds. One line for the whole fleet, one per device class.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fedsim.study.scenario import Scenario

__all__ = ["availability_share", "plot_availability"]


def availability_share(sc: Scenario, days: float = 1.0, step_s: float = 600.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Simulated times and, per device class (and ``"all"``), the share available then."""
    from fedsim.study.simulate import build_fleet

    _, fleet, availability = build_fleet(sc)
    t_s = np.arange(0.0, days * 86400.0 + step_s / 2, step_s)
    masks = np.stack([availability.available(float(t)) for t in t_s])
    shares = {"all": masks.mean(axis=1)}
    for code, name in enumerate(fleet.device_names):
        sel = fleet.device_class == code
        if sel.any():
            shares[name] = masks[:, sel].mean(axis=1)
    return t_s, shares


def plot_availability(sc: Scenario, out_file: str | Path, days: float = 1.0, step_s: float | None = None) -> Path:
    """Write a PNG of the available share of ``sc``'s fleet over ``days`` simulated days."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    step_s = step_s or (600.0 if days <= 2 else 1800.0)
    t_s, shares = availability_share(sc, days, step_s)
    fig, ax = plt.subplots(figsize=(9.5, 4), dpi=120)
    hours = t_s / 3600.0
    for name, share in shares.items():
        if name == "all":
            ax.plot(hours, share, color="black", lw=2.2, label=f"whole fleet ({share.mean():.0%} on average)")
        else:
            ax.plot(hours, share, lw=1.0, alpha=0.8, label=name)
    trace = sc.fleet.trace is not None and sc.fleet.trace.availability is not None
    source = f"trace {sc.fleet.trace.availability}" if trace else f"profile windows, t=0 at {sc.engine.start_hour_utc:g}:00 UTC"
    ax.set_title(f"{sc.name}: available share of {sc.fleet.size:,} devices ({source})", fontsize=9)
    ax.set_xlabel("simulated time (h)")
    ax.set_ylabel("share of devices available")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, hours[-1])
    ax.set_xticks(np.arange(0, hours[-1] + 1, 6 if days <= 2 else 24))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # outside: peaks stay visible
    fig.tight_layout()
    out = Path(out_file)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
