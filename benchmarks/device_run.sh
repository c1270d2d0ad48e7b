#!/usr/bin/env bash
# Run a fedsim command on a bare, offline GPU host from a copy of the repository that
# carries .devbundle/ (built here by `python benchmarks/device_bundle.py`), then pack the
# run records into $OUT.
#
#   bash benchmarks/device_run.sh python3 benchmarks/bench_droppeft.py --jobs 16 \
#       --set train.device=cuda --out runs/gpu/bench_droppeft
#
# Steps: (1) install the bundled wheels into /tmp/site (no index, no dependencies) and
# record the host, GPU and package versions in $OUT/env.txt; (2) point fedsim at the
# bundled model ($FEDSIM_MODEL_DIR_MINILM_L6, float16 weights loaded as float32) and data
# ($FEDSIM_ORANGE_DATASETS, .tab.gz read as is; nothing is unpacked), and tokenise the
# data sets in $DEVRUN_WARM once, so parallel workers all hit the cache, then time one
# client and one evaluation on the GPU (DEVRUN_SMOKE=0 skips it); (3) run the
# command under `timeout $DEVRUN_TIMEOUT_S` (default 480 s, so packing still happens inside
# a 600 s call; the benchmarks resume, so a rerun continues); (4) pack every run record
# under $DEVRUN_RUNS (default runs/) into $OUT/runs.tar.gz (also every minute while the
# command runs), with the log in $OUT/run.log and versions in $OUT/env.txt.
# Unpack here with `python benchmarks/device_bundle.py unpack <files_at>/runs.tar.gz`.
#
# Knobs: DEVRUN_SKIP_INSTALL=1 (use the current interpreter's packages: local rehearsal),
# DEVRUN_SMOKE (1), DEVRUN_PYTHON (python3), DEVRUN_WARM ("20news4:64"; "" for none; e.g. "20news4:64 r8:64"),
# DEVRUN_TIMEOUT_S (480), DEVRUN_RUNS (runs; the archive's paths start with it, or with its
# last part when it is absolute), DEVRUN_BUNDLE (.devbundle), OUT (required; where results go).
set -uo pipefail

: "${OUT:?set OUT to the folder whose files come back}"
OUT="$(mkdir -p "$OUT" && cd "$OUT" && pwd)"
cd "$(dirname "$0")/.."
BUNDLE="${DEVRUN_BUNDLE:-$PWD/.devbundle}"
PY="${DEVRUN_PYTHON:-python3}"
LOG="$OUT/run.log"
log() { echo "[device_run $(date -u +%H:%M:%S)] $*" | tee -a "$LOG" >&2; }

if [ ! -d "$BUNDLE/model/minilm-l6" ] || [ ! -d "$BUNDLE/data" ]; then
    log "no $BUNDLE (model/ and data/): build it with 'python benchmarks/device_bundle.py' and carry .devbundle"
    exit 2
fi

