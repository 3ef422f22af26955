"""Gaps between transformers 5 and onnxruntime-genai's builder (0.18), closed around the builder.

The builder reads a Hugging Face folder through transformers' ``AutoConfig``; where what it then builds would
not compute what transformers computes (tests/model/test_architectures.py compares the two), this module
gives it a folder, or a runtime, it reads right:

- Sliding windows (Mistral 7B v0.1, Phi-3 mini 4k): transformers slides ``sliding_window`` over every layer of
  a config without ``layer_types``; the builder slides only the layers ``layer_types`` marks, so none.
  ``prepare`` gives it a copy of the folder (weights linked) whose config.json marks every layer sliding.
- Gemma 3's RoPE: transformers 5 keeps one set of RoPE parameters per layer type; the builder wants one
  flat set plus ``rope_local_base_freq``, and fails on the nested form. A folder cannot say it (transformers
  nests a flat config.json again on load), so the builder runs through this module (``python -m``), which
  flattens the parameters inside the builder's process (``main``).
- LongRoPE (Phi-3.5 mini, Phi-4 mini): once a sequence passes ``original_max_position_embeddings`` the
  built graph (switching to the long factors as Parley runs it) and transformers part. ``cap_context`` caps
  the built model's context at the original length, where they agree (Parley's runner takes its context
  from genai_config.json).
"""

from __future__ import annotations

import importlib
import json
import runpy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any


@dataclass(frozen=True)
class Prepared:
    folder: Path  # what the builder reads: the source folder itself, or a prepared copy of it
    context_cap: int | None  # the most context the built model may claim; None: what the builder writes


def prepare(hf_dir: Path, scratch: Path) -> Prepared:
    """The folder to build ``hf_dir`` from (a copy is made under ``scratch`` if one is needed) and its cap."""
    from transformers import AutoConfig

    try:  # as the builder reads it (no remote code): layer_types as transformers derives them, rope_parameters
        config = AutoConfig.from_pretrained(str(hf_dir))
    except Exception:  # a config transformers cannot read: the builder reports it in its own words
        return Prepared(hf_dir, None)
    folder = hf_dir
    if getattr(config, "sliding_window", None) and getattr(config, "layer_types", None) is None:
        raw = json.loads((hf_dir / "config.json").read_text())
        raw["layer_types"] = ["sliding_attention"] * config.num_hidden_layers
        folder = _with_config(hf_dir, scratch, raw)
    return Prepared(folder, _longrope_original(config))


def _with_config(hf_dir: Path, scratch: Path, config: dict[str, Any]) -> Path:
    """``scratch``: every entry of ``hf_dir`` linked, but config.json replaced by ``config``."""
    scratch.mkdir(parents=True)
    for entry in hf_dir.iterdir():
        if entry.name != "config.json":
            (scratch / entry.name).symlink_to(entry.resolve())
    (scratch / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return scratch


def _longrope_original(config: Any) -> int | None:
    rope = getattr(config, "rope_parameters", None)
    if not isinstance(rope, dict) or rope.get("rope_type") != "longrope":
        return None
    original = rope.get("original_max_position_embeddings") or getattr(config, "original_max_position_embeddings", None)
    return int(original) if original else None


def cap_context(out: Path, cap: int | None) -> None:
    """Cap the context that the builder's genai_config.json in ``out`` claims at ``cap``."""
    if cap is None:
        return
    path = out / "genai_config.json"
    genai = json.loads(path.read_text())
    model, search = genai["model"], genai.get("search", {})
    model["context_length"] = min(int(model["context_length"]), cap)
    if "max_length" in search:
        search["max_length"] = min(int(search["max_length"]), cap)
    path.write_text(json.dumps(genai, indent=4) + "\n")


def _patch_gemma3(gemma: ModuleType) -> None:
    """Gemma3Model reads transformers 5's per-layer-type ``rope_parameters``; its local (sliding) RoPE cache
    gets the sliding layers' own scaling, where the builder would scale it as the global one (Gemma 3 4B
    and up scale only the global layers, linearly by 8)."""
    cls = gemma.Gemma3Model
    if "make_rope_init" in vars(cls):  # a builder that reads them itself
        return
    flat_rope_init: Callable[[Any, Any], None] = cls.make_rope_init

    def make_rope_init(self: Any, config: Any) -> None:
        rope = config.rope_parameters
        if isinstance(rope, dict) and "full_attention" in rope:
            full: dict[str, Any] = rope["full_attention"]
            local: dict[str, Any] = rope.get("sliding_attention") or full
            if local.get("rope_type", "default") not in ("default", "linear"):
                raise NotImplementedError(f"Gemma 3's local {local['rope_type']} RoPE is not supported")
            config.rope_parameters = full
            config.rope_local_base_freq = local["rope_theta"]
            self.rope_attrs["theta"] = full["rope_theta"]  # read before this, from the (absent) flat rope_theta
            self.local_rope_scale = local.get("factor", 1.0) if local.get("rope_type") == "linear" else 1.0
        flat_rope_init(self, config)

    def make_rotary_embedding_multi_cache(self: Any) -> None:
        # The builder's own (0.18), with the local cache's rescale factors set for the local layers.
        parent: Any = super(cls, self)
        self.cos_cache_global_name, self.sin_cache_global_name = "cos_cache_global", "sin_cache_global"
        parent.make_rotary_embedding_caches(
            cos_cache_name=self.cos_cache_global_name, sin_cache_name=self.sin_cache_global_name
        )
        self.rope_attrs["create_caches"] = True
        self.rope_attrs["theta"] = self.rope_local_theta
        self.rope_attrs["rescale_factors"] = getattr(self, "local_rope_scale", self.rope_attrs["rescale_factors"])
        self.cos_cache_local_name, self.sin_cache_local_name = "cos_cache_local", "sin_cache_local"
        parent.make_rotary_embedding_caches(
            cos_cache_name=self.cos_cache_local_name, sin_cache_name=self.sin_cache_local_name
        )

    cls.make_rope_init = make_rope_init
    cls.make_rotary_embedding_multi_cache = make_rotary_embedding_multi_cache


def main() -> None:
    """``python -m onnxruntime_genai.models.builder``, same arguments, with the patches above."""
    importlib.import_module("onnxruntime_genai.models")  # puts the builder's folder on sys.path: it imports
    _patch_gemma3(importlib.import_module("builders.gemma"))  # `builders` from there, as a top-level package
    runpy.run_module("onnxruntime_genai.models.builder", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
