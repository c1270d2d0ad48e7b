"""The SimPy round driver on a hand-made fleet: exact simulated times, outcomes, records.

Every device downloads and uploads 184 bytes (1,472 bits) over 1,472 bit/s links with
0.5 s latency, so each transfer takes 1.5 s; compute speeds are chosen so that the tiny
plan's 2,076 FLOPs take a whole number of seconds. Device i's round therefore lasts
1.5 + compute_s[i] + 1.5 seconds, exactly representable in binary floating point.
"""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest

from fedsim.fleet.availability import AlwaysAvailable
from fedsim.core.costmodel import ModelShape, plan_cost
from fedsim.engine.sync import EngineSpec, SyncEngine
from fedsim.fleet.fleet import Fleet
from fedsim.methods.fedlora import FedLoRA, FedLoRAParams
from fedsim.core.plan import ClientPlan
from fedsim.engine.records import CLIENT_COLUMNS, ROUND_COLUMNS, RunRecorder, read_clients, read_rounds
from fedsim.core.rng import Seeds
from fedsim.learning.surrogate import SurrogateSpec, SurrogateTrainer

SHAPE = ModelShape(family="bert", num_layers=1, hidden=4, heads=2, ffn=8, vocab=10, max_positions=16, type_vocab=2, num_labels=2)
PLAN = ClientPlan(drop_prob=(0.0,), lora_rank=(1,), batch_size=1, seq_len=2, local_steps=1, name="base")
COST = plan_cost(SHAPE, PLAN)
TRANSFER_S = 1.5  # 0.5 s latency + 1472 bits / 1472 bit/s


def make_fleet(compute_s=(2, 4, 6, 8), mem_cap=1e12, dropout=0.0, straggle=0.0) -> Fleet:
    n = len(compute_s)
    f32 = lambda v: np.asarray(np.broadcast_to(v, (n,)), dtype=np.float32).copy()  # noqa: E731
    return Fleet(
        device_names=["phone-mid"], network_names=["wifi"],
        device_class=np.zeros(n, np.int16), network_class=np.zeros(n, np.int16),
        flops_per_s=COST.flops / np.asarray(compute_s, dtype=float),
        mem_cap_bytes=np.asarray(np.broadcast_to(mem_cap, (n,)), dtype=float).copy(),
        down_bps=np.full(n, 8 * COST.bytes_down), up_bps=np.full(n, 8 * COST.bytes_up),
        latency_s=f32(0.5), straggle_prob=f32(straggle), dropout_prob=f32(dropout),
        joules_per_flop=f32(1e-3), joules_per_byte_down=f32(1e-2), joules_per_byte_up=f32(2e-2),
        window_start_h=f32(0), window_len_h=f32(24), skip_day_prob=f32(0), utc_offset_h=f32(0),
    )


def make_engine(fleet, shipped_profiles, *, availability=None, recorder=None, surrogate=None, on_round=None, seed=0, **spec):
    spec = {"over_selection": 1.0, **spec}
    return SyncEngine(
        spec=EngineSpec(**spec), fleet=fleet, profiles=shipped_profiles,
        availability=availability or AlwaysAvailable(fleet.size),
        method=FedLoRA(FedLoRAParams(), SHAPE, PLAN),
        trainer=SurrogateTrainer(surrogate or SurrogateSpec(), 1, np.full(fleet.size, 20), seed),
        shape=SHAPE, base_plan=PLAN, seeds=Seeds(seed), recorder=recorder, on_round=on_round,
    )


def run_recorded(tmp_path, fleet, shipped_profiles, **spec):
    rec = RunRecorder(tmp_path / "run", {"name": "hand"})
    engine = make_engine(fleet, shipped_profiles, recorder=rec, **spec)
    result = engine.run()
    rec.close()
    clients = read_clients(tmp_path / "run")
    # Row of each device in round 0.
    by_device = {int(d): i for i, d in enumerate(clients["device_id"]) if clients["round"][i] == 0}
    return engine, result, clients, by_device


