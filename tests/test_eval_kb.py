"""The answers-with-sources eval: its corpus and questions, its scoring on hand-written replies, and a few
questions through the real engine, knowledge base and fake web."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter

import pytest

from bench.eval_kb import CORPUS, DECLINED, KINDS, Question, body, citation_checks, correct, load_questions, run, score
from engine.contract import Finished
from engine.retrieval.passages import Passage
from engine.runtime.settings import Settings

FEES = Question("q1", "single", "How much is membership?", (r"\b37\b",), (), ("fees.md",))
PASSAGES = [
    Passage("fees.md", "Fees", "Fees > Membership", 0, "Membership is €37 a year."),
    Passage("fees.md", "Fees", "Fees > Rooms", 1, "The Tallow Room costs €12 an hour."),
]


def finished(text: str, *sections: str) -> Finished:
    sources = tuple({"title": "Fees", "section": s, "document": "fees.md"} for s in sections)
    return Finished(text, "stop", 10, 10, 0.1, 0.1, sources)


def test_the_corpus_and_questions_meet_the_issue() -> None:
    questions = load_questions()
    kinds = Counter(q.kind for q in questions)
    assert len(list(CORPUS.glob("*.md"))) >= 20
    assert len(questions) >= 100
    assert kinds["single"] >= 20
    assert kinds["multi"] >= 10
    assert kinds["unanswerable"] >= 20
    assert set(kinds) == set(KINDS)
    # Every answerable question's patterns occur in one of its documents: the key is right.
    for q in questions:
        if q.kind in ("single", "multi"):
            texts = [(CORPUS / name).read_text() for name in q.sources]
            for pattern in q.all or q.any[:1]:
                assert any(re.search(pattern, t, re.IGNORECASE) for t in texts), (q.id, pattern)


@pytest.mark.parametrize(
    ("reply", "declined"),
    [
        ("The documents don't say when the garden opens.", True),
        ("I do not know.", True),
        ("That is not mentioned in the sources.", True),
        ("There is no information about a bake sale.", True),
        ("I found nothing reliable about this, so I won't guess.", True),
        ("The garden opens at 08:00 [1].", False),
        ("Membership costs €37; nothing else is charged.", False),
    ],
)
def test_declining_is_recognised(reply: str, declined: bool) -> None:
    assert bool(DECLINED.search(reply)) is declined
    unanswerable = Question("u", "unanswerable", "?", (), (), ())
    assert correct(unanswerable, reply) is declined


def test_citations_are_checked_against_the_cited_section() -> None:
    reply = "It is €37 [1], rooms are extra [2].\n\nSources:\n[1] Fees (fees.md), Membership\n[2] Fees (fees.md), Rooms"
    done = finished(reply, "Fees > Membership", "Fees > Rooms")
    assert body(reply) == "It is €37 [1], rooms are extra [2]."
    assert citation_checks(FEES, reply, done, PASSAGES) == [True, False]
    assert citation_checks(FEES, "€37 [3].", done, PASSAGES) == [False]  # a number the engine should have removed
    result = score([FEES], [(done, PASSAGES)])
    assert result["accuracy"] == 1.0
    assert result["citation_precision"] == 0.5
    assert result["injected"] == 0


def test_a_few_questions_through_the_real_engine(settings: Settings) -> None:
    questions = [q for q in load_questions() if q.kind == "single"][:2]
    args = argparse.Namespace(
        model=settings.model, modes=["none", "kb", "web"], coverage=0.35, web_coverage=0.32, max_tokens=24
    )
    runs = asyncio.run(run(args, questions, settings))
    assert [r["mode"] for r in runs] == ["none", "kb", "web"]
    kb, web = runs[1], runs[2]
    # The corpus's own words retrieve their passages: the questions go to the model with sources.
    assert all(item["sources"] for item in kb["items"].values())
    assert all(item["sources"] for item in web["items"].values())
    assert all(item["sources"] == 0 for item in runs[0]["items"].values())
