"""Parley on Discord, driven the way people use it."""

from __future__ import annotations

import asyncio
import logging

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from bots.discord.bot import DiscordBot
from engine.conversation.engine import Engine
from engine.conversation.reading import DEFAULT_INSTRUCTION
from engine.conversation.store import Store
from engine.errors import ConfigError, NotReady
from engine.model.generator import Generator
from engine.runtime.settings import Settings
from tests.bots.conftest import captured_logs, keys_naming, long_second_answer
from tests.fakes.discord import FakeDiscord, GuildRef
from tests.fakes.generator import ScriptedGenerator


async def _guild(dc: FakeDiscord, name: str) -> GuildRef:
    """A server the bot joins while running (Discord then sends GUILD_CREATE)."""
    g = dc.guild(name)
    await dc.dispatch_guild_create(g.id)
    return g


def _member(dc: FakeDiscord, g: GuildRef, name: str, *, admin: bool = False) -> int:
    user = dc.user(name)
    dc.add_member(g.id, user, roles=[g.admin_role_id] if admin else [])
    return user


async def test_slash_ask_defers_then_answers(dc: FakeDiscord, bot: DiscordBot) -> None:
    g = await _guild(dc, "Server")
    ann = _member(dc, g, "ann")
    assert {c["name"] for c in dc.commands[None]} >= {"ask", "chat", "new", "system", "retry", "stop", "usage",
                                                       "forget", "model", "about", "help"}  # fmt: skip
    ask = await dc.slash(g.channel_id, ann, "ask", {"prompt": "hello there"})
    await dc.wait_for(lambda: "echo 1: Ann: hello there" in ask.text)
    assert ask.response_type == 5  # deferred first: generation may take longer than 3 s
    assert not ask.ephemeral


async def test_real_model_answers_a_mention(dc: FakeDiscord, dc_settings: Settings, store: Store,
                                            generator: Generator) -> None:  # fmt: skip
    engine = Engine(dc_settings, store, generator, generator.runner.model)
    async with DiscordBot(engine, dc_settings, edit_interval=0.2, guild_ready_timeout=0.05):
        g = await _guild(dc, "Server")
        ann = _member(dc, g, "ann")
        await dc.user_says(g.channel_id, ann, "What is the capital of France? Answer in one sentence.",
                           mentions=[dc.bot_id])  # fmt: skip
        reply = await dc.wait_for_message(g.channel_id, "Paris", timeout=120)
        assert reply.reply_to is not None


async def test_channel_conversation_by_mention_and_reply(dc: FakeDiscord, bot: DiscordBot,
                                                         scripted: ScriptedGenerator) -> None:  # fmt: skip
    g = await _guild(dc, "Server")
    ann, bob = _member(dc, g, "ann"), _member(dc, g, "bob")
    await dc.user_says(g.channel_id, ann, "just chatting")  # not for the bot
    await dc.user_says(g.channel_id, ann, "what is up?", mentions=[dc.bot_id])
    first = await dc.wait_for_message(g.channel_id, "echo 1: Ann: what is up?")
    await dc.user_says(g.channel_id, bob, "and for me?", reply_to=first.id)
    await dc.wait_for_message(g.channel_id, "echo 2: Bob: and for me?")
    await asyncio.sleep(0.2)
    assert not any("just chatting" in m.content for m in dc.bot_messages(g.channel_id))
    assert len(dc.bot_messages(g.channel_id)) == 2
    assert "Ann: what is up?" in scripted.prompts[-1]  # the model sees who said what
    assert dc.pings == []


async def test_direct_messages(dc: FakeDiscord, bot: DiscordBot) -> None:
    ann = dc.user("ann")
    await dc.dm(ann, "hello in private")
    await dc.wait_for_message(dc.dm_channel(ann), "echo 1: hello in private")
    await dc.dm(ann, "again")
    await dc.wait_for_message(dc.dm_channel(ann), "echo 2: again")


