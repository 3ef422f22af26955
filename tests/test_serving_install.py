"""A serving-only install (`pip install parley`, the CPU image) serves: no module of the `convert` extra is
imported by anything that answers people, and a model import without it is one clear line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from engine.model.registry import LoadedModel

CONVERT_ONLY = ("torch", "onnx", "onnx_ir", "transformers", "gguf", "onnxruntime_genai", "huggingface_hub")
SERVING_MODULES = (
    "engine.conversation.engine", "engine.runtime.app", "bots.cli", "engine.model.generator", "engine.model.runner",
    "engine.model.catalog", "engine.scaleout.remote", "engine.scaleout.worker", "bots.api", "bots.terminal",
    "bots.telegram.bot", "bots.discord.bot",
)  # fmt: skip

# Runs first in the child: a conversion tool is as good as not installed (importing it raises
# ModuleNotFoundError, and importlib.util.find_spec finds nothing).
BLOCKER = f"""
import sys
BLOCKED = {CONVERT_ONLY!r}
for name in BLOCKED:
    sys.modules[name] = None
"""


def _child(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + code], env=env, capture_output=True, text=True, timeout=240, check=False
    )


@pytest.fixture
def env(tmp_path: Path, model: LoadedModel, redis_url: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_")}
    return {
        **clean,
        "REDIS_URL": redis_url,
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_MODEL_DIR": str(model.info.path.parent),
        "PARLEY_MODEL": model.name,
        "PARLEY_MAX_REPLY_TOKENS": "16",
    }


def test_blocker_really_blocks(env: dict[str, str]) -> None:
    # Otherwise the tests below could pass with the tools imported after all.
    result = _child("import onnx", env)
    assert result.returncode != 0
    assert "ModuleNotFoundError: import of onnx halted" in result.stderr


@pytest.mark.slow
def test_every_serving_module_imports_and_answers_without_the_convert_extra(env: dict[str, str]) -> None:
    code = f"""
import importlib, json, sys
for name in {SERVING_MODULES!r}:
    importlib.import_module(name)
from bots.cli import main
status = main(["ask", "What is the capital of France?", "--json"])
leaked = sorted(m for m, mod in sys.modules.items() if m.split(".")[0] in BLOCKED and mod is not None)
print(json.dumps({{"status": status, "leaked": leaked}}))
"""
    result = _child(code, env)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    answer, outcome = json.loads(lines[0]), json.loads(lines[-1])
    assert outcome == {"status": 0, "leaked": []}
    assert answer["reply"].strip()
    assert answer["completion_tokens"] > 0


def test_import_without_the_convert_extra_says_how_to_install_it(env: dict[str, str], tmp_path: Path) -> None:
    code = """
from bots.cli import main
sys.exit(main(["model", "import", "builtin:smollm2", "--name", "fresh"]))
"""
    result = _child(code, {**env, "PARLEY_MODEL_DIR": str(tmp_path / "empty-models")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "pip install 'parley[convert]'" in lines[0]
    assert not (tmp_path / "empty-models" / "fresh").exists()


def test_first_use_import_without_the_convert_extra_is_one_clear_line(env: dict[str, str], tmp_path: Path) -> None:
    # A serving install whose built-in model was never imported: `parley ask` says what to install.
    code = """
from bots.cli import main
sys.exit(main(["ask", "hi"]))
"""
    result = _child(code, {**env, "PARLEY_MODEL": "smollm2-135m", "PARLEY_MODEL_DIR": str(tmp_path / "none")})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "pip install 'parley[convert]'" in result.stderr.strip().splitlines()[-1]
