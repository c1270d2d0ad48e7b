"""Which runs belong together: those whose resolved configurations differ in the seed alone.

Every run folder holds its resolved ``config.yaml``; two runs share a group only when
those configurations are equal once ``seed`` and ``variant`` (the folder label) are set
aside. :func:`group_runs` also says which keys differ between the groups, and labels each
group from them: the method (``stld-fixed[mean_drop=0.5]``) and the other keys that differ
(``fedlora, round_deadline_s=5``), or the point names of a sweep when they tell the groups
apart. Runs of the analytic surrogate are marked ``[surrogate]``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.core.configio import read_yaml
from fedsim.engine.records import read_summary

__all__ = ["Group", "group_runs", "flatten", "time_to", "method_label", "SEED_RE"]

SEED_RE = re.compile(r"(^|[_-])seed-?\d+")
_IGNORED = ("seed", "variant")


@dataclass
class Group:
    """Runs that differ in their seed alone; ``values`` are its differing keys' values."""

    label: str
    runs: list[Path]
    config: dict[str, Any]  # flattened, seed and variant left out
    values: dict[str, Any] = field(default_factory=dict)
    surrogate: bool = False
    method_text: str = ""  # name[param=value,...]

    @property
    def method(self) -> str:
        return str(self.config.get("method.name", ""))


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{'a': {'b': 1}}`` -> ``{'a.b': 1}``; lists and empty mappings stay values."""
    if not isinstance(config, dict) or (not config and prefix):
        return {prefix: config}
    out: dict[str, Any] = {}
    for k, v in config.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def _short(v: Any) -> str:
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}={_short(x)}" for k, x in sorted(v.items())) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return f"{v:g}" if isinstance(v, float) else str(v)


def method_label(config: dict[str, Any]) -> str:
    """``name[param=value,...]`` of a (nested) configuration's ``method``, or ``''``."""
    method = config.get("method")
    if not isinstance(method, dict) or not method.get("name"):
        return ""
    params = method.get("params") if isinstance(method.get("params"), dict) else {}
    inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(params.items()))
    return f"{method['name']}[{inner}]" if inner else str(method["name"])


def _key_names(keys: list[str]) -> dict[str, str]:
    """The shortest dotted suffix of each key that no other key ends with."""
    out = {}
    for k in keys:
        parts = k.split(".")
        for n in range(1, len(parts) + 1):
            suffix = ".".join(parts[-n:])
            if not any(o != k and (o == suffix or o.endswith("." + suffix)) for o in keys):
                break
        out[k] = suffix
    return out


def _load(run_dir: Path) -> tuple[dict, dict]:
    summary = read_summary(run_dir)
    config = read_yaml(run_dir / "config.yaml")[0] if (run_dir / "config.yaml").is_file() else None
    if not isinstance(config, dict):  # a record without its configuration: what the summary says
        config = {"method": {"name": summary.get("method") or "run"}, "name": summary.get("scenario")}
        if summary.get("trainer"):
            config["trainer"] = {"kind": summary["trainer"]}
    return summary, config


def group_runs(run_dirs: Iterable[str | Path]) -> tuple[list[Group], list[str]]:
    """Groups of runs (in the order first seen) and the flattened keys that differ between them."""
    groups: dict[str, Group] = {}
    variants: dict[str, set[str]] = {}
    nested: dict[str, dict] = {}
    for d in map(Path, run_dirs):
        summary, config = _load(d)
        flat = {k: v for k, v in flatten(config).items() if k.split(".")[0] not in _IGNORED}
        kind = flat.get("trainer.kind") or summary.get("trainer")
        key = json.dumps(flat, sort_keys=True, default=str)
        if key not in groups:
            groups[key] = Group(label="", runs=[], config=flat, surrogate=kind == "surrogate")
            nested[key] = config
        groups[key].runs.append(d)
        label = str(summary.get("variant") or config.get("variant") or "")
        variants.setdefault(key, set()).add(re.sub(r"^\d+-", "", SEED_RE.sub("", label)).strip("_-"))
    all_keys = list(dict.fromkeys(k for g in groups.values() for k in g.config))
    differ = [k for k in all_keys if len({json.dumps(g.config.get(k, "<absent>"), sort_keys=True, default=str) for g in groups.values()}) > 1]
    # {} in one run and {a: 1} in another: the deeper key says it.
    differ = [k for k in differ if not any(o.startswith(k + ".") for o in differ)]
    for g in groups.values():
        g.values = {k: g.config.get(k) for k in differ}
    names = [next(iter(v)) if len(v) == 1 else "" for v in variants.values()]
    by_points = all(names) and len(set(names)) == len(names) and any(not k.startswith(("method.", "name", "trainer.")) for k in differ)
    others = [k for k in differ if not k.startswith(("method.", "trainer.kind")) and k != "name"]
    short = _key_names(others)
    for (key, g), point in zip(groups.items(), names):
        g.method_text = method_label(nested[key])
        if by_points:
            label = point
        else:
            parts = [g.method_text or point or "run"] + [f"{short[k]}={_short(g.values[k])}" for k in others]
            label = ", ".join(parts)
            if "name" in differ:
                label = f"{g.config.get('name')}/{label}"
        g.label = label + (" [surrogate]" if g.surrogate else "")
    return list(groups.values()), differ


def time_to(run_dir: str | Path, target: float) -> float:
    """Simulated seconds until the first evaluated round at or above ``target`` accuracy
    (``rounds.csv``), NaN if none reached it."""
    from fedsim.engine.records import read_rounds

    rounds = read_rounds(run_dir)
    acc = np.asarray(rounds["accuracy"], dtype=float)
    hit = np.flatnonzero(np.nan_to_num(acc, nan=-1.0) >= target)
    return float(rounds["sim_time_s"][hit[0]]) if hit.size else math.nan
