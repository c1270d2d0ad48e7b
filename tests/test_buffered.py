"""The buffered asynchronous driver (FedBuff) on the hand-made fleet of test_engine:
exact simulated-time logs, staleness, the concurrency limit, and resuming.

Device i's client lasts 1.5 + compute_s[i] + 1.5 s: with compute (2, 4, 6, 8), 5, 7, 9
and 11 s. With every device dispatched at once (concurrency 4), the device that finishes
is the only idle one, so it is dispatched again at once and the timeline does not depend
on the seeded choice of devices.
"""

from __future__ import annotations

import numpy as np
import pytest

import fedsim.engine.buffered
from fedsim.engine.buffered import AsyncEngine
from fedsim.core.errors import ConfigError
from fedsim.engine.records import ASYNC_CLIENT_COLUMNS, RunRecorder, read_clients, read_summary
from fedsim.engine.sync import EngineSpec
from fedsim.fleet.availability import AlwaysAvailable
from fedsim.core.rng import Seeds
from fedsim.learning.surrogate import SurrogateSpec, SurrogateTrainer
from fedsim.methods.fedlora import FedLoRA, FedLoRAParams
from fedsim.study.simulate import simulate
from test_checkpoint import Stop, _scenario, assert_same_records
from test_engine import PLAN, SHAPE, make_fleet


def make_async(fleet, profiles, *, recorder=None, on_round=None, seed=0, fedbuff=None, **spec):
    spec = {"driver": "async", "fedbuff": {"buffer_k": 2, "concurrency": 4, **(fedbuff or {})}, **spec}
    return AsyncEngine(
        spec=EngineSpec(**spec), fleet=fleet, profiles=profiles, availability=AlwaysAvailable(fleet.size),
        method=FedLoRA(FedLoRAParams(), SHAPE, PLAN),
        trainer=SurrogateTrainer(SurrogateSpec(), 1, np.full(fleet.size, 20), seed),
        shape=SHAPE, base_plan=PLAN, seeds=Seeds(seed), recorder=recorder, on_round=on_round,
    )


def run_async(tmp_path, profiles, fleet=None, **spec):
    rec = RunRecorder(tmp_path / "run", {"name": "hand"}, client_columns=ASYNC_CLIENT_COLUMNS)
    log = []
    engine = make_async(fleet or make_fleet(), profiles, recorder=rec,
                        on_round=lambda row: log.append((row["round"], row["start_s"], row["sim_time_s"])), **spec)
    result = engine.run()
    rec.close()
    c = read_clients(tmp_path / "run")
    clients = list(zip(c["round"].astype(int).tolist(), c["device_id"].astype(int).tolist(), c["start_s"].tolist(),
                       c["end_s"].tolist(), c["outcome"].tolist(), c["staleness"].tolist()))
    return engine, result, log, clients


def test_exact_timeline_of_aggregation_steps_and_staleness(tmp_path, shipped_profiles):
    # 0: devices 0-3 start (version 0). 5: device 0 arrives, starts again (v0). 7: device 1
    # arrives; step 0 (devices 0, 1); device 1 starts again (v1). 9: device 2 arrives,
    # starts again (v1). 10: device 0 (from 5, v0) arrives; step 1 (devices 2, 0, both
    # staleness 1); device 0 starts again (v2). 11: device 3 (v0) arrives. 14: device 1
    # (from 7, v1) arrives; step 2 (device 3 staleness 2, device 1 staleness 1).
    engine, result, log, clients = run_async(tmp_path, shipped_profiles, max_rounds=3)

    assert log == [(0, 0.0, 7.0), (1, 7.0, 10.0), (2, 10.0, 14.0)]
    assert clients == [
        (0, 0, 0.0, 5.0, "ok", 0.0), (0, 1, 0.0, 7.0, "ok", 0.0),
        (1, 2, 0.0, 9.0, "ok", 1.0), (1, 0, 5.0, 10.0, "ok", 1.0),
        (2, 3, 0.0, 11.0, "ok", 2.0), (2, 1, 7.0, 14.0, "ok", 1.0),
    ]
    assert (result.rounds, result.sim_time_s, result.stop_reason) == (3, 14.0, "max_rounds")
    # Surrogate progress: rate * (sum of weighted effective examples) ** 0.5, one example each.
    w = lambda s: (1 + s) ** -0.5  # noqa: E731
    rate = SurrogateSpec().rate
    assert engine.trainer.progress == pytest.approx(rate * (2 ** 0.5 + (2 * w(1)) ** 0.5 + (w(2) + w(1)) ** 0.5))


