"""Run records against stored golden files: the same seed writes the same bytes.

``tests/data/golden/<name>.yaml`` are small scenarios that between them produce every
client outcome (ok, oom, dropout, straggler, surplus), per-client plans, server overhead
and real training of the tiny BERT. Their records are stored beside them; a change that
alters a byte of them fails here. After a deliberate change of the records, rewrite them
with ``FEDSIM_REGEN_GOLDEN=1 pytest tests/test_records.py`` and say why in the commit.
"""

from __future__ import annotations

import csv
import os
import shutil
from pathlib import Path

import pytest

from fedsim.engine.records import ROUND_COLUMNS, read_summary
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate
from test_training_trainer import _synthetic_csv

GOLDEN = Path(__file__).parent / "data" / "golden"
REGEN = os.environ.get("FEDSIM_REGEN_GOLDEN") == "1"
FILES = ("rounds.csv", "clients.csv")
# Real training: values a different CPU may round differently in the last digits.
FLOAT_COLUMNS = ("accuracy", "loss", "personal_accuracy", "train_loss")


def golden_overrides(name: str, tmp: Path) -> list[str]:
    """The overrides a golden scenario needs at run time (the torch one's data file)."""
    if name != "torch":
        return []
    data = _synthetic_csv(tmp / "syn.csv")
    return [f"data.train_file={data}", f"data.cache_dir={tmp / 'cache'}"]


def run_golden(name: str, out: Path, tmp: Path) -> None:
    (v,) = load_scenario(GOLDEN / f"{name}.yaml", overrides=golden_overrides(name, tmp))
    simulate(v.scenario, out)


def _regen(name: str, run: Path) -> None:
    for f in FILES:
        shutil.copy(run / f, GOLDEN / f"{name}.{f}")


@pytest.mark.parametrize("name", ["faults", "caesar"])
def test_surrogate_records_are_byte_identical_to_golden(name, tmp_path):
    run_golden(name, tmp_path / "run", tmp_path)

    if REGEN:
        _regen(name, tmp_path / "run")
    for f in FILES:
        assert (tmp_path / "run" / f).read_bytes() == (GOLDEN / f"{name}.{f}").read_bytes(), f
    assert read_summary(tmp_path / "run")["status"] == "ok"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.slow
def test_torch_records_match_golden(tmp_path):
    run_golden("torch", tmp_path / "run", tmp_path)

    if REGEN:
        _regen("torch", tmp_path / "run")
    run = tmp_path / "run"
    assert (run / "clients.csv").read_bytes() == (GOLDEN / "torch.clients.csv").read_bytes()
    got, want = _rows(run / "rounds.csv"), _rows(GOLDEN / "torch.rounds.csv")
    assert len(got) == len(want) == 3
    for g, w in zip(got, want):
        assert {k: g[k] for k in ROUND_COLUMNS if k not in FLOAT_COLUMNS} == {k: w[k] for k in ROUND_COLUMNS if k not in FLOAT_COLUMNS}
        for k in FLOAT_COLUMNS:
            assert (g[k] == "") == (w[k] == "")
            if w[k]:
                assert float(g[k]) == pytest.approx(float(w[k]), rel=1e-6, abs=1e-9), k
