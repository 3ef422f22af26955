"""`parley model import`: GGUF file, Hugging Face folder or hub id -> a self-contained ONNX model folder.

The conversion tools (onnx, torch, transformers, gguf, onnxruntime-genai's builder) are the optional
``convert`` extra. This module needs none of them to be imported (they load inside functions, after
``require_tools``), so serving can reach it for the first-use import of the built-in model.

Pipeline: source -> HF folder (a GGUF is loaded and dequantised by transformers, then saved with its
quantizer cleared) -> the builder writes model.onnx + tokenizer + chat template -> optional re-packing
-> the model's sampling defaults (generation_config.json) -> manifest with checksums -> atomic rename
into the models folder.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from engine.errors import ModelError
from engine.model.catalog import (
    BUILTINS,
    DEFAULT_PRECISION,
    SOURCES_DIR,
    Progress,
    builtin_gguf,
    builtin_precision,
    find_builtin,
    stderr_progress,
)
from engine.model.registry import ModelInfo, read_model_info, write_manifest

log = logging.getLogger(__name__)

# precision -> what the builder is asked for; None: written straight from the GGUF (gguf_onnx.py)
PRECISIONS: dict[str, str | None] = {
    "gguf": None,  # the GGUF's own blocks as they are, int8 activations: llama.cpp's arithmetic (CPU)
    "gguf-exact": None,  # the same blocks with fp32 activations where the kernels allow: the fp32 result
    "fp32": "fp32",
    "fp16": "fp16",  # CUDA
    "int8": "int8",
    "int4": "int4",
}
DIRECT = ("gguf", "gguf-exact")
# A GGUF's own sampling defaults (llama.cpp's `general.sampling.*` keys) under transformers' names.
GGUF_SAMPLING = {
    "general.sampling.temp": "temperature",
    "general.sampling.top_p": "top_p",
    "general.sampling.top_k": "top_k",
    "general.sampling.penalty_repeat": "repetition_penalty",
}
GENERATION_CONFIG = "generation_config.json"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
# Imported only once an import actually runs; each is a module of the `convert` extra.
TOOLS = ("onnx", "torch", "transformers", "onnxruntime_genai", "gguf", "onnx_ir")


def _direct_refusal(gguf: Path) -> str | None:
    """Why ``gguf`` cannot be written directly from its blocks (None: it can)."""
    from engine.model.convert.gguf_onnx import buildable

    return buildable(gguf)


def require_tools() -> None:
    """One line naming what is missing and how to install it, instead of an ImportError's traceback."""
    missing = [m for m in TOOLS if not _has(m)]
    if missing:
        raise ModelError(
            f"importing a model needs the conversion tools ({', '.join(missing)} missing): "
            "pip install 'parley[convert]'"
        )


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in {"1", "true", "yes"}:
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_progress_bars() -> Iterator[None]:
    # transformers and the builder draw tqdm bars per tensor; our own progress lines say enough.
    old = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = old


