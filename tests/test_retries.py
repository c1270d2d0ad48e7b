"""Failing transfers: exact attempt times on hand-made draws, and their effect on a round."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.engine.retries import TransferSpec, draw_retries
from test_engine import TRANSFER_S, make_fleet, run_recorded


class Draws:
    """A stand-in generator whose ``random`` returns the prepared arrays in turn."""

    def __init__(self, *arrays):
        self.arrays = [np.asarray(a, dtype=float) for a in arrays]

    def random(self, shape):
        out = self.arrays.pop(0)
        assert out.shape == shape
        return out


SPEC = TransferSpec(failure_prob=0.5, retries=3, backoff_s=2.0, backoff_factor=2.0)


def test_two_failed_attempts_then_success():
    # Attempts fail where the first draw is below 0.5; they run 50% and 25% of the 10 s transfer.
    rng = Draws([[0.1, 0.2, 0.9, 0.1]], [[0.5, 0.25, 0.7, 0.7]])

    r = draw_retries(rng, np.array([10.0]), SPEC)

    # Attempt 0: 0-5 s, wait 2 s; attempt 1: 7-9.5 s, wait 4 s; the last attempt starts at 13.5 s.
    assert (r.failed.tolist(), r.gave_up.tolist(), r.wait_s.tolist()) == ([2], [False], [13.5])
    assert r.start_s[0, :2].tolist() == [0.0, 7.0] and np.isnan(r.start_s[0, 2:]).all()
    # 1 s latency, 90 bytes over the other 9 s: 4 s and 1.5 s of bytes.
    assert r.moved_bytes(np.array([10.0]), np.array([1.0]), np.array([90.0]), np.array([100.0]))[0] == pytest.approx(55.0)
    assert r.moved_bytes(np.array([10.0]), np.array([1.0]), np.array([90.0]), np.array([3.0])).tolist() == [20.0]
    assert r.started_before(np.array([7.0])).tolist() == [1]


def test_every_attempt_fails_and_the_client_gives_up():
    rng = Draws([[0.0, 0.0, 0.0, 0.0]], [[0.1, 0.1, 0.1, 0.1]])

    r = draw_retries(rng, np.array([10.0]), SPEC)

    # 1 s attempts with waits of 2, 4 and 8 s between them: the fourth ends at 4 + 14 = 18 s.
    assert (r.failed.tolist(), r.gave_up.tolist(), r.wait_s.tolist()) == ([4], [True], [18.0])


def test_no_failure_no_wait():
    r = draw_retries(Draws([[0.9, 0.9]], [[0.5, 0.5]]), np.array([10.0]), TransferSpec(failure_prob=0.5, retries=1))

    assert (r.failed.tolist(), r.wait_s.tolist(), r.length_s.sum()) == ([0], [0.0], 0.0)


def test_clients_whose_transfers_always_fail_give_up_and_the_run_goes_on(tmp_path, shipped_profiles):
    engine, result, c, dev = run_recorded(tmp_path, make_fleet(), shipped_profiles, clients_per_round=4, max_rounds=2,
                                          transfers={"failure_prob": 0.999999, "retries": 1, "backoff_s": 1.0})

    assert set(c["outcome"]) == {"transfer_failed"}
    # Two download attempts, each a share of 1.5 s, with 1 s between them.
    assert np.all((c["end_s"] - c["start_s"] > 1.0) & (c["end_s"] - c["start_s"] < 1.0 + 2 * TRANSFER_S))
    assert np.all(c["retries"] == 2) and np.all(c["compute_s"] == 0) and np.all(c["bytes_up"] == 0)
    np.testing.assert_allclose(c["download_s"], c["end_s"] - c["start_s"], rtol=1e-5)  # clients.csv: 6 digits
    assert [h["transfer_failed"] for h in engine.history] == [4, 4]
    assert (result.rounds, result.stop_reason) == (2, "max_rounds")


def test_retries_lengthen_transfers_and_cost_bytes(tmp_path, shipped_profiles):
    engine, result, c, dev = run_recorded(tmp_path, make_fleet(compute_s=(2, 4, 6, 8)), shipped_profiles,
                                          clients_per_round=4, max_rounds=8,
                                          transfers={"failure_prob": 0.3, "retries": 5, "backoff_s": 0.5})

    ok = c["outcome"] == "ok"
    retried = ok & (c["retries"] > 0)
    assert retried.any() and (ok & (c["retries"] == 0)).any()
    assert np.all(c["download_s"][ok] >= TRANSFER_S) and np.all(c["upload_s"][ok] >= TRANSFER_S)
    longer = c["download_s"] + c["upload_s"] > 2 * TRANSFER_S
    assert np.array_equal(longer[ok], retried[ok])
    np.testing.assert_allclose((c["end_s"] - c["start_s"])[ok], (c["download_s"] + c["compute_s"] + c["upload_s"])[ok], rtol=1e-5)
    assert np.all(c["bytes_down"][ok] >= 184) and np.all(c["bytes_up"][ok] >= 184)
    assert sum(h["retries"] for h in engine.history) == c["retries"].sum()


def test_transfer_spec_rejects_a_certain_failure():
    with pytest.raises(ValueError):
        TransferSpec(failure_prob=1.0)
