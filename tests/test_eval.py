"""The answer-quality eval: its checks and loop detection on hand-written replies, the question set itself,
and three questions through the real engine."""

import json
from collections import Counter
from pathlib import Path

import pytest

from bench.eval import (
    CATEGORIES,
    Answer,
    Item,
    answer_with_engine,
    failed_checks,
    guess_language,
    is_looping,
    list_items,
    load_items,
    numbers,
    render,
    score,
    sentences,
)
from engine.conversation.engine import Engine

LOOP = "Dear Sam,\n\nThank you for your help with the report.\n\n" + "P.S. Please let me know if you need more.\n" * 12


def _item(**checks: object) -> Item:
    return Item("t", "facts", "question", dict(checks))


def _passes(reply: str, finish: str = "stop", **checks: object) -> bool:
    return not failed_checks(_item(**checks), Answer(reply, finish, 10))


def test_a_repeated_tail_is_a_loop() -> None:
    assert is_looping(LOOP)


def test_numbered_steps_that_repeat_are_a_loop() -> None:
    steps = "".join(f"Step {i}: stir the pot and wait for the water to boil. " for i in range(1, 12))
    assert is_looping(steps)


def test_a_loop_that_drifts_is_a_loop() -> None:
    again = "; however, the first person on the Moon was Neil Armstrong, who made the "
    drifting = "Neil Armstrong, who made the " + "historic " * 40 + again + "historic " * 12 + again + "historic " * 3
    assert is_looping(drifting)


def test_a_loop_without_words_is_a_loop() -> None:
    assert is_looping("Answer: " + "!?" * 150)


def test_ordinary_and_short_replies_are_not_loops() -> None:
    prose = (
        "The Nile is the longest river in Africa. It flows north through eleven countries, including Uganda, "
        "Sudan and Egypt, and ends in a delta on the Mediterranean Sea. Its two main branches, the White Nile "
        "and the Blue Nile, meet at Khartoum. For thousands of years its floods made farming possible."
    )
    assert len(prose) > 200
    assert not is_looping(prose)
    assert not is_looping("yes yes yes")


def test_a_loop_counts_only_when_the_reply_hit_the_token_limit() -> None:
    assert Answer(LOOP, "length", 256).looped_at_limit
    assert not Answer(LOOP, "stop", 200).looped


def test_a_reply_the_loop_guard_stopped_fails_as_a_loop() -> None:
    stopped = Answer("There are 7,982,982,982,982", "loop", 40)
    assert stopped.looped
    assert not stopped.looped_at_limit
    assert failed_checks(_item(any=[r"\b7\b"]), stopped) == ["loop"]


def test_a_looping_reply_fails_even_when_its_patterns_match() -> None:
    assert failed_checks(_item(all=["thank"]), Answer(LOOP, "length", 256)) == ["loop"]


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("La capitale de l'Italie est Rome.", "fr"),
        ("Bonjour ! Comment vas-tu aujourd'hui ?", "fr"),
        ("La capital de Francia es París.", "es"),
        ("El perro tiene cuatro patas.", "es"),
        ("Die Hauptstadt von Deutschland ist Berlin.", "de"),
        ("Schnee ist weiß.", "de"),
        ("The capital of Italy is Rome.", "en"),
    ],
)
def test_guess_language(text: str, language: str) -> None:
    assert guess_language(text) == language


def test_a_bare_name_has_no_language() -> None:
    assert guess_language("Paris.") is None


def test_numbers_read_separators_and_decimals_but_not_parts_of_other_numbers() -> None:
    assert 1024.0 in numbers("2^10 = 1,024.")
    assert 42.0 in numbers("17 + 25 = 42.0")
    assert 42.0 not in numbers("The answer is 142 or 4.2.")
    assert _passes("So the journey takes 150 minutes.", number=150)
    assert not _passes("It takes 2 hours and 30 minutes.", number=150)