def _gguf_tokenizer(gguf: Path, out: Path) -> None:
    """tokenizer.json, tokenizer_config.json and chat_template.jinja from the GGUF's metadata."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if not tokenizer.chat_template:
        raise ModelError(f"{gguf.name} carries no chat template; Parley needs one to talk to the model")
    tokenizer.save_pretrained(str(out))


def _write_direct(gguf: Path, out: Path, precision: str) -> None:
    from tqdm import tqdm

    from engine.model.convert.gguf_onnx import total_bytes, write_onnx

    # One updating line with a rate and an ETA on a terminal; nothing when stderr is not one.
    with tqdm(
        total=total_bytes(gguf), unit="B", unit_scale=True, desc="weights", file=sys.stderr, disable=None, leave=False
    ) as bar:
        try:
            write_onnx(gguf, out, precision=precision, tick=bar.update)
        except ValueError as exc:  # an unsupported type or a block that does not check out
            raise ModelError(str(exc)) from None


def _gguf_to_hf(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # The weights are now plain dequantised fp32; save_pretrained refuses while these are set.
    model.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))


def _gguf_sampling(gguf: Path) -> dict[str, Any]:
    """The sampling defaults a GGUF carries (newer llama.cpp conversions write them), which transformers
    does not read."""
    from engine.model.convert.gguf_onnx import read_gguf

    try:
        reader = read_gguf(gguf)
    except (ValueError, OSError) as exc:
        log.warning("cannot read %s's metadata for sampling defaults: %s", gguf.name, exc)
        return {}
    found: dict[str, Any] = {}
    for key, name in GGUF_SAMPLING.items():
        field = reader.fields.get(key)
        if field is not None and isinstance(value := field.contents(), int | float):
            found[name] = value
    return found


def _write_generation_config(
    hf_dir: Path | None, gguf: Path | None, out: Path, overrides: Mapping[str, float | int] | None
) -> None:
    """The model's own generation_config.json in the model folder, for its sampling defaults (see
    registry.load_model): the source's file, then a GGUF's sampling keys, then ``overrides`` over both.
    A source file that is not a JSON object is left out (logged): the model then has no defaults."""
    config: dict[str, Any] = {}
    source = hf_dir / GENERATION_CONFIG if hf_dir is not None else None
    if source is not None and source.is_file():
        try:
            parsed = json.loads(source.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            parsed = None
        if isinstance(parsed, dict):
            config = parsed
        else:
            log.warning("%s is not a JSON object; the model gets no sampling defaults from it", source)
    added = {**(_gguf_sampling(gguf) if gguf is not None else {}), **(overrides or {})}
    config.update(added)
    if "temperature" in added:
        # transformers decodes greedily without do_sample, whatever the temperature: keep the file meaning it.
        config["do_sample"] = added["temperature"] > 0
    if config:
        (out / GENERATION_CONFIG).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _hub_to_hf(repo_id: str, out: Path) -> Path:
    if not _hub_reachable():
        raise ModelError(
            f"'{repo_id}' looks like a Hugging Face hub id, but the hub cannot be reached from here "
            "(offline?). Download the model folder elsewhere and import the folder instead."
        )
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_dir=str(out), etag_timeout=10))
    except Exception as exc:  # hub errors vary; the message is what matters here
        raise ModelError(f"cannot download '{repo_id}': {exc}") from None


def _run_builder(hf_dir: Path, out: Path, precision: str, device: str, cache: Path) -> None:
    # The builder (python -m onnxruntime_genai.models.builder) with hf_prepare's patches for what it misreads.
    cmd = [
        sys.executable, "-m", "engine.model.convert.hf_prepare",
        "-i", str(hf_dir), "-o", str(out), "-p", precision, "-e", device, "-c", str(cache),
    ]  # fmt: skip
    env = {**os.environ, "TQDM_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise ModelError(f"the ONNX builder failed for {hf_dir}:\n{tail}")


def _builder_import(
    source: str, kind: str, src: Path, tmp: Path, out: Path, precision: str, device: str, progress: Progress
) -> Path:
    """The route for everything not written directly: a Hugging Face folder (a GGUF dequantised by
    transformers first), built by onnxruntime-genai's builder. Returns the HF folder used."""
    from engine.model.convert.graph import add_logit_positions
    from engine.model.convert.hf_prepare import cap_context, prepare

    hf_dir = tmp / "hf"
    if kind == "gguf":
        progress(f"importing {src.name}: [1/3] reading and dequantising the GGUF weights")
        _gguf_to_hf(src, hf_dir)
    elif kind == "hub":
        progress(f"importing {source}: [1/3] downloading from the Hugging Face hub")
        hf_dir = _hub_to_hf(source, hf_dir)
    else:
        progress(f"importing {src}: [1/3] reading the model folder")
        hf_dir = src
    progress(f"[2/3] building the ONNX graph ({precision}, {device})")
    builder_precision = PRECISIONS[precision]
    assert builder_precision is not None
    prepared = prepare(hf_dir, tmp / "hf-prepared")
    _run_builder(prepared.folder, out, builder_precision, device, tmp / "cache")
    cap_context(out, prepared.context_cap)
    add_logit_positions(out / "model.onnx")
    return hf_dir