async def test_chat_opens_a_thread_and_continues_there(dc: FakeDiscord, fast_engine: Engine,
                                                       dc_settings: Settings) -> None:  # fmt: skip
    settings = dc_settings.model_copy(update={"discord_message_content": True})
    async with DiscordBot(fast_engine, settings, edit_interval=0.02, guild_ready_timeout=0.05):
        g = await _guild(dc, "Server")
        ann = _member(dc, g, "ann")
        chat = await dc.slash(g.channel_id, ann, "chat", {"prompt": "Planning a trip to Lisbon\nwith details"})
        await chat.wait_acknowledged()
        thread_id = await dc.wait_for(
            lambda: next((c for c, d in dc.channels.items() if d.get("name") == "Planning a trip to Lisbon"), None)
        )
        await dc.wait_for_message(thread_id, "echo 1: Ann: Planning a trip")
        # in a thread the bot opened, every message is for it (with the Message Content intent)
        await dc.user_says(thread_id, ann, "what about food?")
        await dc.wait_for_message(thread_id, "echo 2: Ann: what about food?")
        assert dc.bot_messages(g.channel_id)[0].content.startswith("Let's talk about this in a thread")


async def test_long_answer_with_code_is_split(dc: FakeDiscord, bot: DiscordBot, scripted: ScriptedGenerator) -> None:
    code = "\n".join(f"print('line {i}')  # a long line of code to fill the block up" for i in range(80))
    scripted.script = lambda users: "Intro paragraph.\n\n" + "Prose. " * 200 + f"\n\n```python\n{code}\n```\n\nThe end."
    scripted.piece = 500
    ann = dc.user("ann")
    await dc.dm(ann, "long please")
    channel = dc.dm_channel(ann)
    await dc.wait_for_message(channel, "The end.")
    messages = dc.bot_messages(channel)
    assert len(messages) >= 3
    for m in messages:
        assert len(m.content) <= 2000
        assert m.content.count("```") % 2 == 0
    shown = "".join(m.content for m in messages)
    assert all(f"print('line {i}')" in shown for i in range(80))


async def test_forget_mid_answer_leaves_nothing_behind(
    dc: FakeDiscord, bot: DiscordBot, scripted: ScriptedGenerator, redis: Redis
) -> None:
    scripted.script, scripted.delay = long_second_answer, 0.01
    ann = dc.user("ann")
    channel = dc.dm_channel(ann)
    await dc.dm(ann, "hello")
    await dc.wait_for_message(channel, "a short answer")
    await dc.dm(ann, "talk a lot")
    await dc.wait_for_message(channel, "word word")
    forget = await dc.slash(channel, ann, "forget")
    await forget.wait_done()
    await dc.wait_for(lambda: "erased our conversation" in forget.text)
    await asyncio.sleep(0.5)  # a late write would land by now
    assert scripted.cancelled == 1
    assert await keys_naming(redis, ann, channel) == []


async def test_hostile_output_pings_nobody(dc: FakeDiscord, bot: DiscordBot, scripted: ScriptedGenerator) -> None:
    g = await _guild(dc, "Server")
    ann = _member(dc, g, "ann")
    role = dc.add_role(g.id, "mods", mentionable=True)
    scripted.script = lambda users: f"@everyone @here <@{ann}> <@!{ann}> <@&{role}> ```python\nbroken *fence"
    await dc.user_says(g.channel_id, ann, "be nasty", mentions=[dc.bot_id])
    reply = await dc.wait_for_message(g.channel_id, "broken")
    assert dc.pings == []
    assert reply.content.count("```") % 2 == 0
    sends = dc.calls_to("POST", f"/channels/{g.channel_id}/messages")
    for call in sends:  # every message went out with no mentions allowed
        allowed = (call.json or {}).get("allowed_mentions")
        assert allowed is not None
        assert allowed.get("parse") == []
        assert not allowed.get("users")
        assert not allowed.get("roles")