def test_cost_of_the_test_plan():
    assert (COST.flops, COST.bytes_down, COST.bytes_up) == (2076.0, 184.0, 184.0)


def test_round_ends_at_kth_fastest_client_and_slowest_is_surplus(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 4, 6, 8))

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=3, over_selection=1.34, max_rounds=1)

    # Totals 5, 7, 9, 11 s; the server has its 3 updates at 9 s.
    assert result.sim_time_s == 9.0
    row = engine.history[0]
    assert (row["selected"], row["participants"], row["surplus"], row["failures"]) == (4, 3, 1, 0)
    assert [c["outcome"][dev[i]] for i in range(4)] == ["ok", "ok", "ok", "surplus"]
    assert [c["end_s"][dev[i]] for i in range(4)] == [5.0, 7.0, 9.0, 9.0]
    assert [c["compute_s"][dev[i]] for i in range(4)] == [2.0, 4.0, 6.0, 8.0]
    assert c["download_s"][dev[3]] == TRANSFER_S
    # The surplus device was cut during its compute (1.5 + 8 > 9): it downloaded, sent nothing.
    assert c["bytes_down"][dev[3]] == 184 and c["bytes_up"][dev[3]] == 0
    assert row["bytes_down"] == 4 * 184 and row["bytes_up"] == 3 * 184


def test_exact_round_log_over_several_rounds(shipped_profiles):
    log = []
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=3, over_selection=1.34, max_rounds=3,
                         on_round=lambda row: log.append((row["round"], row["start_s"], row["sim_time_s"])))

    result = engine.run()

    assert log == [(0, 0.0, 9.0), (1, 9.0, 18.0), (2, 18.0, 27.0)]
    assert (result.rounds, result.stop_reason) == (3, "max_rounds")


def test_server_overhead_added_after_the_round(shipped_profiles):
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=4, max_rounds=2, server_overhead_s=0.5)

    result = engine.run()

    assert [h["sim_time_s"] for h in engine.history] == [11.5, 23.0]
    assert result.sim_time_s == 23.0


def test_deadline_cuts_stragglers(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 4, 6, 8))

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=3, over_selection=1.34,
                                          max_rounds=1, round_deadline_s=8.0)

    assert result.sim_time_s == 8.0
    row = engine.history[0]
    assert (row["participants"], row["straggler"], row["surplus"], row["failures"]) == (2, 2, 0, 2)
    assert [c["outcome"][dev[i]] for i in range(4)] == ["ok", "ok", "straggler", "straggler"]
    assert c["end_s"][dev[2]] == 8.0 and c["end_s"][dev[3]] == 8.0
    # Device 2 was 0.5 s into its 1.5 s upload: all of it latency, no byte sent yet.
    assert c["bytes_up"][dev[2]] == 0
    assert c["bytes_up"][dev[3]] == 0  # still computing


def test_deadline_longer_than_every_client_changes_nothing(shipped_profiles):
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=4, max_rounds=1, round_deadline_s=100.0)

    result = engine.run()

    assert result.sim_time_s == 11.0
    assert engine.history[0]["participants"] == 4


def test_oom_device_fails_when_training_would_start(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 4, 6, 8), mem_cap=[1.0, 1e12, 1e12, 1e12])

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=3, over_selection=1.34, max_rounds=1)

    assert c["outcome"][dev[0]] == "oom"
    assert c["end_s"][dev[0]] == TRANSFER_S
    # It spent its download and nothing else.
    assert (c["download_s"][dev[0]], c["compute_s"][dev[0]], c["upload_s"][dev[0]]) == (TRANSFER_S, 0.0, 0.0)
    assert c["bytes_down"][dev[0]] == 184 and c["bytes_up"][dev[0]] == 0
    # Energy of the download only: no compute, no upload.
    assert c["energy_j"][dev[0]] == pytest.approx(184 * 1e-2, rel=1e-5)
    assert c["peak_mem_bytes"][dev[0]] == round(COST.peak_mem_bytes)
    assert c["mem_cap_bytes"][dev[0]] == 1
    row = engine.history[0]
    assert (row["oom"], row["participants"], row["failures"]) == (1, 3, 1)
    assert result.sim_time_s == 11.0  # the quota of 3 now needs the slowest device


