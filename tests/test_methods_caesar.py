"""Caesar: compression levels from staleness and importance, bytes as sent, batch tuning."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.learning.compression import Level, state_ratio
from fedsim.core.costmodel import plan_cost
from fedsim.methods.base import RoundReport
from fedsim.methods.caesar import (
    Caesar, CaesarParams, download_level, importance, label_divergence, plan_state_sizes, tune_batch_sizes, upload_level,
)
from fedsim.core.plan import RoundPlans
from fedsim.learning.base import ClientResult


def test_stale_devices_get_more_precise_downloads():
    lv = download_level(np.array([1, 2, 5, 10, 30, 100]), n_levels=5, tau=10.0)
    assert lv[0] == 4 and lv[-1] == 0
    assert np.all(np.diff(lv) <= 0)


def test_importance_uses_volume_and_label_divergence():
    counts = np.array([[25, 25, 25, 25], [100, 0, 0, 0], [50, 50, 50, 50]])
    div = label_divergence(counts, np.array([1, 1, 1, 1]))
    assert div[0] == pytest.approx(0.0) and div[2] == pytest.approx(0.0)
    assert 0.4 < div[1] < 1.0
    imp = importance(counts.sum(axis=1), div)
    lv = upload_level(imp, n_levels=4)
    assert lv[2] == 0                  # most data, IID: most precise
    assert lv[1] > lv[0] > 0 or lv[1] >= lv[0]
    assert upload_level(np.ones(3), 4).tolist() == [0, 0, 0]


def test_batch_tuning_gives_fast_devices_bigger_batches_up_to_the_cap_and_memory():
    comm = np.zeros(4)
    speed = np.array([1.0, 2.0, 4.0, 4.0])
    # time(b) = (0 + b * 1) / speed ; memory(b) = b
    got = tune_batch_sizes(comm, speed, np.zeros(4), np.ones(4), np.zeros(4), np.ones(4),
                           cap_bytes=np.array([100, 100, 100, 24]), base=16, choices=[16, 24, 32, 48, 64], target_s=16.0)
    assert got.tolist() == [16, 32, 64, 24]


def test_caesar_sets_exact_ratios_and_tunes_batches(tiny_ctx):
    # Prepare
    ctx = tiny_ctx(3, n=8)
    m = Caesar(CaesarParams(), ctx.shape, ctx.base_plan)
    m.compression._num_examples = lambda ids: np.where(np.asarray(ids) % 2 == 0, 10, 40)
    # Execute
    plans = m.configure_round(ctx)
    # Assert: never-seen devices (staleness 4) at round 3; big clients most precise upload
    sizes = plan_state_sizes(ctx.shape, ctx.base_plan)
    dense_down = plan_cost(ctx.shape, ctx.base_plan).bytes_down
    for i in range(8):
        p = plans[i]
        lv = m.compression.down_levels[m.compression._down[i]]
        assert p.down_ratio == pytest.approx(state_ratio(sizes, lv))
        assert plan_cost(ctx.shape, p).bytes_down == pytest.approx(dense_down * p.down_ratio)
    assert {m.compression._up[i] for i in (1, 3, 5, 7)} == {0}
    assert {m.compression._up[i] for i in (0, 2, 4, 6)} == {2}  # u = 0.25 -> round(3 * 0.75)
    batches = [plans[i].batch_size for i in range(8)]
    assert batches[-1] > 16 and batches[0] == 16 and batches == sorted(batches)
    assert len(plans.plans) <= 12


def test_participation_resets_staleness_and_upload_compression_is_applied(tiny_ctx):
    ctx = tiny_ctx(0, n=4)
    m = Caesar(CaesarParams(batch_tuning=False, up_levels=[(1.0, 32), (0.25, 8)]), ctx.shape, ctx.base_plan)
    plans = m.configure_round(ctx)
    m.round_finished(RoundReport(0, 0.0, 1.0, ctx.device_ids, plans, np.array(["ok", "ok", "oom", "ok"], dtype=object),
                                 np.ones(4)))
    assert m.compression.staleness(5, np.arange(4), 4).tolist() == [5, 5, 6, 5]
    # upload: client 1 at level 1 (25 % kept), client 0 dense
    m.compression._up = {0: 0, 1: 1}
    x = np.arange(1.0, 101.0)
    res = [ClientResult(c, 1, np.ones(6), 0.0, np.zeros(6), delta={"classifier.weight": x}) for c in (0, 1)]
    sent = m.compression.compress_results(res)
    assert np.array_equal(sent[0].delta["classifier.weight"], x)
    assert np.count_nonzero(sent[1].delta["classifier.weight"]) == 25
    new = m.aggregate_fn()({"classifier.weight": np.zeros(100)}, res)
    np.testing.assert_allclose(new["classifier.weight"][:75], x[:75] / 2)  # client 1 sent nothing there
    np.testing.assert_allclose(new["classifier.weight"][75:], x[75:], atol=0.05)  # 8-bit codes over [76, 100]


def test_download_is_reference_plus_compressed_difference(tiny_ctx):
    ctx = tiny_ctx(0, n=2)
    m = Caesar(CaesarParams(down_levels=[(1.0, 32), (0.5, 32)]), ctx.shape, ctx.base_plan)
    comp = m.compression
    comp._initial = {"w": np.zeros(4)}
    comp._down = {7: 1}
    got = comp.download(7, ctx.base_plan, {"w": np.array([1.0, -5.0, 0.1, 3.0])})
    np.testing.assert_allclose(got["w"], [0.0, -5.0, 0.0, 3.0])
    comp._down = {7: 0}
    got = comp.download(7, ctx.base_plan, {"w": np.array([1.0, -5.0, 0.1, 3.0])})
    np.testing.assert_allclose(got["w"], [1.0, -5.0, 0.1, 3.0])
    assert comp.bytes_down_sent == 16 + 8 + min(1, 1)  # dense 16 B; 2 values + a 1-byte bitmap
    assert Level(0.5, 32).tag == "k50q32" and RoundPlans


def test_compression_composes_with_other_methods(tiny_ctx):
    from fedsim.methods.base import get_method

    ctx = tiny_ctx(2, n=6)
    for name in ("stld-fixed", "droppeft"):
        cls = get_method(name)
        plain = cls(cls.Params(), ctx.shape, ctx.base_plan)
        assert plain.compression is None
        assert all(p.down_ratio == 1.0 for p in plain.configure_round(ctx).plans)
        m = cls(cls.Params(compression="caesar", caesar={"staleness_tau": 2.0}), ctx.shape, ctx.base_plan)
        plans = m.configure_round(ctx)
        assert all(p.down_ratio < 1.0 and p.up_ratio < 1.0 for p in plans.plans)
        assert all(p.batch_size == ctx.base_plan.batch_size for p in plans.plans)  # batch tuning is Caesar's own
    with pytest.raises(ValueError, match="keep_frac"):
        get_method("stld-fixed").Params(compression="caesar", caesar={"up_levels": [(0.0, 8)]})
