"""What one client is asked to do in one round.

A :class:`ClientPlan` is the contract between a method (which chooses it), the cost model
(which prices it) and the trainer (which executes it). Plans are frozen and hashable, so a
round with a thousand clients usually holds a handful of distinct plans; everything that
depends only on the plan is computed once per distinct plan (see :class:`RoundPlans`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

__all__ = ["ClientPlan", "RoundPlans", "draw_layers", "depth_weighted_keep"]


@dataclass(frozen=True)
class ClientPlan:
    """Local-training plan of one client for one round.

    Attributes:
        drop_prob: Per transformer layer, the probability that the layer is skipped at a
            local step (stochastic transformer layer dropout). ``0.0`` everywhere = no
            dropout. A skipped layer costs no forward or backward compute and holds no
            activations at that step.
        lora_rank: Per transformer layer, the LoRA rank of its adapted modules; ``0``
            means the layer carries no LoRA (LEGEND's depth control).
        lora_targets: Names of the adapted linear modules inside each layer, in the
            model family's own naming (``query``/``value`` for BERT).
        full_finetune: Train every weight instead of LoRA adapters.
        train_head: Train the classification head (pooler and classifier).
        batch_size: Examples per local step.
        seq_len: Tokens per example.
        local_steps: Optimiser steps per round.
        down_ratio: Fraction of the dense model bytes actually downloaded (1.0 = no
            compression).
        up_ratio: Fraction of the dense update bytes actually uploaded.
        personal_layers: Layers whose adapters the device keeps a personal copy of
            (personalized layer sharing): it trains from its copy and keeps the result.
        personal_head: Keep a personal copy of the classification head too.
        share_personal: The device has no personal copy yet (its first round with
            these layers): it starts them from the global model, keeps what it trains
            *and* sends it, so the global copies still learn from newcomers. When false,
            the personal layers (and head) are neither downloaded nor uploaded.
        lr: Local learning rate, or ``None`` for the scenario's ``train.lr`` (full
            fine-tuning wants a much smaller one than LoRA).
        name: Short label written to the records (e.g. the arm of a configurator).
    """

    drop_prob: tuple[float, ...]
    lora_rank: tuple[int, ...]
    lora_targets: tuple[str, ...] = ("query", "value")
    full_finetune: bool = False
    train_head: bool = True
    batch_size: int = 16
    seq_len: int = 128
    local_steps: int = 10
    down_ratio: float = 1.0
    up_ratio: float = 1.0
    personal_layers: tuple[int, ...] = ()
    personal_head: bool = False
    share_personal: bool = False
    lr: float | None = None
    name: str = field(default="", compare=True)

    def __post_init__(self) -> None:
        if len(self.drop_prob) != len(self.lora_rank):
            raise ValueError(
                f"ClientPlan: drop_prob has {len(self.drop_prob)} layers but lora_rank has "
                f"{len(self.lora_rank)}; both need one entry per transformer layer"
            )
        if any(not 0.0 <= p < 1.0 for p in self.drop_prob):
            raise ValueError(f"ClientPlan: drop_prob values must be in [0, 1), got {self.drop_prob}")
        if any(r < 0 for r in self.lora_rank):
            raise ValueError(f"ClientPlan: lora_rank values must be >= 0, got {self.lora_rank}")
        for name in ("batch_size", "seq_len", "local_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"ClientPlan: {name} must be >= 1, got {getattr(self, name)}")
        for name in ("down_ratio", "up_ratio"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"ClientPlan: {name} must be in (0, 1], got {getattr(self, name)}")

    @classmethod
    def uniform(
        cls, num_layers: int, *, drop_prob: float = 0.0, lora_rank: int = 8, **kwargs
    ) -> ClientPlan:
        """A plan with the same dropout probability and LoRA rank on every layer."""
        return cls(
            drop_prob=(float(drop_prob),) * num_layers,
            lora_rank=(int(lora_rank),) * num_layers,
            **kwargs,
        )

    @property
    def num_layers(self) -> int:
        return len(self.drop_prob)

    @property
    def keep_prob(self) -> np.ndarray:
        """Per-layer probability that the layer runs at a local step."""
        return 1.0 - np.asarray(self.drop_prob, dtype=float)

    @property
    def has_personal(self) -> bool:
        """Whether the device keeps personal copies of some layers or of the head."""
        return bool(self.personal_layers) or self.personal_head

    @property
    def mean_drop(self) -> float:
        return float(np.mean(self.drop_prob)) if self.drop_prob else 0.0

    def with_(self, **changes) -> ClientPlan:
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)


@dataclass
class RoundPlans:
    """Plans of all selected clients of a round, stored as distinct plans plus an index.

    ``plans[index[i]]`` is the plan of the i-th selected client. Methods that give every
    client the same plan return one plan and an index of zeros. ``dispatch`` (where the
    round's context allows it: ``RoundContext.may_leave_out``) says which selected clients
    are asked to train; the others are left out of the round (``None``: every one).
    ``quota`` (synchronous rounds): the updates the method asks the round to wait for,
    fewer than the scenario's if it judges a shorter round to make faster progress
    (``None``: the scenario's; the engine never waits for more than that).
    """

    plans: list[ClientPlan]
    index: np.ndarray
    dispatch: np.ndarray | None = None
    quota: int | None = None

    def __post_init__(self) -> None:
        self.index = np.asarray(self.index, dtype=np.int64)
        if self.index.size and (self.index.min() < 0 or self.index.max() >= len(self.plans)):
            raise ValueError("RoundPlans.index refers to a plan that does not exist")
        if self.dispatch is not None:
            self.dispatch = np.asarray(self.dispatch, dtype=bool)
            if self.dispatch.shape != self.index.shape:
                raise ValueError(f"RoundPlans.dispatch has {self.dispatch.size} entries for {self.index.size} clients")
            if self.index.size and not self.dispatch.any():
                raise ValueError("RoundPlans.dispatch leaves every client out; a round needs at least one")
        if self.quota is not None and int(self.quota) < 1:
            raise ValueError(f"RoundPlans.quota must be at least 1 update, got {self.quota}")

    @property
    def left_out(self) -> int:
        """Selected clients the method left out of the round."""
        return 0 if self.dispatch is None else int(np.count_nonzero(~self.dispatch))

    def dispatched(self) -> RoundPlans:
        """The plans of the clients asked to train only (every one's where none is left out)."""
        if self.dispatch is None:
            return self
        if self.dispatch.all():
            return RoundPlans(self.plans, self.index, quota=self.quota)
        used, index = np.unique(self.index[self.dispatch], return_inverse=True)
        return RoundPlans([self.plans[k] for k in used], index.reshape(-1), quota=self.quota)

    @classmethod
    def same(cls, plan: ClientPlan, n_clients: int) -> RoundPlans:
        return cls([plan], np.zeros(n_clients, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.index.size)

    def __getitem__(self, i: int) -> ClientPlan:
        return self.plans[int(self.index[i])]

    def regroup(self, change: Callable[[int, ClientPlan], ClientPlan]) -> RoundPlans:
        """``change(i, plan_i)`` applied to every client's plan, equal results grouped again."""
        distinct: dict[ClientPlan, int] = {}
        index = np.empty(len(self), dtype=np.int64)
        for i in range(len(self)):
            index[i] = distinct.setdefault(change(i, self[i]), len(distinct))
        return RoundPlans(list(distinct), index, self.dispatch, self.quota)


def draw_layers(keep_prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Which layers run at one local step: a boolean mask with ``P(mask[l]) = keep_prob[l]``.

    Systematic sampling: lay the keep probabilities end to end on a line, drop a comb of
    unit-spaced teeth at a uniform random offset, and keep the layers the teeth land in.
    Each layer runs with exactly its keep probability (as with independent coin flips),
    but a step runs ``floor`` or ``ceil`` of the expected number of layers, never more:
    a device's peak activation memory is bounded by the plan, which is what lets the
    cost model promise a plan fits in a memory cap. It also spreads the dropped layers
    along the depth instead of clustering them.
    """
    keep_prob = np.asarray(keep_prob, dtype=float)
    edges = np.concatenate(([0.0], np.cumsum(keep_prob)))
    offset = rng.random()
    # Layer l is kept if a tooth offset + k falls in [edges[l], edges[l+1]).
    first_tooth = np.ceil(edges[:-1] - offset)
    return first_tooth + offset < edges[1:]


def depth_weighted_keep(keep_prob: np.ndarray, depth_exponent: float) -> float:
    """Share of the network a plan runs, with layer ``l`` (0 = nearest the input) weighted
    ``(l + 1) ** depth_exponent``: 0 gives the plain mean keep ratio; larger values say
    the layers near the output matter more (on MiniLM-L6, dropping deep layers costs far
    more accuracy than dropping shallow ones; docs/droppeft.md).
    """
    keep_prob = np.asarray(keep_prob, dtype=float)
    w = (np.arange(keep_prob.size) + 1.0) ** float(depth_exponent)
    return float(w @ keep_prob / w.sum())
