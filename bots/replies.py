"""Texts both front ends show, written once."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engine.conversation.quota import KEEP
from engine.errors import InputRejected, ParleyError, StoreUnavailable

UNAVAILABLE = "My memory is temporarily unavailable; please try again in a moment."


def explain(error: ParleyError) -> str:
    """What a person is told when their request fails: refusals say why, outages say to retry."""
    if isinstance(error, StoreUnavailable):
        return UNAVAILABLE
    if isinstance(error, InputRejected):
        return f"Sorry: {error}."
    return f"Sorry, something went wrong: {error}."


def _amount(value: int | None, unit: str) -> str:
    return f"unlimited {unit}" if value is None else f"{value} {unit}"


def usage_text(usage: Mapping[str, int], left: Mapping[str, int | None]) -> str:
    return (
        f"Your usage: {usage.get('requests', 0)} requests, {usage.get('prompt_tokens', 0)} prompt tokens, "
        f"{usage.get('completion_tokens', 0)} reply tokens.\n"
        f"Left for you: {_amount(left.get('requests_this_minute'), 'requests this minute')}, "
        f"{_amount(left.get('tokens_today'), 'tokens today')}. "
        f"Left in this chat: {_amount(left.get('chat_requests_this_minute'), 'requests this minute')}, "
        f"{_amount(left.get('chat_tokens_today'), 'tokens today')}."
    )


def limits_text(requests_per_minute: int, tokens_per_day: int) -> str:
    rpm = "unlimited" if requests_per_minute == 0 else str(requests_per_minute)
    tpd = "unlimited" if tokens_per_day == 0 else str(tokens_per_day)
    return f"This chat's limits: {rpm} requests per minute, {tpd} tokens per day."


def parse_limit(arg: str | None) -> int | None:
    """A limit as typed: a number (0 = unlimited), ``-`` for the configured default, nothing to keep it."""
    if arg is None:
        return KEEP
    arg = arg.strip()
    if arg == "-":
        return None
    if arg.isdigit() and len(arg) <= 10:
        return int(arg)
    raise ValueError(f"'{arg[:20]}' is not a number (0 = unlimited, - = the default)")


def parse_limits(args: Sequence[str]) -> tuple[int | None, int | None]:
    """``REQUESTS_PER_MINUTE [TOKENS_PER_DAY]`` as typed after a command."""
    if len(args) > 2:
        raise ValueError("give requests per minute and, optionally, tokens per day")
    padded = [*args, None, None]
    return parse_limit(padded[0]), parse_limit(padded[1])