async def test_rate_limit_mid_stream_is_waited_out(dc: FakeDiscord, bot: DiscordBot,
                                                   scripted: ScriptedGenerator) -> None:  # fmt: skip
    scripted.script = lambda users: " ".join(f"w{i}" for i in range(150))
    scripted.delay = 0.01
    ann = dc.user("ann")
    channel = dc.dm_channel(ann)
    dc.fail_next("PATCH", f"/channels/{channel}/messages/*", 429, retry_after=0.5)
    await dc.dm(ann, "count")
    reply = await dc.wait_for_message(channel, "w149", timeout=20)
    assert reply.content.split() == [f"w{i}" for i in range(150)]
    labels = {"platform": "discord", "cause": "429"}
    assert bot.engine.metrics.registry.get_sample_value("parley_rate_limit_waits_total", labels) == 1


async def test_long_rate_limit_fails_the_answer_clearly(dc: FakeDiscord, fast_engine: Engine,
                                                        dc_settings: Settings) -> None:  # fmt: skip
    settings = dc_settings.model_copy(update={"discord_max_ratelimit_wait": 1.0})
    async with DiscordBot(fast_engine, settings, edit_interval=0.02, guild_ready_timeout=0.05):
        ann = dc.user("ann")
        channel = dc.dm_channel(ann)
        dc.fail_next("POST", f"/channels/{channel}/messages", 429, retry_after=120)
        await dc.dm(ann, "hello")
        await dc.wait_for_message(channel, "rate-limiting me", timeout=10)


async def test_ready_only_while_connected(dc: FakeDiscord, fast_engine: Engine, dc_settings: Settings) -> None:
    bot = DiscordBot(fast_engine, dc_settings, guild_ready_timeout=0.05)
    with pytest.raises(NotReady):
        await bot.ready()
    async with bot:
        await bot.ready()
    with pytest.raises(NotReady):
        await bot.ready()


async def test_gateway_drop_resumes_and_answers_once(dc: FakeDiscord, bot: DiscordBot) -> None:
    ann = dc.user("ann")
    channel = dc.dm_channel(ann)
    message = await dc.dm(ann, "before the drop")
    await dc.wait_for_message(channel, "echo 1: before the drop")
    await bot.ready()
    await dc.drop_connections()
    await dc.wait_for(lambda: len(dc.gateway_connects) >= 2, timeout=10)
    await dc.wait_connected(timeout=10)  # discord.py resumed the session
    await bot.ready()
    assert await dc.dispatch("MESSAGE_CREATE", message.data) == 1  # the same message delivered again
    await dc.dm(ann, "after the drop")
    await dc.wait_for_message(channel, "echo 2: after the drop", timeout=10)
    assert sum("before the drop" in m.content for m in dc.bot_messages(channel)) == 1


async def test_restart_keeps_context(dc: FakeDiscord, fast_engine: Engine, dc_settings: Settings) -> None:
    ann = dc.user("ann")
    channel = dc.dm_channel(ann)
    async with DiscordBot(fast_engine, dc_settings, edit_interval=0.02, guild_ready_timeout=0.05):
        await dc.dm(ann, "remember me")
        await dc.wait_for_message(channel, "echo 1: remember me")
    async with DiscordBot(fast_engine, dc_settings, edit_interval=0.02, guild_ready_timeout=0.05):
        await dc.dm(ann, "still there?")
        await dc.wait_for_message(channel, "echo 2: still there?")


async def test_several_channels_at_once_and_403_stays_local(dc: FakeDiscord, bot: DiscordBot,
                                                            scripted: ScriptedGenerator) -> None:  # fmt: skip
    scripted.delay = 0.01
    g = await _guild(dc, "Server")
    ann = _member(dc, g, "ann")
    channels = [g.channel_id] + [dc.add_channel(g.id, f"room{i}") for i in range(3)]
    dc.fail_next("POST", f"/channels/{channels[1]}/messages", 403)
    for i, channel in enumerate(channels):
        await dc.user_says(channel, ann, f"hi {i}", mentions=[dc.bot_id])
    for i, channel in enumerate(channels):
        if i != 1:
            await dc.wait_for_message(channel, f"Ann: hi {i}")
    assert dc.bot_messages(channels[1]) == []


