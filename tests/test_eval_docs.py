"""The summaries-and-replies eval: its set (counts, keys that match their own documents, e-mails the reader
parses), its scoring on hand-written replies, the long report as a PDF, and two items through the real
engine."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections import Counter
from email import message_from_bytes, policy

import pytest

from bench.eval_docs import (
    DOCS,
    PARTS,
    PARTS_STARTED,
    Item,
    Outcome,
    Question,
    answered,
    facts_found,
    greets,
    language_right,
    load_items,
    main,
    markdown_pdf,
    read_item,
    render,
    run,
    score,
)
from engine.documents import read_document
from engine.runtime.settings import Settings

FLAGS = re.IGNORECASE | re.DOTALL
REPORT = Item("r", "report", "reports/q3-results-brindlecombe.md", "en",
              facts=(r"4[.,]2 ?million", r"\b8 ?%", r"kiln", r"Venkataraman"))  # fmt: skip
EMAIL = Item(
    "e", "email", "emails/fr-devis-traiteur.eml", "fr", sender="Sophie", surname="Marchand",
    questions=(
        Question("Êtes-vous disponibles le samedi 14 février ?", (r"disponib|samedi",)),
        Question("Quel serait le prix par personne ?", (r"prix|tarif|€",)),
        Question("Proposez-vous un menu végétarien ?", (r"v[ée]g[ée]tarien",)),
    ),
)  # fmt: skip
FRENCH_DRAFT = (
    "Bonjour Sophie,\n\nMerci pour votre message. Nous sommes disponibles le samedi 14 février pour le déjeuner. "
    "Le prix est de 32 € par personne pour le buffet, et nous proposons un menu végétarien.\n\nBien cordialement,"
)


def words(text: str) -> int:
    return len(re.findall(r"\w+", text))


def test_the_set_meets_the_issue() -> None:
    items = load_items()
    reports = [i for i in items if i.kind == "report" and not i.as_pdf]
    emails = [i for i in items if i.kind == "email"]
    assert len(reports) >= 20
    assert len(emails) >= 10
    assert Counter(i.language for i in reports)["fr"] >= 6
    assert Counter(i.language for i in reports)["en"] >= 12
    assert Counter(i.language for i in emails)["fr"] >= 4
    assert Counter(i.language for i in emails)["en"] >= 6
    assert all(4 <= len(i.facts) <= 8 for i in reports)
    assert all(2 <= len(i.questions) <= 4 for i in emails)
    # Varied lengths: a few short, most middling, a few long, and one of about 50 pages for the PDF case.
    lengths = sorted(words(i.path.read_text()) for i in reports)
    assert sum(n <= 400 for n in lengths) >= 3
    assert sum(n >= 3000 for n in lengths) >= 3
    (long,) = [i for i in items if i.as_pdf]
    assert words(long.path.read_text()) >= 18_000
    # The first items mix kinds and languages, so that --limit 4 tries a bit of everything.
    assert {(i.kind, i.language) for i in items[:4]} == {("report", "en"), ("email", "en"), ("report", "fr"),
                                                         ("email", "fr")}  # fmt: skip


def test_every_key_fact_is_in_its_report() -> None:
    for item in load_items():
        if item.kind == "report":
            text = item.path.read_text()
            assert re.match(r"# \S", text), item.id
            assert re.search(r"^## \S", text, re.MULTILINE), item.id
            for pattern in item.facts:
                assert re.search(pattern, text, FLAGS), (item.id, pattern)


async def test_every_email_parses_and_asks_its_questions() -> None:
    multipart = 0
    for item in load_items():
        if item.kind != "email":
            continue
        data = item.path.read_bytes()
        message = message_from_bytes(data, policy=policy.default)
        for header in ("From", "To", "Subject", "Date", "Message-ID"):
            assert message[header], (item.id, header)
        assert item.sender in str(message["From"]), item.id
        plain = message.get_body(preferencelist=("plain",))
        assert plain is not None
        assert plain.get_content_charset() == "utf-8", item.id
        multipart += message.get_content_type() == "multipart/alternative"
        document = await read_document(data, item.path.name)
        assert document.kind == "email"
        assert item.sender in document.text
        # A reply addressing a question uses its terms: each pattern occurs in the e-mail it answers.
        for question in item.questions:
            for pattern in question.answer:
                assert re.search(pattern, document.text, FLAGS), (item.id, pattern)
    assert multipart >= 3


def test_facts_are_scored_by_share() -> None:
    summary = "Brindlecombe's revenue was £4.2 million, 8% up, and the new kiln at Otterfold is running."
    assert facts_found(REPORT, summary) == [True, True, True, False]
    result = score([REPORT], [Outcome(text=summary, finish_reason="stop", completion_tokens=20)])
    assert result["key_facts"] == 0.75
    assert result["items"]["r"]["facts"] == 0.75
    assert result["language_right"] == 1.0


def test_a_question_is_answered_only_when_all_its_patterns_match() -> None:
    question = Question("Could you send the signed contract by Friday?", (r"contract", r"friday|vendredi"))
    assert answered(question, "I will send the signed contract on Friday.")
    assert answered(question, "Je vous enverrai le contract vendredi.")
    assert not answered(question, "I will send the signed contract soon.")
    assert not answered(question, "See you on Friday.")


def test_a_french_draft_is_scored_as_french() -> None:
    assert language_right(EMAIL, FRENCH_DRAFT)
    assert not language_right(EMAIL, "Hello Sophie, thank you for your message. We are available on that day.")
    assert greets(EMAIL, FRENCH_DRAFT)
    assert greets(EMAIL, "Chère Madame Marchand, merci pour votre message.")
    assert not greets(EMAIL, "Bonjour, merci pour votre message.")
    result = score([EMAIL], [Outcome(text=FRENCH_DRAFT, finish_reason="stop", completion_tokens=60)])
    assert result["questions_answered"] == 1.0
    assert result["greeting"] == 1.0
    assert result["by_language"]["fr"]["language_right"] == 1.0
    half = score([EMAIL], [Outcome(text="Bonjour Sophie, le prix est de 30 € par personne.")])
    assert half["items"]["e"]["answered"] == [False, True, False]


def test_the_parts_are_read_from_the_engines_notices() -> None:
    found = PARTS.search("I read it in 19 parts; this answer covers all of them.")
    assert found is not None
    assert found.group(1) == "19"
    started = PARTS_STARTED.match("Reading annual-review.pdf: 19 parts.")
    assert started is not None
    assert started.group(1) == "19"
    assert PARTS_STARTED.match("Read part 3 of 19.") is None


def test_a_skipped_or_failed_item_is_reported() -> None:
    long = Item("long", "report", "reports-long/annual-review.md", "en", facts=("x",), as_pdf=True)
    result = score([REPORT, long], [Outcome(text="revenue £4.2 million"), Outcome(skipped="skipped: no PDF writer")])
    assert result["reports"] == 1  # the skipped one is left out of the means
    assert result["long_pdf"] == {"id": "long", "status": "skipped: no PDF writer"}
    failed = score([REPORT], [Outcome(error="InputRejected: too long")])
    assert failed["key_facts"] == 0.0
    assert failed["errors"] == 1
    text = render({"command": "python -m bench.eval_docs", "set": {"reports": 2, "emails": 0}, "max_tokens": 32,
                   "model": "m", "precision": "int8", "context_tokens": 2048, "wall_s": 1.0} | result)  # fmt: skip
    assert "skipped: no PDF writer" in text


async def test_the_long_report_becomes_a_pdf_that_keeps_its_key_facts() -> None:
    pytest.importorskip("fpdf")
    small = await read_document(
        markdown_pdf("# Tides\n\n## Spring\n\nThe range is 4.2 metres \u2013 large.", "T"), "t.pdf"
    )
    assert small.kind == "pdf"
    assert "The range is 4.2 metres - large." in small.text
    (long,) = [i for i in load_items() if i.as_pdf]
    document = await read_item(long)
    assert document.kind == "pdf"
    assert document.pages is not None
    assert 40 <= document.pages <= 70
    for pattern in long.facts:
        assert re.search(pattern, document.text, FLAGS), pattern


def test_two_items_through_the_real_engine(settings: Settings) -> None:
    items = {i.id: i for i in load_items()}
    chosen = [items["brindlecombe-q3"], items["venue-booking"]]
    args = argparse.Namespace(model=settings.model, max_tokens=32)
    results = asyncio.run(run(args, chosen, settings))
    assert results["reports"] == 1
    assert results["emails"] == 1
    assert results["errors"] == 0
    assert 0.0 <= results["key_facts"] <= 1.0
    assert 0.0 <= results["questions_answered"] <= 1.0
    assert set(results["by_language"]) == {"en"}
    report, email = results["items"]["brindlecombe-q3"], results["items"]["venue-booking"]
    assert len(report["facts_found"]) == len(chosen[0].facts)
    assert len(email["answered"]) == len(chosen[1].questions)
    for item in (report, email):
        assert item["reply"]
        assert 0 < item["tokens"] <= 32
        assert item["finish"] in ("stop", "length", "loop")
        assert item["parts"] is None  # short documents are read whole
        assert item["pages"] is None
    assert "long_pdf" not in results
    assert DOCS.is_dir()


def test_an_unknown_item_is_refused_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--items", "brindlecombe-q3,no-such-report", "--out", "/nonexistent"])
    assert "no such item in this language: no-such-report" in capsys.readouterr().err
