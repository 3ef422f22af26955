import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.conversation.text import check_input, clean_text
from engine.errors import InputRejected


@pytest.mark.parametrize(
    "hidden",
    ["\x00", "\x07", "\x1b", "\x7f", "\x85", "\u200b", "\u200d", "\u202e", "\u2066", "\ufeff", "\ufe0f",
     "\U000e0041", "\U000e007f", "\U000e0100"],
)  # fmt: skip
def test_invisible_characters_are_stripped(hidden: str) -> None:
    assert clean_text(f"pa{hidden}ris") == "paris"


def test_text_layout_and_scripts_are_kept() -> None:
    text = "Ça va?\n\tcode: x = 1\n日本語 — ünïcödé 🎉"
    assert clean_text(text) == text


def test_newlines_are_normalised() -> None:
    assert clean_text("a\r\nb\rc") == "a\nb\nc"


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "\u200b\u200b", "\x00\x01"])
def test_empty_input_is_refused(text: str) -> None:
    with pytest.raises(InputRejected, match="empty"):
        check_input(text, max_chars=100)


def test_oversize_input_names_the_limit() -> None:
    with pytest.raises(InputRejected, match="limit is 100 characters"):
        check_input("x" * 101, max_chars=100)
    with pytest.raises(InputRejected, match="limit is 100 characters"):
        check_input("x" * 10_000_000, max_chars=100)


@given(st.text())
def test_cleaning_is_idempotent_and_never_grows(text: str) -> None:
    once = clean_text(text)
    assert clean_text(once) == once
    assert not any(c in once for c in "\x00\u200b\ufe0f\U000e0041")