async def test_commands(dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine) -> None:
    g = await _guild(dc, "Server")
    ann, boss = _member(dc, g, "ann"), _member(dc, g, "boss", admin=True)

    async def run(user: int, name: str, options: dict[str, str] | None = None, until: str = "") -> tuple[str, bool]:
        interaction = await dc.slash(g.channel_id, user, name, options)
        await interaction.wait_done()
        await dc.wait_for(lambda: until in interaction.text)
        return interaction.text, interaction.ephemeral

    assert (await run(ann, "help"))[1]
    assert fast_engine.model.name in (await run(ann, "model"))[0]
    about, private = await run(ann, "about")
    assert "Up for" in about
    assert fast_engine.model.name in about
    assert private
    text, private = await run(ann, "system", {"persona": "You are evil."})
    assert "Only members who can manage" in text
    assert private
    assert "Persona set" in (await run(boss, "system", {"persona": "You are kind."}))[0]
    assert "You are kind." in (await run(ann, "system"))[0]
    await run(ann, "ask", {"prompt": "question one"}, until="echo 1: Ann: question one")
    assert "You are kind." in fast_engine.generator.prompts[-1]  # type: ignore[attr-defined]
    await run(ann, "retry", until="echo 1: Ann: question one")
    usage, private = await run(ann, "usage")
    assert "2 requests" in usage
    assert private
    assert "not writing" in (await run(ann, "stop"))[0]
    assert "Started over" in (await run(ann, "new"))[0]
    assert "erased your usage" in (await run(ann, "forget"))[0]
    assert "erased this channel" in (await run(boss, "forget"))[0]
    assert await fast_engine.person_usage("discord", str(ann)) == {}


@pytest.mark.parametrize(("prompt", "expected"), [("x" * 5000, "limit is 4000 characters"), ("\u200b", "empty")])
async def test_bad_slash_input_is_refused_privately(dc: FakeDiscord, bot: DiscordBot, prompt: str,
                                                    expected: str) -> None:  # fmt: skip
    ann = dc.user("ann")
    ask = await dc.slash(dc.dm_channel(ann), ann, "ask", {"prompt": prompt})
    await ask.wait_done()
    assert expected in ask.text
    assert ask.ephemeral


async def test_attachments_are_read_as_documents(dc: FakeDiscord, bot: DiscordBot, scripted: ScriptedGenerator) -> None:
    scripted.script = lambda users: "read: " + ("PELICAN" if "PELICAN" in users[-1] else "nothing")
    ann = dc.user("ann")
    channel = dc.dm_channel(ann)
    note = dc.attachment(b"Trip note. The code word is PELICAN.", "note.txt", "text/plain")
    await dc.user_says(channel, ann, "What is the code word?", attachments=[note])
    await dc.wait_for_message(channel, "read: PELICAN")
    assert "What is the code word?" in scripted.prompts[-1]
    # a file alone: reading it is the request
    await dc.user_says(channel, ann, "", attachments=[dc.attachment(b"PELICAN again.", "again.md", "text/markdown")])
    await dc.wait_for(lambda: sum("read: PELICAN" in m.content for m in dc.bot_messages(channel)) == 2)
    assert DEFAULT_INSTRUCTION in scripted.prompts[-1]
    # what cannot be read is said, and nothing is asked of the model
    asked = len(scripted.prompts)
    png = dc.attachment(b"\x89PNG\r\n\x1a\n" + bytes(64), "cat.png", "image/png")
    await dc.user_says(channel, ann, "", attachments=[png])
    await dc.wait_for_message(channel, "Sorry: ")
    await dc.user_says(channel, ann, "", attachments=[dc.attachment(b"", "empty.txt", "text/plain")])
    await dc.wait_for_message(channel, "this file is empty")
    huge = {**dc.attachment(b"x", "huge.pdf", "application/pdf"), "size": 30_000_000}
    await dc.user_says(channel, ann, "", attachments=[huge])
    await dc.wait_for_message(channel, "too large")
    assert len(scripted.prompts) == asked