if [ "${DEVRUN_SKIP_INSTALL:-0}" != 1 ]; then
    if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
        --target /tmp/site "$BUNDLE"/whl/*.whl >>"$LOG" 2>&1; then
        # No pip (or it failed): a wheel is a zip whose contents import as they are.
        log "pip install failed (see run.log); unzipping the wheels into /tmp/site instead"
        for w in "$BUNDLE"/whl/*.whl; do "$PY" -m zipfile -e "$w" /tmp/site || { log "cannot unzip $w"; exit 3; }; done
    fi
    export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export FEDSIM_MODEL_DIR_MINILM_L6="$BUNDLE/model/minilm-l6"
export FEDSIM_ORANGE_DATASETS="$BUNDLE/data"
export FEDSIM_CACHE="${FEDSIM_CACHE:-/tmp/fedsim-cache}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Keep the returned output tail for the results: no per-run weight-loading reports or bars.
export TRANSFORMERS_VERBOSITY="${TRANSFORMERS_VERBOSITY:-error}" HF_HUB_DISABLE_PROGRESS_BARS=1

{
    echo "host: $(hostname) $(nproc) cpus; $("$PY" --version 2>&1)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    "$PY" -c 'import torch, transformers, peft, pydantic, simpy, numpy; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(), "| transformers", transformers.__version__, "| peft", peft.__version__, "| pydantic", pydantic.VERSION, "| simpy", simpy.__version__, "| numpy", numpy.__version__)'
} >"$OUT/env.txt" 2>&1 || { cat "$OUT/env.txt" >&2; log "environment check failed (env.txt)"; exit 4; }
cat "$OUT/env.txt" | tee -a "$LOG" >&2

smoke="${DEVRUN_SMOKE:-1}"
for item in ${DEVRUN_WARM-20news4:64}; do
    log "tokenising ${item%%:*} at max_length ${item##*:} once"
    "$PY" - "${item%%:*}" "${item##*:}" "$smoke" 2>&1 <<'EOF' | tee -a "$LOG" >&2 || log "warm-up of $item failed; the runs tokenise themselves"
import sys
import time

from fedsim.learning.real.config import DataSpec, ModelSpec
from fedsim.learning.real.data import load_data, tokenizer_identity
from fedsim.learning.real.model import load_tokenizer

dataset, max_length, smoke = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
tok, name = load_tokenizer(ModelSpec())
data = load_data(DataSpec(dataset=dataset, max_length=max_length), tok, tokenizer_identity(tok, name))
print(f"{dataset}: {len(data.train)} train / {len(data.test)} test, {data.num_labels} labels")
if smoke:  # one MiniLM client (2 steps of 16 x seq 64) and one 300-example evaluation, timed
    import numpy as np
    import torch

    from fedsim.core.plan import ClientPlan
    from fedsim.learning.real.config import TrainSpec
    from fedsim.learning.real.evaluate import evaluate_model
    from fedsim.learning.real.local import train_client
    from fedsim.learning.real.model import build_model, resolve_device

    torch.set_num_threads(1)
    device = resolve_device("auto")
    t0 = time.perf_counter()
    fm = build_model(ModelSpec(), data.num_labels, seed=0, device=device)
    built = time.perf_counter() - t0
    plan = ClientPlan.uniform(fm.num_layers, lora_rank=8, batch_size=16, seq_len=64, local_steps=2)
    times = []
    for seed in range(6):
        t0 = time.perf_counter()
        res = train_client(fm, data.train, np.arange(seed * 16, seed * 16 + 40), plan, TrainSpec(lr=3e-3), seed=seed)
        times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ev = evaluate_model(fm.model, data.test, np.arange(300), 64)
    print(f"smoke on {device}: model built in {built:.1f} s; one client (2 steps) {np.median(times[1:]) * 1e3:.0f} ms "
          f"(first {times[0] * 1e3:.0f} ms); 300-example evaluation {(time.perf_counter() - t0) * 1e3:.0f} ms "
          f"(accuracy {ev.accuracy:.3f}, untrained head); loss {res.train_loss:.3f}")
EOF
    smoke=0
done

RUNS="${DEVRUN_RUNS:-runs}"
base=.; rel="$RUNS"
case "$RUNS" in /*) base="$(dirname "$RUNS")"; rel="$(basename "$RUNS")";; esac
pack() {  # every run record so far into $OUT/runs.tar.gz, replaced whole (never half written)
    [ -d "$RUNS" ] || return 0
    (cd "$base" && find "$rel" -type f \( -name summary.json -o -name config.yaml -o -name scenario.yaml -o -name gains.jsonl \
        -o -name rounds.csv -o -name clients.csv \) -print0 | sort -z \
        | tar --null -czf "$OUT/runs.tar.gz.part" -T -) && mv -f "$OUT/runs.tar.gz.part" "$OUT/runs.tar.gz"
}

# Packed every minute as well: if the device call is cut short, what is in $OUT still comes back.
( trap 'kill "$nap" 2>/dev/null; exit 0' TERM; while :; do sleep 60 & nap=$!; wait "$nap"; pack; done ) &
packer=$!
log "running: $*"
start=$(date +%s)
timeout --kill-after=20 "${DEVRUN_TIMEOUT_S:-480}" "$@" 2>&1 | tee -a "$LOG"
rc=${PIPESTATUS[0]}
log "command exited with $rc after $(( $(date +%s) - start )) s (124: stopped by DEVRUN_TIMEOUT_S)"
kill "$packer" 2>/dev/null
wait "$packer" 2>/dev/null

if pack && [ -f "$OUT/runs.tar.gz" ]; then
    log "packed $(tar -tzf "$OUT/runs.tar.gz" | wc -l) files of $(tar -tzf "$OUT/runs.tar.gz" | grep -c summary.json) runs into \$OUT/runs.tar.gz ($(du -h "$OUT/runs.tar.gz" | cut -f1))"
else
    log "no run records under $RUNS: nothing packed"
fi
exit "$rc"
