"""The study figures beyond accuracy over time, drawn from run records only.

* :func:`plot_time_to_target`: time to target against the swept value, one line per method;
* :func:`plot_resources`: traffic, energy and peak memory per device class;
* :func:`plot_participation`: completed updates and failures (by kind) per device class;
* :func:`plot_timeline`: a few rounds of one run, client by client (download, compute,
  upload, idle until the round ends; failures marked).

Each groups runs that differ in their seed alone (:mod:`fedsim.study.groups`) and shows
means over seeds; :func:`study_figures` writes them all (PNG and PDF).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fedsim.engine.records import read_clients, read_rounds
from fedsim.study.groups import Group, group_runs, time_to
from fedsim.study.plot import legend_below, new_figure, plot_time_to_accuracy, save, style, tex_safe, time_unit

__all__ = ["study_figures", "plot_time_to_target", "plot_resources", "plot_participation", "plot_timeline"]

_FAILURES = ("oom", "dropout", "straggler", "transfer_failed", "rejected")
_KIND_HATCHES = {"oom": "", "dropout": "////", "straggler": "....", "transfer_failed": "xxxx", "rejected": "----"}


def study_figures(run_dirs: Sequence[str | Path], out_dir: str | Path, target: float | None = None) -> list[Path]:
    """Every study figure for ``run_dirs`` in ``out_dir`` (PNG, with a PDF beside each);
    the time-to-target figure only when a numeric key differs between groups."""
    out_dir = Path(out_dir)
    groups, differ = group_runs(run_dirs)
    written = [plot_time_to_accuracy(list(run_dirs), out_dir / "accuracy_vs_time.png", target=target, pdf=True)]
    path = plot_time_to_target(groups, differ, out_dir / "time_to_target.png", target)
    if path is not None:
        written.append(path)
    written.append(plot_resources(groups, out_dir / "resources_by_class.png"))
    written.append(plot_participation(groups, out_dir / "participation_by_class.png"))
    written.append(plot_timeline(groups[0].runs[0], out_dir / "timeline.png"))
    return written


def _number(v) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _target_of(groups: Sequence[Group], target: float | None) -> float | None:
    if target is not None:
        return target
    values = [g.config.get("engine.target_accuracy") for g in groups]
    return next((float(v) for v in values if _number(v) is not None), None)


def plot_time_to_target(groups: Sequence[Group], differ: Sequence[str], out_file: str | Path, target: float | None = None) -> Path | None:
    """Time to target (mean over the seeds that reached it, bars: std) against the first
    numeric key that differs, one line per value of the other differing keys (the
    method); ``None`` when no numeric key differs or there is no target."""
    target = _target_of(groups, target)
    numeric = [k for k in differ if all(_number(g.values.get(k)) is not None for g in groups)]
    if not numeric or target is None:
        return None
    x_key = numeric[0]
    lines: dict[str, list[tuple[float, float, float, int, int]]] = {}
    for g in groups:
        rest = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in g.values.items() if k != x_key and not k.startswith("method."))
        name = (g.method_text or g.method) + (f", {rest}" if rest else "") + (" [surrogate]" if g.surrogate else "")
        tta = np.array([time_to(d, target) for d in g.runs])
        hit = tta[np.isfinite(tta)]
        lines.setdefault(name, []).append((float(g.values[x_key]), hit.mean() if hit.size else math.nan,
                                           hit.std(ddof=1) if hit.size > 1 else 0.0, hit.size, tta.size))
    top = max((m for pts in lines.values() for _, m, _, _, _ in pts if math.isfinite(m)), default=0.0)
    per, unit = time_unit(top)
    fig, (ax,) = new_figure()
    for i, (name, pts) in enumerate(lines.items()):
        pts.sort()
        xs, ys, es = (np.array([p[j] for p in pts]) for j in range(3))
        st = style(i)
        ax.errorbar(xs, ys / per, yerr=es / per, marker="o", capsize=3, label=tex_safe(name), **st)
        for x, y, _, n_hit, n in pts:
            if n_hit < n and math.isfinite(y):
                ax.annotate(f"{n_hit}/{n}", (x, y / per), textcoords="offset points", xytext=(4, 4), fontsize=7)
            if n_hit == 0:
                ax.plot([x], [0], marker="x", markersize=9, markeredgewidth=2, color=st["color"], linestyle="none", clip_on=False)
    ax.set_xlabel(x_key.replace("fleet.scale.", "scale factor on ") if x_key.startswith("fleet.scale.") else x_key)
    xs_all = sorted({x for pts in lines.values() for x, *_ in pts})
    if x_key.startswith("fleet.scale.") and xs_all[0] > 0 and xs_all[-1] / xs_all[0] > 4:
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs_all, [f"{x:g}" for x in xs_all])
        ax.minorticks_off()
    ax.set_ylabel(f"time to accuracy {target:g} ({unit})")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    missed = any(p[3] == 0 for pts in lines.values() for p in pts)
    ax.set_title("Time to target (mean over the seeds that reached it" + ("; x: none did)" if missed else ")"), fontsize=10)
    legend_below(fig, ax, len(lines))
    return save(fig, out_file)[0]


def _per_class(groups: Sequence[Group]) -> tuple[list[str], list[dict[str, dict[str, float]]]]:
    """Device classes, and per group: class -> metric -> mean over its runs."""
    classes: set[str] = set()
    out = []
    for g in groups:
        sums: dict[str, dict[str, float]] = {}
        for d in g.runs:
            c = read_clients(d)
            cls = c["device_class"]
            outcome = c["outcome"]
            for name in np.unique(cls):
                sel = cls == name
                ok = sel & (outcome == "ok")
                m = sums.setdefault(str(name), {})
                add = {
                    "traffic_mb": float(np.nansum(c["bytes_up"][sel]) + np.nansum(c["bytes_down"][sel])) / 1e6,
                    "energy_kj": float(np.nansum(c["energy_j"][sel])) / 1e3,
                    "selected": float(sel.sum()),
                    "ok": float(ok.sum()),
                    **{k: float((sel & (outcome == k)).sum()) for k in _FAILURES},
                }
                for k, v in add.items():
                    m[k] = m.get(k, 0.0) + v / len(g.runs)
                peak = float(c["peak_mem_bytes"][ok].max()) / 1e9 if ok.any() else math.nan
                prev = m.get("peak_mem_gb", math.nan)
                m["peak_mem_gb"] = peak if math.isnan(prev) else prev if math.isnan(peak) else max(prev, peak)
            classes.update(map(str, np.unique(cls)))
        out.append(sums)
    return sorted(classes), out


def _bars(ax, classes: list[str], groups: Sequence[Group], per_group: list[dict], key: str) -> None:
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(classes))
    for i, (g, sums) in enumerate(zip(groups, per_group)):
        vals = [sums.get(c, {}).get(key, math.nan) for c in classes]
        ax.bar(x + (i - (len(groups) - 1) / 2) * width, vals, width, label=tex_safe(g.label), color=style(i)["color"],
               hatch=("", "//", "..", "xx")[(i // 10) % 4], edgecolor="white", linewidth=0.5)
    ax.set_xticks(x, classes, rotation=30 if len(classes) > 4 else 0, ha="right" if len(classes) > 4 else "center", fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot_resources(groups: Sequence[Group], out_file: str | Path) -> Path:
    """Traffic (MB, up + down), energy (kJ) and peak memory of completed updates (GB) per
    device class: bars per group, means over seeds (sums over the run)."""
    classes, per_group = _per_class(groups)
    fig, axes = new_figure(3, width=11, height=3.8)
    for ax, key, title in zip(axes, ("traffic_mb", "energy_kj", "peak_mem_gb"),
                              ("traffic per run (MB)", "energy per run (kJ)", "peak memory of a completed update (GB)")):
        _bars(ax, classes, groups, per_group, key)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("device class", fontsize=8)
    fig.suptitle("Resources by device class (mean over seeds)", fontsize=10)
    legend_below(fig, axes[1], len(groups))
    return save(fig, out_file)[0]


def plot_participation(groups: Sequence[Group], out_file: str | Path) -> Path:
    """Completed updates per device class, and the share of selected clients that failed,
    by kind (stacked: the kind is the hatching), one bar per group in its colour."""
    from matplotlib.patches import Patch

    classes, per_group = _per_class(groups)
    fig, axes = new_figure(2, width=11, height=3.8)
    _bars(axes[0], classes, groups, per_group, "ok")
    axes[0].set_title("completed updates per run", fontsize=9)
    axes[0].set_ylabel("clients (mean over seeds)", fontsize=8)
    width = 0.8 / max(1, len(groups))
    x = np.arange(len(classes))
    used = set()
    for i, sums in enumerate(per_group):
        selected = np.array([sums.get(c, {}).get("selected", 0.0) for c in classes])
        bottom = np.zeros(len(classes))
        for kind in _FAILURES:
            failed = np.array([sums.get(c, {}).get(kind, 0.0) for c in classes])
            share = np.divide(failed, selected, out=np.zeros_like(failed), where=selected > 0) * 100
            if share.any():
                axes[1].bar(x + (i - (len(groups) - 1) / 2) * width, share, width, bottom=bottom, color=style(i)["color"],
                            hatch=_KIND_HATCHES[kind], edgecolor="white", linewidth=0.5)
                bottom += share
                used.add(kind)
    axes[1].set_xticks(x, classes, fontsize=8)
    axes[1].set_title("failed share of selected clients, by kind", fontsize=9)
    axes[1].set_ylabel("% of selected (mean over seeds)", fontsize=8)
    axes[1].grid(alpha=0.3, axis="y")
    kinds = [Patch(facecolor="#999999", edgecolor="white", hatch=_KIND_HATCHES[k], label=k) for k in _FAILURES if k in used]
    if kinds:
        axes[1].legend(handles=kinds, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=len(kinds), fontsize=8, frameon=False)
    legend_below(fig, axes[0], len(groups))
    fig.suptitle("Participation and failures by device class", fontsize=10)
    return save(fig, out_file)[0]


def plot_timeline(run_dir: str | Path, out_file: str | Path, rounds: int = 3, max_clients: int = 64) -> Path:
    """The first ``rounds`` rounds of one run (fewer if they hold more than ``max_clients``
    clients; of a larger first round, ``max_clients`` clients spread evenly over it), one
    row per selected client: download, compute and upload, then idle until the round
    ends; failed clients marked x (their bar stops where they failed)."""
    run_dir = Path(run_dir)
    c = read_clients(run_dir)
    r = read_rounds(run_dir)
    take = np.flatnonzero(c["round"] < rounds)
    shown = ""
    if take.size > max_clients:  # whole rounds while they fit; else clients evenly spread over the first
        counts = np.cumsum(np.bincount(c["round"][take].astype(int)))
        keep = int(np.searchsorted(counts, max_clients, side="right"))
        if keep == 0:
            first = take[c["round"][take] == c["round"][take[0]]]
            take = first[np.unique(np.linspace(0, first.size - 1, max_clients).round().astype(int))]
            shown = f", {take.size} of its {first.size} clients"
            keep = 1
        else:
            take = take[c["round"][take] < keep]
        rounds = keep
    round_end = {int(k): float(e) for k, e in zip(r["round"], r["sim_time_s"])}
    top = max([float(c["end_s"][take].max()) if take.size else 0.0] + [round_end.get(int(k), 0.0) for k in np.unique(c["round"][take])])
    t0 = float(c["start_s"][take].min()) if take.size else 0.0
    per, unit = time_unit(top - t0)
    fig, (ax,) = new_figure(height=max(3.0, 0.16 * take.size + 1.5))
    colours = {"download": "#1f77b4", "compute": "#ff7f0e", "upload": "#2ca02c", "idle": "#dddddd"}
    for row, i in enumerate(take):
        start = (c["start_s"][i] - t0) / per
        parts = [("download", c["download_s"][i]), ("compute", c["compute_s"][i]), ("upload", c["upload_s"][i])]
        x = start
        for name, dur in parts:
            if dur > 0:
                ax.barh(row, dur / per, left=x, color=colours[name], height=0.7)
                x += dur / per
        end = round_end.get(int(c["round"][i]))
        failed = c["outcome"][i] not in ("ok", "surplus")
        if end is not None and (end - t0) / per > x and not failed:
            ax.barh(row, (end - t0) / per - x, left=x, color=colours["idle"], height=0.7)
        if failed:
            ax.plot([(c["end_s"][i] - t0) / per], [row], marker="x", color="#d62728", markersize=6, markeredgewidth=2, clip_on=False)
    for k in np.unique(c["round"][take]):
        if int(k) in round_end:
            ax.axvline((round_end[int(k)] - t0) / per, color="black", linewidth=0.6, linestyle=":")
    labels = [f"r{int(c['round'][i])} {c['device_class'][i]}" for i in take]
    ax.set_yticks(range(take.size), labels, fontsize=6)
    ax.invert_yaxis()
    ax.set_xlim(0, (top - t0) / per * 1.03)
    ax.set_xlabel(f"simulated time ({unit})")
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [Patch(color=v, label=k) for k, v in colours.items()]
    handles.append(Line2D([], [], marker="x", color="#d62728", linestyle="none", markeredgewidth=2, label="failed"))
    axes_h = fig.get_figheight() - 1.2  # inches, about: the x label's height and 0.5 in below it
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.6 / max(axes_h, 1.0)), ncol=5, fontsize=8, frameon=False)
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    which = "round 0" if rounds == 1 else f"rounds 0-{rounds - 1}"
    ax.set_title(tex_safe(f"{summary.get('variant') or run_dir.name}: {which}{shown} (dotted: round ends)"), fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    return save(fig, out_file)[0]
