from __future__ import annotations

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bots.text.split import Length, scan_lines, split_chunks, split_message, unclosed_fence, utf16_len
from tests.bots.markdown import markdown_text


def check(text: str, limit: int, length: Length = len) -> list[str]:
    """Assert every documented guarantee of split_message on this input; return the chunks."""
    chunks = split_chunks(text, limit, length)
    lines = scan_lines(text)
    # Only a ```-line too long to fit a chunk can be cut, and then the pieces are read as chunks see them.
    long_fence_lines = any(
        2 * length(text[line.start : line.end]) + 2 > limit // 2
        for line in lines
        if text[line.start : line.end].lstrip().startswith(("```", "~~~"))
    )
    assert [c.text for c in chunks] == split_message(text, limit, length)
    previous_end = 0
    for n, chunk in enumerate(chunks):
        assert length(chunk.text) <= limit
        assert chunk.text.strip(), "empty or whitespace-only chunk"
        assert unclosed_fence(chunk.text) is None, "fences unbalanced within a chunk"
        body = text[chunk.start : chunk.end]
        assert body
        assert chunk.text == chunk.reopened + body + chunk.closed
        gap = text[previous_end : chunk.start]
        assert gap.strip() == "", f"non-whitespace dropped before chunk {n}: {gap!r}"
        if chunk.reopened:
            # Split inside a code block: reopened with the fence the previous chunk closed, and code loses
            # nothing.
            before = chunks[n - 1]
            fence = unclosed_fence(before.reopened + text[before.start : before.end])
            assert fence is not None
            assert before.closed == "\n" + fence.closing
            assert chunk.reopened in (fence.opening + "\n", fence.closing + "\n")
            if not long_fence_lines:  # then also the very fence and language of the original
                assert gap in ("", "\n")
                line = next(line for line in reversed(lines) if line.start <= chunk.start)
                assert line.fence == fence
                assert chunk.reopened == fence.opening + "\n"
        previous_end = chunk.end
    assert text[previous_end:].strip() == ""
    return [c.text for c in chunks]


def test_empty_and_blank_text_give_no_chunks() -> None:
    assert split_message("", 10) == []
    assert split_message(" \n\n\t ", 10) == []


def test_text_exactly_at_the_limit_is_one_chunk() -> None:
    assert check("x" * 100, 100) == ["x" * 100]
    assert check("x" * 101, 100) == ["x" * 100, "x"]


def test_prefers_paragraph_then_line_then_sentence_then_space() -> None:
    para = "Alpha beta. Gamma delta\nepsilon zeta eta"
    assert check(f"{para}\n\n{para}", len(para) + 5) == [para, para]
    assert check("one two\nthree four five six", 20) == ["one two", "three four five six"]
    assert check("One two three. Four five six seven", 25) == ["One two three.", "Four five six seven"]
    assert check("aaaa bbbb cccc dddd eeee", 12) == ["aaaa bbbb", "cccc dddd", "eeee"]


def test_text_without_newlines_splits_at_spaces() -> None:
    text = " ".join(["word"] * 500)
    chunks = check(text, 2000)
    assert all(not c.startswith(" ") and not c.endswith(" ") for c in chunks)
    assert " ".join(chunks) == text


def test_a_word_longer_than_the_limit_is_cut_hard() -> None:
    assert check("a" * 25, 10) == ["a" * 10, "a" * 10, "a" * 5]


def test_code_block_is_closed_and_reopened_with_its_language() -> None:
    code = "\n".join(f"    line_{i} = {i}" for i in range(30))
    text = f"Here:\n\n```python\n{code}\n```\n\nDone."
    chunks = check(text, 120)
    assert len(chunks) > 2
    for chunk in chunks[1:-1]:
        assert chunk.startswith("```python\n    line_")
        assert chunk.endswith("\n```")
    # With the synthetic fences removed, the code comes back intact, indentation included.
    bodies = [c.removeprefix("```python\n").removesuffix("\n```") for c in chunks]
    assert "\n".join(bodies).replace("Here:\n\n```python\n", "").startswith(code)


def test_a_code_line_longer_than_the_limit_is_cut_inside_the_block() -> None:
    text = "```js\n" + "x" * 50 + "\n```"
    chunks = check(text, 20)
    assert all(c.startswith("```js\n") and c.endswith("\n```") for c in chunks)
    assert "".join(c[len("```js\n") : -len("\n```")] for c in chunks) == "x" * 50


def test_unclosed_fence_at_the_end_is_closed() -> None:
    assert check("Look:\n```sh\necho hi", 100) == ["Look:\n```sh\necho hi\n```"]
    chunks = check("```sh\n" + "echo hi\n" * 20, 50)
    assert all(c.startswith("```sh\n") and c.endswith("\n```") for c in chunks)


def test_no_chunk_ends_on_an_opening_fence_or_starts_on_a_closing_one() -> None:
    text = "a" * 30 + "\n```\ncode\n```\n" + "b" * 30
    for limit in range(20, 60):
        for chunk in check(text, limit):
            assert not chunk.endswith("```\n```")


def test_telegram_counts_utf16_units() -> None:
    text = "😀" * 3000
    chunks = check(text, 4096, utf16_len)
    assert [len(c) for c in chunks] == [2048, 952]
    assert utf16_len("a😀é") == 4


def test_graphemes_and_surrogate_pairs_are_not_cut() -> None:
    accented = "e\u0301" * 30
    assert all(c.startswith("e") for c in check(accented, 21))
    flags = "🇫🇷🇩🇪" * 10
    assert all(len(c) % 2 == 0 for c in check(flags, 7))
    family = "👨\u200d👩\u200d👧" * 4
    assert check(family, 6) == ["👨\u200d👩\u200d👧"] * 4
    smuggled = "\ud83d\ude00" * 10  # a surrogate pair as two code points
    assert all(c.startswith("\ud83d") for c in check(smuggled, 5))


def test_a_limit_too_small_for_one_character_is_refused() -> None:
    with pytest.raises(ValueError, match="too small"):
        split_message("😀", 1, utf16_len)
    with pytest.raises(ValueError, match="positive"):
        split_message("x", 0)


def test_an_over_long_fence_line_is_cut_and_still_balanced() -> None:
    # Only reachable with absurd info strings; the pieces then read as fences the way each chunk sees them.
    chunks = check("```python " + "x" * 40 + "\ncode", 20)
    assert all(unclosed_fence(c) is None for c in chunks)


def _fence_overhead(text: str) -> int:
    fences = [line.fence for line in scan_lines(text) if line.fence is not None]
    return max((len(f.opening) + len(f.closing) + 2 for f in fences), default=0)


@settings(max_examples=300, deadline=None)
@given(markdown_text, st.integers(min_value=40, max_value=400), st.sampled_from([len, utf16_len]))
def test_split_properties(text: str, limit: int, length: Length) -> None:
    # Progress needs room for the fence lines plus one (possibly astral) character.
    assume(_fence_overhead(text) + 2 <= limit)
    check(text, limit, length)


@settings(max_examples=300, deadline=None)
@given(markdown_text)
def test_text_that_fits_comes_back_whole(text: str) -> None:
    fence = unclosed_fence(text)
    closing = "\n" + fence.closing if fence else ""
    chunks = split_message(text, len(text) + len(closing) + 1)
    assert chunks == ([text.strip() + closing] if text.strip() else [])
