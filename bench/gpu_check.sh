#!/usr/bin/env bash
# The GPU check, on a CUDA machine without network, in under 8 minutes: install what is missing from
# the wheels beside the checkout (bench/gpu_wheels.sh prepares them), import the small built-in model for
# CUDA (fp16), run the load benchmark at 1, 16 and 64 concurrent conversations, print the table and the
# batch-1 decode speed against the memory-bandwidth bound.
#   bench/gpu_check.sh [WHEELS_DIR]     (default: ../wheels)
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=${1:-../wheels}
SITE=${PARLEY_GPU_SITE:-/tmp/parley-site}
OUT=${OUT:-/tmp/parley-gpu-bench}
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD:$SITE${PYTHONPATH:+:$PYTHONPATH}"
export PARLEY_DATA_DIR=${PARLEY_DATA_DIR:-/tmp/parley-data}
start=$SECONDS
step() { echo "[gpu_check +$((SECONDS - start))s] $*"; }

step "installing from $WHEELS into $SITE"
"$PY" -m pip install --quiet --no-index --no-deps --target "$SITE" "$WHEELS"/*.whl
"$PY" - <<'PY'
import onnxruntime as ort
ort.preload_dlls()  # CUDA and cuDNN from the image's nvidia-* packages
assert "CUDAExecutionProvider" in ort.get_available_providers(), ort.get_available_providers()
print("onnxruntime", ort.__version__, ort.get_available_providers())
PY

step "importing the small built-in model (SmolLM2-135M) for CUDA (fp16)"
"$PY" -m bots.cli model import builtin:smollm2 --device cuda --precision fp16 --name smollm2-135m --force

step "load benchmark (1, 16, 64 conversations)"
mkdir -p "$OUT"
"$PY" -c 'import onnxruntime as o, sys; o.preload_dlls(); from bench.load import main; sys.exit(main())' \
    --device cuda --rows 64 --concurrency 1 16 64 --out "$OUT"

step "batch-1 decode against the memory-bandwidth bound"
OUT="$OUT" "$PY" - <<'PY'
import json, os, pathlib, time
import torch
from engine.runtime.settings import load_settings

load = json.loads((pathlib.Path(os.environ["OUT"]) / "results.json").read_text())["load"]
tok_s = load["sweep"]["1"]["one-at-a-time"]["decode_tok_s_p50"]
folder = load_settings().models_path / "smollm2-135m"
weights = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))
# What the card really streams: a large device-to-device copy reads and writes every byte once.
x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
y = torch.empty_like(x)
y.copy_(x); torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(20):
    y.copy_(x)
torch.cuda.synchronize()
bandwidth = 2 * 20 * x.numel() / (time.perf_counter() - t)
bound = bandwidth / weights
print(f"{torch.cuda.get_device_name()}: copy bandwidth {bandwidth / 1e9:.0f} GB/s, weights {weights / 1e6:.0f} MB "
      f"read per token -> bound {bound:.0f} tok/s; batch-1 decode {tok_s:.0f} tok/s = {tok_s / bound:.1%} of it")
PY
step "done"
