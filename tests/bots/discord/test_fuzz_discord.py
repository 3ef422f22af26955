"""Fuzzing the Discord entry point through the fake server: arbitrary Unicode, lengths and entity layouts
never crash the bot, and every message gets an answer or a clear refusal (RELIABILITY 8, 9)."""

from __future__ import annotations

from hypothesis import given

from bots.discord.bot import DiscordBot
from tests.bots.fuzz import FUZZ, HOSTILE, answered_or_refused
from tests.fakes.discord import FakeDiscord


@FUZZ
@given(text=HOSTILE)
async def test_discord_survives_anything(dc: FakeDiscord, bot: DiscordBot, text: str) -> None:
    person = dc.user("fuzz")
    channel = dc.dm_channel(person)
    await dc.dm(person, text)
    reply = await dc.wait_for(lambda: dc.bot_messages(channel), timeout=10)
    assert answered_or_refused(reply[-1].content), reply[-1].content
    assert dc.pings == []