def test_sentences_and_list_items() -> None:
    assert sentences("Millbrook opened a library costing 4.5 million euros on 3 May.") == 1
    assert sentences("Millbrook opened a library. It has three floors!") == 2
    assert list_items("1. Hydration\n2. Energy") == 2
    assert list_items("Apple\nBanana\nCherry\nMango") == 4
    assert list_items("Red, blue and yellow.") == 3


def test_yes_no_pattern_rejects_an_explanation() -> None:
    assert _passes("Yes.", all=[r"^\W*yes\W*$"])
    assert not _passes("Yes, the Pacific is larger.", all=[r"^\W*yes\W*$"])


def test_any_all_none_and_words() -> None:
    assert _passes("The capital is Canberra.", any=[r"\bcanberra\b", r"\bsydney\b"])
    assert not _passes("Lopez, your order ships Friday.", all=[r"\blopez\b", r"\b4521\b"])
    saturn = [r"\b(is|it'?s|it is) (actually )?saturn\b"]
    assert not _passes("The largest planet is Jupiter, but it's actually Saturn.", any=["jupiter"], none=saturn)
    assert _passes("Yellow.", max_words=1)
    assert not _passes("Vast blue endless water.", min_words=5, max_words=5)


def test_ends_requires_a_reply_that_stopped_by_itself() -> None:
    assert not _passes("A poem that ran out of room", finish="length", ends=True)


def test_score_per_category_and_overall() -> None:
    items = [Item("a", "facts", "q", {"any": ["x"]}), Item("b", "facts", "q", {"any": ["x"]}),
             Item("c", "arithmetic", "q", {"number": 4})]  # fmt: skip
    answers = [Answer("x", "stop", 3), Answer("y", "stop", 5), Answer("2 + 2 = 4", "stop", 7)]
    result = score(items, answers)
    assert (result["overall"], result["passed"]) == (0.667, 2)
    assert result["categories"] == {"facts": 0.5, "arithmetic": 1.0}
    assert result["mean_reply_tokens"] == 5.0
    assert result["items"]["b"] == {"pass": False, "failed": ["any"], "finish": "stop", "tokens": 5, "reply": "y"}


def test_score_counts_loops_at_the_limit_and_guard_stops_apart() -> None:
    items = [Item(i, "no-loop", "q", {"ends": True}) for i in "abc"]
    answers = [Answer(LOOP, "length", 256), Answer("Monday, Monday", "loop", 30), Answer("Done.", "stop", 2)]
    result = score(items, answers)
    assert (result["loops_at_limit"], result["guard_stops"], result["passed"]) == (1, 1, 1)


def test_the_question_set_is_large_checked_and_covers_every_category() -> None:
    items = load_items()
    assert len(items) >= 110
    per_category = Counter(item.category for item in items)
    assert set(per_category) == set(CATEGORIES)
    assert per_category["facts"] >= 30
    assert per_category["instructions"] >= 25
    assert min(per_category.values()) >= 5


def test_a_misspelt_check_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"id": "x", "category": "facts", "prompt": "?", "checks": {"anyy": ["a"]}}]))
    with pytest.raises(ValueError, match="checks must be"):
        load_items(path)


def test_markdown_says_not_installed_without_llama_cpp() -> None:
    results = {
        "command": "python -m bench.eval",
        "questions": 1,
        "categories": {"facts": 1},
        "max_tokens": 8,
        "system_prompt": "Be brief.",
        "runs": [{"engine": "llama.cpp", "model": "m.gguf", "precision": "gguf", "status": "not installed"}],
    }
    assert "| m.gguf (gguf) | llama.cpp | not installed |" in render(results)


async def test_three_questions_through_the_real_engine(engine: Engine) -> None:
    items = [item for item in load_items() if item.id in {"fact-capital-japan", "math-add-17-25", "yesno-penguins"}]
    answers, wall = await answer_with_engine(engine, items, "You are a helpful assistant.", max_tokens=48)
    assert len(answers) == 3
    assert wall > 0
    assert all(a.tokens > 0 and a.finish_reason in {"stop", "length"} for a in answers)
    result = score(items, answers)
    assert result["items"]["fact-capital-japan"]["pass"], result["items"]