def test_dropout_prob_one_drops_every_client(tmp_path, shipped_profiles):
    fleet = make_fleet(dropout=1.0)

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=4, max_rounds=2)

    assert set(c["outcome"]) == {"dropout"}
    totals = np.array([5.0, 7.0, 9.0, 11.0])
    ends = np.array([c["end_s"][dev[i]] for i in range(4)])  # round 0
    assert np.all(ends < totals) and np.all(ends > 0)
    # The round ends when all have failed (clients.csv keeps 10 significant digits).
    assert engine.history[0]["sim_time_s"] == pytest.approx(ends.max(), rel=1e-9)
    assert all(h["participants"] == 0 and h["dropout"] == 4 for h in engine.history)
    assert result.final_accuracy == SurrogateSpec().acc_start  # nothing was learnt


def test_dropout_during_compute_downloaded_but_sent_nothing(tmp_path, shipped_profiles):
    # Compute dominates the round, so wherever the drop falls it is most likely in compute.
    fleet = make_fleet(compute_s=(2, 4, 6, 1000))
    fleet.dropout_prob[3] = 1.0

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=4, max_rounds=1)

    i = dev[3]
    assert c["outcome"][i] == "dropout"
    assert TRANSFER_S < c["end_s"][i] < TRANSFER_S + 1000  # this seed drops it while computing
    assert c["bytes_down"][i] == 184 and c["bytes_up"][i] == 0
    frac = (c["end_s"][i] - TRANSFER_S) / 1000
    assert c["energy_j"][i] == pytest.approx(184 * 1e-2 + 2076 * frac * 1e-3, rel=1e-5)
    assert result.sim_time_s == pytest.approx(c["end_s"][i], rel=1e-9)


def test_bytes_follow_the_phases_that_took_place(tmp_path, shipped_profiles):
    # Mixed failures over several rounds: every client's bytes are its phase fractions.
    fleet = make_fleet(compute_s=(1, 2, 3, 4, 5, 6, 7, 8), dropout=0.4)

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=3, over_selection=2.0,
                                          max_rounds=6, round_deadline_s=8.0)

    elapsed = c["end_s"] - c["start_s"]
    lat = 0.5  # bytes flow only after each transfer's latency
    # A drop-out carries the time it spent; the phases' planned times are those of the hand-made fleet.
    planned_dl = np.full(elapsed.size, TRANSFER_S)
    planned_comp = COST.flops / fleet.flops_per_s[c["device_id"].astype(int)]
    down = np.clip((elapsed - lat) / (planned_dl - lat), 0, 1)
    up = np.clip((elapsed - planned_dl - planned_comp - lat) / (TRANSFER_S - lat), 0, 1)
    np.testing.assert_allclose(c["bytes_down"], np.rint(184 * down), atol=1)
    np.testing.assert_allclose(c["bytes_up"], np.rint(184 * up), atol=1)
    dropped = c["outcome"] == "dropout"
    spent = c["download_s"] + c["compute_s"] + c["upload_s"]
    np.testing.assert_allclose(spent[dropped], elapsed[dropped], rtol=1e-5)
    ok = c["outcome"] == "ok"
    assert np.all(c["bytes_up"][ok] == 184)
    assert set(c["outcome"]) >= {"ok", "dropout"}
    rounds = read_rounds(tmp_path / "run")
    for r in range(result.rounds):
        sel = c["round"] == r
        assert rounds["bytes_up"][r] == pytest.approx(c["bytes_up"][sel].sum(), abs=int(sel.sum()))
        assert rounds["participants"][r] == ok[sel].sum()


