"""Summaries and e-mail replies on Discord: Apps > Summarize / Draft a reply on a message, /summarize and
/reply with a file or text, and /summarize catching up on a channel's history (with the Message Content
intent, and the Read Message History permission), through the real discord.py against the fake Discord."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest

from bots.commands import CATCH_UP, REPLY, SUMMARIZE
from bots.discord.bot import NO_CONTENT_INTENT, NO_HISTORY, DiscordBot
from engine.conversation.engine import Engine
from engine.runtime.settings import Settings
from tests.fakes.discord import (
    DEFAULT_BOT_PERMISSIONS,
    DEFAULT_EVERYONE_PERMISSIONS,
    READ_MESSAGE_HISTORY,
    FakeDiscord,
    GuildRef,
    SlashInteraction,
)
from tests.fakes.generator import ScriptedGenerator

EMAIL = (
    b"From: Marta Kowalczyk <marta@example.org>\r\nTo: club@example.org\r\nSubject: Hall booking\r\n"
    b"Date: Mon, 2 Mar 2026 09:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
    b"Hello,\r\nIs the hall free on 14 March, and what does it cost for an afternoon?\r\nMarta\r\n"
)


async def _guild(dc: FakeDiscord, name: str, **options: int) -> GuildRef:
    g = dc.guild(name, **options)
    await dc.dispatch_guild_create(g.id)
    return g


def _member(dc: FakeDiscord, g: GuildRef, name: str) -> int:
    user = dc.user(name)
    dc.add_member(g.id, user)
    return user


async def done(dc: FakeDiscord, interaction: SlashInteraction, text: str) -> str:
    await interaction.wait_done()
    await dc.wait_for(lambda: text in interaction.text)
    return interaction.text


@pytest.fixture
def asked(scripted: ScriptedGenerator) -> list[str]:
    """The last user message of every prompt the model got; it answers with two topics citing messages."""
    seen: list[str] = []

    def script(users: list[str]) -> str:
        seen.append(users[-1])
        return "- The kiln budget was agreed by Ann [2].\n- Bo asked about the bake sale [4]. [99]"

    scripted.script = script
    return seen


@pytest.fixture
async def reading_bot(fast_engine: Engine, dc_settings: Settings) -> AsyncIterator[DiscordBot]:
    """A bot with the Message Content intent (needed to read others' messages in the history)."""
    settings = dc_settings.model_copy(update={"discord_message_content": True})
    async with DiscordBot(fast_engine, settings, edit_interval=0.02, guild_ready_timeout=0.05) as b:
        yield b


async def test_apps_summarize_and_draft_a_reply_on_a_message(
    dc: FakeDiscord, bot: DiscordBot, asked: list[str]
) -> None:
    assert {"Summarize", "Draft a reply"} <= {c["name"] for c in dc.commands[None] if c.get("type") == 3}
    g = await _guild(dc, "Club")
    ann, bo = _member(dc, g, "ann"), _member(dc, g, "bo")
    note = await dc.user_says(g.channel_id, ann, "The kiln needs a new element, quoted at 340 euros by Fenwick.")
    summary = await dc.message_command(g.channel_id, bo, "Summarize", note.id)
    await done(dc, summary, "kiln budget")
    assert asked[-1].startswith(f"Bo: {SUMMARIZE}")  # in a channel the model sees who asks
    assert "quoted at 340 euros by Fenwick" in asked[-1]
    assert not summary.ephemeral  # answered in the channel

    mail = await dc.user_says(
        g.channel_id, ann, "", attachments=[dc.attachment(EMAIL, "booking.eml", "message/rfc822")]
    )
    draft = await dc.message_command(g.channel_id, bo, "Draft a reply", mail.id)
    await done(dc, draft, "kiln budget")
    assert asked[-1].startswith(f"Bo: {REPLY}")
    assert "Is the hall free on 14 March" in asked[-1]
    assert "Marta Kowalczyk" in asked[-1]  # the e-mail's headers are read too


async def test_summarize_and_reply_take_a_file_or_text(dc: FakeDiscord, bot: DiscordBot, asked: list[str]) -> None:
    g = await _guild(dc, "Club")
    ann = _member(dc, g, "ann")
    report = b"# Boathouse report\n\nThe boathouse roof leaks over bay 3; repairs cost 1,200 euros."
    summary = await dc.slash(
        g.channel_id, ann, "summarize", {"file": dc.attachment(report, "report.md", "text/markdown"), "how": "one line"}
    )
    await done(dc, summary, "kiln budget")
    assert asked[-1].startswith(f"Ann: {SUMMARIZE} Also: one line")
    assert "repairs cost 1,200 euros" in asked[-1]

    reply = await dc.slash(
        g.channel_id, ann, "reply", {"text": "Can you send the minutes by Friday?", "how": "say yes"}
    )
    await done(dc, reply, "kiln budget")
    assert asked[-1].startswith(f"Ann: {REPLY} Also: say yes")
    assert "Can you send the minutes by Friday?" in asked[-1]

    bare = await dc.slash(g.channel_id, ann, "reply", {})
    assert "attach it (file:) or paste it (text:)" in await done(dc, bare, "Give me the e-mail")
    assert bare.ephemeral

    broken = await dc.slash(g.channel_id, ann, "summarize", {"file": dc.attachment(b"%PDF-1.7 cut", "x.pdf")})
    assert "damaged or truncated" in await done(dc, broken, "Sorry")


async def test_summarize_catches_up_on_the_channel_with_links(
    dc: FakeDiscord, reading_bot: DiscordBot, asked: list[str]
) -> None:
    g = await _guild(dc, "Club")
    ann, bo = _member(dc, g, "ann"), _member(dc, g, "bo")
    said = [
        (ann, "Old news nobody needs."),
        (ann, "Shall we buy the new kiln element?"),
        (bo, "Yes, Fenwick quoted 340 euros."),
        (ann, "Agreed then, I'll order it."),
        (bo, "Also, who runs the bake sale on Saturday?"),
    ]
    messages = [await dc.user_says(g.channel_id, who, text) for who, text in said]
    # The last 5 messages: the bot's own "thinking…" answer to this command is one of them, and is left out.
    catch_up = await dc.slash(g.channel_id, bo, "summarize", {"count": 5})
    text = await done(dc, catch_up, "[[4]]")
    prompt = asked[-1]
    assert prompt.startswith(f"Bo: {CATCH_UP}")
    assert "Old news" not in prompt
    assert "[1] Ann: Shall we buy the new kiln element?\n\n[2] Bo: Yes, Fenwick quoted 340 euros." in prompt
    assert "[4] Bo: Also, who runs the bake sale on Saturday?\nDOCUMENT>>>" in prompt
    # Each topic links back to where it began; a number matching no message stays as written.
    first = f"https://discord.com/channels/{g.id}/{g.channel_id}/{messages[2].id}"
    assert f"Ann [[2]](<{first}>)." in text
    assert re.search(r"bake sale \[\[4\]\]\(<https://discord\.com/channels/\d+/\d+/\d+>\)\. \[99\]", text)
    assert not catch_up.ephemeral

    again = await dc.slash(g.channel_id, bo, "summarize", {"since": "yesterday-ish"})
    assert "'since' takes a duration like 30m" in await done(dc, again, "since")


async def test_catching_up_without_read_message_history_says_so(
    dc: FakeDiscord, reading_bot: DiscordBot, asked: list[str]
) -> None:
    closed = await _guild(
        dc,
        "Closed",
        bot_permissions=DEFAULT_BOT_PERMISSIONS & ~READ_MESSAGE_HISTORY,
        everyone_permissions=DEFAULT_EVERYONE_PERMISSIONS & ~READ_MESSAGE_HISTORY,
    )
    bo = _member(dc, closed, "bo")
    await dc.user_says(closed.channel_id, bo, "hi")
    catch_up = await dc.slash(closed.channel_id, bo, "summarize", {})
    assert await done(dc, catch_up, "Read Message History") == NO_HISTORY
    assert asked == []


async def test_without_the_message_content_intent_the_setting_is_named(
    dc: FakeDiscord, bot: DiscordBot, asked: list[str]
) -> None:
    g = await _guild(dc, "Club")
    ann = _member(dc, g, "ann")
    await dc.user_says(g.channel_id, ann, "hello")
    catch_up = await dc.slash(g.channel_id, ann, "summarize", {})
    assert await done(dc, catch_up, "Message Content") == NO_CONTENT_INTENT
    assert catch_up.ephemeral
    assert asked == []
