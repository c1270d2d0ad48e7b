"""Client plans: validation, and systematic sampling of the layers a step runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedsim.core.plan import ClientPlan, RoundPlans, draw_layers


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"drop_prob": (0.0, 0.0), "lora_rank": (8,)}, "drop_prob has 2 layers but lora_rank has 1"),
        ({"drop_prob": (1.0,), "lora_rank": (8,)}, "drop_prob values must be in [0, 1)"),
        ({"drop_prob": (-0.1,), "lora_rank": (8,)}, "drop_prob values must be in [0, 1)"),
        ({"drop_prob": (0.0,), "lora_rank": (-1,)}, "lora_rank values must be >= 0"),
        ({"drop_prob": (0.0,), "lora_rank": (8,), "batch_size": 0}, "batch_size must be >= 1"),
        ({"drop_prob": (0.0,), "lora_rank": (8,), "seq_len": 0}, "seq_len must be >= 1"),
        ({"drop_prob": (0.0,), "lora_rank": (8,), "local_steps": 0}, "local_steps must be >= 1"),
        ({"drop_prob": (0.0,), "lora_rank": (8,), "up_ratio": 0.0}, "up_ratio must be in (0, 1]"),
        ({"drop_prob": (0.0,), "lora_rank": (8,), "down_ratio": 1.5}, "down_ratio must be in (0, 1]"),
    ],
)
def test_client_plan_validation(kwargs, words):
    with pytest.raises(ValueError) as info:
        ClientPlan(**kwargs)

    assert words in str(info.value)


def test_uniform_plan():
    p = ClientPlan.uniform(4, drop_prob=0.25, lora_rank=2, batch_size=8)

    assert p.num_layers == 4
    assert p.drop_prob == (0.25,) * 4
    assert p.lora_rank == (2,) * 4
    np.testing.assert_array_equal(p.keep_prob, [0.75] * 4)
    assert p.mean_drop == 0.25
    assert p.batch_size == 8


def test_with_revalidates():
    p = ClientPlan.uniform(2)

    assert p.with_(local_steps=3).local_steps == 3
    with pytest.raises(ValueError):
        p.with_(drop_prob=(0.5,))


def test_plans_are_hashable_and_compare_by_value():
    a = ClientPlan.uniform(3, drop_prob=0.5)
    b = ClientPlan.uniform(3, drop_prob=0.5)

    assert a == b and hash(a) == hash(b)
    assert len({a, b, a.with_(name="x")}) == 2


def test_round_plans_index():
    p, q = ClientPlan.uniform(2), ClientPlan.uniform(2, drop_prob=0.5)

    rp = RoundPlans([p, q], [0, 1, 1, 0])

    assert len(rp) == 4
    assert rp[1] is q and rp[3] is p
    assert RoundPlans.same(p, 3).index.tolist() == [0, 0, 0]
    with pytest.raises(ValueError):
        RoundPlans([p], [0, 1])


def test_round_plans_dispatch_leaves_clients_out_and_keeps_the_rest_grouped():
    p, q, r = ClientPlan.uniform(2), ClientPlan.uniform(2, drop_prob=0.5), ClientPlan.uniform(2, drop_prob=0.25)
    rp = RoundPlans([p, q, r], [0, 1, 2, 1], dispatch=[True, False, True, True])

    run = rp.dispatched()

    assert rp.left_out == 1 and len(rp) == 4
    assert run.dispatch is None and [run[i] for i in range(3)] == [p, r, q]
    assert run.plans == [p, q, r] and run.index.tolist() == [0, 2, 1]
    # Regrouping keeps who runs; without a mask every client runs
    assert rp.regroup(lambda i, plan: plan.with_(name="x")).dispatch.tolist() == [True, False, True, True]
    assert RoundPlans([p], [0, 0]).left_out == 0 and RoundPlans([p], [0, 0]).dispatched().index.tolist() == [0, 0]
    # A round must keep one client, and the mask must cover every client
    with pytest.raises(ValueError, match="leaves every client out"):
        RoundPlans([p], [0, 0], dispatch=[False, False])
    with pytest.raises(ValueError, match="2 entries for 3 clients"):
        RoundPlans([p], [0, 0, 0], dispatch=[True, False])


KEEPS = [
    np.array([0.5, 0.5, 0.5, 0.5]),
    np.array([0.1, 0.9, 0.3, 0.7, 0.25, 1.0]),
    np.array([0.0, 0.6, 1.0, 0.0, 0.35]),
    np.array([0.2] * 12),
]


def _draws(keep, n, seed=0):
    rng = np.random.default_rng(seed)
    return np.array([draw_layers(keep, rng) for _ in range(n)])


@pytest.mark.parametrize("keep", KEEPS[:2])
def test_marginals_equal_keep_probabilities(keep):
    masks = _draws(keep, 100_000)

    freq = masks.mean(axis=0)

    # Binomial std at n=1e5 is <= 0.0016; 0.006 is ~4 sigma.
    np.testing.assert_allclose(freq, keep, atol=0.006)


@pytest.mark.parametrize("keep", KEEPS)
def test_kept_count_is_floor_or_ceil_of_expected(keep):
    masks = _draws(keep, 5000, seed=1)

    counts = masks.sum(axis=1)

    total = keep.sum()
    assert set(np.unique(counts)) <= {math.floor(total), math.ceil(total)}
    assert counts.mean() == pytest.approx(total, abs=0.05)


def test_zero_probability_layers_never_kept_and_one_always_kept():
    keep = KEEPS[2]

    masks = _draws(keep, 20_000, seed=2)

    assert not masks[:, 0].any() and not masks[:, 3].any()
    assert masks[:, 2].all()


def test_all_ones_keeps_everything_all_zeros_nothing():
    rng = np.random.default_rng(0)

    assert draw_layers(np.ones(6), rng).all()
    assert not draw_layers(np.zeros(6), rng).any()


def test_draw_layers_mask_shape_and_seed():
    keep = KEEPS[1]

    a = [draw_layers(keep, np.random.default_rng(9)) for _ in range(3)]

    assert a[0].dtype == bool and a[0].shape == keep.shape
    assert all(np.array_equal(a[0], x) for x in a)


@pytest.mark.parametrize("offset", [0.0, 0.25, 0.5, 0.999999])
def test_draw_layers_with_known_offset(offset):
    # keep [0.5, 0.5, 1.0] lays out [0, .5), [.5, 1), [1, 2): teeth at offset and offset+1.
    class FixedRng:
        def random(self):
            return offset

    mask = draw_layers(np.array([0.5, 0.5, 1.0]), FixedRng())

    assert mask.tolist() == [offset < 0.5, offset >= 0.5, True]


def test_keep_prob_of_a_plan_feeds_draw_layers():
    plan = ClientPlan(drop_prob=(0.0, 0.5, 0.9), lora_rank=(4, 4, 4))

    masks = _draws(plan.keep_prob, 20_000, seed=4)

    np.testing.assert_allclose(masks.mean(axis=0), [1.0, 0.5, 0.1], atol=0.015)


def test_depth_weighted_keep_weights_the_layers_near_the_output():
    from fedsim.core.plan import depth_weighted_keep

    keep_deep = np.array([0.0, 0.0, 1.0, 1.0])  # the two top layers run
    keep_shallow = keep_deep[::-1]
    assert depth_weighted_keep(keep_deep, 0.0) == depth_weighted_keep(keep_shallow, 0.0) == 0.5
    assert depth_weighted_keep(keep_deep, 1.0) == pytest.approx(7 / 10)
    assert depth_weighted_keep(keep_shallow, 2.0) == pytest.approx(5 / 30)


def test_surrogate_progress_follows_the_depth_weighted_keep():
    from fedsim.learning.surrogate import SurrogateSpec, SurrogateTrainer

    spec = SurrogateSpec(drop_exponent=2.0, depth_exponent=2.0)
    trainer = SurrogateTrainer(spec, 4, np.full(2, 10), seed=0)
    full = ClientPlan.uniform(4, lora_rank=8, batch_size=8, local_steps=2)
    shallow_dropped = full.with_(drop_prob=(1.0 - 1e-9, 0.5, 0.0, 0.0))
    deep_dropped = full.with_(drop_prob=(0.0, 0.0, 0.5, 1.0 - 1e-9))
    e = [trainer.effective_examples(p) for p in (full, shallow_dropped, deep_dropped)]
    assert e[0] == pytest.approx(16.0)
    assert e[0] > e[1] > e[2]  # same mean drop; dropping deep layers costs more


# -- what DropPEFT's configurator observes: gains alone and left out ------------------------

def _surrogate_round(drop_harm: float, keeps=(1.0, 1.0, 0.5, 0.5)):
    from fedsim.learning.surrogate import SurrogateSpec, SurrogateTrainer

    trainer = SurrogateTrainer(SurrogateSpec(drop_exponent=1.0, gain_noise=0.0, drop_harm=drop_harm), 4,
                               np.full(8, 10), seed=0)
    full = ClientPlan.uniform(4, lora_rank=8, batch_size=8, local_steps=2)
    plans = [full.with_(drop_prob=(1.0 - k,) * 4) for k in keeps]
    return trainer, trainer.train(0, np.arange(len(plans)), plans, np.zeros(len(plans), dtype=np.int64))


def test_surrogate_leave_one_out_gain_is_what_the_round_loses_without_the_update():
    trainer, results = _surrogate_round(0.0)
    loo = trainer.update_gains(0, results, 128, measure="loo")
    alone = trainer.update_gains(0, results, 128, measure="alone")
    assert (loo > 0).all() and (alone > 0).all()
    assert loo[0] == pytest.approx(loo[1]) and loo[2] == pytest.approx(loo[3]) and loo[0] > loo[2]
    # The gain left out is the difference of two aggregates.
    before = trainer.progress
    trainer.aggregate(0, results[1:], None)
    without = trainer._loss_at(trainer.progress)
    trainer.progress = before
    trainer.aggregate(0, results, None)
    assert loo[0] == pytest.approx(without - trainer._loss_at(trainer.progress))
    with pytest.raises(ValueError, match="measure"):
        trainer.update_gains(0, results, 128, measure="both")


def test_surrogate_harm_shows_in_the_aggregate_only():
    # Dropped updates averaged with full ones harm the round; alone, or among their like, they help.
    trainer, results = _surrogate_round(3.0, keeps=(1.0, 1.0, 1.0, 0.5))
    loo = trainer.update_gains(0, results, 128, measure="loo")
    alone = trainer.update_gains(0, results, 128, measure="alone")
    assert (alone > 0).all() and (loo[:3] > 0).all() and loo[3] < 0
    two_full, _ = _surrogate_round(0.0, keeps=(1.0, 1.0))
    two_full.aggregate(0, _, None)
    trainer.aggregate(0, results, None)
    assert trainer.progress == pytest.approx(two_full.progress)  # 3 full (+48) and 1 dropped (at worst -16)
    alike_trainer, alike = _surrogate_round(3.0, keeps=(0.5, 0.5))
    alike_trainer.aggregate(0, alike, None)
    plain_trainer, plain = _surrogate_round(0.0, keeps=(0.5, 0.5))
    plain_trainer.aggregate(0, plain, None)
    assert alike_trainer.progress == pytest.approx(plain_trainer.progress) and plain_trainer.progress > 0
