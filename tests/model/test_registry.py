import json
import shutil
import time
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.model.catalog import resolve_model
from engine.model.convert.importer import import_model
from engine.model.registry import MANIFEST, LoadedModel, list_models, load_model, read_model_info
from engine.model.runner import OnnxRunner


@pytest.fixture
def copy_of_model(tmp_path: Path, model: LoadedModel) -> Path:
    """A copy of the real model folder whose big weights file is a hard link (cheap)."""
    dst = tmp_path / "copy"
    dst.mkdir()
    for f in model.info.path.iterdir():
        if f.stat().st_size > 10_000_000:
            (dst / f.name).hardlink_to(f)
        else:
            shutil.copy(f, dst / f.name)
    return dst


def test_unknown_model_says_what_exists(tmp_path: Path, model: LoadedModel) -> None:
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*parley model import"):
        resolve_model("nope", model.info.path.parent)


def test_model_list_shows_imported(model: LoadedModel) -> None:
    assert model.name in {m.name for m in list_models(model.info.path.parent)}


def test_manifest_records_source_precision_and_checksums(model: LoadedModel) -> None:
    manifest = json.loads((model.info.path / MANIFEST).read_text())
    assert {"source", "precision", "device", "files"} <= manifest.keys()
    assert all(len(meta["sha256"]) == 64 for meta in manifest["files"].values())


def _scramble_template(d: Path) -> None:
    path = d / "chat_template.jinja"
    path.write_bytes(b"{" * path.stat().st_size)  # same size: only the checksum can tell


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "tokenizer.json").unlink(), "missing tokenizer.json"),
        (lambda d: (d / MANIFEST).write_text("{not json"), "corrupt"),
        (lambda d: (d / MANIFEST).unlink(), "not a Parley model folder"),
        (_scramble_template, "checksum"),
        (lambda d: (d / "model.onnx").write_bytes(b"garbage"), "wrong size"),
    ],
)
def test_damaged_model_folder_is_a_clear_error(copy_of_model: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    damage(copy_of_model)
    with pytest.raises(ModelError, match=message):
        load_model(copy_of_model)


def test_truncated_weights_are_caught(copy_of_model: Path) -> None:
    data = next(p for p in copy_of_model.iterdir() if p.suffix == ".data")
    shutil.copy(data, copy_of_model / "tmp")  # break the hard link before damaging the copy
    (copy_of_model / "tmp").replace(data)
    with data.open("r+b") as f:
        f.truncate(1000)
    with pytest.raises(ModelError, match="wrong size"):
        load_model(copy_of_model)


def test_corrupt_graph_with_a_matching_manifest_fails_clearly(copy_of_model: Path) -> None:
    (copy_of_model / "model.onnx").write_bytes(b"\x00" * 64)
    manifest = json.loads((copy_of_model / MANIFEST).read_text())
    from engine.model.registry import write_manifest

    write_manifest(copy_of_model, **{k: v for k, v in manifest.items() if k not in ("files", "format")})
    with pytest.raises(ModelError, match="cannot load"):
        OnnxRunner(load_model(copy_of_model), device="cpu", max_len=64)


def test_full_checksum_verification_catches_flipped_weights(copy_of_model: Path) -> None:
    data = next(p for p in copy_of_model.iterdir() if p.suffix == ".data")
    shutil.copy(data, copy_of_model / "tmp")
    (copy_of_model / "tmp").replace(data)
    with data.open("r+b") as f:
        f.seek(12345)
        f.write(b"\xff\xff\xff\xff")
    read_model_info(copy_of_model)  # sizes match: a quick load does not read 500 MB
    with pytest.raises(ModelError, match="checksum"):
        read_model_info(copy_of_model, verify_checksums=True)


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("/no/such/file.gguf", "not a GGUF file, a model folder or a hub id"),
        ("README.md", "not a GGUF file"),
        ("tests", "not a Hugging Face model folder"),
        ("", "no model source given"),
    ],
)
def test_bad_import_sources_fail_clearly(tmp_path: Path, source: str, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        import_model(source, tmp_path)
    assert not any(tmp_path.iterdir())


def test_hub_id_offline_fails_fast(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(ModelError, match="hub cannot be reached"):
        import_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path)
    assert time.monotonic() - started < 10


def test_gguf_precisions_need_a_gguf(tmp_path: Path) -> None:
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    for precision in ("gguf", "gguf-exact"):
        with pytest.raises(ModelError, match=f"{precision} runs a GGUF's own blocks, but not a GGUF file"):
            import_model(str(folder), tmp_path / "models", precision=precision)


def test_default_model_keeps_the_gguf_blocks(model: LoadedModel) -> None:
    assert model.info.precision == "gguf-exact"
    assert model.info.manifest["format"] == 2
    data = model.info.path / "model.onnx.data"
    assert data.stat().st_size < 200_000_000  # 4-bit blocks, not the 540 MB fp32 weights


def test_bad_precision_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown precision"):
        import_model("builtin:smollm2", tmp_path, precision="int3")
    with pytest.raises(ModelError, match="fp16 is for CUDA"):
        import_model("builtin:smollm2", tmp_path, precision="fp16")


def test_existing_model_is_reused_not_rebuilt(model: LoadedModel) -> None:
    before = (model.info.path / "model.onnx").stat().st_mtime_ns
    messages: list[str] = []
    info = import_model("builtin:smollm2", model.info.path.parent, name=model.name, progress=messages.append)
    assert info.path == model.info.path
    assert messages == []
    assert (model.info.path / "model.onnx").stat().st_mtime_ns == before
