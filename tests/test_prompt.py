import pytest

from engine.conversation.prompt import build_prompt
from engine.conversation.store import Turn
from engine.errors import InputRejected
from engine.model.registry import LoadedModel


def _history(n: int, size: int = 20) -> list[Turn]:
    turns = []
    for i in range(n):
        turns.append(Turn("user", f"question {i} " + "word " * size, author=f"user{i % 3}"))
        turns.append(Turn("assistant", f"answer {i} " + "word " * size))
    return turns


def _text(model: LoadedModel, ids: list[int]) -> str:
    return model.tokenizer.decode(ids, skip_special_tokens=False)


def test_everything_fits_when_short(model: LoadedModel) -> None:
    p = build_prompt(model, system="Be brief.", history=_history(3), new=Turn("user", "now?"), budget_tokens=2000)
    assert p.history_used == 6
    assert p.history_left_out == 0
    text = _text(model, p.token_ids)
    assert text.index("Be brief.") < text.index("question 0") < text.index("answer 2") < text.index("now?")
    assert text.endswith("<|im_start|>assistant\n")


def test_budget_keeps_the_newest_whole_turns(model: LoadedModel) -> None:
    history = _history(40)
    p = build_prompt(model, system="Be brief.", history=history, new=Turn("user", "latest"), budget_tokens=400)
    assert len(p.token_ids) <= 400
    assert 0 < p.history_used < len(history)
    assert p.history_left_out == len(history) - p.history_used
    text = _text(model, p.token_ids)
    kept = history[len(history) - p.history_used :]
    assert kept[0].role == "user"  # the window opens on a question, not on an orphan answer
    for t in kept:
        assert t.content in text  # whole turns only
    assert history[len(history) - p.history_used - 1].content not in text
    # one more turn would not have fitted
    bigger = build_prompt(model, system="Be brief.", history=history, new=Turn("user", "latest"), budget_tokens=460)
    assert bigger.history_used >= p.history_used


def test_speakers_are_labelled_in_shared_conversations(model: LoadedModel) -> None:
    history = [Turn("user", "hi there", author="Ann"), Turn("assistant", "hello Ann")]
    p = build_prompt(model, system="", history=history, new=Turn("user", "and me?", author="Bob"),
                     budget_tokens=500, label_speakers=True)  # fmt: skip
    text = _text(model, p.token_ids)
    assert "Ann: hi there" in text
    assert "Bob: and me?" in text
    private = build_prompt(model, system="", history=history, new=Turn("user", "x", author="Bob"), budget_tokens=500)
    assert "Ann:" not in _text(model, private.token_ids)


def test_message_too_long_for_the_context_is_refused(model: LoadedModel) -> None:
    with pytest.raises(InputRejected, match="too long for the model"):
        build_prompt(model, system="s", history=[], new=Turn("user", "word " * 500), budget_tokens=100)
