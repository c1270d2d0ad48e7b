"""Checkpoint and resume: a run stopped at any point and resumed writes the same bytes.

In-process tests stop a run with an exception at a chosen round (every method, the
surrogate and the tiny BERT); the kill tests run ``fedsim run`` in a subprocess, kill it
(SIGKILL, SIGTERM) at random moments, resume it with ``--resume`` until it finishes, and
compare its records byte for byte with an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import fedsim.engine.sync
from fedsim.engine import checkpoint
from fedsim.core.errors import FedsimError
from fedsim.engine.records import read_summary
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate
from test_records import GOLDEN, golden_overrides

RECORDS = ("config.yaml", "rounds.csv", "clients.csv")
ROOT = Path(__file__).resolve().parent.parent


class Stop(Exception):
    """Stands for a crash in the middle of a round."""


def _scenario(path, overrides=()):
    (v,) = load_scenario(path, overrides=list(overrides))
    return v.scenario


def assert_same_records(a: Path, b: Path) -> None:
    for name in RECORDS:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    sa, sb = read_summary(a), read_summary(b)
    wall = ("wall_s", "train_wall_s", "overhead_fraction", "checkpoints", "checkpoint_wall_s", "checkpoint_bytes",
            "resumed_at_round")
    assert {k: v for k, v in sa.items() if k not in wall} == {k: v for k, v in sb.items() if k not in wall}


def crash_at(monkeypatch, round_idx: int, stage: str = "learn") -> None:
    """Make round ``round_idx`` raise :class:`Stop` once: before learning, or after its records (before the checkpoint)."""
    learn = fedsim.engine.sync.SyncEngine.learn
    state = {"armed": True}

    def patched(self, fate, now_s):
        if state["armed"] and fate.round_idx == round_idx and stage == "learn":
            state["armed"] = False
            raise Stop(f"round {round_idx}")
        row = learn(self, fate, now_s)
        if state["armed"] and fate.round_idx == round_idx:
            state["armed"] = False
            raise Stop(f"after round {round_idx}")
        return row

    monkeypatch.setattr(fedsim.engine.sync.SyncEngine, "learn", patched)


def stop_and_resume(sc, out: Path, monkeypatch, round_idx: int, stage: str = "learn", **kw) -> None:
    crash_at(monkeypatch, round_idx, stage)
    with pytest.raises(Stop):
        simulate(sc, out, **kw)
    monkeypatch.undo()
    assert read_summary(out)["status"] == "failed"
    simulate(sc, out, existing="resume", **kw)


METHODS = [
    "method={name: fedlora}",
    "method={name: stld-fixed, params: {mean_drop: 0.5}}",
    "method={name: pld}",
    "method={name: fedavg-full}",
    "method={name: legend}",
    "method={name: caesar}",
    "method={name: droppeft}",
    "method={name: droppeft, params: {compression: caesar, ptls: true}}",
]


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.split("name: ")[1].split("}")[0].split(",")[0] + ("+" if "ptls" in m else ""))
def test_every_method_resumes_to_identical_records(method, tiny_scenario, tmp_path, monkeypatch):
    sc = _scenario(tiny_scenario, [method, "engine.max_rounds=7", "engine.round_deadline_s=60"])
    simulate(sc, tmp_path / "full")

    stop_and_resume(sc, tmp_path / "cut", monkeypatch, round_idx=4, checkpoint_every=1)

    assert_same_records(tmp_path / "full", tmp_path / "cut")
    assert read_summary(tmp_path / "cut")["resumed_at_round"] == 4


@pytest.mark.parametrize(("round_idx", "stage", "every"), [(0, "learn", 1), (3, "after", 1), (4, "learn", 3), (5, "after", 4)])
def test_resume_from_any_stage_and_checkpoint_interval(round_idx, stage, every, tmp_path, monkeypatch):
    sc = _scenario(GOLDEN / "faults.yaml")
    simulate(sc, tmp_path / "full")

    stop_and_resume(sc, tmp_path / "cut", monkeypatch, round_idx=round_idx, stage=stage, checkpoint_every=every)

    assert_same_records(tmp_path / "full", tmp_path / "cut")
    assert not (tmp_path / "cut" / checkpoint.CHECKPOINT).exists()  # removed once the run finished


@pytest.mark.slow
def test_real_training_resumes_to_identical_records(tmp_path, monkeypatch):
    # Caesar on the tiny BERT: global LoRA weights, per-device download references.
    sc = _scenario(GOLDEN / "torch.yaml", golden_overrides("torch", tmp_path) + ["engine.max_rounds=4"])
    simulate(sc, tmp_path / "full")

    stop_and_resume(sc, tmp_path / "cut", monkeypatch, round_idx=2, checkpoint_every=1)

    assert_same_records(tmp_path / "full", tmp_path / "cut")


@pytest.mark.slow
def test_real_training_with_personal_layers_resumes(tmp_path, monkeypatch):
    sc = _scenario(GOLDEN / "torch.yaml", golden_overrides("torch", tmp_path)
                   + ["engine.max_rounds=4", "method={name: droppeft, params: {ptls: true, personal_layers: 1}}"])
    simulate(sc, tmp_path / "full")

    stop_and_resume(sc, tmp_path / "cut", monkeypatch, round_idx=3, stage="after", checkpoint_every=1)

    assert_same_records(tmp_path / "full", tmp_path / "cut")


def test_resuming_a_finished_run_changes_nothing(tiny_scenario, tmp_path):
    sc = _scenario(tiny_scenario)
    first = simulate(sc, tmp_path / "run")
    before = {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()}

    again = simulate(sc, tmp_path / "run", existing="resume")

    assert {p.name: p.read_bytes() for p in (tmp_path / "run").iterdir()} == before
    assert (again.rounds, again.sim_time_s, again.final_accuracy) == (first.rounds, first.sim_time_s, first.final_accuracy)


def test_resume_refuses_another_configuration(tiny_scenario, tmp_path, monkeypatch):
    sc = _scenario(tiny_scenario)
    crash_at(monkeypatch, 2)
    with pytest.raises(Stop):
        simulate(sc, tmp_path / "run")
    monkeypatch.undo()

    with pytest.raises(FedsimError, match="another configuration"):
        simulate(_scenario(tiny_scenario, ["seed=9"]), tmp_path / "run", existing="resume")


def test_resume_without_a_checkpoint_starts_over(tiny_scenario, tmp_path, monkeypatch):
    sc = _scenario(tiny_scenario)
    simulate(sc, tmp_path / "full")
    crash_at(monkeypatch, 0)
    with pytest.raises(Stop):
        simulate(sc, tmp_path / "cut")
    monkeypatch.undo()
    assert not (tmp_path / "cut" / checkpoint.CHECKPOINT).exists()

    simulate(sc, tmp_path / "cut", existing="resume")

    assert_same_records(tmp_path / "full", tmp_path / "cut")


def test_checkpoint_that_does_not_match_the_records_is_refused(tiny_scenario, tmp_path, monkeypatch):
    sc = _scenario(tiny_scenario)
    crash_at(monkeypatch, 3)
    with pytest.raises(Stop):
        simulate(sc, tmp_path / "run", checkpoint_every=1)
    monkeypatch.undo()
    (tmp_path / "run" / "clients.csv").write_text("round\n")  # records cut behind the checkpoint's back

    with pytest.raises(FedsimError, match="shorter than its checkpoint"):
        simulate(sc, tmp_path / "run", existing="resume")


# -- kill tests: fedsim run in a subprocess, killed at random moments -------------------------
SWEEP = """\
name: killme
seed: 4
fleet:
  size: 200
  devices: {phone-low: 0.3, phone-mid: 0.4, phone-high: 0.3}
  networks: {wifi: 0.5, 4g: 0.3, 3g: 0.2}
