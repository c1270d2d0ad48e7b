"""What DropPEFT's configurator observes, against what an update adds to the round.

Usage::

    python benchmarks/diag_update_gains.py [--rounds 4] [--arm falling-0.5] [--seed 1]

Real training (MiniLM-L6, LoRA r8, 20news4 IID, seq 64, batch 16, 2 local steps, lr 3e-3,
as ``scenarios/configurator/minilm-iid.yaml``): each round 10 clients train from the
global model, 5 with every layer and 5 with the given dropout arm, and the round is
aggregated by per-layer FedAvg. For each update three measures of its worth, on the
same 300 test examples:

* ``alone``: the validation-loss drop when the update alone is applied at full strength
  (``TorchTrainer.update_gains``: what the configurator observes; its own 300 examples);
* ``share``: the drop when only the update's share of the aggregate is applied (its delta
  divided by the number of updates that trained each layer);
* ``leave-one-out``: how much the aggregate's loss rises without the update (the others
  re-averaged per layer);
* ``loo (configurator)``: the same measured by ``TorchTrainer.update_gains(...,
  measure="loo")``, what DropPEFT's configurator observes by default (the trainer's
  aggregation, per-layer FedAvg weighted by examples, on its own 300 examples): a check
  of the trainer against the computation here.

It prints each measure's mean over the full and the dropped updates, and their ratio: the
relative worth of the arm that each measure would teach the configurator.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--arm", default="falling-0.5", help="PROFILE-MEAN, e.g. falling-0.5, uniform-0.25")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)

    import torch

    from fedsim.core.plan import ClientPlan
    from fedsim.learning.real.config import DataSpec, ModelSpec, PartitionSpec, TrainSpec
    from fedsim.learning.real.evaluate import eval_indices, evaluate_model
    from fedsim.learning.real.trainer import TorchTrainer
    from fedsim.methods.stld_fixed import profile_ratios

    profile, mean = args.arm.rsplit("-", 1)
    spec = DataSpec(dataset="20news4", max_length=64, partition=PartitionSpec(scheme="iid"), eval_subsample=300)
    tr = TorchTrainer(spec, ModelSpec(name_or_path="minilm-l6", lora_rank=8, lora_alpha=16),
                      TrainSpec(lr=3e-3, threads=1), num_clients=1000, rng=np.random.default_rng(args.seed))
    base = ClientPlan.uniform(6, lora_rank=8, batch_size=16, seq_len=64, local_steps=2)
    drop = base.with_(drop_prob=tuple(float(x) for x in profile_ratios(6, float(mean), profile)), name=args.arm)
    rng = np.random.default_rng([args.seed, 1])
    idx = eval_indices(len(tr.data.test), 300, args.seed + 7)
    params = dict(tr.fm.model.named_parameters())

    def loss() -> float:
        return evaluate_model(tr.fm.model, tr.data.test, idx, 32).loss

    print(f"{args.rounds} rounds of 5 full + 5 {args.arm} updates; mean gain (loss drop) per measure\n")
    print("| round | loss before -> after | measure | full | dropped | dropped / full |")
    print("|---|---|---|---|---|---|")
    for rnd in range(args.rounds):
        ids = rng.choice(1000, 10, replace=False)
        res = tr.train(rnd, ids, [base] * 5 + [drop] * 5, rng.integers(0, 2**31, 10))
        alone = tr.update_gains(rnd, res, 300)
        loo = tr.update_gains(rnd, res, 300, measure="loo")
        names = sorted({n for r in res for n in r.delta})
        before = {n: params[n].detach().clone() for n in names}
        counts = {n: sum(n in r.delta for r in res) for n in names}  # updates that trained each tensor

        def applied(members: set[int]) -> float:
            """Loss with the per-layer average of ``members``' deltas (each layer over the
            members that trained it) added to the global model."""
            state = {}
            for n in names:
                ds = [torch.as_tensor(res[j].delta[n]) for j in sorted(members) if n in res[j].delta]
                state[n] = before[n] + sum(ds) / len(ds) if ds else before[n]
            tr.fm.load_state(state)
            value = loss()
            tr.fm.load_state(before)
            return value

        def share(i: int) -> float:
            tr.fm.load_state({n: before[n] + torch.as_tensor(res[i].delta[n]) / counts[n] for n in res[i].delta})
            value = loss()
            tr.fm.load_state(before)
            return value

        l0 = loss()
        everyone = set(range(10))
        full = applied(everyone)
        measures = {
            "alone": alone,
            "share": np.array([l0 - share(i) for i in range(10)]),
            "leave-one-out": np.array([applied(everyone - {i}) - full for i in range(10)]),
            "loo (configurator)": loo,
        }
        for name, g in measures.items():
            a, b = float(np.mean(g[:5])), float(np.mean(g[5:]))
            print(f"| {rnd} | {l0:.3f} -> {full:.3f} | {name} | {a:.4f} | {b:.4f} | {b / a:.2f} |", flush=True)
        tr.aggregate(rnd, res, None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
