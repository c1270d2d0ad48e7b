"""The round's fate as a pure function: when a round closes and who gets which outcome.

:func:`close_round` is checked against exact hand-computed times and against a SimPy
process per client (the engine's former driver) on random rounds, ties included.
"""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from fedsim.core.costmodel import ClientTimes
from fedsim.core.plan import RoundPlans
from fedsim.core.rng import Seeds
from fedsim.engine.fate import DROPOUT, OK, OOM, OUTCOMES, STRAGGLER, SURPLUS, close_round, draw_fate, selection_size
from test_engine import COST, PLAN, TRANSFER_S, make_fleet


def _times(dl, comp, up, oom=None) -> ClientTimes:
    dl, comp, up = (np.asarray(x, dtype=float) for x in (dl, comp, up))
    n = dl.size
    return ClientTimes(dl, comp, up, np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n),
                       np.zeros(n, bool) if oom is None else np.asarray(oom))


def test_quota_closes_at_the_kth_arrival():
    times = _times([1, 1, 1, 1], [2, 4, 6, 8], [1, 1, 1, 1])
    fail = np.full(4, OK, np.int8)

    end, outcome = close_round(10.0, times, fail, times.total_s, quota=3, deadline_s=None)

    assert end == 18.0
    assert outcome.tolist() == [OK, OK, OK, SURPLUS]


def test_deadline_cuts_and_a_client_finishing_at_the_deadline_counts():
    times = _times([1, 1, 1], [2, 5, 9], [1, 1, 1])
    fail = np.full(3, OK, np.int8)

    end, outcome = close_round(0.0, times, fail, times.total_s, quota=3, deadline_s=7.0)

    assert end == 7.0
    assert outcome.tolist() == [OK, OK, STRAGGLER]


def test_failures_finish_early_and_round_waits_for_everyone_without_quota():
    times = _times([1, 1, 1], [2, 2, 2], [1, 1, 1], oom=[False, True, False])
    fail = np.array([OK, OOM, DROPOUT], np.int8)
    fail_at = np.array([4.0, 1.0, 2.5])

    end, outcome = close_round(0.0, times, fail, fail_at, quota=3, deadline_s=None)

    assert end == 4.0
    assert outcome.tolist() == [OK, OOM, DROPOUT]


def _simpy_close(start, times, fail, fail_at, quota, deadline):
    """The engine's former driver: a process per client, the server waits on quota or deadline."""
    env = simpy.Environment(initial_time=start)
    n = fail.size
    state = {"arrived": 0, "finished": 0, "closed": False, "outcome": np.full(n, -1)}
    done = env.event()

    def finish(i, code):
        state["outcome"][i] = code
        state["finished"] += 1
        state["arrived"] += code == OK
        if (state["arrived"] >= quota or state["finished"] >= n) and not done.triggered:
            done.succeed()

    def client(i):
        if fail[i] != OK:
            yield env.timeout(fail_at[i])
            if not state["closed"]:
                finish(i, fail[i])
            return
        for d in (times.download_s[i], times.compute_s[i], times.upload_s[i]):
            yield env.timeout(d)
            if state["closed"]:
                return
        finish(i, OK)

    def server():
        for i in range(n):
            env.process(client(i))
        yield (done | env.timeout(deadline)) if deadline is not None else done
        state["closed"] = True

    env.run(until=env.process(server()))
    out = state["outcome"]
    out[out == -1] = SURPLUS if state["arrived"] >= quota else STRAGGLER
    return env.now, out


@pytest.mark.parametrize("seed", range(40))
def test_close_round_matches_a_process_per_client(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 12))
    # Whole seconds make ties (same finish time, finish at the deadline) common.
    dl, comp, up = (rng.integers(1, 5, n).astype(float) for _ in range(3))
    if seed % 2:
        dl, comp, up = dl * 0.1, comp * 0.37, up * 0.1  # sums that float addition rounds
    times = _times(dl, comp, up, oom=rng.random(n) < 0.2)
    fail = np.where(times.oom, OOM, np.where(rng.random(n) < 0.2, DROPOUT, OK)).astype(np.int8)
    fail_at = np.where(fail == OOM, dl, np.where(fail == DROPOUT, np.floor(rng.random(n) * times.total_s), times.total_s))
    quota = int(rng.integers(1, n + 1))
    deadline = [None, 3.0, 5.0, 7.0][seed % 4]
    start = float(rng.integers(0, 3)) * 10.3

    want = _simpy_close(start, times, fail, fail_at, quota, deadline)
    end, outcome = close_round(start, times, fail, fail_at, quota, deadline)

    assert end == want[0]
    assert outcome.tolist() == want[1].tolist()


def test_draw_fate_is_a_frozen_value_and_a_function_of_its_generator(shipped_profiles):
    fleet = make_fleet(compute_s=(2, 4, 6, 8), mem_cap=[1.0, 1e12, 1e12, 1e12])
    dists = [shipped_profiles.device(name).straggle_slowdown for name in fleet.device_names]

    def fate(seed):
        return draw_fate(round_idx=0, model_version=0, available=4, start_s=0.0, ids=np.arange(4),
                         plans=RoundPlans.same(PLAN, 4), costs=[COST], fleet=fleet, slowdown_dists=dists,
                         rng=np.random.default_rng(seed), quota=3, deadline_s=None)

    a, b = fate(1), fate(1)

    assert [OUTCOMES[k] for k in a.outcome] == ["oom", "ok", "ok", "ok"]
    assert (a.end_s, b.end_s) == (11.0, 11.0)
    assert a.client_end_s.tolist() == [TRANSFER_S, 7.0, 9.0, 11.0]
    assert np.array_equal(a.bytes_down, b.bytes_down) and np.array_equal(a.energy_j, b.energy_j)
    with pytest.raises(ValueError):
        a.outcome[0] = OK  # read-only arrays
    with pytest.raises(AttributeError):
        a.end_s = 3.0  # frozen


def test_selection_size_rounds_up_within_availability():
    assert selection_size(2, 1.3, 10) == 3
    assert selection_size(50, 1.1, 100) == 55
    assert selection_size(10, 2.0, 7) == 7


def test_with_draws_keyed_by_device_a_clients_fate_does_not_depend_on_the_others(shipped_profiles):
    # Prepare: stragglers and drop-outs likely; every client's update is waited for
    fleet = make_fleet(compute_s=(2, 3, 4, 5, 6, 7), dropout=0.3, straggle=0.5)
    dists = [shipped_profiles.device(name).straggle_slowdown for name in fleet.device_names]
    seeds = Seeds(3)

    def fate(ids):
        ids = np.asarray(ids)
        return draw_fate(round_idx=2, model_version=0, available=6, start_s=0.0, ids=ids,
                         plans=RoundPlans.same(PLAN, ids.size), costs=[COST], fleet=fleet, slowdown_dists=dists,
                         rng=seeds.devices("devices", 2, ids), quota=ids.size, deadline_s=None)

    # Execute: all six, then four of them in another order
    a, b = fate([0, 1, 2, 3, 4, 5]), fate([5, 3, 0, 1])
    # Assert: the four have the same fates, times and costs in both rounds
    at = [0, 1, 2, 3, 4, 5]
    for j, d in enumerate([5, 3, 0, 1]):
        i = at.index(d)
        assert (a.outcome[i], a.duration_s[i], a.compute_s[i], a.energy_j[i]) == (b.outcome[j], b.duration_s[j], b.compute_s[j], b.energy_j[j])
    assert len(set(a.outcome.tolist())) > 1 and len(set(a.compute_s.tolist())) > 2  # the draws were not all alike