model: {name_or_path: minilm-l6}
data: {max_length: 64}
local: {batch_size: 8, local_steps: 2}
trainer: {kind: surrogate, surrogate: {noise_std: 0.01}}
engine: {clients_per_round: 6, over_selection: 1.5, round_deadline_s: 120, max_rounds: 60}
sweep:
  method: [{name: caesar}, {name: droppeft}]
"""


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "fedsim.cli", "run", "-q", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def _recording(out: Path, since: float) -> bool:
    """Whether a run in ``out`` that began after ``since`` has recorded a round (simulate
    writes summary.json once it has cut the logs back, before the first round)."""
    for summary in out.glob("*/summary.json"):
        rounds = summary.parent / "rounds.csv"
        with contextlib.suppress(FileNotFoundError):
            if summary.stat().st_mtime_ns >= since * 1e9 and rounds.stat().st_mtime_ns > summary.stat().st_mtime_ns:
                return True
    return False


def _finished(out: Path) -> bool:
    """Whether every run in ``out`` has finished (``status: ok``)."""
    summaries = list(out.glob("*/summary.json"))
    return bool(summaries) and all(json.loads(p.read_text()).get("status") == "ok" for p in summaries)


def kill_until_done(first: list[str], out: Path, kills: int, sig: int, window_s: tuple[float, float], seed: int,
                    extra: tuple[str, ...] = (), after_start: bool = False) -> dict:
    """Run ``first``, kill it ``kills`` times at uniform random moments in ``window_s``
    after each launch (with ``after_start``: once the process has recorded a round),
    resuming in between, then let it finish. Returns counts."""
    rng = np.random.default_rng(seed)
    stats = {"kills": 0, "interrupted": 0, "runs": 0, "mid_run": 0}
    while True:
        # A run that finished before it was killed often enough: start it again from
        # scratch (bounded, so a machine too slow or too fast fails instead of hanging).
        assert stats["runs"] < 4 * kills + 10, (seed, stats, "could not kill the run often enough")
        if stats["kills"] < kills and _finished(out):
            shutil.rmtree(out)
        cmd = _cli("--resume", str(out), *extra) if (out / "sweep.yaml").exists() else first
        launched = time.time() - 0.01
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        stats["runs"] += 1
        if stats["kills"] < kills:
            while after_start and proc.poll() is None and not _recording(out, launched):
                time.sleep(0.01)
            try:
                proc.wait(timeout=rng.uniform(*window_s))
            except subprocess.TimeoutExpired:
                proc.send_signal(sig)
                proc.wait(timeout=120)
                stats["kills"] += 1
                stats["mid_run"] += any(p.stat().st_size > 300 for p in out.glob("*/rounds.csv"))
                if proc.returncode == 143:  # our handler ran: the run said so in its summary
                    stats["interrupted"] += 1
                    statuses = [json.loads(p.read_text())["status"] for p in out.glob("*/summary.json")]
                    assert "interrupted" in statuses, (seed, statuses)
                continue
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (seed, err)
        if stats["kills"] >= kills:
            return stats


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "kills"), [(signal.SIGKILL, 10), (signal.SIGTERM, 7)], ids=["SIGKILL", "SIGTERM"])
def test_sweep_killed_at_random_moments_resumes_to_identical_records(sig, kills, write_yaml, tmp_path):
    scenario = write_yaml("killme.yaml", SWEEP)
    subprocess.run(_cli(str(scenario), "-o", str(tmp_path / "full")), env=_env(), check=True, capture_output=True)
    seed = int.from_bytes(os.urandom(4), "little")

    stats = kill_until_done(_cli(str(scenario), "-o", str(tmp_path / "cut")), tmp_path / "cut", kills, sig, (0.4, 2.0),
                            seed, extra=("--checkpoint-every", "7") if sig == signal.SIGTERM else ())

    for label in ("caesar", "droppeft"):
        assert_same_records(tmp_path / "full" / label, tmp_path / "cut" / label)
    assert stats["kills"] == kills, seed
    print("kills", stats)


@pytest.mark.slow
def test_real_training_killed_at_random_moments_resumes_to_identical_records(tmp_path):
    overrides = golden_overrides("torch", tmp_path) + ["engine.max_rounds=8"]
    simulate(_scenario(GOLDEN / "torch.yaml", overrides), tmp_path / "full" / "caesar", label="caesar")
    args = [str(GOLDEN / "torch.yaml"), *(a for o in overrides for a in ("--set", o))]
    seed = int.from_bytes(os.urandom(4), "little")

    # Startup (importing torch and peft) takes seconds: kill while rounds run (about 0.2 s each).
    stats = kill_until_done(_cli(*args, "-o", str(tmp_path / "cut")), tmp_path / "cut", 3, signal.SIGKILL, (0.0, 1.0), seed,
                            after_start=True)

    assert_same_records(tmp_path / "full" / "caesar", tmp_path / "cut" / "caesar")
    assert stats["kills"] == 3, seed
    print("kills", stats)


def test_rounds_csv_is_never_ahead_of_clients_csv_and_resume_cuts_both_back(tiny_scenario, tmp_path, monkeypatch):
    from fedsim.engine.records import RunRecorder, read_clients, read_rounds

    sc = _scenario(tiny_scenario)
    simulate(sc, tmp_path / "full")
    write_round = RunRecorder.round

    def round_(self, row):
        if row["round"] == 2:
            raise Stop("between the two logs")
        write_round(self, row)

    monkeypatch.setattr(RunRecorder, "round", round_)
    with pytest.raises(Stop):
        simulate(sc, tmp_path / "cut", checkpoint_every=1)
    monkeypatch.undo()
    assert sorted(set(read_clients(tmp_path / "cut")["round"])) == [0, 1, 2]
    assert read_rounds(tmp_path / "cut")["round"].tolist() == [0, 1]

    simulate(sc, tmp_path / "cut", existing="resume")

    assert_same_records(tmp_path / "full", tmp_path / "cut")
