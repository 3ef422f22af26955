"""Splitting documents into passages: structure first, sizes within bounds, nothing lost, deterministic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.retrieval.passages import Passage, split_passages

RULES = """\
# Garden club rules

Welcome to the community garden.

## Membership

Anyone living in the district can join. Membership costs 20 euros a year.

Members get a plot and a key to the shed.

### Waiting list

When every plot is taken, new members wait their turn.

## Tools

Tools stay in the shed.

```sh
# this is a shell comment, not a heading
lock-shed --now
```
"""


def _words(text: str) -> list[str]:
    return text.split()


def test_sections_carry_the_heading_path_and_the_first_h1_is_the_title() -> None:
    passages = split_passages(RULES, source="rules.md")

    assert [(p.section, p.index) for p in passages] == [
        ("Garden club rules", 0),
        ("Garden club rules > Membership", 1),
        ("Garden club rules > Membership > Waiting list", 2),
        ("Garden club rules > Tools", 3),
    ]
    assert {p.title for p in passages} == {"Garden club rules"}
    assert {p.source for p in passages} == {"rules.md"}
    # Small paragraphs of one section share a passage, separated as in the document.
    assert passages[1].text == (
        "Anyone living in the district can join. Membership costs 20 euros a year.\n\n"
        "Members get a plot and a key to the shed."
    )


def test_a_hash_line_inside_a_code_fence_is_not_a_heading() -> None:
    tools = split_passages(RULES, source="rules.md")[-1]

    assert tools.section == "Garden club rules > Tools"
    assert "# this is a shell comment, not a heading" in tools.text


def test_title_given_wins_and_falls_back_to_the_source_without_h1() -> None:
    assert split_passages(RULES, source="x", title="Rules")[0].title == "Rules"
    untitled = split_passages("## Only a subsection\n\nSome text.", source="https://example.org/a")
    assert untitled == [Passage("https://example.org/a", "https://example.org/a", "Only a subsection", 0, "Some text.")]


def test_text_before_any_heading_has_an_empty_section() -> None:
    assert split_passages("Just a note.\n\n#hashtag is not a heading", source="n")[0].section == ""


def test_paragraphs_are_packed_up_to_the_target_and_never_past_the_maximum() -> None:
    paragraphs = [" ".join(f"p{n}w{i}" for i in range(40)) for n in range(12)]
    passages = split_passages("\n\n".join(paragraphs), source="d", target_words=100, max_words=150)

    # 40 + 40 + 40 = 120 reaches the target; a fourth paragraph would pass the maximum anyway.
    assert [len(_words(p.text)) for p in passages] == [120, 120, 120, 120]
    assert all(p.text.count("\n\n") == 2 for p in passages)


def test_an_oversize_paragraph_is_cut_between_sentences() -> None:
    sentence = " ".join(["word"] * 29) + " end."
    paragraph = " ".join([sentence] * 10)  # 300 words, one paragraph
    passages = split_passages(paragraph, source="d", target_words=60, max_words=100)

    assert [len(_words(p.text)) for p in passages] == [60, 60, 60, 60, 60]
    assert all(p.text.endswith("end.") for p in passages)


def test_a_run_on_sentence_longer_than_a_passage_is_cut_between_words() -> None:
    text = " ".join(f"w{i}" for i in range(250))
    passages = split_passages(text, source="d", target_words=50, max_words=100)

    assert [len(_words(p.text)) for p in passages] == [100, 100, 50]
    assert _words(" ".join(p.text for p in passages)) == _words(text)


def test_empty_and_heading_only_documents_have_no_passages() -> None:
    assert split_passages("", source="d") == []
    assert split_passages("# Title\n\n## Section\n", source="d") == []


def test_bounds_are_checked() -> None:
    with pytest.raises(ValueError, match="target_words"):
        split_passages("text", source="d", target_words=400, max_words=300)


# Documents without '#' or fence characters: every word must come out once, in order, within bounds.
_word = st.text(alphabet="abcxyz.!?", min_size=1, max_size=8)
_line = st.lists(_word, max_size=40).map(" ".join)
_document = st.lists(_line, max_size=30).map("\n".join)


@given(document=_document, target=st.integers(1, 60), extra=st.integers(0, 60))
def test_every_word_is_kept_in_order_and_passages_stay_within_the_maximum(
    document: str, target: int, extra: int
) -> None:
    passages = split_passages(document, source="d", target_words=target, max_words=target + extra)

    assert _words(" ".join(p.text for p in passages)) == _words(document)
    assert all(0 < len(_words(p.text)) <= target + extra for p in passages)
    assert [p.index for p in passages] == list(range(len(passages)))
    assert split_passages(document, source="d", target_words=target, max_words=target + extra) == passages