def test_no_bytes_sent_during_latency(tmp_path, shipped_profiles):
    # Device 2 starts uploading at 7.5 s; its first 0.5 s are latency. Cut at 7.75 s.
    engine, result, c, dev = run_recorded(tmp_path, make_fleet(), shipped_profiles, clients_per_round=3,
                                          over_selection=1.34, max_rounds=1, round_deadline_s=7.75)

    assert c["outcome"][dev[2]] == "straggler"
    assert c["bytes_up"][dev[2]] == 0


def test_straggling_device_computes_slower(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 2, 2, 2), straggle=1.0)

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=4, max_rounds=1)

    # phone-mid's straggle_slowdown is a log-normal clipped to [1.2, 10].
    assert np.all(c["compute_s"] >= 2 * 1.2 - 1e-9) and np.all(c["compute_s"] <= 20 + 1e-9)
    assert len(set(c["compute_s"])) > 1


def test_stops_at_target_accuracy(shipped_profiles):
    spec = SurrogateSpec(acc_start=0.25, acc_max=0.9, rate=0.1)
    engine = make_engine(make_fleet(), shipped_profiles, surrogate=spec, clients_per_round=3, over_selection=1.34,
                         max_rounds=50, target_accuracy=0.5)

    result = engine.run()

    # Each round 3 clients x 1 step x batch 1 = 3 effective examples: progress += 0.1 * sqrt(3).
    progress, rounds = 0.0, 0
    while True:
        rounds += 1
        progress += 0.1 * math.sqrt(3)
        if 0.9 - 0.65 * math.exp(-progress) >= 0.5:
            break
    assert (result.rounds, result.stop_reason) == (rounds, "target_accuracy")
    assert result.time_to_target_s == result.sim_time_s == 9.0 * rounds
    assert result.final_accuracy >= 0.5 > engine.history[-2]["accuracy"]


def test_stops_at_max_rounds(shipped_profiles):
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=2, max_rounds=5)

    result = engine.run()

    assert (result.rounds, result.stop_reason) == (5, "max_rounds")
    assert result.time_to_target_s is None


def test_stops_after_max_sim_time(shipped_profiles):
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=3, over_selection=1.34, max_rounds=100,
                         max_sim_time_s=20.0)

    result = engine.run()

    # Rounds start at 0, 9 and 18 s (< 20 s); the one starting at 27 s does not.
    assert (result.rounds, result.stop_reason, result.sim_time_s) == (3, "max_sim_time", 27.0)
    assert engine.history[-1]["accuracy"] is not None  # the last round is evaluated


def test_eval_every_skips_evaluations(shipped_profiles):
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=2, max_rounds=5, eval_every=2)

    engine.run()

    evaluated = [h["round"] for h in engine.history if h["accuracy"] is not None]
    assert evaluated == [0, 1, 3, 4]  # the first, every second, and the last


class OpensAt:
    """No device before ``t_open_s``, every device from then on."""

    def __init__(self, size, t_open_s):
        self.size, self.t_open_s = size, t_open_s

    def available(self, t_s):
        return np.full(self.size, t_s >= self.t_open_s)


def test_waits_idle_when_no_device_is_available(shipped_profiles):
    fleet = make_fleet()
    engine = make_engine(fleet, shipped_profiles, availability=OpensAt(fleet.size, 500.0), clients_per_round=4,
                         max_rounds=2, idle_wait_s=300.0)

    result = engine.run()

    # Tries at 0 and 300 s find nobody; at 600 s everyone.
    assert [h["start_s"] for h in engine.history] == [600.0, 611.0]
    assert result.sim_time_s == 622.0


