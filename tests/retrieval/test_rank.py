"""BM25 ranking over passages, and the line between passages that support an answer, weak matches and
nothing relevant."""

from __future__ import annotations

import pytest

from engine.retrieval.passages import Passage, split_passages
from engine.retrieval.rank import GATE_COVERAGE, PassageIndex, tokenize

GARDEN = """\
# Garden club rules

## Membership

Anyone living in the district can join the club. The yearly membership fee is 20 euros, paid in January.

## Plots

Each member gets one plot. Plots left untended for two months go back to the waiting list.

## Tools

Tools are kept in the shed. Return them clean; the shed is locked at 8 pm.
"""

BIKES = """\
# Bike repair workshop

## Opening hours

The workshop is open on Saturdays from 10 am to 4 pm.

## Flat tyres

To fix a flat tyre, remove the wheel, find the puncture and patch the inner tube.
"""

JARDIN = """\
# Règles du jardin

## Adhésion

Pour devenir membre du jardin, remplissez le formulaire d'adhésion. La cotisation annuelle est de 20 euros.
"""


@pytest.fixture(scope="module")
def index() -> PassageIndex:
    passages = [
        *split_passages(GARDEN, source="garden.md"),
        *split_passages(BIKES, source="bikes.md"),
        *split_passages(JARDIN, source="jardin.md"),
    ]
    return PassageIndex(passages)


def test_tokens_are_folded_words_without_stopwords() -> None:
    assert tokenize("L'Adhésion au CLUB: members_only, 20 €!") == ["adhesion", "club", "member", "only", "20"]
    assert tokenize("What is the class of this bus?") == ["class", "bus"]


@pytest.mark.parametrize(
    ("query", "section"),
    [
        ("How do I join the club?", "Garden club rules > Membership"),
        ("How much is the membership fee?", "Garden club rules > Membership"),
        ("When is the shed locked?", "Garden club rules > Tools"),
        ("What are the workshop's opening hours?", "Bike repair workshop > Opening hours"),
        ("how to patch a flat tyre on a tandem", "Bike repair workshop > Flat tyres"),  # one unknown word
        ("Comment devenir membre ?", "Règles du jardin > Adhésion"),
        ("cotisation adhesion", "Règles du jardin > Adhésion"),  # typed without the accent
    ],
)
def test_a_relevant_question_finds_its_passage_first_and_it_supports_the_answer(
    index: PassageIndex, query: str, section: str
) -> None:
    hits = index.search(query, k=3)

    passage, score = hits[0]
    assert passage.section == section
    assert score > 0
    assert index.coverage(query, passage) >= GATE_COVERAGE
    assert index.supporting(query, 3)[0] == passage


@pytest.mark.parametrize("query", ["quantum chromodynamics", "the", "?", ""])
def test_a_question_sharing_no_word_with_the_documents_gets_nothing(index: PassageIndex, query: str) -> None:
    assert index.search(query) == []


def test_a_question_sharing_only_a_word_with_the_documents_gets_weak_matches(index: PassageIndex) -> None:
    query = "Is there a parking fee at the station?"
    hits = index.search(query)

    assert [passage.section for passage, _ in hits] == ["Garden club rules > Membership"]
    assert 0 < index.coverage(query, hits[0][0]) < GATE_COVERAGE
    assert index.supporting(query, 3) == []


def test_a_common_word_matches_everywhere_but_supports_nothing(index: PassageIndex) -> None:
    query = "club parking spaces"  # "club" is in every garden passage's title
    hits = index.search(query, k=10)

    assert {passage.source for passage, _ in hits} == {"garden.md"}
    assert len(hits) == 3
    assert index.supporting(query, 10) == []


def test_scores_are_in_decreasing_order_and_k_limits_the_hits(index: PassageIndex) -> None:
    hits = index.search("club plots shed", k=2)

    assert len(hits) == 2
    assert hits[0][1] >= hits[1][1]


def test_equal_scores_keep_document_order() -> None:
    same = [Passage("d", "t", "", i, "identical passage text") for i in range(3)]

    hits = PassageIndex(same).search("identical text", k=3)

    assert [passage.index for passage, _ in hits] == [0, 1, 2]
    assert len({score for _, score in hits}) == 1


def test_an_empty_index_finds_nothing() -> None:
    assert len(PassageIndex([])) == 0
    assert PassageIndex([]).search("anything") == []
    assert PassageIndex([Passage("d", "", "", 0, "the of a")]).search("anything") == []


def test_supporting_passages_are_those_of_the_best_that_cover_the_floor(index: PassageIndex) -> None:
    query = "membership fee tools shed"
    supporting = index.supporting(query, 5, gate=0.3, floor=0.25)
    assert supporting
    assert all(index.coverage(query, p) >= 0.25 for p in supporting)
    assert index.supporting(query, 5, gate=1.0) == []  # no passage covers the whole question


def test_per_source_keeps_one_long_document_from_taking_every_place() -> None:
    fees = [Passage("fees.md", "Fees", "", i, f"The rowing season fee is 149 euros, rule {i}.") for i in range(5)]
    minutes = Passage("minutes.md", "Minutes", "", 0, "The rowing season fee was 139 euros last year.")
    index = PassageIndex([*fees, minutes])
    query = "What is the rowing season fee?"

    assert [p.source for p in index.supporting(query, 4)] == ["fees.md"] * 4  # ties keep document order
    capped = index.supporting(query, 4, per_source=3)
    assert [p.source for p in capped] == ["fees.md"] * 3 + ["minutes.md"]
    assert index.supporting(f"{query} In winter?", 4, per_source=3) == []  # the gate still applies
