"""Citations checked, renumbered and listed while an answer streams; the sources given to the model."""

from __future__ import annotations

import pytest

from engine.retrieval.grounding import INSTRUCTION, Citations, Source, grounded_message

RULES = Source("Guild rules", "rules.md", "Guild rules > Membership", "Membership costs €37 a year.")
HOURS = Source("Guild rules", "rules.md", "Guild rules > Hours", "The Copper Room opens at 18:45.")
PAGE = Source("Kestermouth news", "https://news.example/kiln", "", "The kiln reached 1,240 °C.")


def run(sources: list[Source], pieces: list[str]) -> tuple[str, Citations]:
    citations = Citations(sources)
    out = "".join(citations.feed(piece) for piece in pieces) + citations.finish()
    assert out == citations.text  # what was let out is what the answer is
    return out, citations


def test_citations_are_renumbered_in_the_order_first_cited() -> None:
    out, citations = run([RULES, HOURS, PAGE], ["The room opens at 18:45 [2]. Fees are €37 [1], see [2]."])
    assert out.startswith("The room opens at 18:45 [1]. Fees are €37 [2], see [1].")
    assert citations.cited == [HOURS, RULES]
    assert out.endswith("Sources:\n[1] Guild rules (rules.md), Hours\n[2] Guild rules (rules.md), Membership")


def test_a_citation_of_a_source_never_given_is_removed() -> None:
    out, citations = run([RULES], ["It costs €37 [1][7]. It is old [9]. Really [0]."])
    assert out.startswith("It costs €37 [1]. It is old. Really.")
    assert citations.cited == [RULES]


@pytest.mark.parametrize("cut", range(1, 30))
def test_a_citation_split_across_deltas_is_still_rewritten(cut: int) -> None:
    text = "Kiln heat [3]. Fees [1, 3] and [Source 2]; none [12]."
    out, _ = run([RULES, HOURS, PAGE], [text[:cut], text[cut:]])
    assert out.split("\n\n")[0] == "Kiln heat [1]. Fees [2][1] and [3]; none."


def test_brackets_that_are_not_citations_pass_through() -> None:
    text = "Use list[int] or [a, b]; an array [1.5] stays, and an unclosed [ stays too"
    out, citations = run([RULES], [text])
    assert out.startswith(text)
    assert not citations.cited


def test_an_answer_citing_nothing_lists_the_sources_it_was_given() -> None:
    out, citations = run([RULES, PAGE], ["Fees are €37."])
    assert out == (
        "Fees are €37.\n\nSources consulted:\n- Guild rules (rules.md), Membership\n"
        "- Kestermouth news <https://news.example/kiln>"
    )
    assert citations.used == [RULES, PAGE]


def test_web_sources_are_autolinks_so_discord_shows_no_embeds() -> None:
    out, _ = run([PAGE], ["Hot [1]."])
    assert out.endswith("[1] Kestermouth news <https://news.example/kiln>")
    assert PAGE.as_dict() == {"title": "Kestermouth news", "section": "", "url": "https://news.example/kiln"}
    assert RULES.as_dict()["document"] == "rules.md"


def test_sources_are_fenced_and_the_question_comes_last() -> None:
    message = grounded_message("How much are fees?", [RULES, PAGE])
    assert message.startswith(INSTRUCTION)
    assert "<<<SOURCE [1] Guild rules > Membership\nMembership costs €37 a year.\nSOURCE>>>" in message
    assert "<<<SOURCE [2] Kestermouth news\nThe kiln reached 1,240 °C.\nSOURCE>>>" in message
    assert message.endswith("Question: How much are fees?")


def test_a_citation_of_the_wrong_source_points_to_the_one_holding_the_claim() -> None:
    # Small models cite [1] for what they took from another source; the claim's own words say which.
    out, citations = run([RULES, HOURS], ["The Copper Room opens at 18:45 [1]. Membership costs €37 [1]."])
    assert out.startswith("The Copper Room opens at 18:45 [1]. Membership costs €37 [2].")
    assert citations.cited == [HOURS, RULES]


def test_a_claim_no_other_source_holds_better_keeps_its_citation() -> None:
    # Nothing any source holds, then words both hold alike ("guild" is in both titles): the model's choice.
    out, citations = run([RULES, HOURS], ["Both are well run [2]. The guild sets them [1]."])
    assert out.startswith("Both are well run [1]. The guild sets them [2].")
    assert citations.cited == [HOURS, RULES]


@pytest.mark.parametrize("cut", range(0, 60, 3))
def test_a_citation_before_its_claim_is_checked_against_the_sentence_after_it(cut: int) -> None:
    text = "According to [1], membership costs €37 a year. As stated in [2], it opens at 18:45."
    out, citations = run([HOURS, RULES], [text[:cut], text[cut:]])
    assert out.startswith("According to [1], membership costs €37 a year. As stated in [2], it opens at 18:45.")
    assert citations.cited == [RULES, HOURS]