def test_waits_while_fewer_than_min_clients(shipped_profiles):
    fleet = make_fleet()

    class TwoThenAll:
        def available(self, t_s):
            return np.array([True, True, t_s >= 100, t_s >= 100])

    engine = make_engine(fleet, shipped_profiles, availability=TwoThenAll(), clients_per_round=4, min_clients=3,
                         max_rounds=1, idle_wait_s=60.0)

    engine.run()

    assert engine.history[0]["start_s"] == 120.0
    assert engine.history[0]["available"] == 4


def test_gives_up_without_devices(shipped_profiles):
    fleet = make_fleet()
    engine = make_engine(fleet, shipped_profiles, availability=OpensAt(fleet.size, math.inf), clients_per_round=4,
                         idle_wait_s=300.0, max_idle_s=1000.0)

    result = engine.run()

    assert (result.rounds, result.stop_reason, result.sim_time_s) == (0, "no_devices_available", 1200.0)
    assert result.final_accuracy is None


def test_selection_is_limited_by_availability(shipped_profiles):
    fleet = make_fleet()
    engine = make_engine(fleet, shipped_profiles, clients_per_round=3, over_selection=3.0, max_rounds=1)

    engine.run()

    assert engine.history[0]["selected"] == 4


def test_over_selection_rounds_up(shipped_profiles):
    engine = make_engine(make_fleet(), shipped_profiles, clients_per_round=2, over_selection=1.3, max_rounds=1)

    engine.run()

    assert engine.history[0]["selected"] == 3  # ceil(2.6)


def test_over_selection_is_not_fooled_by_float_rounding(shipped_profiles):
    fleet = make_fleet(compute_s=tuple(range(1, 61)))
    engine = make_engine(fleet, shipped_profiles, clients_per_round=50, over_selection=1.1, max_rounds=1)

    engine.run()

    assert engine.history[0]["selected"] == 55


def test_same_seed_same_history(shipped_profiles):
    def history(seed):
        fleet = make_fleet(compute_s=(1, 2, 3, 4, 5, 6, 7, 8), dropout=0.3, straggle=0.3)
        e = make_engine(fleet, shipped_profiles, seed=seed, clients_per_round=3, over_selection=1.5, max_rounds=5)
        e.run()
        return [{k: v for k, v in h.items() if k != "train_wall_s"} for h in e.history]

    assert history(1) == history(1)
    assert history(1) != history(2)


