"""Shared links: max-min fair rates and finish times against hand computations, and a
round's phases stretched by the server's link."""

from __future__ import annotations

import numpy as np
import pytest
import simpy

from fedsim.engine.links import SharedLinks, fair_finish_s, maxmin_rates

GBPS = 1e9
MBIT = 1e6


def test_three_uploads_over_one_gigabit_finish_at_hand_computed_times():
    # A (800 Mbit) alone from 0 to 0.2 s, A and B at 500 Mbit/s to 0.4 s, then three at
    # 333 Mbit/s: C (200 Mbit) ends at 1.0, B (100 left) at 1.2, A (200 left) at 1.4.
    start = np.array([0.0, 0.2, 0.4])
    bits = np.array([800, 400, 200]) * MBIT

    finish = fair_finish_s(start, bits, np.full(3, np.inf), np.ones((3, 1), bool), np.array([GBPS]))

    assert finish == pytest.approx([1.4, 1.2, 1.0], rel=1e-12)


def test_a_capped_transfer_leaves_its_unused_share_to_the_others():
    # C's own link takes 100 Mbit/s, so A and B share the other 900.
    rate = maxmin_rates(np.ones(3, bool), np.array([np.inf, np.inf, 100 * MBIT]), np.ones((3, 1), bool),
                        np.array([GBPS]))

    assert rate == pytest.approx([450 * MBIT, 450 * MBIT, 100 * MBIT])


def test_a_full_cell_frees_server_capacity_for_the_transfers_outside_it():
    # Server 1 Gbit/s; A and B share a 200 Mbit/s cell, C is alone in another: C gets 800.
    member = np.array([[1, 1, 0], [1, 1, 0], [1, 0, 1]], bool)

    rate = maxmin_rates(np.ones(3, bool), np.full(3, np.inf), member, np.array([GBPS, 200 * MBIT, np.inf]))

    assert rate == pytest.approx([100 * MBIT, 100 * MBIT, 800 * MBIT])


def test_transfers_that_never_overlap_take_size_over_their_own_cap():
    start = np.array([0.0, 10.0])
    bits = np.array([50, 50]) * MBIT

    finish = fair_finish_s(start, bits, np.array([100 * MBIT, 25 * MBIT]), np.ones((2, 1), bool), np.array([GBPS]))

    assert finish.tolist() == [0.5, 12.0]


def _simpy_processor_sharing(start, bits, capacity):
    """Processor sharing as SimPy processes: each transfer waits for its start, then asks
    the link process, which re-plans every share whenever one starts or ends."""
    env = simpy.Environment()
    left, finish, active, joined = {}, {}, set(), {}
    wake = [env.event()]

    def transfer(i):
        yield env.timeout(start[i])
        left[i], joined[i] = bits[i], env.now
        active.add(i)
        wake[0].succeed()
        wake[0] = env.event()

    def link():
        while len(finish) < len(bits):
            if not active:
                yield wake[0]
                continue
            share = capacity / len(active)
            first = min(active, key=lambda i: left[i])
            since = env.now
            yield env.timeout(left[first] / share) | wake[0]
            for i in list(active):
                left[i] -= share * (env.now - max(since, joined[i]))
                if left[i] <= 1e-9 * bits[i]:
                    active.discard(i)
                    finish[i] = env.now

    for i in range(len(bits)):
        env.process(transfer(i))
    env.process(link())
    env.run()
    return np.array([finish[i] for i in range(len(bits))])


def test_fair_finish_matches_a_simpy_processor_sharing_model_on_random_transfers():
    rng = np.random.default_rng(3)
    start = np.round(rng.uniform(0, 5, 12), 3)
    bits = rng.uniform(50, 900, 12) * MBIT

    finish = fair_finish_s(start, bits, np.full(12, np.inf), np.ones((12, 1), bool), np.array([GBPS]))

    assert finish == pytest.approx(_simpy_processor_sharing(start, bits, GBPS), rel=1e-9)


def test_cells_are_drawn_from_the_given_generator_and_off_without_specs():
    assert SharedLinks.from_specs(None, None, 10, None) is None
