"""fedsim.learning.reuse: the content-addressed cache, and runs that reuse training results."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsim.engine.records import read_summary
from fedsim.learning.reuse import MARKER, Digest, ReuseCache, clear_cache
from fedsim.study.scenario import load_scenario
from fedsim.study.simulate import simulate
from test_records import GOLDEN, golden_overrides

FILES = ("rounds.csv", "clients.csv")


# ---------------------------------------------------------------- the cache


def test_a_value_comes_back_under_its_key_and_counts_as_a_hit(tmp_path):
    cache = ReuseCache(tmp_path / "c", max_bytes=10**6)
    assert cache.get("ab" * 32) is None
    cache.put("ab" * 32, {"x": np.arange(3)})
    got = cache.get("ab" * 32)
    assert got["x"].tolist() == [0, 1, 2]
    assert cache.stats.as_dict() == {"hits": {"train": 1}, "misses": {"train": 1}}
    assert (tmp_path / "c" / MARKER).is_file() and not list((tmp_path / "c").glob("??/.tmp-*"))


def test_least_recently_used_entries_go_first_once_the_bound_is_passed(tmp_path):
    # Prepare: three entries of ~1 KB in a cache bounded to 2.5 KB; the first is read again
    cache = ReuseCache(tmp_path / "c", max_bytes=2500)
    blob = b"x" * 1000
    for i, key in enumerate(("aa" * 32, "bb" * 32)):
        cache.put(key, blob)
        os.utime(cache.path(key), (1000.0 + i, 1000.0 + i))
    assert cache.get("aa" * 32) == blob  # refreshed: now the most recent
    # Execute
    cache.put("cc" * 32, blob)
    # Assert: the least recently used ("bb") was removed
    assert cache.path("aa" * 32).exists() and cache.path("cc" * 32).exists()
    assert not cache.path("bb" * 32).exists()
    assert cache.size_bytes() <= 2500


def test_clear_empties_only_a_marked_cache(tmp_path):
    cache = ReuseCache(tmp_path / "c", max_bytes=10**6)
    cache.put("ab" * 32, b"123")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("mine")
    assert clear_cache(tmp_path / "c")[0] == 1 and cache.get("ab" * 32) is None
    with pytest.raises(ValueError, match="not a fedsim reuse cache"):
        clear_cache(tmp_path / "other")
    with pytest.raises(ValueError, match="not a fedsim reuse cache"):
        ReuseCache(tmp_path / "other", max_bytes=1)
    assert (tmp_path / "other" / "keep.txt").read_text() == "mine"


@settings(max_examples=30, deadline=None, derandomize=True, database=None)
@given(st.binary(max_size=200))
def test_a_damaged_entry_is_a_miss_never_an_error(tmp_path_factory, blob):
    cache = ReuseCache(tmp_path_factory.mktemp("c"), max_bytes=10**6)
    path = cache.path("cd" * 32)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(blob)
    try:
        got = cache.get("cd" * 32)
    except Exception as exc:  # pragma: no cover - the failure this test looks for
        pytest.fail(f"get raised {exc!r}")
    assert got is None or cache.stats.hits == {"train": 1}


def test_digest_tells_values_apart_by_bytes_dtype_and_name():
    t = torch.arange(4, dtype=torch.float32)
    base = Digest({"w": t}).hexdigest()
    assert Digest({"w": t.clone()}).hexdigest() == base
    assert Digest({"v": t}).hexdigest() != base
    assert Digest({"w": t.to(torch.float64)}).hexdigest() != base
    assert Digest({"w": t + torch.tensor([0, 0, 0, 1e-6])}).hexdigest() != base


# ---------------------------------------------------------------- runs that reuse


def _run(tmp: Path, out: Path, extra: list[str]) -> dict:
    (v,) = load_scenario(GOLDEN / "torch.yaml", overrides=golden_overrides("torch", tmp) + extra)
    simulate(v.scenario, out)
    return read_summary(out)


@pytest.mark.slow
def test_a_point_that_differs_only_in_timing_reuses_every_result_and_writes_the_same_records(tmp_path):
    # Prepare: the golden tiny-BERT run (Caesar: compressed downloads) and a point that
    # differs only in the server's time per round; the second point alone, without a cache
    cache = [f"train.reuse.cache_dir={tmp_path / 'reuse'}"]
    later = ["engine.server_overhead_s=7"]
    _run(tmp_path, tmp_path / "alone", later)
    # Execute: the first point fills the cache, the second reads it
    first = _run(tmp_path, tmp_path / "first", cache)
    second = _run(tmp_path, tmp_path / "second", cache + later)
    # Assert: the records are the bytes training every client gives
    for f in FILES:
        assert (tmp_path / "second" / f).read_bytes() == (tmp_path / "alone" / f).read_bytes(), f
    assert (tmp_path / "first" / "clients.csv").read_bytes() == (GOLDEN / "torch.clients.csv").read_bytes()
    assert first["reuse"]["hits"] == {} and first["reuse"]["misses"]["train"] > 0
    assert second["reuse"]["misses"] == {}
    assert second["reuse"]["hits"] == {"train": first["reuse"]["misses"]["train"], "eval": 3}
    assert (tmp_path / "first" / "clients.csv").read_bytes() != (tmp_path / "second" / "clients.csv").read_bytes()


@pytest.mark.slow
def test_a_point_that_changes_what_is_learnt_misses(tmp_path):
    cache = [f"train.reuse.cache_dir={tmp_path / 'reuse'}"]
    _run(tmp_path, tmp_path / "a", cache)
    b = _run(tmp_path, tmp_path / "b", cache + ["train.lr=0.004"])
    assert b["reuse"]["hits"] == {}


def test_fedsim_cache_clear_empties_a_cache_and_refuses_another_folder(tmp_path):
    from typer.testing import CliRunner

    from fedsim.cli import app

    cache = ReuseCache(tmp_path / "c", max_bytes=10**6)
    cache.put("ab" * 32, b"x" * 2048)
    (tmp_path / "other").mkdir()
    runner = CliRunner()
    ok = runner.invoke(app, ["cache", "clear", str(tmp_path / "c")])
    refused = runner.invoke(app, ["cache", "clear", str(tmp_path / "other")])
    assert ok.exit_code == 0 and "removed 1 entries" in ok.output and not cache.path("ab" * 32).exists()
    assert refused.exit_code == 2 and "not a fedsim reuse cache" in refused.output and "Traceback" not in refused.output


def test_validate_refuses_a_reuse_cache_that_is_somebody_elses_folder(tmp_path):
    from fedsim.core.errors import ConfigError

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    over = golden_overrides("torch", tmp_path) + [f"train.reuse.cache_dir={tmp_path / 'mine'}"]
    with pytest.raises(ConfigError, match="train.reuse.cache_dir"):
        load_scenario(GOLDEN / "torch.yaml", overrides=over)
    assert load_scenario(GOLDEN / "torch.yaml", overrides=over[:-1] + [f"train.reuse.cache_dir={tmp_path / 'new'}"])