def test_records_have_the_required_columns(tmp_path, shipped_profiles):
    fleet = make_fleet()

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=3, over_selection=1.34, max_rounds=2)

    with open(tmp_path / "run" / "rounds.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert {"round", "sim_time_s", "accuracy", "participants", "failures", "bytes_up", "bytes_down"} <= set(rows[0])
    assert tuple(rows[0]) == ROUND_COLUMNS
    assert [int(r["round"]) for r in rows] == [0, 1]
    assert [float(r["sim_time_s"]) for r in rows] == [9.0, 18.0]
    assert [int(r["participants"]) for r in rows] == [3, 3]
    with open(tmp_path / "run" / "clients.csv", newline="") as fh:
        crows = list(csv.DictReader(fh))
    required = {"device_id", "device_class", "plan", "start_s", "end_s", "outcome", "bytes_up", "bytes_down",
                "energy_j", "peak_mem_bytes"}
    assert required <= set(crows[0])
    assert tuple(crows[0]) == CLIENT_COLUMNS
    assert len(crows) == 8  # 4 selected per round, 2 rounds
    assert {r["device_class"] for r in crows} == {"phone-mid"}
    assert {r["network_class"] for r in crows} == {"wifi"}
    assert {r["plan"] for r in crows} == {"base"}
    assert {r["num_examples"] for r in crows} == {"20"}
    assert sorted(float(r["start_s"]) for r in crows) == [0.0] * 4 + [9.0] * 4
    assert all(float(r["energy_j"]) > 0 for r in crows)
    assert (tmp_path / "run" / "config.yaml").read_text().strip() == "name: hand"


class _LeavesOut(FedLoRA):
    """FedLoRA that leaves the selected device ``skip`` out of every round it may."""

    def __init__(self, skip: int) -> None:
        super().__init__(FedLoRAParams(), SHAPE, PLAN)
        self.skip = skip

    def configure_round(self, ctx):
        plans = super().configure_round(ctx)
        if ctx.may_leave_out and (ctx.device_ids == self.skip).any():
            plans.dispatch = ctx.device_ids != self.skip
        return plans


def test_a_client_the_method_leaves_out_never_runs_and_the_round_waits_for_those_that_do(tmp_path, shipped_profiles):
    # Prepare: 4 selected for 3 updates; the method leaves out device 1 (4 s)
    fleet = make_fleet(compute_s=(2, 4, 6, 8))
    engine = make_engine(fleet, shipped_profiles, clients_per_round=3, over_selection=1.34, max_rounds=1,
                         recorder=RunRecorder(tmp_path / "run", {"name": "hand"}))
    engine.method = _LeavesOut(skip=1)
    # Execute
    result = engine.run()
    engine.recorder.close()
    # Assert: the round waits for devices 0, 2 and 3 (5, 9 and 11 s); device 1 has no
    # clients.csv row; rounds.csv counts it as left out, not as selected or failed
    assert result.sim_time_s == 11.0
    row = read_rounds(tmp_path / "run")
    assert (row["selected"][0], row["left_out"][0], row["participants"][0], row["failures"][0]) == (3, 1, 3, 0)
    c = read_clients(tmp_path / "run")
    assert sorted(c["device_id"].astype(int).tolist()) == [0, 2, 3]


def test_a_resumed_run_keeps_the_columns_its_rounds_csv_began_with(tmp_path):
    # Prepare: a rounds.csv written before the left_out column existed
    old = [c for c in ROUND_COLUMNS if c != "left_out"]
    with RunRecorder(tmp_path, {"name": "hand"}) as rec:
        pass
    header = (",".join(old) + "\n").encode()
    (tmp_path / "rounds.csv").write_bytes(header)
    # Execute: resume and write a round
    with RunRecorder(tmp_path, {"name": "hand"}, resume_offsets={"rounds.csv": len(header), "clients.csv": 0}) as rec:
        rec.round({c: 1 for c in ROUND_COLUMNS})
    # Assert: every row has the header's cells, and the readers take it as an older record
    with open(tmp_path / "rounds.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == old and len(rows[1]) == len(old)
    assert "left_out" not in read_rounds(tmp_path) and read_rounds(tmp_path)["round"].tolist() == [1.0]


def test_clients_csv_rows_match_round_totals(tmp_path, shipped_profiles):
    engine, result, c, dev = run_recorded(tmp_path, make_fleet(), shipped_profiles, clients_per_round=2, max_rounds=3)

    rounds = read_rounds(tmp_path / "run")

    for r in range(3):
        sel = c["round"] == r
        assert rounds["bytes_down"][r] == c["bytes_down"][sel].sum()
        assert rounds["energy_j"][r] == pytest.approx(c["energy_j"][sel].sum(), rel=1e-5)
        assert rounds["selected"][r] == sel.sum()


class PoisonedTrainer(SurrogateTrainer):
    """The surrogate, except that the devices in ``poisoned`` send NaN or infinite updates."""

    def __init__(self, poisoned, *args):
        super().__init__(*args)
        self.poisoned = poisoned
        self.aggregated: list[list[int]] = []

    def train(self, round_idx, client_ids, plans, seeds):
        results = super().train(round_idx, client_ids, plans, seeds)
        for r in results:
            r.delta = {"w": np.array([self.poisoned.get(r.client_id, 1.0)])}
        return results

    def aggregate(self, round_idx, results, aggregate_fn):
        self.aggregated.append([r.client_id for r in results])
        super().aggregate(round_idx, results, aggregate_fn)


def test_nan_and_infinite_updates_are_rejected_and_never_aggregated(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 4, 6, 8))
    trainer = PoisonedTrainer({1: np.nan, 2: np.inf}, SurrogateSpec(), 1, np.full(fleet.size, 20), 0)
    rec = RunRecorder(tmp_path / "run", {"name": "hand"})
    engine = SyncEngine(spec=EngineSpec(clients_per_round=4, over_selection=1.0, max_rounds=2), fleet=fleet,
                        profiles=shipped_profiles, availability=AlwaysAvailable(fleet.size),
                        method=FedLoRA(FedLoRAParams(), SHAPE, PLAN), trainer=trainer, shape=SHAPE, base_plan=PLAN,
                        seeds=Seeds(0), recorder=rec)

    engine.run()
    rec.close()

    assert [sorted(ids) for ids in trainer.aggregated] == [[0, 3], [0, 3]]
    c = read_clients(tmp_path / "run")
    outcome = {int(d): o for d, o, r in zip(c["device_id"], c["outcome"], c["round"]) if r == 0}
    assert outcome == {0: "ok", 1: "rejected", 2: "rejected", 3: "ok"}
    row = engine.history[0]
    assert (row["participants"], row["rejected"], row["failures"]) == (2, 2, 2)
    assert row["bytes_up"] == 4 * 184  # they did send their updates
    assert trainer.progress == pytest.approx(2 * 0.002 * math.sqrt(2))  # two rounds of two clients


def test_a_round_where_every_client_fails_is_recorded_and_the_run_goes_on(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 4, 6, 8), mem_cap=1.0)  # nobody has the memory

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=2, max_rounds=3)

    assert (result.rounds, result.stop_reason) == (3, "max_rounds")
    assert set(c["outcome"]) == {"oom"}
    assert [h["participants"] for h in engine.history] == [0, 0, 0]
    assert result.final_accuracy == SurrogateSpec().acc_start


