"""Fuzzing the Telegram entry point through the fake server: arbitrary Unicode, lengths and entity layouts
never crash the bot, and every message gets an answer or a clear refusal (RELIABILITY 8, 9)."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st

from bots.telegram.bot import TelegramBot
from tests.bots.fuzz import FUZZ, HOSTILE, answered_or_refused
from tests.fakes.telegram import FakeTelegram


@FUZZ
# Telegram delivers no empty or blank messages, and a command for another bot is rightly ignored.
@given(
    text=HOSTILE.filter(lambda t: t.strip() and not re.match(r"\s*/\S*@", t)),
    entity=st.tuples(st.integers(-5, 400), st.integers(-5, 400)),
)
async def test_telegram_survives_anything(tg: FakeTelegram, bot: TelegramBot, text: str,
                                          entity: tuple[int, int]) -> None:  # fmt: skip
    person = tg.user("Fuzz")
    chat = tg.private_chat(person)
    offset, length = entity
    # An entity layout that may point outside the text, as a buggy or hostile client could send.
    entities = [{"type": "bold", "offset": offset, "length": length}] if length > 0 and offset >= 0 else []
    tg.user_says(chat, person, text, entities=entities)
    # A long echo streams hundreds of drafts; the bound is generous so a loaded machine does not flake.
    reply = await tg.wait_for(lambda: tg.messages(chat), timeout=60)
    assert answered_or_refused(reply[-1].text), reply[-1].text
