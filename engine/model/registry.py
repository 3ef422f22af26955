"""Model folders: what a usable model folder holds, how it is checked, listed and loaded."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer

from engine.contract import SamplingParams
from engine.errors import ModelError
from engine.model.sampling import SamplingDefaults, generation_defaults
from engine.model.template import ChatTemplate

log = logging.getLogger(__name__)

MANIFEST = "parley-model.json"
# 2: graphs take logit_positions (logits only where asked). Older folders still load and run.
FORMAT_VERSION = 2
# The graph input that selects where logits are computed (added at import by convert/graph.py).
LOGIT_POSITIONS = "logit_positions"
# Everything serving needs; the manifest records a size and checksum for each.
REQUIRED_FILES = ("model.onnx", "tokenizer.json", "chat_template.jinja", "genai_config.json")
# Graph weights are large: their size is checked on every load, the checksum by `parley model verify`.
LARGE_SUFFIXES = (".data", ".onnx_data")
# The model's own sampling defaults, as transformers writes them (optional: older folders lack it).
GENERATION_CONFIG = "generation_config.json"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    manifest: dict[str, Any]

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "?"))

    @property
    def device(self) -> str:
        return str(self.manifest.get("device", "cpu"))


def write_manifest(folder: Path, **fields: Any) -> dict[str, Any]:
    files = {
        p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {"format": FORMAT_VERSION, **fields, "files": files}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def read_model_info(folder: Path, *, verify_checksums: bool = False) -> ModelInfo:
    """Check a model folder; every problem becomes a ModelError naming the folder and the file."""
    manifest_path = folder / MANIFEST
    if not folder.is_dir():
        raise ModelError(f"model folder {folder} does not exist")
    try:
        manifest = json.loads(manifest_path.read_text())
        files: dict[str, dict[str, Any]] = manifest["files"]
    except FileNotFoundError:
        raise ModelError(f"{folder} is not a Parley model folder (no {MANIFEST})") from None
    except (ValueError, KeyError, TypeError):
        raise ModelError(f"{manifest_path} is corrupt; re-import the model") from None
    for required in REQUIRED_FILES:
        if required not in files:
            raise ModelError(f"model folder {folder} lacks {required}; re-import the model")
    for name, meta in files.items():
        path = folder / name
        if not path.is_file():
            raise ModelError(f"model folder {folder} is missing {name}; re-import the model")
        if path.stat().st_size != meta.get("bytes"):
            raise ModelError(f"{path} has the wrong size (corrupt or truncated); re-import the model")
        if (verify_checksums or not name.endswith(LARGE_SUFFIXES)) and sha256_file(path) != meta.get("sha256"):
            raise ModelError(f"{path} fails its checksum (corrupt); re-import the model")
    return ModelInfo(name=str(manifest.get("name", folder.name)), path=folder, manifest=manifest)


def list_models(models_dir: Path) -> list[ModelInfo]:
    found = []
    if models_dir.is_dir():
        for folder in sorted(models_dir.iterdir()):
            if (folder / MANIFEST).is_file():
                try:
                    found.append(read_model_info(folder))
                except ModelError:
                    continue
    return found


@dataclass
class ModelConfig:
    """What the decode loop needs to know about the graph, from genai_config.json."""

    num_layers: int
    num_kv_heads: int
    head_size: int
    vocab_size: int
    context_length: int
    eos_token_ids: frozenset[int]
    pad_token_id: int
    past_key: str
    past_value: str
    present_key: str
    present_value: str


@dataclass
class LoadedModel:
    """A checked model folder with its tokenizer and chat template, ready for a runner."""

    info: ModelInfo
    config: ModelConfig
    tokenizer: Tokenizer
    template: ChatTemplate
    # The model's own sampling defaults (its generation_config.json); None: it sets none.
    generation: SamplingDefaults | None = None

    @property
    def name(self) -> str:
        return self.info.name

    def sampling_params(
        self,
        *,
        max_tokens: int,
        seed: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        top_k: int | None = None,
        repetition_penalty: float | None = None,
    ) -> SamplingParams:
        """Sampling for this model: each field as given (a setting), else the model's own default, else
        Parley's fallback (``sampling.FALLBACK``)."""
        given = SamplingDefaults(temperature, top_p, top_k, repetition_penalty)
        return given.over(self.generation).params(max_tokens=max_tokens, seed=seed)


def _ids(value: Any) -> set[int]:
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, list) else {int(value)}


def read_generation(folder: Path) -> SamplingDefaults | None:
    """The sampling defaults in ``folder``'s generation_config.json; an absent or unreadable file gives none
    (the model still serves, on the configured or fallback sampling)."""
    path = folder / GENERATION_CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        log.warning("%s is unreadable (%s); using the default sampling", path, type(exc).__name__)
        return None
    if not isinstance(config, dict):
        log.warning("%s is not a JSON object; using the default sampling", path)
        return None
    return generation_defaults(config)


def load_model(folder: Path) -> LoadedModel:
    info = read_model_info(folder)
    try:
        genai = json.loads((folder / "genai_config.json").read_text())["model"]
        dec = genai["decoder"]
        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tok_cfg_path = folder / "tokenizer_config.json"
        tok_cfg = json.loads(tok_cfg_path.read_text()) if tok_cfg_path.is_file() else {}
    except Exception as exc:  # tokenizers reports a bad file as a plain Exception
        raise ModelError(f"model folder {folder} is corrupt ({type(exc).__name__}); re-import it") from None

    def token_text(key: str) -> str:
        v = tok_cfg.get(key) or ""
        return str(v.get("content", "")) if isinstance(v, dict) else str(v)

    eos = _ids(genai.get("eos_token_id"))
    eos_text = token_text("eos_token")
    if eos_text and (tid := tokenizer.token_to_id(eos_text)) is not None:
        eos.add(tid)
    if not eos:
        raise ModelError(f"model folder {folder} names no end-of-sequence token")
    config = ModelConfig(
        num_layers=int(dec["num_hidden_layers"]),
        num_kv_heads=int(dec["num_key_value_heads"]),
        head_size=int(dec["head_size"]),
        vocab_size=int(genai["vocab_size"]),
        context_length=int(genai.get("context_length", 2048)),
        eos_token_ids=frozenset(eos),
        pad_token_id=int(genai.get("pad_token_id", min(eos))),
        past_key=dec["inputs"]["past_key_names"],
        past_value=dec["inputs"]["past_value_names"],
        present_key=dec["outputs"]["present_key_names"],
        present_value=dec["outputs"]["present_value_names"],
    )
    template = ChatTemplate(
        (folder / "chat_template.jinja").read_text(),
        bos_token=token_text("bos_token"),
        eos_token=token_text("eos_token"),
    )
    return LoadedModel(
        info=info, config=config, tokenizer=tokenizer, template=template, generation=read_generation(folder)
    )