def test_server_link_shares_transfers_fairly_in_a_round(tmp_path, shipped_profiles):
    # 2,944 bit/s shared by the downloads (four at 736 bit/s: 2 s after the 0.5 s
    # latency) and the uploads (three starting together at 5 s: 1.5 s each; the fourth,
    # alone, at its own 1,472 bit/s: 1 s).
    fleet = make_fleet(compute_s=(2, 2, 2, 8))
    link = {"down_mbps": 2944e-6, "up_mbps": 2944e-6}

    engine, result, c, dev = run_recorded(tmp_path, fleet, shipped_profiles, clients_per_round=4, max_rounds=1,
                                          server_link=link)

    assert [c["download_s"][dev[i]] for i in range(4)] == pytest.approx([2.5] * 4, rel=1e-12)
    assert [c["upload_s"][dev[i]] for i in range(4)] == pytest.approx([2.0, 2.0, 2.0, 1.5], rel=1e-12)
    assert [c["end_s"][dev[i]] for i in range(4)] == pytest.approx([6.5, 6.5, 6.5, 12.0], rel=1e-12)
    assert result.sim_time_s == pytest.approx(12.0, rel=1e-12)


def test_shared_links_refuse_failing_transfers_and_the_async_driver():
    with pytest.raises(ValueError, match="cannot be combined"):
        EngineSpec(server_link={"up_mbps": 100}, transfers={"failure_prob": 0.1})
    with pytest.raises(ValueError, match="sync driver only"):
        EngineSpec(cells={"count": 3, "up_mbps": 10}, driver="async")


