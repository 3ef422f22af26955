"""The rooms' import rules (issue 14), checked on the source so that they cannot drift: the engine imports
no front end, the front ends nothing of the benchmarks or tests, the benchmarks only the fakes of
``tests/``, and the fakes (a library the benchmarks share) nothing else of ``tests/``, not even pytest."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imports(folder: str) -> dict[str, set[str]]:
    """Each module file under ``folder`` and the top-level packages and modules it imports."""
    found = {}
    for path in sorted((ROOT / folder).rglob("*.py")):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offending(folder: str, allowed: Callable[[str, str], bool]) -> list[str]:
    return [
        f"{path} imports {name}"
        for path, names in imports(folder).items()
        for name in sorted(names)
        if not allowed(path, name)
    ]


def _top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [("engine", {"bots", "bench", "tests"}), ("bots", {"bench", "tests"})],
)
def test_the_engine_and_the_front_ends_import_only_downwards(folder: str, forbidden: set[str]) -> None:
    assert offending(folder, lambda path, name: _top(name) not in forbidden) == []


def test_the_benchmarks_take_only_the_fakes_from_the_tests() -> None:
    assert offending("bench", lambda path, name: _top(name) != "tests" or name.startswith("tests.fakes.")) == []


def test_the_fakes_are_a_library_of_their_own() -> None:
    def allowed(path: str, name: str) -> bool:
        if Path(path).name.startswith("test_"):
            return True  # the fakes' own tests
        return _top(name) not in ("pytest", "tests") or name.startswith("tests.fakes.")

    assert offending("tests/fakes", allowed) == []
