import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.model.detok import IncrementalDetokenizer, StopMatcher
from engine.model.registry import LoadedModel

TEXTS = [
    "Café crème, naïve façade — déjà vu.",
    "Emoji: 🎉👨‍👩‍👧 🇫🇷 ❤️ and a kanji 日本語 and Ελληνικά.",
    "  leading spaces, trailing spaces  ",
    "code:\n```python\nprint('hi')\n```\n",
    "x" * 50 + " \U0001d518\U0001d52b\U0001d526",  # astral-plane letters: four UTF-8 bytes each
]


def _stream(model: LoadedModel, ids: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(model.tokenizer)
    deltas = [detok.push(t) for t in ids]
    deltas.append(detok.flush())
    return deltas


@pytest.mark.parametrize("text", TEXTS)
def test_deltas_concatenate_to_the_text(model: LoadedModel, text: str) -> None:
    ids = model.tokenizer.encode(text, add_special_tokens=False).ids
    deltas = _stream(model, ids)
    assert "".join(deltas) == model.tokenizer.decode(ids) == text
    assert not any("\ufffd" in d for d in deltas), "a multi-byte character was split"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=49151), max_size=40))
def test_any_token_sequence_streams_to_its_decoding(model: LoadedModel, ids: list[int]) -> None:
    full = model.tokenizer.decode(ids, skip_special_tokens=True)
    streamed = "".join(_stream(model, ids))
    if "\ufffd" not in full:
        assert streamed == full
    else:  # invalid UTF-8 from stray byte tokens: nothing crashes and nothing is invented
        assert len(streamed) <= len(full)


@pytest.mark.parametrize(
    ("deltas", "stops", "expected"),
    [
        (["Hello", " wor", "ld"], ["\nUser:"], "Hello world"),
        (["Hello\nUs", "er: hi"], ["\nUser:"], "Hello"),
        (["ab", "cSTOP", "de"], ["STOP"], "abc"),
        (["S", "T", "O", "P"], ["STOP"], ""),
        (["ST", "ART"], ["STOP"], "START"),
        (["one two"], ["two", "one"], ""),
    ],
)
def test_stop_strings_cut_the_reply(deltas: list[str], stops: list[str], expected: str) -> None:
    m = StopMatcher(stops)
    out = ""
    for d in deltas:
        out += m.feed(d)
        if m.stopped:
            break
    else:
        out += m.flush()
    assert out == expected == m.text
    for s in stops:
        assert s not in out