def test_a_client_past_the_deadline_is_cut_and_reported_with_the_next_step(tmp_path, shipped_profiles):
    # Device 3 (11 s) is cut at 10 s, when device 0's second update arrives too: the
    # earlier dispatch first, so it reaches the records with step 1, unaggregated.
    _, _, log, clients = run_async(tmp_path, shipped_profiles, max_rounds=2, round_deadline_s=10.0)

    assert log == [(0, 0.0, 7.0), (1, 7.0, 10.0)]
    assert [c[1] for c in clients[2:]] == [2, 3, 0]
    assert clients[3][:5] == (1, 3, 0.0, 10.0, "straggler") and np.isnan(clients[3][5])


def test_updates_staler_than_the_limit_are_rejected(tmp_path, shipped_profiles):
    _, _, _, clients = run_async(tmp_path, shipped_profiles, max_rounds=3, fedbuff={"max_staleness": 1})

    # Device 3's update (staleness 2 at 11 s) is dropped; step 2 waits for another.
    assert (clients[4][1], clients[4][4]) == (3, "rejected")
    assert all(np.isnan(c[5]) == (c[4] != "ok") for c in clients)


def test_no_more_clients_than_the_concurrency_limit_work_at_once(tmp_path, shipped_profiles):
    fleet = make_fleet(compute_s=(2, 3, 5, 7, 11, 13, 17, 19))

    _, _, _, clients = run_async(tmp_path, shipped_profiles, fleet=fleet, max_rounds=20,
                                 fedbuff={"buffer_k": 3, "concurrency": 3})

    events = sorted([(c[2], 1) for c in clients] + [(c[3], -1) for c in clients])
    assert max(np.cumsum([e[1] for e in events])) == 3
    assert len({c[1] for c in clients}) > 3  # the seeded choice spreads over the fleet


def test_an_async_run_stopped_mid_way_resumes_to_identical_records(tiny_scenario, tmp_path, monkeypatch):
    sc = _scenario(tiny_scenario, ["engine.driver=async", "engine.max_rounds=8", "method={name: droppeft}",
                                   "engine.fedbuff={buffer_k: 3, concurrency: 5}"])
    simulate(sc, tmp_path / "full")
    step = AsyncEngine.step
    state = {"armed": True}

    def crash(self, now_s):
        if state["armed"] and self.progress.next_round == 5:
            state["armed"] = False
            raise Stop("step 5")
        return step(self, now_s)

    monkeypatch.setattr(fedsim.engine.buffered.AsyncEngine, "step", crash)
    with pytest.raises(Stop):
        simulate(sc, tmp_path / "cut", checkpoint_every=2)
    monkeypatch.undo()
    simulate(sc, tmp_path / "cut", existing="resume", checkpoint_every=2)

    assert_same_records(tmp_path / "full", tmp_path / "cut")
    assert read_summary(tmp_path / "cut")["resumed_at_round"] == 4
    assert "staleness" in (tmp_path / "cut" / "clients.csv").read_text().splitlines()[0]


@pytest.mark.parametrize(("override", "expected"), [
    ("engine.fedbuff.buffer_k=0", "engine.fedbuff.buffer_k"),
    ("engine.fedbuff.concurrency=true", "engine.fedbuff.concurrency"),
    ("engine.fedbuff.staleness=2", "engine.fedbuff.staleness"),
    ("engine.driver=fedbuff", "engine.driver"),
])
def test_bad_async_settings_name_the_field(override, expected, tiny_scenario):
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        _scenario(tiny_scenario, ["engine.driver=async", override])
