"""Prompt building: the model's chat template over the system prompt and the newest whole turns that fit."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.conversation.store import Turn
from engine.errors import InputRejected
from engine.model.registry import LoadedModel


@dataclass(frozen=True, slots=True)
class Prompt:
    token_ids: list[int]
    history_used: int  # stored turns the model sees
    history_left_out: int  # older stored turns that did not fit


def _message(turn: Turn, label_speakers: bool) -> dict[str, str]:
    content = turn.content
    if label_speakers and turn.role == "user" and turn.author:
        # In shared channels the model must know who says what.
        content = f"{turn.author}: {content}"
    return {"role": turn.role, "content": content}


def build_prompt(
    model: LoadedModel,
    *,
    system: str,
    history: Sequence[Turn],
    new: Turn,
    budget_tokens: int,
    label_speakers: bool = False,
) -> Prompt:
    """Token ids of system + the newest whole turns + the new message, within ``budget_tokens``.

    The number of turns that fit is found by binary search over rendered prompts, so a long history
    costs O(log n) renders and tokenisations rather than one per turn.
    """
    tail = [_message(new, label_speakers)]
    head = [{"role": "system", "content": system}] if system else []
    messages = [_message(t, label_speakers) for t in history]

    def encode(k: int) -> list[int]:
        chosen = messages[len(messages) - k :] if k else []
        # A window that opens on the assistant's words reads as if the model spoke first.
        while chosen and chosen[0]["role"] != "user":
            chosen = chosen[1:]
        text = model.template.render([*head, *chosen, *tail], add_generation_prompt=True)
        ids: list[int] = model.tokenizer.encode(text, add_special_tokens=False).ids
        return ids

    ids = encode(0)
    if len(ids) > budget_tokens:
        raise InputRejected(
            f"your message is too long for the model: it takes {len(ids)} tokens with the instructions, "
            f"and at most {budget_tokens} fit"
        )
    lo, hi = 0, len(messages)
    best = ids
    while lo < hi:
        mid = (lo + hi + 1) // 2
        candidate = encode(mid)
        if len(candidate) <= budget_tokens:
            lo, best = mid, candidate
        else:
            hi = mid - 1
    used = lo
    while used and messages[len(messages) - used]["role"] != "user":
        used -= 1
    return Prompt(token_ids=best, history_used=used, history_left_out=len(messages) - used)
