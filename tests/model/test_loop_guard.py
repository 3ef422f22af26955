"""The degenerate-loop guard: caught on token lists that loop, never on text that merely repeats itself a
little, and a looping prompt of the real model stopped early."""

from __future__ import annotations

import numpy as np
import pytest

from engine.contract import SamplingParams
from engine.model.generator import Generator
from engine.model.registry import LoadedModel
from engine.model.sampling import LoopGuard
from engine.runtime.settings import DEFAULT_SYSTEM_PROMPT
from tests.model.support import collect


def _first_catch(tokens: list[int]) -> int | None:
    """Index of the token on which the guard fires, None if it never does."""
    guard = LoopGuard()
    for i, token in enumerate(tokens):
        if guard.push(token):
            return i
    return None


def _random(n: int, seed: int = 0) -> list[int]:
    return [int(t) for t in np.random.default_rng(seed).integers(1000, 50_000, size=n)]


def test_a_line_repeated_three_times_is_caught_on_its_last_token() -> None:
    prefix, line = _random(40), _random(24, seed=1)
    tokens = prefix + line * 10
    guard = LoopGuard()
    caught = next(i for i, t in enumerate(tokens) if guard.push(t))
    assert caught == len(prefix) + 3 * len(line) - 1
    assert guard.period == len(line)


def test_a_short_line_needs_more_copies() -> None:
    # Three copies of a 10-token line are only 30 tokens: it takes 64 tokens of repetition.
    line = _random(10, seed=6)
    assert _first_catch(_random(10) + line * 6) is None
    assert _first_catch(_random(10) + line * 7) == 10 + 64 - 1


def test_a_short_period_needs_a_long_run() -> None:
    # One token (or two) repeated: a few copies are ordinary text ("0, 0, 0"), 64 tokens of it are a loop.
    assert _first_catch(_random(10) + [7] * 63) is None
    assert _first_catch(_random(10) + [7] * 80) == 10 + 64 - 1
    assert _first_catch(_random(10) + [5, 6] * 31) is None
    assert _first_catch(_random(10) + [5, 6] * 40) == 10 + 64 - 1


def test_a_long_paragraph_repeated_is_caught() -> None:
    paragraph = _random(120, seed=2)
    assert _first_catch(paragraph * 3) == 3 * 120 - 1
    assert _first_catch(_random(200, seed=3) * 2) is None  # twice is not yet a loop


def test_a_loop_that_alternates_two_lines_is_caught() -> None:
    a, b = _random(20, seed=4), _random(25, seed=5)
    assert _first_catch(a + b + a + b + a + b + a) is not None


def test_lines_that_differ_in_one_token_are_not_a_loop() -> None:
    # "x[0] = 0;\n", "x[1] = 1;\n", ...: the same line shape 200 times, never the same tokens.
    tokens = [t for i in range(200) for t in (11, 12, 100 + i, 13, 14, 100 + i, 15)]
    assert _first_catch(tokens) is None


@pytest.mark.parametrize(
    "text",
    [
        # A list whose items share words.
        "".join(f"- {n} cups of {x}, sifted\n" for n, x in enumerate(["flour", "sugar", "milk", "cocoa", "rice"])),
        # A long code block of lines that differ only in their numbers.
        "```python\n" + "".join(f"    table[{i}] = {i * i}  # square of {i}\n" for i in range(80)) + "```\n",
        # A markdown table with repeated cells.
        "| name | yes | yes | no |\n|---|---|---|---|\n"
        + "".join(f"| item {i} | yes | yes | no |\n" for i in range(30)),
        # A short chorus sung twice, and a line of 24 dashes.
        "Row, row, row your boat,\nGently down the stream.\n" * 2 + "-" * 24 + "\n",
        # Small matrices, a type with a repeated part.
        "[[0, 0, 0],\n [0, 0, 0],\n [0, 1, 0]]\n",
        "array([[1, 2, 3, 4],\n       [1, 2, 3, 4],\n       [1, 2, 3, 4],\n       [1, 2, 3, 4]])\n",
        "def f() -> tuple[Tensor | None, Tensor | None, Tensor | None, Tensor | None]:\n",
    ],
)
def test_ordinary_repetition_is_not_a_loop(model: LoadedModel, text: str) -> None:
    tokens = model.tokenizer.encode(text, add_special_tokens=False).ids
    assert _first_catch(tokens) is None, text


def test_a_repeated_sentence_in_real_tokens_is_caught(model: LoadedModel) -> None:
    text = "Dear Sam,\nThank you.\n" + "P.S. I hope this message finds you well.\n" * 12
    tokens = model.tokenizer.encode(text, add_special_tokens=False).ids
    caught = _first_catch(tokens)
    assert caught is not None
    assert caught < len(tokens) - 1


async def test_a_looping_greedy_reply_stops_early(generator: Generator, model: LoadedModel) -> None:
    """Greedy SmolLM2, asked as Parley asks it, ends this e-mail with "P.S." lines until the token limit (all
    256 tokens without the guard); the guard ends the reply early, with finish_reason "loop"."""
    rendered = model.template.render([
        {"role": "system", "content": DEFAULT_SYSTEM_PROMPT},
        {"role": "user", "content": "Write a polite e-mail declining a meeting and end with a P.S."},
    ])  # fmt: skip
    prompt = list(model.tokenizer.encode(rendered, add_special_tokens=False).ids)
    text, fin = await collect(generator, prompt, SamplingParams(max_tokens=256))
    assert fin.finish_reason == "loop"
    assert fin.completion_tokens < 200
    assert text.rstrip().endswith("P.S.\n\nP.S.\n\nP.S.\n\nP.S")
