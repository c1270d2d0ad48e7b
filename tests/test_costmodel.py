"""The analytic cost model: parameter counts, FLOPs, memory, bytes, and client times."""

from __future__ import annotations

import numpy as np
import pytest

from fedsim.core.costmodel import (
    CostCoefficients,
    ModelShape,
    client_times,
    expected_layers_run,
    layer_forward_flops,
    plan_cost,
)
from fedsim.fleet.fleet import Fleet
from fedsim.core.models import TINY_BERT
from fedsim.core.plan import ClientPlan

# h=4, heads=2, ffn=8, vocab=10, positions=16, token types=2, 2 labels, 1 layer.
TINY = ModelShape(family="bert", num_layers=1, hidden=4, heads=2, ffn=8, vocab=10, max_positions=16, type_vocab=2, num_labels=2)
SMALL = ModelShape.from_hf_config(TINY_BERT, num_labels=4)  # 4 layers, h=32, ffn=64


def _tiny_hf_configs():
    from transformers import BertConfig, DistilBertConfig, MPNetConfig, RobertaConfig

    common = dict(vocab_size=100, num_labels=3)
    return [
        BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=40, **common),
        RobertaConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=42, pad_token_id=1, **common),
        DistilBertConfig(dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=40, **common),
        MPNetConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=24, max_position_embeddings=42, pad_token_id=1, **common),
    ]


@pytest.mark.parametrize("index", range(4), ids=["bert", "roberta", "distilbert", "mpnet"])
def test_param_counts_match_real_models(index):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = _tiny_hf_configs()[index]
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(config)

    shape = ModelShape.from_hf_config(config)
    from_dict = ModelShape.from_hf_config(config.to_dict())

    assert shape.total_params == sum(p.numel() for p in model.parameters())
    assert from_dict == shape
    assert shape.num_labels == 3


def test_from_hf_config_dict_defaults():
    shape = ModelShape.from_hf_config({**TINY_BERT})

    assert (shape.family, shape.num_layers, shape.hidden, shape.ffn) == ("bert", 4, 32, 64)
    assert shape.num_labels == 2  # no num_labels, no id2label
    assert ModelShape.from_hf_config({**TINY_BERT, "id2label": {0: "a", 1: "b", 2: "c"}}).num_labels == 3


def test_unsupported_family_rejected():
    with pytest.raises(ValueError) as info:
        ModelShape.from_hf_config({"model_type": "gpt2"})

    assert "gpt2" in str(info.value)


def test_unknown_lora_target_rejected():
    with pytest.raises(ValueError) as info:
        SMALL.target_shapes(("q_proj",))

    assert "q_proj" in str(info.value)


def test_lora_params_per_family():
    assert SMALL.lora_params(4, ("query", "value")) == 4 * (64 + 64)
    # BERT's "dense" names the attention output, FFN up and FFN down projections.
    assert SMALL.lora_params(1, ("dense",)) == (32 + 32) + (32 + 64) + (64 + 32)


def test_hand_computed_flops_tiny_plan():
    plan = ClientPlan(drop_prob=(0.0,), lora_rank=(1,), lora_targets=("query", "value"),
                      train_head=True, batch_size=1, seq_len=2, local_steps=1)

    cost = plan_cost(TINY, plan)

    h, f, s = 4, 8, 2
    # Frozen layer forward: s*(8h^2 + 4h*f) + 4*s^2*h = 2*(128 + 128) + 64 = 576.
    fwd = s * (8 * h * h + 4 * h * f) + 4 * s * s * h
    assert fwd == 576 == layer_forward_flops(TINY, s)
    # LoRA rank 1 on query and value, each (4 -> 4): 2*s*r*(d_in + d_out) per module = 2*2*1*16 = 64.
    lora = 2 * s * 1 * ((h + h) + (h + h))
    assert lora == 64
    # Backward: input gradients (one forward again, layer + LoRA) + weight gradients of the
    # LoRA matrices (one forward of them): 640 + 64.
    backward = (fwd + lora) + lora
    layer = fwd + lora + backward
    assert layer == 1344
    # Head: pooler (h*h + h = 20) + classifier (h*2 + 2 = 10) = 30 params; 2 FLOPs per param
    # forward on the pooled token, x3 when trained (forward, input grad, weight grad).
    head_params = (h * h + h) + (h * 2 + 2)
    head = 3 * 2 * head_params
    assert head == 180
    # Optimizer: 12 FLOPs per trainable parameter; trainable = LoRA (16) + head (30) = 46.
    trainable = 1 * (8 + 8) + head_params
    optimizer = 12 * trainable
    assert optimizer == 552
    # One step, batch 1.
    assert cost.flops == 1 * (1 * (layer + head) + optimizer) == 2076
    assert cost.trainable_params == 46


