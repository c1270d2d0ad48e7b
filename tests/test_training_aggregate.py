"""FedAvg per layer on hand-made deltas."""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedsim.learning.base import ClientResult
from fedsim.learning.real.aggregate import fedavg_per_layer

L0 = "bert.encoder.layer.0.attention.self.query.lora_A.default.weight"
L1 = "bert.encoder.layer.1.attention.self.query.lora_A.default.weight"
L2 = "bert.encoder.layer.2.attention.self.query.lora_A.default.weight"
HEAD = "classifier.weight"


def _result(cid: int, n: int, steps: list[int], delta: dict) -> ClientResult:
    return ClientResult(client_id=cid, num_examples=n, layer_steps=np.array(steps), train_loss=0.0,
                        grad_norms=np.zeros(len(steps)), delta=delta)


def test_layers_average_over_the_clients_that_ran_them_weighted_by_examples():
    # Prepare
    glob = {L0: np.zeros(2), L1: np.ones(2), L2: np.full(2, 5.0), HEAD: np.zeros(2)}
    a = _result(0, 1, [2, 0, 0], {L0: np.array([4.0, 4.0]), L1: np.array([9.0, 9.0]), HEAD: np.array([4.0, 0.0])})
    b = _result(1, 3, [1, 3, 0], {L0: np.array([0.0, 8.0]), L1: np.array([2.0, -2.0]), HEAD: np.array([0.0, 4.0])})
    # Execute
    new = fedavg_per_layer(glob, [a, b])
    # Assert
    np.testing.assert_allclose(new[L0], [1.0, 7.0])        # (1*4 + 3*0)/4, (1*4 + 3*8)/4
    np.testing.assert_allclose(new[L1], [3.0, -1.0])       # only b ran layer 1: 1 + b's delta
    np.testing.assert_allclose(new[L2], [5.0, 5.0])        # nobody trained layer 2
    np.testing.assert_allclose(new[HEAD], [1.0, 3.0])      # head over every client
    np.testing.assert_allclose(glob[L1], [1.0, 1.0])       # input untouched


def test_missing_names_and_empty_results_leave_state_unchanged():
    # Prepare
    glob = {L0: torch.zeros(3), HEAD: torch.ones(3)}
    a = _result(0, 5, [1, 1, 1], {HEAD: torch.full((3,), 2.0)})
    # Execute
    new = fedavg_per_layer(glob, [a])
    same = fedavg_per_layer(glob, [])
    # Assert
    assert torch.equal(new[L0], glob[L0]) and torch.equal(new[HEAD], torch.full((3,), 3.0))
    assert all(torch.equal(same[k], glob[k]) for k in glob)


def test_custom_layer_mapping_via_partial():
    # Prepare: map every parameter to layer 0 so b (which skipped layer 0) is excluded from the head too
    glob = {HEAD: np.zeros(1)}
    a = _result(0, 1, [1], {HEAD: np.array([2.0])})
    b = _result(1, 1, [0], {HEAD: np.array([8.0])})
    fn = functools.partial(fedavg_per_layer, layer_of=lambda name: 0)
    # Execute
    new = fn(glob, [a, b])
    # Assert
    np.testing.assert_allclose(new[HEAD], [2.0])


def test_is_finite_checks_every_tensor_of_an_update():
    from fedsim.learning.base import ClientResult, is_finite

    def result(*values):
        return ClientResult(0, 1, np.ones(1), 0.0, np.zeros(1), delta={f"p{i}": v for i, v in enumerate(values)})

    assert is_finite(result(torch.ones(3), torch.zeros(2, 2)))
    assert not is_finite(result(torch.ones(3), torch.tensor([1.0, float("nan")])))
    assert not is_finite(result(torch.tensor([float("-inf")])))
    assert is_finite(ClientResult(0, 1, np.ones(1), 0.0, np.zeros(1)))  # the surrogate sends no delta