def test_leaving_a_device_out_leaves_the_other_devices_fates_as_they_were(tmp_path, shipped_profiles):
    # Prepare: stragglers and drop-outs; every selected device's update is waited for
    fleet = make_fleet(compute_s=(2, 3, 4, 5, 6, 7), dropout=0.3, straggle=0.5)

    def clients(method, name):
        engine = make_engine(fleet, shipped_profiles, clients_per_round=6, max_rounds=3, seed=4,
                             recorder=RunRecorder(tmp_path / name, {"name": name}))
        if method is not None:
            engine.method = method
        engine.run()
        engine.recorder.close()
        c = read_clients(tmp_path / name)
        return {(int(r), int(d)): (o, s) for r, d, o, s in zip(c["round"], c["device_id"], c["outcome"], c["compute_s"])}

    # Execute: every device runs; device 2 is left out
    every, without = clients(None, "every"), clients(_LeavesOut(skip=2), "without")
    # Assert: draws keyed by device (common random numbers) give every other device the
    # same outcome and compute time in every round
    assert set(without) == {k for k in every if k[1] != 2}
    assert all(without[k] == every[k] for k in without)
    assert len({v[0] for v in every.values()}) > 1 and len({v[1] for v in every.values()}) > 3


def test_a_device_made_unavailable_changes_no_other_selection(shipped_profiles):
    # Prepare: 4 of 40 devices a round
    fleet = make_fleet(compute_s=np.arange(2, 42))
    engine = make_engine(fleet, shipped_profiles, clients_per_round=4)
    everyone = np.arange(40)
    for r in range(20):
        picked = engine.draw(r, 0.0, everyone).device_ids
        # Execute: a device not picked goes offline
        gone = np.setdiff1d(everyone, picked)[r]
        again = engine.draw(r, 0.0, everyone[everyone != gone]).device_ids
        # Assert: the same devices are picked
        assert again.tolist() == picked.tolist()
        # ... and where a picked device goes offline, the other three stay picked
        without = engine.draw(r, 0.0, everyone[everyone != picked[0]]).device_ids
        assert set(picked[1:]) <= set(without.tolist()) and picked[0] not in without


class _ClosesAt(FedLoRA):
    """FedLoRA whose rounds ask to close at ``quota`` updates (``RoundPlans.quota``)."""

    def __init__(self, quota: int) -> None:
        super().__init__(FedLoRAParams(), SHAPE, PLAN)
        self.quota = quota

    def configure_round(self, ctx):
        plans = super().configure_round(ctx)
        plans.quota = self.quota
        return plans


@pytest.mark.parametrize("quota, end_s, ok", [(2, 7.0, 2), (1, 5.0, 1), (10, 9.0, 3)])
def test_a_method_may_close_the_round_sooner_never_later(shipped_profiles, quota, end_s, ok):
    # Totals 5, 7, 9, 11 s, the scenario waits for 3 updates: a method asking for fewer
    # closes the round at its own count; one asking for more still gets 3
    engine = make_engine(make_fleet(compute_s=(2, 4, 6, 8)), shipped_profiles, clients_per_round=3,
                         over_selection=1.34, max_rounds=1)
    engine.method = _ClosesAt(quota)
    result = engine.run()
    row = engine.history[0]
    assert result.sim_time_s == end_s
    assert (row["participants"], row["surplus"]) == (ok, 4 - ok)


class _SeesSlowdowns(FedLoRA):
    """FedLoRA that keeps the slowdown distributions its round context carries."""

    def __init__(self) -> None:
        super().__init__(FedLoRAParams(), SHAPE, PLAN)
        self.seen = []

    def configure_round(self, ctx):
        self.seen.append(ctx.slowdown_dists)
        return super().configure_round(ctx)


def test_a_method_sees_the_slowdowns_the_engine_draws_from(shipped_profiles):
    # The synchronous engine passes each device class's straggle_slowdown, indexed by
    # the fleet's class codes, so a method can weigh its plans over the same fate.
    engine = make_engine(make_fleet(compute_s=(2, 4, 6, 8)), shipped_profiles, clients_per_round=3,
                         over_selection=1.34, max_rounds=2)
    engine.method = _SeesSlowdowns()
    engine.run()
    assert len(engine.method.seen) == 2
    names = engine.fleet.device_names
    assert [d for d in engine.method.seen[0]] == [shipped_profiles.device(n).straggle_slowdown for n in names]
