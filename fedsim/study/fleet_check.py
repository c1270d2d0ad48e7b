"""Before a long run: what the scenario's model and plans cost on each device class.

``fedsim profiles --check SCENARIO`` builds the fleet as a run would, has the method plan
a first round for (a sample of) every device class, prices the plans with the cost model
and reports, per class, the spread of predicted round times (download, compute, upload;
no stragglers, no retries) and peak memory, and which devices cannot take part: out of
memory, or slower than the round deadline. Nothing is trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsim.core.costmodel import CostCoefficients, client_times, plan_cost
from fedsim.core.rng import Seeds
from fedsim.methods.base import RoundContext, get_method
from fedsim.study.scenario import Scenario

__all__ = ["ClassCheck", "check_fleet", "report", "PERCENTILES"]

PERCENTILES = (10, 50, 90)


@dataclass(frozen=True)
class ClassCheck:
    """One device class of a scenario, as its first round's plans would cost it.

    Attributes:
        name: Device class.
        devices: Devices of the class in the fleet; ``sampled`` of them were priced.
        round_s: Predicted round time at :data:`PERCENTILES` (s).
        compute_s: Compute part of it at the same percentiles.
        peak_mem_gb: Peak training memory at the percentiles (GB).
        app_memory_gb: Memory the class's devices may use, at the percentiles (GB).
        oom_share: Share of sampled devices whose plan does not fit.
        late_share: Share that fits but would miss the round deadline (0 without one).
    """

    name: str
    devices: int
    sampled: int
    round_s: tuple[float, ...]
    compute_s: tuple[float, ...]
    peak_mem_gb: tuple[float, ...]
    app_memory_gb: tuple[float, ...]
    oom_share: float
    late_share: float

    @property
    def verdict(self) -> str:
        if self.oom_share >= 1.0:
            return "cannot take part (out of memory)"
        if self.oom_share + self.late_share >= 1.0:
            return "cannot take part (out of memory or past the deadline)"
        if self.oom_share > 0 or self.late_share > 0:
            return f"{self.oom_share:.0%} out of memory, {self.late_share:.0%} past the deadline"
        return "ok"


def _pct(values: np.ndarray) -> tuple[float, ...]:
    return tuple(float(v) for v in np.percentile(values, PERCENTILES))


def check_fleet(sc: Scenario, per_class: int = 1000) -> tuple[list[ClassCheck], str]:
    """Per device class, the cost of the first round's plans; and a note on the plans used.

    Args:
        sc: A validated scenario (one variant).
        per_class: Devices priced per class at most (a seeded sample of the class).
    """
    from fedsim.study.simulate import build_base_plan, build_fleet, model_shape_for

    seeds = Seeds(sc.seed)
    _, fleet, _ = build_fleet(sc, seeds)
    shape = model_shape_for(sc)
    base = build_base_plan(sc, shape)
    method = get_method(sc.method.name)(sc.method_params(), shape, base)
    rng = seeds.generator("check")
    ids = np.concatenate([
        np.sort(rng.choice(members, size=min(per_class, members.size), replace=False))
        for members in (np.flatnonzero(fleet.device_class == code) for code in range(len(fleet.device_names)))
        if members.size
    ])
    ctx = RoundContext(round_idx=0, now_s=0.0, device_ids=ids, fleet=fleet, shape=shape, base_plan=base,
                       coefficients=CostCoefficients(), deadline_s=sc.engine.round_deadline_s,
                       rng=seeds.generator("method", 0), quota=sc.engine.clients_per_round)
    try:
        plans = method.configure_round(ctx)
        note = f"plans: {sc.method.name}'s first round"
    except Exception as exc:  # a method that needs a trainer or a history to plan
        from fedsim.core.plan import RoundPlans

        plans = RoundPlans.same(base, ids.size)
        note = f"plans: the base plan ({sc.method.name} could not plan without a run: {type(exc).__name__}: {exc})"
    costs = [plan_cost(shape, p, ctx.coefficients) for p in plans.plans]
    times = client_times(fleet, ids, costs, plans.index)
    deadline = sc.engine.round_deadline_s
    late = (times.total_s > deadline) & ~times.oom if deadline is not None else np.zeros(ids.size, bool)
    out = []
    classes = fleet.device_class[ids]
    for code, name in enumerate(fleet.device_names):
        sel = classes == code
        if not sel.any():
            continue
        out.append(ClassCheck(
            name=name, devices=int(np.count_nonzero(fleet.device_class == code)), sampled=int(sel.sum()),
            round_s=_pct(times.total_s[sel]), compute_s=_pct(times.compute_s[sel]),
            peak_mem_gb=_pct(times.peak_mem_bytes[sel] / 1e9), app_memory_gb=_pct(fleet.mem_cap_bytes[ids[sel]] / 1e9),
            oom_share=float(times.oom[sel].mean()), late_share=float(late[sel].mean()),
        ))
    return out, note


def _spread(values: tuple[float, ...]) -> str:
    return " / ".join(f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 100 else f"{v:,.0f}" for v in values)


def report(label: str, checks: list[ClassCheck], note: str) -> str:
    """A plain-text table of :func:`check_fleet`'s result (for ``fedsim profiles --check``)."""
    p = "/".join(f"p{q}" for q in PERCENTILES)
    head = ("class", "devices", f"round s {p}", f"compute s {p}", f"peak GB {p}", f"app memory GB {p}", "verdict")
    rows = [head]
    for c in checks:
        rows.append((c.name, f"{c.devices:,}", _spread(c.round_s), _spread(c.compute_s),
                     _spread(c.peak_mem_gb), _spread(c.app_memory_gb), c.verdict))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"{label}: {note}"]
    lines += ["  " + "  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    blocked = [c.name for c in checks if c.verdict.startswith("cannot")]
    if blocked:
        lines.append(f"  cannot take part: {', '.join(blocked)}")
    return "\n".join(lines)