async def test_invalid_token_stops_with_a_clear_message(dc: FakeDiscord, fast_engine: Engine,
                                                        dc_settings: Settings) -> None:  # fmt: skip
    settings = dc_settings.model_copy(update={"discord_bot_token": SecretStr("wrong.token.value")})
    with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN") as err:
        async with DiscordBot(fast_engine, settings):
            pass
    assert "wrong.token.value" not in str(err.value)


async def test_commands_sync_to_listed_guilds_instantly(dc: FakeDiscord, fast_engine: Engine,
                                                        dc_settings: Settings) -> None:  # fmt: skip
    g = dc.guild("Server")
    settings = dc_settings.model_copy(update={"discord_guild_ids": frozenset({g.id})})
    async with DiscordBot(fast_engine, settings, edit_interval=0.02, guild_ready_timeout=0.05):
        assert "ask" in {c["name"] for c in dc.commands[g.id]}
        ann = _member(dc, g, "ann")
        ask = await dc.slash(g.channel_id, ann, "ask", {"prompt": "hi"})
        await dc.wait_for(lambda: "echo 1: Ann: hi" in ask.text)


async def test_access_lists(dc: FakeDiscord, fast_engine: Engine, dc_settings: Settings) -> None:
    g = dc.guild("Server")
    role = dc.add_role(g.id, "members")
    ann, eve = dc.user("ann"), dc.user("eve")
    dc.add_member(g.id, ann, roles=[role])
    dc.add_member(g.id, eve)
    settings = dc_settings.model_copy(update={"discord_allowed_roles": frozenset({role})})
    async with DiscordBot(fast_engine, settings, edit_interval=0.02, guild_ready_timeout=0.05):
        refused = await dc.slash(g.channel_id, eve, "ask", {"prompt": "let me in"})
        await refused.wait_done()
        assert "not available to you" in refused.text
        assert refused.ephemeral
        await dc.user_says(g.channel_id, eve, "please", mentions=[dc.bot_id])
        await dc.wait_for_message(g.channel_id, "not available to you")
        await dc.user_says(g.channel_id, ann, "hello", mentions=[dc.bot_id])
        await dc.wait_for_message(g.channel_id, "echo 1: Ann: hello")
        assert any(channel == g.channel_id for channel, _ in dc.typing)  # typing shown while answering


async def test_token_never_reaches_the_logs(dc: FakeDiscord, fast_engine: Engine, dc_settings: Settings) -> None:
    with captured_logs(dc_settings.secrets()) as stream:
        async with DiscordBot(fast_engine, dc_settings, edit_interval=0.02, guild_ready_timeout=0.05):
            ann = dc.user("ann")
            await dc.dm(ann, "hello")
            await dc.wait_for_message(dc.dm_channel(ann), "echo 1: hello")
        logging.getLogger("test").error("boom", exc_info=RuntimeError(f"token {dc.token} rejected"))
    logged = stream.getvalue()
    assert "[redacted]" in logged
    assert dc.token not in logged


async def test_limits_command(dc: FakeDiscord, bot: DiscordBot) -> None:
    g = await _guild(dc, "Server")
    ann, boss = _member(dc, g, "ann"), _member(dc, g, "boss", admin=True)
    refused = await dc.slash(g.channel_id, ann, "limits", {"requests_per_minute": "1"})
    await refused.wait_done()
    assert "Only members who can manage" in refused.text
    changed = await dc.slash(g.channel_id, boss, "limits", {"requests_per_minute": "1"})
    await changed.wait_done()
    assert "1 requests per minute" in changed.text
    await dc.user_says(g.channel_id, ann, "first", mentions=[dc.bot_id])
    await dc.wait_for_message(g.channel_id, "Ann: first")
    await dc.user_says(g.channel_id, ann, "second", mentions=[dc.bot_id])
    await dc.wait_for_message(g.channel_id, "per minute in this chat; try again in")