def test_hand_computed_memory_and_bytes_tiny_plan():
    plan = ClientPlan(drop_prob=(0.0,), lora_rank=(1,), batch_size=1, seq_len=2, local_steps=1)

    cost = plan_cost(TINY, plan)

    # Params: embeddings (10 + 16 + 2)*4 + LayerNorm 8 = 120; layer 4*(16+4) + (32+8) + (32+4)
    # + 2*8 = 172; head 30; total 322, plus 16 LoRA params, fp32.
    assert TINY.total_params == 322
    assert cost.weights_bytes == (322 + 16) * 4
    assert cost.grads_bytes == 46 * 4
    assert cost.optimizer_bytes == 2 * 46 * 4
    # Activations: 4 bytes * b*s * (18h + 6f + 2*heads*s) per layer + embeddings output b*s*h.
    assert cost.activations_bytes == 4 * 1 * 2 * (18 * 4 + 6 * 8 + 2 * 2 * 2) + 4 * 1 * 2 * 4
    assert cost.peak_mem_bytes == (
        cost.weights_bytes + cost.grads_bytes + cost.optimizer_bytes + cost.activations_bytes + 150e6
    )
    # Traffic: LoRA + head, 4 bytes each, both ways.
    assert cost.bytes_down == cost.bytes_up == 46 * 4


def test_flops_scale_with_steps_and_batch():
    one = plan_cost(SMALL, ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=1))
    three = plan_cost(SMALL, ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=3))

    assert three.flops == pytest.approx(3 * one.flops)
    assert three.peak_mem_bytes == one.peak_mem_bytes


def test_lora_on_top_layer_only_skips_backprop_below():
    everywhere = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=3)
    top = everywhere.with_(lora_rank=(0, 0, 0, 4))

    a, t = plan_cost(SMALL, everywhere), plan_cost(SMALL, top)

    assert t.flops < a.flops
    assert t.activations_bytes < a.activations_bytes
    # Exactly: the three lower layers run forward only and save no activations.
    s, b = 32, 4
    fwd = layer_forward_flops(SMALL, s)
    lora = 2 * s * 4 * (2 * (32 + 32))
    per_layer_all = fwd + lora + (fwd + lora) + lora
    trainable_all = 4 * 4 * 128 + SMALL.head_params
    trainable_top = 4 * 128 + SMALL.head_params
    head = 3 * 2 * SMALL.head_params
    assert a.flops == 3 * (b * (4 * per_layer_all + head) + 12 * trainable_all)
    assert t.flops == 3 * (b * (3 * fwd + per_layer_all + head) + 12 * trainable_top)
    act_layer = 4 * b * s * (18 * 32 + 6 * 64 + 2 * 2 * s)
    emb = 4 * b * s * 32
    assert a.activations_bytes == 4 * act_layer + emb
    assert t.activations_bytes == 1 * act_layer + emb


def test_head_only_training_backprops_no_layer():
    plan = ClientPlan.uniform(4, lora_rank=0, batch_size=2, seq_len=16, local_steps=1)

    cost = plan_cost(SMALL, plan)

    fwd = layer_forward_flops(SMALL, 16)
    assert cost.flops == 2 * (4 * fwd + 6 * SMALL.head_params) + 12 * SMALL.head_params
    assert cost.trainable_params == SMALL.head_params