def import_model(
    source: str,
    models_dir: Path,
    *,
    name: str | None = None,
    precision: str | None = None,
    device: str = "cpu",
    force: bool = False,
    generation: Mapping[str, float | int] | None = None,
    progress: Progress = stderr_progress,
) -> ModelInfo:
    """Convert ``source`` into ``models_dir/name``; an existing valid folder is reused unless ``force``.

    ``precision`` None means the default: a GGUF whose architecture and block types Parley writes
    directly gets ``DEFAULT_PRECISION`` on the CPU (its own blocks); anything else fp32.
    ``generation``: sampling defaults to record over what the source carries (generation_config.json's
    names: temperature, top_p, top_k, repetition_penalty), for a GGUF whose upstream model sets them.
    """
    if precision is not None and precision not in PRECISIONS:
        raise ModelError(f"unknown precision '{precision}'; choose one of: {', '.join(PRECISIONS)}")
    if device not in ("cpu", "cuda"):
        raise ModelError("device must be 'cpu' or 'cuda'")
    if precision == "fp16" and device != "cuda":
        raise ModelError("fp16 is for CUDA; use --device cuda, or fp32/int8/int4 for the CPU")
    if precision in DIRECT and device != "cpu":
        raise ModelError(f"{precision} is built for the CPU; use fp16 for CUDA")

    # Resolve the source first, so a bad one fails fast without touching the models folder.
    if not source.strip():
        raise ModelError("no model source given: pass a .gguf file, a model folder or a hub id")
    path = Path(source).expanduser()
    builtin = find_builtin(source) if source.startswith("builtin:") else None
    if source.startswith("builtin:"):
        if builtin is None:
            raise ModelError(f"unknown built-in model '{source}'; built in: {', '.join(b.source for b in BUILTINS)}")
        kind, src = "gguf", Path(builtin.file)  # fetched below, once it is known to be needed
        name = name or builtin.name
        precision = precision or builtin_precision(builtin, device)
        generation = {**builtin.generation, **(generation or {})}
    elif path.is_file():
        if path.suffix.lower() != ".gguf":
            raise ModelError(f"{path} is not a GGUF file (expected a .gguf file or a model folder)")
        kind, src = "gguf", path
    elif path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is not a Hugging Face model folder (no config.json)")
        kind, src = "folder", path
    elif _HUB_ID.match(source) and not source.startswith((".", "/", "~")):
        kind, src = "hub", Path(source)
    else:
        raise ModelError(f"model source '{source}' is not a GGUF file, a model folder or a hub id")

    name = name or re.sub(r"[^\w.\-]", "-", src.stem or src.name)
    target = models_dir / name
    if target.exists() and not force:
        try:
            info = read_model_info(target)
        except ModelError:
            progress(f"{target} is incomplete or corrupt; importing again")
        else:
            return info
    if builtin is not None:
        src = builtin_gguf(builtin, models_dir / SOURCES_DIR, progress)
    require_tools()
    refusal = _direct_refusal(src) if kind == "gguf" else "not a GGUF file"
    if precision is None:
        precision = DEFAULT_PRECISION if device == "cpu" and refusal is None else "fp32"
    if precision in DIRECT and refusal is not None:
        raise ModelError(f"{precision} runs a GGUF's own blocks, but {refusal}; use --precision fp32 or int4")
    models_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=f".import-{name}-", dir=models_dir) as tmp_name:
        tmp = Path(tmp_name)
        out, hf_dir = tmp / "onnx", None
        if precision in DIRECT:
            progress(f"importing {src.name}: [1/3] writing the ONNX graph from the GGUF's own blocks ({precision})")
            _write_direct(src, out, precision)
            progress("[2/3] reading the tokenizer and chat template")
            with _quiet_progress_bars():
                _gguf_tokenizer(src, out)
        else:
            with _quiet_progress_bars():
                hf_dir = _builder_import(source, kind, src, tmp, out, precision, device, progress)
        _write_generation_config(hf_dir, src if kind == "gguf" else None, out, generation)
        progress("[3/3] writing the manifest and checksums")
        write_manifest(
            out,
            name=name,
            source=builtin.source if builtin is not None else source if kind != "gguf" else str(src),
            source_kind=kind,
            gguf=str(src) if kind == "gguf" else None,  # the file a built-in source was fetched to
            precision=precision,
            device=device,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)  # same filesystem: the folder appears whole or not at all
    progress(f"model '{name}' ready in {target} ({time.monotonic() - started:.0f} s)")
    return read_model_info(target)
