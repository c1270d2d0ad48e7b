"""Stochastic layer dropout: exact forward with all layers, skipped layers get nothing."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from fedsim.core.plan import ClientPlan
from fedsim.learning.real.config import ModelSpec, TrainSpec
from fedsim.learning.real.data import TokenizedSplit
from fedsim.learning.real.local import train_client
from fedsim.learning.real.model import build_model, find_layers, layer_of
from fedsim.learning.real.stld import draw_schedule, exact_schedule, kept_layers


def _tiny_config(family: str):
    from transformers import BertConfig, DistilBertConfig, MPNetConfig, RobertaConfig

    common = dict(vocab_size=120, num_labels=3)
    if family == "bert":
        return BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                          max_position_embeddings=64, **common)
    if family == "roberta":
        return RobertaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                             max_position_embeddings=66, pad_token_id=1, **common)
    if family == "distilbert":
        return DistilBertConfig(dim=32, n_layers=3, n_heads=2, hidden_dim=64, max_position_embeddings=64, **common)
    return MPNetConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64,
                       max_position_embeddings=66, pad_token_id=1, **common)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One torch thread: tiny models gain nothing from two, which stall when the CPU is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


FAMILIES = ["bert", "roberta", "distilbert", "mpnet"]
TARGETS = {"bert": ("query", "value"), "roberta": ("query", "value"), "distilbert": ("q_lin", "v_lin"),
           "mpnet": ("q", "v")}


@pytest.fixture(scope="module", params=FAMILIES)
def family_model(request, tmp_path_factory):
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    stock = AutoModelForSequenceClassification.from_config(_tiny_config(request.param))
    path = tmp_path_factory.mktemp(request.param)
    stock.save_pretrained(path)
    fm = build_model(ModelSpec(name_or_path=str(path), lora_rank=4), num_labels=3, seed=1)
    return request.param, fm


def _inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 120, (3, 10), generator=g)
    mask = torch.ones_like(ids)
    mask[1, 7:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_family_model_has_lora_on_every_layer_and_a_trainable_head(family_model):
    # Prepare
    family, fm = family_model
    # Execute
    lora_layers = {layer_of(n) for n in fm.base_trainable if "lora_" in n}
    head = [n for n in fm.base_trainable if layer_of(n) is None]
    # Assert
    assert fm.num_layers == 3 and lora_layers == {0, 1, 2}
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[1] for n in fm.base_trainable if "lora_" in n}
    assert adapted == set(TARGETS[family]) and fm.lora_targets == TARGETS[family]
    assert head and all("lora_" not in n for n in head)
    frozen = [n for n, p in fm.model.named_parameters() if not p.requires_grad]
    assert any("embeddings" in n for n in frozen)


def test_all_layers_kept_equals_stock_forward_exactly(family_model):
    # Prepare
    _, fm = family_model
    fm.model.eval()
    # Execute
    with torch.no_grad():
        stock = fm.model(**_inputs()).logits
        with kept_layers(fm.model, np.ones(3, dtype=bool)):
            swapped = fm.model(**_inputs()).logits
    fm.model.train()
    # Assert
    assert torch.equal(stock, swapped)


def test_skipping_layers_equals_a_model_built_without_them(family_model):
    # Prepare: reference = a deep copy whose layer list physically lacks layer 1
    _, fm = family_model
    reference = copy.deepcopy(fm.model).eval()
    parent, attr, layers = find_layers(reference)
    setattr(parent, attr, torch.nn.ModuleList([layers[0], layers[2]]))
    fm.model.eval()
    # Execute
    with torch.no_grad():
        with kept_layers(fm.model, np.array([True, False, True])):
            skipped = fm.model(**_inputs(1)).logits
        expected = reference(**_inputs(1)).logits
        full = fm.model(**_inputs(1)).logits
    fm.model.train()
    # Assert: identical to the reference, and the model is whole again afterwards
    assert torch.equal(skipped, expected)
    assert not torch.equal(skipped, full)
    assert len(find_layers(fm.model)[2]) == 3


def test_skipped_layers_receive_no_gradient(family_model):
    # Prepare
    _, fm = family_model
    fm.model.zero_grad(set_to_none=True)
    # Execute
    with kept_layers(fm.model, np.array([False, True, False])):
        out = fm.model(**_inputs(), labels=torch.tensor([0, 1, 2]))
    out.loss.backward()
    # Assert
    grads = {n: p.grad for n, p in fm.model.named_parameters() if p.requires_grad}
    for name, grad in grads.items():
        layer = layer_of(name)
        if layer in (0, 2):
            assert grad is None, name
        elif layer == 1 and "lora_A" in name:
            assert grad is not None, name
    fm.model.zero_grad(set_to_none=True)


def _toy_split(n: int = 32, length: int = 12, vocab: int = 120, seed: int = 0) -> TokenizedSplit:
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, vocab, size=(n, length)).astype(np.int16)
    return TokenizedSplit(ids, np.full(n, length, dtype=np.int16), rng.integers(0, 3, size=n), pad_id=0)


def test_layer_steps_match_the_drawn_schedule_and_undrawn_layers_are_left_out():
    # Prepare: find a seed whose schedule never runs layer 1 but runs the others
    fm = build_model(ModelSpec(name_or_path="tiny-bert", lora_rank=4), num_labels=3, seed=0, vocab_size=120)
    plan = ClientPlan(drop_prob=(0.2, 0.9, 0.3, 0.0), lora_rank=(4, 4, 4, 4), batch_size=4, local_steps=3)
    seed = next(s for s in range(1000)
                if (lambda c: c[1] == 0 and (c > 0).sum() == 3)(
                    draw_schedule(plan.drop_prob, 3, np.random.default_rng(s)).sum(0)))
    before = fm.trainable_state()
    # Execute
    result = train_client(fm, _toy_split(), np.arange(32), plan, TrainSpec(lr=1e-2), seed=seed)
    # Assert
    expected = draw_schedule(plan.drop_prob, 3, np.random.default_rng(seed)).sum(0)
    assert np.array_equal(result.layer_steps, expected)
    assert not any(layer_of(n) == 1 for n in result.delta)
    assert any(layer_of(n) == 0 for n in result.delta) and "classifier.weight" in result.delta
    assert result.grad_norms[1] == 0 and (result.grad_norms[[0, 2, 3]] > 0).all()
    after = fm.trainable_state()
    assert all(torch.equal(before[n], after[n]) for n in before)  # global state restored


def test_reduced_and_zero_ranks_are_masked():
    # Prepare
    fm = build_model(ModelSpec(name_or_path="tiny-bert", lora_rank=4), num_labels=3, seed=0, vocab_size=120)
    plan = ClientPlan(drop_prob=(0.0,) * 4, lora_rank=(4, 2, 0, 4), batch_size=4, local_steps=2)
    # Execute
    result = train_client(fm, _toy_split(), np.arange(32), plan, TrainSpec(lr=1e-2), seed=3)
    # Assert
    assert not any(layer_of(n) == 2 for n in result.delta)
    a1 = result.delta["bert.encoder.layer.1.attention.self.query.lora_A.default.weight"]
    b1 = result.delta["bert.encoder.layer.1.attention.self.query.lora_B.default.weight"]
    assert a1[2:].abs().sum() == 0 and a1[:2].abs().sum() > 0
    assert b1[:, 2:].abs().sum() == 0 and b1[:, :2].abs().sum() > 0


def test_exact_schedule_has_the_requested_mean_ratio():
    # Execute
    kept = exact_schedule(6, 0.25, 8, np.random.default_rng(0))
    # Assert
    assert (~kept).sum() == 12
    assert set((~kept).sum(1).tolist()) <= {1, 2}


def test_a_plan_that_trains_nothing_returns_an_empty_delta():
    # Prepare
    fm = build_model(ModelSpec(name_or_path="tiny-bert", lora_rank=4), num_labels=3, seed=0, vocab_size=120)
    plan = ClientPlan(drop_prob=(0.5,) * 4, lora_rank=(0,) * 4, train_head=False, batch_size=4, local_steps=2)
    # Execute
    result = train_client(fm, _toy_split(), np.arange(32), plan, TrainSpec(), seed=0)
    # Assert
    assert result.delta == {} and np.isfinite(result.train_loss)
    assert all(p.requires_grad == (n in fm.base_trainable) for n, p in fm.model.named_parameters())


def test_loading_a_model_without_its_head_prints_no_load_report(tmp_path, capfd):
    # Prepare: an encoder saved without a classification head (as MiniLM is)
    import logging

    from transformers import BertModel

    BertModel(_tiny_config("bert")).save_pretrained(tmp_path)
    level = logging.getLogger("transformers").level
    # Execute
    build_model(ModelSpec(name_or_path=str(tmp_path), lora_rank=2), num_labels=3, seed=1)
    # Assert: nothing about the new head, and the library's logging as it was
    out, err = capfd.readouterr()
    assert "MISSING" not in out + err and "LOAD REPORT" not in out + err and "Loading weights" not in out + err
    assert logging.getLogger("transformers").level == level