def test_dropout_half_roughly_halves_layer_flops_and_activations():
    full = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=3)
    half = full.with_(drop_prob=(0.5,) * 4)

    a, d = plan_cost(SMALL, full), plan_cost(SMALL, half)

    # Head and optimizer work do not depend on dropout; the layer part halves exactly.
    fixed = 3 * (4 * 6 * SMALL.head_params + 12 * a.trainable_params)
    assert (d.flops - fixed) == pytest.approx(0.5 * (a.flops - fixed))
    emb = 4 * 4 * 32 * 32
    assert (d.activations_bytes - emb) == pytest.approx(0.5 * (a.activations_bytes - emb))
    assert expected_layers_run(half) == 2.0


def test_dropout_reduces_expected_upload():
    full = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=1)
    half = full.with_(drop_prob=(0.5,) * 4)

    a, d = plan_cost(SMALL, full), plan_cost(SMALL, half)

    # A layer that never ran in the round has nothing to send: with one step, P(ran) = 0.5.
    lora_bytes = 4 * 4 * 128 * 4
    assert a.bytes_up - d.bytes_up == pytest.approx(0.5 * lora_bytes)
    assert a.bytes_down == d.bytes_down


def test_bytes_up_and_down():
    plan = ClientPlan.uniform(4, lora_rank=8, batch_size=4, seq_len=32, local_steps=2)

    cost = plan_cost(SMALL, plan)

    lora = 4 * 8 * (2 * (32 + 32))  # 4 layers, rank 8, query and value (32 -> 32)
    head = (32 * 32 + 32) + (32 * 4 + 4)
    assert cost.bytes_down == (lora + head) * 4
    assert cost.bytes_up == (lora + head) * 4


def test_personal_layers_not_uploaded():
    plan = ClientPlan.uniform(4, lora_rank=8, batch_size=4, seq_len=32, local_steps=2)

    shared, personal = plan_cost(SMALL, plan), plan_cost(SMALL, plan.with_(personal_layers=(0, 3)))

    per_layer = 8 * 128 * 4
    assert shared.bytes_up - personal.bytes_up == 2 * per_layer


def test_personal_layers_not_downloaded():
    plan = ClientPlan.uniform(4, lora_rank=8, batch_size=4, seq_len=32, local_steps=2)

    shared, personal = plan_cost(SMALL, plan), plan_cost(SMALL, plan.with_(personal_layers=(0, 3)))

    assert shared.bytes_down - personal.bytes_down == 2 * 8 * 128 * 4


def test_head_not_trained_not_sent():
    plan = ClientPlan.uniform(4, lora_rank=8, batch_size=4, seq_len=32, local_steps=2)

    with_head, no_head = plan_cost(SMALL, plan), plan_cost(SMALL, plan.with_(train_head=False))

    assert with_head.bytes_up - no_head.bytes_up == SMALL.head_params * 4
    assert with_head.trainable_params - no_head.trainable_params == SMALL.head_params


def test_up_and_down_ratios_scale_bytes():
    plan = ClientPlan.uniform(4, lora_rank=8, batch_size=4, seq_len=32, local_steps=2)

    dense, compressed = plan_cost(SMALL, plan), plan_cost(SMALL, plan.with_(up_ratio=0.25, down_ratio=0.5))

    assert compressed.bytes_up == pytest.approx(0.25 * dense.bytes_up)
    assert compressed.bytes_down == pytest.approx(0.5 * dense.bytes_down)
    assert compressed.flops == dense.flops


def test_full_finetune_much_larger_than_lora():
    shape = ModelShape(family="bert", num_layers=6, hidden=384, heads=12, ffn=1536, vocab=30522,
                       max_positions=512, type_vocab=2, num_labels=4)  # MiniLM-L6
    lora = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=128, local_steps=1)

    l, f = plan_cost(shape, lora), plan_cost(shape, lora.with_(full_finetune=True))

    assert f.trainable_params == shape.total_params
    assert f.bytes_up == f.bytes_down == shape.total_params * 4
    assert f.bytes_up > 50 * l.bytes_up
    assert f.grads_bytes + f.optimizer_bytes == 3 * shape.total_params * 4
    assert f.peak_mem_bytes - l.peak_mem_bytes > 2 * shape.total_params * 4
    assert f.flops > l.flops


