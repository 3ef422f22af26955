"""The fake Discord, proven with the real discord.py over real HTTP and WebSocket connections (no Parley code)."""

from __future__ import annotations

import asyncio
import gc
import io
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from tests.fakes.discord import (
    FLAG_EPHEMERAL,
    MANAGE_GUILD,
    FakeDiscord,
    GuildRef,
    running_client,
)

with warnings.catch_warnings():
    # discord.py (all 2.x) imports the stdlib audioop module, deprecated on Python 3.11+; not ours to fix.
    warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
    import discord
    from discord import app_commands

TOKEN = "MTA5ODc2NTQzMjEwOTg3NjU0Mw.Gfake1.fake-token-for-tests_only"

pytestmark = pytest.mark.timeout(15)


@pytest.fixture
async def dc() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token=TOKEN) as fake:
        with fake.patch_discord():
            yield fake
        assert not fake.errors, fake.errors
    gc.collect()  # surface leaked sockets (ResourceWarning -> error) in the test that leaked them


@dataclass
class Bot:
    client: discord.Client
    tree: app_commands.CommandTree[discord.Client]
    seen: list[discord.Message] = field(default_factory=list)
    late: list[BaseException] = field(default_factory=list)


def make_bot(*, message_content: bool = False, say_delay: float = 0.0) -> Bot:
    intents = discord.Intents.default()
    intents.message_content = message_content
    client = discord.Client(intents=intents, guild_ready_timeout=0.05)
    tree: app_commands.CommandTree[discord.Client] = app_commands.CommandTree(client)
    bot = Bot(client, tree)

    @tree.command(name="echo", description="Repeat text after thinking")
    @app_commands.describe(text="What to repeat")
    async def echo(interaction: discord.Interaction, text: str, private: bool = False) -> None:
        await interaction.response.defer(ephemeral=private, thinking=True)
        await interaction.followup.send(f"echo: {text}", allowed_mentions=discord.AllowedMentions.none())

    @tree.command(name="say", description="Answer directly")
    async def say(interaction: discord.Interaction, text: str, private: bool = False) -> None:
        if say_delay:
            await asyncio.sleep(say_delay)
        try:
            await interaction.response.send_message(
                f"said: {text}", ephemeral=private, allowed_mentions=discord.AllowedMentions.none()
            )
        except discord.HTTPException as e:
            bot.late.append(e)

    @tree.command(name="admin", description="Admins only")
    @app_commands.default_permissions(manage_guild=True)
    async def admin(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("ok")

    @client.event
    async def on_message(message: discord.Message) -> None:
        bot.seen.append(message)
        if message.author == client.user:
            return
        assert client.user is not None
        if client.user in message.mentions or message.guild is None:
            await message.channel.send(
                f"heard: {message.content!r}",
                reference=message,
                allowed_mentions=discord.AllowedMentions.none(),
            )

    return bot


@asynccontextmanager
async def started(bot: Bot) -> AsyncIterator[Bot]:
    async with running_client(bot.client, TOKEN):
        yield bot


async def sync_guild(bot: Bot, guild_id: int) -> list[app_commands.AppCommand]:
    # tree.sync(guild=...) uploads only guild-bound commands: copy the global ones to the guild first.
    bot.tree.copy_global_to(guild=discord.Object(guild_id))
    return await bot.tree.sync(guild=discord.Object(guild_id))


def setup_guild(dc: FakeDiscord) -> tuple[GuildRef, int]:
    g = dc.guild("Test Guild")
    alice = dc.user("alice")
    dc.add_member(g.id, alice)
    return g, alice


# -- connection --------------------------------------------------------------------------------------------------


async def test_ready_and_guild_available(dc: FakeDiscord) -> None:
    g, _alice = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        client = bot.client
        assert client.user is not None
        assert client.user.id == dc.bot_id
        assert client.application_id == dc.application_id
        guild = client.get_guild(g.id)
        assert guild is not None
        assert not guild.unavailable
        assert guild.name == "Test Guild"
        assert guild.me is not None
        assert guild.me.id == dc.bot_id
        channel = guild.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        assert channel.name == "general"
        assert guild.get_role(g.admin_role_id) is not None
        assert guild.member_count == 3  # owner, bot, alice
    identify = dc.identifies[0]
    assert identify["intents"] == discord.Intents.default().value
    assert dc.gateway_connects[0]["v"] == "10"
    assert dc.gateway_connects[0]["encoding"] == "json"
    assert [c.path for c in dc.calls[:2]] == ["/users/@me", "/oauth2/applications/@me"]
    dc.assert_all_implemented()


async def test_wrong_token_is_login_failure(dc: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await client.login("not-the-token")
    await client.close()
    assert dc.calls[-1].path == "/users/@me"
    assert not dc.calls[-1].authorized


async def test_gateway_rejects_wrong_token_with_4004(dc: FakeDiscord) -> None:
    client = discord.Client(intents=discord.Intents.default())
    await client.login(TOKEN)
    client.http.token = "revoked"  # the REST login passed; the gateway IDENTIFY now carries a bad token
    with pytest.raises(discord.ConnectionClosed) as info:
        await client.connect(reconnect=True)
    assert info.value.code == 4004
    assert client.is_closed()


async def test_disallowed_privileged_intent(dc: FakeDiscord) -> None:
    dc.enabled_privileged_intents = 0
    client = discord.Client(intents=discord.Intents.default() | discord.Intents(message_content=True))
    await client.login(TOKEN)
    with pytest.raises(discord.PrivilegedIntentsRequired):
        await client.connect()
    await client.close()


async def test_resume_after_dropped_connection(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot()
    resumed = asyncio.Event()

    @bot.client.event
    async def on_resumed() -> None:
        resumed.set()

    async with running_client(bot.client, TOKEN, reconnect=True):
        await dc.drop_connections(4000)
        await asyncio.wait_for(resumed.wait(), 5)
        assert dc.connected
        await dc.user_says(g.channel_id, alice, f"<@{dc.bot_id}> still there?")
        await dc.wait_for_message(g.channel_id, "still there")
    assert len(dc.gateway_connects) == 2


# -- message content intent ------------------------------------------------------------------------------------


async def test_content_is_empty_without_intent_unless_mentioned_or_dm(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot(message_content=False)
    async with started(bot):
        await dc.user_says(g.channel_id, alice, "hello everyone")
        mention = await dc.user_says(g.channel_id, alice, "are you there?", mentions=[dc.bot_id])
        reply = await dc.wait_for_message(g.channel_id, "heard")
        await dc.dm(alice, "private hello")
        dm_reply = await dc.wait_for_message(dc.dm_channel(alice), "private hello")
        await dc.wait_for(lambda: len(bot.seen) >= 5)
    by_author = [(m.author.id, m.content) for m in bot.seen]
    assert by_author[0] == (alice, "")  # no intent, not mentioned: content hidden
    assert by_author[1] == (alice, f"<@{dc.bot_id}> are you there?")
    assert (dc.bot_id, reply.content) in by_author  # the bot's own messages always carry content
    assert (alice, "private hello") in by_author
    assert reply.content == f"heard: '<@{dc.bot_id}> are you there?'"
    assert reply.reply_to == mention.id
    assert dm_reply.data.get("guild_id") is None
    assert dc.pings == []


async def test_content_is_delivered_with_intent(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot(message_content=True)
    async with started(bot):
        await dc.user_says(g.channel_id, alice, "hello everyone")
        await dc.wait_for(lambda: bot.seen)
    assert bot.seen[0].content == "hello everyone"
    assert bot.seen[0].guild is not None
    assert bot.seen[0].guild.id == g.id
    assert isinstance(bot.seen[0].author, discord.Member)


async def test_reply_reference_and_role_mentions_reach_discord_py(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bob = dc.user("bob")
    dc.add_member(g.id, bob, roles=[g.admin_role_id])
    bot = make_bot(message_content=True)
    async with started(bot):
        first = await dc.user_says(g.channel_id, bob, "first")
        await dc.user_says(g.channel_id, alice, f"reply <@&{g.admin_role_id}>", reply_to=first.id)
        await dc.wait_for(lambda: len(bot.seen) >= 2)
    msg = bot.seen[1]
    assert msg.reference is not None
    assert msg.reference.message_id == first.id
    assert isinstance(msg.reference.resolved, discord.Message)
    assert msg.reference.resolved.content == "first"
    assert [m.id for m in msg.mentions] == [bob]  # the reply pings the replied author
    assert [r.id for r in msg.role_mentions] == [g.admin_role_id]
    assert msg.type is discord.MessageType.reply


# -- REST: messages ------------------------------------------------------------------------------------------------


async def test_send_edit_delete_typing_and_thread(dc: FakeDiscord) -> None:
    g, _ = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        async with channel.typing():
            sent = await channel.send("draft")
        assert dc.typing
        assert dc.typing[0][0] == g.channel_id
        edited = await sent.edit(content="final")
        assert edited.content == "final"
        assert edited.edited_at is not None
        thread = await sent.create_thread(name="a" * 100)
        assert thread.id == sent.id
        assert thread.parent_id == g.channel_id
        in_thread = await thread.send("inside")
        assert dc.messages(thread.id)[0].id == in_thread.id
        with pytest.raises(discord.HTTPException) as info:
            await sent.create_thread(name="again")
        assert info.value.code == 160004
        with pytest.raises(discord.HTTPException) as info:
            await channel.create_thread(name="x" * 101, type=discord.ChannelType.public_thread)
        assert info.value.status == 400
        assert info.value.code == 50035
        other = await channel.create_thread(name="standalone", type=discord.ChannelType.public_thread)
        assert other.type is discord.ChannelType.public_thread
        await sent.add_reaction("👀")
        await sent.remove_reaction("👀", bot.client.user)  # type: ignore[arg-type]
        await sent.add_reaction("✅")
        assert dc.reactions[(sent.id, "👀")] == []
        assert dc.reactions[(sent.id, "✅")] == [dc.bot_id]
        gone = await channel.send("to delete")
        await gone.delete()
        fetched = await bot.client.fetch_channel(g.channel_id)
        assert fetched.id == g.channel_id
    assert [m.content for m in dc.messages(g.channel_id)] == ["final"]
    assert dc.messages(g.channel_id)[0].edits == ["draft"]
    dc.assert_all_implemented()


async def test_message_over_2000_chars_is_rejected(dc: FakeDiscord) -> None:
    g, _ = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("x" * 2001)
        assert info.value.status == 400
        assert info.value.code == 50035
        assert "content" in info.value.text
        assert "2000" in info.value.text
        ok = await channel.send("x" * 2000)
        with pytest.raises(discord.HTTPException) as info:
            await ok.edit(content="y" * 2001)
        assert info.value.code == 50035
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("   ")
        assert info.value.code == 50006
    assert [len(m.content) for m in dc.messages(g.channel_id)] == [2000]


async def test_allowed_mentions_none_pings_nobody(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        text = f"@everyone @here <@{alice}> <@&{g.admin_role_id}>"
        quiet = await channel.send(text, allowed_mentions=discord.AllowedMentions.none())
        assert quiet.mentions == []
        assert not quiet.mention_everyone
        assert quiet.role_mentions == []
        assert dc.pings == []
        assert dc.messages(g.channel_id)[0].allowed_mentions == {"parse": []}
        only_users = discord.AllowedMentions(everyone=False, roles=False, users=True)
        loud = await channel.send(text, allowed_mentions=only_users)
        assert [u.id for u in loud.mentions] == [alice]
    assert [(p.kind, p.target_id) for p in dc.pings] == [("user", alice)]


async def test_default_mentions_would_ping_everyone(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    basic = discord.Permissions(view_channel=True, send_messages=True).value
    g2 = dc.guild("Strict", bot_permissions=basic, everyone_permissions=0)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        await channel.send(f"@everyone <@{alice}>")  # no allowed_mentions: Discord parses everything
        kinds = {p.kind for p in dc.pings}
        assert kinds == {"everyone", "user"}
        other = bot.client.get_channel(g2.channel_id)
        assert isinstance(other, discord.TextChannel)
        with pytest.raises(discord.Forbidden) as info:
            await other.create_thread(name="nope", type=discord.ChannelType.public_thread)
        assert info.value.code == 50013


async def test_nonce_enforce_dedupes(dc: FakeDiscord) -> None:
    g, _ = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        a = await channel.send("once", nonce="turn-42")
        b = await channel.send("once", nonce="turn-42")
        c = await channel.send("twice", nonce="turn-43")
    assert a.id == b.id != c.id
    assert [m.content for m in dc.messages(g.channel_id)] == ["once", "twice"]
    assert dc.calls_to("POST", "/channels/*/messages")[0].json["enforce_nonce"] is True


# -- rate limits and faults ----------------------------------------------------------------------------------------


async def test_429_with_via_is_waited_out(dc: FakeDiscord) -> None:
    g, _ = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        dc.fail_next("POST", "/channels/*/messages", 429, retry_after=0.3)
        start = time.monotonic()
        await channel.send("after the wait")
        assert time.monotonic() - start >= 0.3
    assert len(dc.calls_to("POST", "/channels/*/messages")) == 2
    assert [m.content for m in dc.messages(g.channel_id)] == ["after the wait"]


async def test_429_without_via_raises(dc: FakeDiscord) -> None:
    g, _ = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        dc.fail_next("POST", "/channels/*/messages", 429, retry_after=0.1, via=False)
        with pytest.raises(discord.HTTPException) as info:
            await channel.send("banned")
        assert info.value.status == 429
        dc.fail_next("POST", "/channels/*/messages", 403)
        with pytest.raises(discord.Forbidden) as info2:
            await channel.send("forbidden")
        assert info2.value.code == 50013
    assert dc.messages(g.channel_id) == []


async def test_unknown_route_is_recorded(dc: FakeDiscord) -> None:
    g, _ = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        msg = await channel.send("pin me")
        with pytest.raises(discord.NotFound):
            await msg.pin()
    assert dc.unimplemented == [f"PUT /channels/{g.channel_id}/messages/pins/{msg.id}"]
    with pytest.raises(AssertionError):
        dc.assert_all_implemented()


# -- application commands and interactions -------------------------------------------------------------------------


async def test_command_sync_guild_and_global(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        with pytest.raises(AssertionError, match="not synced"):
            await dc.slash(g.channel_id, alice, "echo", {"text": "hi"})
        synced = await sync_guild(bot, g.id)
        assert sorted(c.name for c in synced) == ["admin", "echo", "say"]
        assert sorted(c["name"] for c in dc.commands[g.id]) == ["admin", "echo", "say"]
        again = await sync_guild(bot, g.id)
        assert {c.name: c.id for c in again} == {c.name: c.id for c in synced}  # ids are stable across overwrites
        global_ = await bot.tree.sync()
        assert sorted(c.name for c in global_) == ["admin", "echo", "say"]
        fetched = await bot.tree.fetch_commands(guild=discord.Object(g.id))
        assert len(fetched) == 3
    echo = next(c for c in dc.commands[None] if c["name"] == "echo")
    assert [o["name"] for o in echo["options"]] == ["text", "private"]
    assert echo["options"][0]["required"] is True
    admin = next(c for c in dc.commands[None] if c["name"] == "admin")
    assert admin["default_member_permissions"] == str(MANAGE_GUILD)
    put = dc.calls_to("PUT", f"/applications/{dc.application_id}/guilds/{g.id}/commands")
    assert len(put) == 2
    assert put[0].authorized


async def test_slash_defer_then_followup(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        await sync_guild(bot, g.id)
        it = await dc.slash(g.channel_id, alice, "echo", {"text": f"hi <@{alice}> @everyone"})
        original = await it.wait_done()
    assert it.response_type == 5
    assert original.content == f"echo: hi <@{alice}> @everyone"
    assert not original.ephemeral
    assert it.followups == []
    assert original.data["interaction_metadata"]["user"]["id"] == str(alice)
    assert dc.messages(g.channel_id) == [original]
    assert dc.pings == []
    callback = dc.calls_to("POST", f"/interactions/{it.id}/*/callback")[0]
    assert callback.query == {"with_response": "1"}
    assert not callback.authorized
    follow = dc.calls_to("POST", f"/webhooks/{dc.application_id}/*")[0]
    assert follow.query["wait"] == "1"


async def test_slash_direct_response_and_ephemeral(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        await bot.tree.sync()
        public = await dc.slash(g.channel_id, alice, "say", {"text": "hello"})
        await public.wait_done()
        private = await dc.slash(g.channel_id, alice, "say", {"text": "secret", "private": True})
        await private.wait_done()
        deferred_private = await dc.slash(g.channel_id, alice, "echo", {"text": "quiet", "private": True})
        await deferred_private.wait_done()
        await dc.dm(alice, "dm then slash")
        in_dm = await dc.slash(dc.dm_channel(alice), alice, "say", {"text": "in a dm"})
        await in_dm.wait_done()
    assert public.response_type == 4
    assert public.text == "said: hello"
    assert not public.ephemeral
    assert private.ephemeral
    assert private.original is not None
    assert private.original.flags & FLAG_EPHEMERAL
    assert deferred_private.ephemeral
    assert deferred_private.text == "echo: quiet"
    assert in_dm.text == "said: in a dm"
    assert "guild_id" not in in_dm.payload
    contents = [(m.content, m.ephemeral) for m in dc.messages(g.channel_id)]
    assert contents == [("said: hello", False), ("said: secret", True), ("echo: quiet", True)]


async def test_slash_permissions_and_options_are_checked(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    boss = dc.user("boss")
    dc.add_member(g.id, boss, roles=[g.admin_role_id])
    bot = make_bot()
    async with started(bot):
        await sync_guild(bot, g.id)
        with pytest.raises(AssertionError, match="lacks permissions"):
            await dc.slash(g.channel_id, alice, "admin")
        ok = await dc.slash(g.channel_id, boss, "admin")
        assert (await ok.wait_done()).content == "ok"
        with pytest.raises(AssertionError, match="required option"):
            await dc.slash(g.channel_id, alice, "echo", {})
        with pytest.raises(AssertionError, match="no option"):
            await dc.slash(g.channel_id, alice, "echo", {"text": "a", "bogus": 1})
        with pytest.raises(AssertionError, match="not synced for DMs"):
            await dc.slash(dc.dm_channel(alice), alice, "echo", {"text": "a"})


async def test_interaction_must_be_acknowledged_within_3s(dc: FakeDiscord) -> None:
    dc.interaction_ack_seconds = 0.2  # Discord's rule is 3 s; shortened so the test stays fast
    g, alice = setup_guild(dc)
    bot = make_bot(say_delay=0.3)
    async with started(bot):
        await sync_guild(bot, g.id)
        it = await dc.slash(g.channel_id, alice, "say", {"text": "too slow"})
        await dc.wait_for(lambda: bot.late)
    assert isinstance(bot.late[0], discord.NotFound)
    assert bot.late[0].code == 10062
    assert not it.acknowledged
    assert dc.messages(g.channel_id) == []


async def test_second_acknowledgement_is_rejected(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot()
    errors: list[discord.HTTPException] = []

    @bot.tree.command(name="twice", description="Answers twice")
    async def twice(interaction: discord.Interaction) -> None:
        await interaction.response.defer()
        # Bypass discord.py's own "already responded" guard to see what Discord says.
        interaction.response._response_type = None
        try:
            await interaction.response.send_message("second")
        except discord.HTTPException as e:
            errors.append(e)

    async with started(bot):
        await sync_guild(bot, g.id)
        await dc.slash(g.channel_id, alice, "twice")
        await dc.wait_for(lambda: errors)
    assert errors[0].status == 400
    assert errors[0].code == 40060


async def test_server_error_is_retried_and_files_upload(dc: FakeDiscord) -> None:
    dc.enabled_privileged_intents = 0  # MESSAGE_CONTENT off in the portal: REST reads hide others' content too
    g, alice = setup_guild(dc)
    bot = make_bot()
    async with started(bot):
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        dc.fail_next("POST", "/channels/*/messages", 500)  # discord.py sleeps 1 s, then retries
        sent = await channel.send("report", file=discord.File(io.BytesIO(b"hello"), filename="notes.txt"))
        assert [a.filename for a in sent.attachments] == ["notes.txt"]
        await dc.user_says(g.channel_id, alice, "later")
        history = [m.content async for m in channel.history(limit=10)]
    assert history == ["", "report"]  # newest first
    assert len(dc.calls_to("POST", "/channels/*/messages")) == 2


async def test_streamed_edits_of_original_and_threads(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot(message_content=True)
    seen_threads: list[discord.Thread] = []

    @bot.tree.command(name="stream", description="Edit the answer as it grows")
    async def stream(interaction: discord.Interaction) -> None:
        await interaction.response.send_message("…")
        for text in ("one", "one two", "one two three"):
            await interaction.edit_original_response(content=text)
        original = await interaction.original_response()
        extra = await interaction.followup.send("overflow", ephemeral=True, wait=True)
        await interaction.followup.edit_message(extra.id, content=f"overflow after {original.content}")

    @bot.client.event
    async def on_thread_create(thread: discord.Thread) -> None:
        seen_threads.append(thread)

    async with started(bot):
        await sync_guild(bot, g.id)
        first = await dc.user_says(g.channel_id, alice, "start a thread here")
        tid = await dc.create_thread(g.channel_id, alice, "topic", message_id=first.id)
        await dc.wait_for(lambda: seen_threads)
        it = await dc.slash(tid, alice, "stream")
        await dc.wait_for(lambda: it.followups and it.followups[0].content.startswith("overflow after"))
        await dc.user_says(tid, alice, "in the thread")
        await dc.wait_for(lambda: any(isinstance(m.channel, discord.Thread) for m in bot.seen))
    assert seen_threads[0].id == first.id
    assert seen_threads[0].parent_id == g.channel_id
    assert it.original is not None
    assert it.original.content == "one two three"
    assert it.original.edits == ["…", "one", "one two"]
    assert it.followups[0].ephemeral
    assert it.followups[0].content == "overflow after one two three"
    assert [m.content for m in dc.messages(tid)][:2] == ["one two three", "overflow after one two three"]
    dc.assert_all_implemented()


# -- attachments ---------------------------------------------------------------------------------------------------


async def test_user_attachment_reaches_discord_py_and_reads_back(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    payload = bytes(range(256)) * 30  # binary, not UTF-8
    doc = dc.attachment(payload, "report final.pdf", "application/pdf")
    assert set(doc) == {"id", "filename", "size", "url", "proxy_url", "content_type"}
    assert doc["size"] == len(payload)
    bot = make_bot(message_content=True)
    async with started(bot):
        await dc.user_says(g.channel_id, alice, "please read", attachments=[doc])
        await dc.dm(alice, "warming up")  # DMs carry attachments even without the intent
        await dc.wait_for(lambda: len(bot.seen) >= 1)
        message = bot.seen[0]
        assert [a.filename for a in message.attachments] == ["report final.pdf"]
        attachment = message.attachments[0]
        assert (attachment.id, attachment.size, attachment.content_type) == (
            int(doc["id"]),
            len(payload),
            doc["content_type"],
        )
        assert await attachment.read() == payload
        channel = bot.client.get_channel(g.channel_id)
        assert isinstance(channel, discord.TextChannel)
        sent = await channel.send("copy", file=discord.File(io.BytesIO(b"bot bytes"), filename="out.txt"))
        assert await sent.attachments[0].read() == b"bot bytes"  # the bot's uploads are served too
        missing = discord.Attachment(
            data={**doc, "id": "1", "url": f"{dc.cdn_base}/attachments/1/x", "proxy_url": f"{dc.cdn_base}/x"},
            state=message._state,
        )
        with pytest.raises(discord.NotFound):
            await missing.read()
    assert dc.downloads[0] == int(doc["id"])
    assert len(dc.downloads) == 2


async def test_attachments_are_hidden_without_message_content_intent(dc: FakeDiscord) -> None:
    g, alice = setup_guild(dc)
    bot = make_bot(message_content=False)
    async with started(bot):
        await dc.user_says(g.channel_id, alice, "file", attachments=[dc.attachment(b"a", "a.txt", "text/plain")])
        await dc.dm(alice, "dm file")
        await dc.user_says(dc.dm_channel(alice), alice, "x", attachments=[dc.attachment(b"dm", "b.txt")])
        await dc.wait_for(lambda: sum(1 for m in bot.seen if m.author.id == alice) >= 3)
        from_alice = [m for m in bot.seen if m.author.id == alice]
        assert from_alice[0].attachments == []
        dm_attachment = from_alice[2].attachments[0]
        assert await dm_attachment.read() == b"dm"
