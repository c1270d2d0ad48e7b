"""DropPEFT: arms, feasibility, groups, reward bookkeeping, PTLS selection and personal state."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.core.costmodel import CostCoefficients, ModelShape, plan_cost
from fedsim.fleet.fleet import Fleet
from fedsim.methods.base import RoundContext, RoundReport, get_method
from fedsim.methods.droppeft import (
    DropPEFT,
    DropPEFTParams,
    feasible_arms,
    make_arms,
    select_personal_layers,
)
from fedsim.core.plan import ClientPlan, RoundPlans
from fedsim.learning.base import ClientResult, EvalResult

SHAPE = ModelShape("bert", 6, 384, 12, 1536, 30522, 512, 2, 4)
BASE = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64, local_steps=5)


def _fleet(n: int = 8) -> Fleet:
    """Device i: (i + 1) GFLOP/s, 2 GB (devices 0 and 1: 0.5 GB), (i + 1) Mbit/s up, 4x down."""
    f32 = lambda v: np.full(n, v, dtype=np.float32)  # noqa: E731
    i = np.arange(n, dtype=float)
    cap = np.full(n, 2e9)
    cap[:2] = 0.5e9
    return Fleet(["d"], ["n"], np.zeros(n, np.int16), np.zeros(n, np.int16), (i + 1) * 1e9, cap,
                 4e6 * (i + 1), 1e6 * (i + 1), f32(0.02), f32(0), f32(0), f32(1e-9), f32(1e-7), f32(1e-7),
                 f32(0), f32(24), f32(0), f32(0))


def _ctx(fleet: Fleet, r: int = 0, deadline_s: float | None = None) -> RoundContext:
    return RoundContext(round_idx=r, now_s=0.0, device_ids=np.arange(fleet.size), fleet=fleet, shape=SHAPE,
                        base_plan=BASE, coefficients=CostCoefficients(), deadline_s=deadline_s,
                        rng=np.random.default_rng(r))


def test_default_arms_are_ten_distinct_configurations():
    arms = make_arms(BASE, DropPEFTParams())
    assert len(arms) == 10 and len({a.drop_prob for a in arms}) == 10
    assert arms[0].name == "none" and arms[0].mean_drop == 0.0
    assert {round(a.mean_drop, 2) for a in arms} == {0.0, 0.25, 0.5, 0.75}
    rising = next(a for a in arms if a.name == "rising-0.5")
    assert rising.drop_prob[-1] > rising.drop_prob[0]  # deep layers dropped more


def test_explicit_arms_and_validation():
    params = DropPEFTParams(arms=[{"mean_drop": 0.5}, {"drop_prob": [0, 0, 0, 0.5, 0.5, 0.9]}], fixed_arm=1)
    arms = make_arms(BASE, params)
    assert len(arms) == 2 and arms[1].drop_prob[-1] == 0.9
    with pytest.raises(ValueError):
        DropPEFTParams(arms=[{"mean_drop": 0.5}], fixed_arm=3)
    with pytest.raises(ValueError):
        DropPEFTParams(prior="peaked")
    assert get_method("droppeft") is DropPEFT


def test_feasibility_masks_memory_and_deadline():
    # Prepare
    fleet = _fleet()
    arms = make_arms(BASE, DropPEFTParams())
    mem = np.array([plan_cost(SHAPE, a).peak_mem_bytes for a in arms])
    # Execute
    ok, peak, total = feasible_arms(fleet, np.arange(8), SHAPE, arms, CostCoefficients(), deadline_s=30.0)
    # Assert
    assert ok.shape == (8, 10) and np.array_equal(peak[0], mem)
    assert np.array_equal(ok[:2] & ~(mem <= 0.5e9), np.zeros((2, 10), bool))  # over the cap: never feasible
    assert not ok[:, mem > 0.5e9][:2].any() and (mem > 0.5e9).any()
    assert np.array_equal(ok, (peak <= fleet.mem_cap_bytes[:, None]) & (total <= 30.0))
    assert total[0, 0] > total[7, 0] and total[0, 0] > total[0, -1]  # slow device, no dropout = slowest


def test_personal_layers_are_the_largest_norms():
    norms = np.array([0.1, 0.5, 0.0, 0.9, 0.2, 0.3])
    assert select_personal_layers(norms, 2) == (1, 3)
    assert select_personal_layers(norms, 10) == (0, 1, 3, 4, 5)  # never-run layer 2 stays shared
    assert select_personal_layers(norms, "auto", mass=0.5) == (3,)  # 0.81 of 1.2 squared mass
    assert select_personal_layers(np.zeros(6), 2) == ()


def _report(method: DropPEFT, plans: RoundPlans, r: int, outcome, acc: float, loss: float, end_s: float,
            results=()) -> RoundReport:
    n = len(plans)
    return RoundReport(round_idx=r, start_s=end_s - 10.0, end_s=end_s, device_ids=np.arange(n), plans=plans,
                       outcome=np.asarray(outcome, dtype=object), duration_s=np.full(n, 10.0),
                       results=list(results), evaluation=EvalResult(accuracy=acc, loss=loss))


def test_method_never_assigns_infeasible_arms_and_learns_from_the_update_gains():
    # Prepare
    fleet = _fleet()
    method = DropPEFT(DropPEFTParams(), SHAPE, BASE)
    ok, _, _ = feasible_arms(fleet, np.arange(8), SHAPE, method.arms, CostCoefficients(), 60.0)
    assert method.update_gain_examples() == 128
    seen = []
    for r in range(3):
        # Execute: 6 updates arrive, a straggler and a drop-out bring nothing
        plans = method.configure_round(_ctx(fleet, r, deadline_s=60.0))
        arms = method._round_arms.copy()
        seen.append(arms)
        results = [ClientResult(i, 4, np.zeros(6), 1.0, np.zeros(6)) for i in range(6)]
        report = _report(method, plans, r, ["ok"] * 6 + ["straggler", "dropout"], 0.4, 1.1, 10.0 * (r + 1), results)
        report.update_gains = np.linspace(1.0, 2.0, 6)
        method.round_finished(report)
    # Assert
    some = ok.any(axis=1)
    assert not some.all() and some[1:].all()  # device 0 is too slow for any arm: it gets the fallback
    assert all(ok[np.arange(8), a][some].all() for a in seen)
    assert [plans[i].name for i in range(8)] == [method.arms[a].name for a in seen[-1]]
    assert len(method.model._rows) == 18 and method.model.evidence == pytest.approx(1 + 0.9 + 0.81)
    assert method.history[-1]["arms"] == np.bincount(seen[-1], minlength=10).tolist()


def test_learning_off_asks_for_no_gains():
    assert DropPEFT(DropPEFTParams(learning=False), SHAPE, BASE).update_gain_examples() is None
    assert DropPEFT(DropPEFTParams(bandit=False), SHAPE, BASE).update_gain_examples() is None


def test_gains_are_measured_in_the_aggregate_unless_told_otherwise():
    assert DropPEFT(DropPEFTParams(), SHAPE, BASE).update_gain_measure() == "loo"
    assert DropPEFT(DropPEFTParams(gain_measure="alone"), SHAPE, BASE).update_gain_measure() == "alone"
    with pytest.raises(ValueError, match="gain_measure"):
        DropPEFTParams(gain_measure="both")


def test_a_method_checkpointed_before_gain_measure_existed_resumes_measuring_alone():
    import pickle

    method = DropPEFT(DropPEFTParams(), SHAPE, BASE)
    del method.params.__dict__["gain_measure"]  # as unpickled from an older checkpoint
    assert pickle.loads(pickle.dumps(method)).update_gain_measure() == "alone"


def test_a_method_checkpointed_before_signed_worths_existed_resumes_flooring_harmful_gains():
    import pickle

    method = DropPEFT(DropPEFTParams(signed_worth=True), SHAPE, BASE)
    del method.model.__dict__["signed"], method.model.__dict__["_signs"]  # as unpickled from an older checkpoint
    model = pickle.loads(pickle.dumps(method)).model
    model.observe(np.array([0, 1]), np.array([1.0, -1.0]))
    assert not model.signed and model._signs == () and model.worth()[1] > 0


def test_a_method_checkpointed_before_spreads_were_learnt_resumes_with_its_one_spread():
    import pickle

    method, one = DropPEFT(DropPEFTParams(), SHAPE, BASE), DropPEFT(DropPEFTParams(arm_sd=1.0, point_null=0.0), SHAPE, BASE)
    for name in ("_arm_sds", "arm_sd_fit", "point_null", "_null_prob", "_null_worth"):  # as unpickled from an older checkpoint
        del method.model.__dict__[name]
    model = pickle.loads(pickle.dumps(method)).model
    for m in (model, one.model):
        m.observe(np.array([0, 1, 2, 2]), np.array([1.0, 0.2, 0.9, 1.1]))
    assert np.array_equal(model.worth(), one.model.worth())


def test_a_method_checkpointed_before_the_prior_was_a_hypothesis_resumes_without_it():
    import pickle

    method, free = DropPEFT(DropPEFTParams(), SHAPE, BASE), DropPEFT(DropPEFTParams(point_null=0.0), SHAPE, BASE)
    for name in ("point_null", "_null_prob", "_null_worth"):  # as unpickled from a checkpoint made before it
        del method.model.__dict__[name]
    model = pickle.loads(pickle.dumps(method)).model
    for m in (model, free.model):
        m.observe(np.array([0, 1, 2, 2]), np.array([1.0, 0.2, 0.9, 1.1]))
    assert np.array_equal(model.worth(), free.model.worth()) and model.null_prob() == 0.0


def test_bandit_off_uses_the_fixed_arm_where_feasible():
    method = DropPEFT(DropPEFTParams(bandit=False, fixed_arm=0), SHAPE, BASE)
    fleet = _fleet()
    method.configure_round(_ctx(fleet, 0))
    arms = method._round_arms
    mem0 = plan_cost(SHAPE, method.arms[0]).peak_mem_bytes
    assert mem0 > 0.5e9  # no dropout does not fit devices 0 and 1
    assert (arms[2:] == 0).all() and (arms[:2] != 0).all()
    assert all(plan_cost(SHAPE, method.arms[a]).peak_mem_bytes <= 0.5e9 for a in arms[:2])


def test_same_seed_same_assignment():
    def run():
        m = DropPEFT(DropPEFTParams(), SHAPE, BASE)
        return [m.configure_round(_ctx(_fleet(), r)) and m._round_arms.tolist() for r in range(2)]
    assert run() == run()


def test_ptls_plans_carry_personal_layers_from_gradient_norms():
    # Prepare
    method = DropPEFT(DropPEFTParams(ptls=True, personal_layers=2), SHAPE, BASE)
    fleet = _fleet()
    plans = method.configure_round(_ctx(fleet, 0))
    assert all(not plans[i].personal_layers for i in range(8))  # nothing measured yet
    norms = np.array([0.1, 0.2, 0.3, 0.4, 2.0, 1.0])
    results = [ClientResult(client_id=3, num_examples=4, layer_steps=np.full(6, 4), train_loss=1.0, grad_norms=norms)]
    # Execute
    method.round_finished(_report(method, plans, 0, ["ok"] * 8, 0.3, 1.3, 10.0, results))
    plans = method.configure_round(_ctx(fleet, 1))
    # Assert
    assert plans[3].personal_layers == (4, 5) and plans[0].personal_layers == (4, 5)
    # Nobody holds a personal copy yet: the layers are trained, kept and still sent.
    assert all(plans[i].share_personal for i in range(8))
    shared = method.arms[0].with_(drop_prob=plans[3].drop_prob)
    assert plan_cost(SHAPE, plans[3]).bytes_up == plan_cost(SHAPE, shared).bytes_up
    assert method._client_norms[3][4] == pytest.approx(1.0)
    # After a round with PTLS plans the clients hold copies: personal layers stay home.
    outcome = ["ok"] * 7 + ["oom"]
    method.round_finished(_report(method, plans, 1, outcome, 0.4, 1.2, 10.0, results))
    plans = method.configure_round(_ctx(fleet, 2))
    assert not plans[3].share_personal and plans[7].share_personal  # 7 ran out of memory: no copy
    assert plan_cost(SHAPE, plans[3]).bytes_up < plan_cost(SHAPE, shared).bytes_up
    assert plan_cost(SHAPE, plans[3]).bytes_down < plan_cost(SHAPE, shared).bytes_down


def test_ptls_personal_head_stays_on_the_device_once_held():
    method = DropPEFT(DropPEFTParams(ptls=True, personal_layers=0, personal_head=True), SHAPE, BASE)
    fleet = _fleet()
    plans = method.configure_round(_ctx(fleet, 0))
    assert all(plans[i].personal_head and plans[i].share_personal for i in range(8))
    method.round_finished(_report(method, plans, 0, ["ok"] * 8, 0.3, 1.3, 10.0))
    plans = method.configure_round(_ctx(fleet, 1))
    shared = plans[0].with_(personal_head=False, share_personal=False)
    assert not plans[0].share_personal
    head_bytes = SHAPE.head_params * 4
    assert plan_cost(SHAPE, shared).bytes_up - plan_cost(SHAPE, plans[0]).bytes_up == pytest.approx(head_bytes)
    assert plan_cost(SHAPE, shared).bytes_down - plan_cost(SHAPE, plans[0]).bytes_down == pytest.approx(head_bytes)


def test_droppeft_runs_end_to_end_with_the_surrogate(tiny_scenario, tmp_path):
    from fedsim.engine.records import read_rounds
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    sc = load_scenario(tiny_scenario, overrides=["method.name=droppeft", "engine.max_rounds=6"])[0].scenario
    result = simulate(sc, tmp_path / "out")
    rows = read_rounds(tmp_path / "out")
    assert result.rounds == 6 and len(rows["round"]) == 6 and np.isfinite(rows["accuracy"]).all()


@pytest.fixture
def gains_asked(monkeypatch) -> list[str]:
    """The gain measures the engine asks the surrogate trainer for, in order."""
    from fedsim.learning.surrogate import SurrogateTrainer

    asked = []
    real = SurrogateTrainer.update_gains

    def spy(self, round_idx, results, num_examples, measure="alone", aggregate_fn=None, weights=None):
        asked.append(measure)
        return real(self, round_idx, results, num_examples, measure, aggregate_fn, weights)

    monkeypatch.setattr(SurrogateTrainer, "update_gains", spy)
    return asked


@pytest.mark.parametrize("measure", ["loo", "alone"])
def test_the_engine_hands_the_trainer_the_methods_gain_measure(tiny_scenario, tmp_path, gains_asked, measure):
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    asked = gains_asked
    sc = load_scenario(tiny_scenario, overrides=["method.name=droppeft", "engine.max_rounds=3",
                                                 f"method.params.gain_measure={measure}"])[0].scenario
    simulate(sc, tmp_path / "out")
    # and, where it closes rounds early (the default), the whole aggregate's gain
    assert asked and set(asked) == {measure, "round"} and asked.count("round") == asked.count(measure)


def test_no_aggregate_gain_is_measured_where_nothing_reads_it(tiny_scenario, tmp_path, gains_asked):
    from fedsim.study.scenario import load_scenario
    from fedsim.study.simulate import simulate

    asked = gains_asked
    for params in ("choose_quota=false", "learn_returns=false"):
        sc = load_scenario(tiny_scenario, overrides=["method.name=droppeft", "engine.max_rounds=3",
                                                     f"method.params.{params}"])[0].scenario
        simulate(sc, tmp_path / params)
    assert asked and "round" not in asked


# -- PTLS in the real trainer (tiny-bert, tiny synthetic data) -----------------------------

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_trainer(tmp_path_factory):
    from fedsim.learning.real.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
    from fedsim.learning.real.trainer import TorchTrainer

    rng = np.random.default_rng(0)
    words = {"a": "ball goal team match", "b": "orbit rocket moon star", "c": "bread cheese apple soup"}
    lines = ["text,label"] + [f"{' '.join(rng.choice(words[t].split(), 6))},{t}" for t in sorted(words) for _ in range(30)]
    path = tmp_path_factory.mktemp("dp") / "syn.csv"
    path.write_text("\n".join(lines) + "\n")
    data = DataSpec(dataset="file", train_file=path, max_length=16, cache_dir=path.parent / "cache",
                    partition=PartitionSpec(scheme="dirichlet", alpha=0.5))
    return TorchTrainer(data, ModelSpec(name_or_path="tiny-bert", lora_rank=4), TrainSpec(lr=5e-3, threads=1), 5,
                        np.random.default_rng(0))


def test_personal_layers_stay_on_the_client_and_are_reused(tiny_trainer):
    # Prepare
    from fedsim.learning.real.personal import personal_names

    t = tiny_trainer
    plan = ClientPlan.uniform(t.num_layers, lora_rank=4, batch_size=4, local_steps=3, seq_len=16, personal_layers=(1, 3))
    names = personal_names(t.fm, (1, 3))
    assert names and all(t.fm.param_layer[n] in (1, 3) for n in names)
    before = t.global_state()
    # Execute
    res = t.train(0, np.array([2]), [plan], np.array([11]))
    t.aggregate(0, res, None)
    after = t.global_state()
    stored = {n: v.clone() for n, v in t.personal.get(2).items()}
    # Assert: personal tensors neither sent nor aggregated; shared ones moved
    assert not set(names) & set(res[0].delta)
    assert all(torch.equal(before[n], after[n]) for n in names)
    assert any(not torch.equal(before[n], after[n]) for n in res[0].delta)
    assert set(stored) == set(names) and any(not torch.equal(stored[n], before[n]) for n in names)
    assert len(t.personal) == 1 and t.personal.nbytes == sum(v.numel() * 4 for v in stored.values())
    # Execute: a second round starts from the client's own copy
    res2 = t.train(1, np.array([2]), [plan], np.array([12]))
    # Assert
    assert all(torch.equal(t.global_state()[n], after[n]) for n in names)  # global state restored
    assert any(not torch.equal(t.personal.get(2)[n], stored[n]) for n in names)
    assert res2[0].grad_norms.shape == (t.num_layers,)


def test_newcomer_shares_its_personal_layers_and_head_but_keeps_copies(tiny_trainer):
    # Prepare
    from fedsim.learning.real.personal import personal_names

    t = tiny_trainer
    plan = ClientPlan.uniform(t.num_layers, lora_rank=4, batch_size=4, local_steps=3, seq_len=16,
                              personal_layers=(3,), personal_head=True, share_personal=True)
    names = personal_names(t.fm, (3,), head=True)
    head = [n for n in names if "lora_" not in n]
    assert head and set(head) <= set(t.fm.base_trainable) and all(t.fm.param_layer[n] is None for n in head)
    before = t.global_state()
    # Execute
    res = t.train(0, np.array([1]), [plan], np.array([5]))
    # Assert: the copies are sent (newcomer) and kept, equal to the global state plus the delta
    assert set(names) <= set(res[0].delta)
    kept = t.personal.get(1)
    assert set(kept) == set(names)
    assert all(torch.allclose(kept[n], before[n] + res[0].delta[n]) for n in names)
    # Execute: next time the same client keeps them home
    res2 = t.train(1, np.array([1]), [plan.with_(share_personal=False)], np.array([6]))
    assert not set(names) & set(res2[0].delta)


def test_evaluate_reports_personal_accuracy(tiny_trainer):
    t = tiny_trainer
    plan = ClientPlan.uniform(t.num_layers, lora_rank=4, batch_size=4, local_steps=2, seq_len=16, personal_layers=(2,))
    t.train(2, np.array([0, 4]), [plan, plan], np.array([1, 2]))
    ev = t.evaluate(2)
    assert ev.personal_accuracy is not None and 0.0 <= ev.personal_accuracy <= 1.0
    assert set(t.personal.clients().tolist()) >= {0, 4}


def test_arm_spec_refuses_booleans_and_non_finite_ratios():
    with pytest.raises(ValueError):
        DropPEFTParams(arms=[{"drop_prob": [False, 0, 0, 0, 0, 0]}])
    with pytest.raises(ValueError):
        DropPEFTParams(arms=[{"mean_drop": float("nan")}])