def test_layer_count_mismatch_rejected():
    with pytest.raises(ValueError):
        plan_cost(SMALL, ClientPlan.uniform(3))


def test_coefficients_change_memory():
    plan = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=1)

    base = plan_cost(SMALL, plan)
    lean = plan_cost(SMALL, plan, CostCoefficients(runtime_overhead_bytes=0.0))

    assert base.peak_mem_bytes - lean.peak_mem_bytes == 150e6


def _fleet(n=3, **arrays) -> Fleet:
    f32 = lambda v: np.asarray(np.broadcast_to(v, (n,)), dtype=np.float32).copy()  # noqa: E731
    f64 = lambda v: np.asarray(np.broadcast_to(v, (n,)), dtype=np.float64).copy()  # noqa: E731
    d = dict(flops_per_s=1e9, mem_cap_bytes=1e9, down_bps=8e6, up_bps=8e5, latency_s=0.5)
    d.update(arrays)
    return Fleet(
        device_names=["d"], network_names=["n"],
        device_class=np.zeros(n, np.int16), network_class=np.zeros(n, np.int16),
        flops_per_s=f64(d["flops_per_s"]), mem_cap_bytes=f64(d["mem_cap_bytes"]),
        down_bps=f64(d["down_bps"]), up_bps=f64(d["up_bps"]), latency_s=f32(d["latency_s"]),
        straggle_prob=f32(0), dropout_prob=f32(0), joules_per_flop=f32(1e-9),
        joules_per_byte_down=f32(1e-6), joules_per_byte_up=f32(2e-6),
        window_start_h=f32(0), window_len_h=f32(24), skip_day_prob=f32(0), utc_offset_h=f32(0),
    )


def test_client_times_arithmetic():
    fleet = _fleet(flops_per_s=[1e9, 2e9, 4e9], down_bps=[8e6, 16e6, 8e6], mem_cap_bytes=[1e9, 1e9, 1e3])
    plan = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=2)
    cost = plan_cost(SMALL, plan)
    ids = np.array([0, 1, 2])

    t = client_times(fleet, ids, [cost], np.zeros(3, dtype=np.int64), slowdown=np.array([1.0, 1.0, 3.0]))

    np.testing.assert_allclose(t.download_s, 0.5 + 8 * cost.bytes_down / np.array([8e6, 16e6, 8e6]))
    np.testing.assert_allclose(t.upload_s, 0.5 + 8 * cost.bytes_up / 8e5)
    np.testing.assert_allclose(t.compute_s, cost.flops / np.array([1e9, 2e9, 4e9]) * np.array([1, 1, 3]))
    np.testing.assert_allclose(t.total_s, t.download_s + t.compute_s + t.upload_s)
    assert t.oom.tolist() == [False, False, True]  # peak ~150 MB > 1 kB cap
    np.testing.assert_array_equal(t.bytes_up, cost.bytes_up)
    energy = t.energy_j(fleet, ids)
    np.testing.assert_allclose(energy, cost.flops * 1e-9 + cost.bytes_down * 1e-6 + cost.bytes_up * 2e-6, rtol=1e-6)


def test_client_times_with_several_plans():
    fleet = _fleet(n=4)
    p0 = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=1)
    p1 = p0.with_(local_steps=2)
    costs = [plan_cost(SMALL, p0), plan_cost(SMALL, p1)]

    t = client_times(fleet, np.arange(4), costs, np.array([0, 1, 1, 0]))

    np.testing.assert_allclose(t.flops, [costs[0].flops, costs[1].flops, costs[1].flops, costs[0].flops])
    np.testing.assert_allclose(t.compute_s[1], 2 * t.compute_s[0])


def test_oom_flag_is_strictly_greater():
    plan = ClientPlan.uniform(4, lora_rank=4, batch_size=4, seq_len=32, local_steps=1)
    cost = plan_cost(SMALL, plan)
    fleet = _fleet(n=2, mem_cap_bytes=[cost.peak_mem_bytes, cost.peak_mem_bytes - 1])

    t = client_times(fleet, np.arange(2), [cost], np.zeros(2, dtype=np.int64))

    assert t.oom.tolist() == [False, True]
