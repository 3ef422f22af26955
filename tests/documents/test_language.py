"""The document's language, named for the instruction (py3langid, its model inside the wheel)."""

from __future__ import annotations

from engine.documents.language import language_of, write_in

FRENCH = (
    "Bonjour à tous, voici le compte rendu de la réunion du conseil du 10 mars. Le conseil a approuvé le "
    "budget du jardin partagé et a décidé de remplacer le four de la poterie avant l'été."
)
ENGLISH = (
    "Hello everyone, here are the minutes of the council meeting of 10 March. The council approved the "
    "community garden's budget and decided to replace the pottery kiln before the summer."
)
GERMAN = (
    "Hallo zusammen, hier ist das Protokoll der Ratssitzung vom 10. März. Der Rat hat das Budget des "
    "Gemeinschaftsgartens genehmigt und beschlossen, den Brennofen vor dem Sommer zu ersetzen."
)


def test_a_documents_language_is_named() -> None:
    assert language_of(FRENCH) == "French"
    assert language_of(GERMAN) == "German"


def test_english_and_too_little_text_ask_for_nothing() -> None:
    assert write_in(ENGLISH) == ""  # the instructions' own language
    assert write_in("| 12 | 14,5 | 3 |\n| 7 | 2 | 1 |") == ""  # figures say nothing of a language
    assert write_in("Merci !") == ""
    assert write_in(FRENCH) == "Write your answer in French."
