"""Parley on Discord: slash commands, mentions, replies, threads and DMs."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import replace
from typing import Any

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.commands import (
    CATCH_UP,
    COMMANDS,
    INTRO,
    MAX_CATCH_UP,
    REPLY,
    SUMMARIZE,
    Answer,
    ChatLine,
    Commands,
    Place,
    Wording,
    help_lines,
    linked,
    quoted_instruction,
    transcript,
)
from bots.discord.surface import NO_PINGS, ChannelSurface, InteractionSurface, split_for_discord
from bots.replies import explain
from bots.streaming import Surface, stream_reply
from engine.contract import ChatEvent, ChatRequest
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.text import check_input
from engine.documents import Document, read_document
from engine.documents.document import DEFAULT_LIMITS, megabytes
from engine.errors import ConfigError, DocumentRejected, InputRejected, NotReady, ParleyError, StoreUnavailable
from engine.runtime.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "discord"
EDIT_INTERVAL = 1.0  # Discord allows about 5 edits per 5 s per channel
MESSAGE_CLAIM_TTL = 24 * 3600
READY_TIMEOUT = 60.0
WORDING = Wording(chat="channel", threads="threads", admins="members who can manage this server", an_admin="a manager")
MENU = [
    "ask", "search", "chat", "summarize", "reply", "new", "retry", "stop", "learn", "kb", "system", "usage", "limits",
    "forget",
]  # fmt: skip
HELP = (
    f"{INTRO}\n"
    "Mention me or reply to one of my messages to continue this channel's conversation; in a thread I "
    "opened, mention me (or, when the server enabled it, just write). In DMs, just write. On any message, "
    "Apps > Summarize or Draft a reply works on that message.\n" + help_lines([*MENU, "model", "about"])
)
NO_CONTENT_INTENT = (
    "I can't read this channel's messages: Discord gives a bot the text of other people's messages only with "
    "the Message Content intent. Enable it in the developer portal (Bot page) and set DISCORD_MESSAGE_CONTENT=true."
)
NO_HISTORY = "I can't read this channel's history: I need the Read Message History permission here."
_SINCE = re.compile(r"(\d{1,4})\s*(m|min|h|d|w)", re.IGNORECASE)
_UNITS = {"m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str) -> datetime.timedelta:
    """``30m``, ``2h``, ``3d``, ``1w``: how far back a catch-up reads."""
    match = _SINCE.fullmatch(text.strip())
    if match is None:
        raise InputRejected("'since' takes a duration like 30m, 2h, 3d or 1w")
    seconds = int(match[1]) * _UNITS[match[2].lower()]
    return datetime.timedelta(seconds=min(seconds, 365 * 86400))


RATE_LIMITED = "Discord is rate-limiting me right now; please try again in a minute."


def is_private(channel: Any) -> bool:
    # The channel type, not the guild: a message from a guild not cached yet has no guild object.
    return getattr(channel, "type", None) in (discord.ChannelType.private, discord.ChannelType.group)


def conversation_key(channel: Any, user_id: int) -> ConversationKey:
    if isinstance(channel, discord.Thread):
        # A thread belongs to its channel, so erasing a channel's conversations reaches its threads.
        return ConversationKey(PLATFORM, str(channel.parent_id), thread=str(channel.id))
    if is_private(channel):
        return ConversationKey(PLATFORM, str(channel.id), user=str(user_id))
    return ConversationKey(PLATFORM, str(channel.id))


def kb_scope(guild_id: int | None, channel_id: int) -> str:
    """A guild's knowledge base; in DMs, the DM's own."""
    return f"discord:{guild_id if guild_id is not None else channel_id}"


async def _read_attachment(attachment: discord.Attachment) -> Document:
    """The first file of a message, read as a document (the message's words are the instruction)."""
    if attachment.size > DEFAULT_LIMITS.max_bytes:  # refused before it is downloaded
        raise DocumentRejected(f"this file is too large: the limit is {megabytes(DEFAULT_LIMITS.max_bytes)}")
    try:
        data = await attachment.read()
    except (discord.HTTPException, aiohttp.ClientError, OSError) as exc:
        raise DocumentRejected(f"I could not fetch this file from Discord ({type(exc).__name__})") from None
    return await read_document(data, attachment.filename, attachment.content_type)


_CHAT_TYPES = (discord.MessageType.default, discord.MessageType.reply)


def _topic(prompt: str) -> str:
    first = prompt.strip().splitlines()[0] if prompt.strip() else "Conversation"
    return first if len(first) <= 90 else first[:89] + "…"


class DiscordBot:
    """``async with DiscordBot(engine, settings):`` serves until the block ends."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        edit_interval: float = EDIT_INTERVAL,
        guild_ready_timeout: float = 2.0,
    ) -> None:
        if settings.discord_bot_token is None:
            raise ConfigError("DISCORD_BOT_TOKEN is not set")
        self.engine = engine
        self.commands = Commands(engine, HELP)
        self.settings = settings
        self.interval = edit_interval
        intents = discord.Intents.default()
        intents.message_content = settings.discord_message_content
        # discord.py waits out 429s and raises no event for them; its HTTP session's trace hooks see each one.
        trace = aiohttp.TraceConfig()
        trace.on_request_end.append(self._on_http_response)
        self._waits = engine.metrics.rate_limit_waits.labels(PLATFORM, "429")
        self.client = discord.Client(
            intents=intents,
            allowed_mentions=NO_PINGS,
            max_ratelimit_timeout=settings.discord_max_ratelimit_wait,
            guild_ready_timeout=guild_ready_timeout,
            http_trace=trace,
        )
        self.tree = app_commands.CommandTree(self.client)
        self.tree.on_error = self._on_command_error  # type: ignore[method-assign]
        self._register_commands()
        self.client.event(self.on_message)
        self._runner: asyncio.Task[None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> DiscordBot:
        assert self.settings.discord_bot_token is not None
        # Class-level in discord.py: the REST base and the gateway this process talks to.
        Route.BASE = self.settings.discord_api_base.rstrip("/")
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.settings.discord_gateway_url)
        try:
            await self.client.login(self.settings.discord_bot_token.get_secret_value())
            self._runner = asyncio.create_task(self.client.connect(reconnect=True))
            ready = asyncio.create_task(self.client.wait_until_ready())
            done, _ = await asyncio.wait({self._runner, ready}, timeout=READY_TIMEOUT, return_when="FIRST_COMPLETED")
            if self._runner in done:
                ready.cancel()
                self._runner.result()  # raises what stopped the connection
                raise ConfigError("the Discord gateway connection closed before it was ready")
            if ready not in done:
                ready.cancel()
                raise ConfigError(f"the Discord gateway was not ready within {READY_TIMEOUT:.0f} s")
            await self._sync_commands()
        except discord.LoginFailure:
            await self._close()
            raise ConfigError("Discord rejected DISCORD_BOT_TOKEN (401 Unauthorized): check the token") from None
        except discord.PrivilegedIntentsRequired:
            await self._close()
            raise ConfigError(
                "DISCORD_MESSAGE_CONTENT=true needs the Message Content intent enabled in the developer portal "
                "(Bot page); enable it there or unset DISCORD_MESSAGE_CONTENT"
            ) from None
        except discord.ConnectionClosed as exc:
            await self._close()
            if exc.code == 4004:
                raise ConfigError("Discord rejected DISCORD_BOT_TOKEN (gateway: authentication failed)") from None
            raise ConfigError(f"the Discord gateway closed the connection (code {exc.code})") from None
        except BaseException:
            await self._close()
            raise
        log.info("Discord bot %s is serving %d guild(s)", self.client.user, len(self.client.guilds))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._close()

    async def _close(self) -> None:
        await self.client.close()
        if self._runner is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._runner
            self._runner = None

    async def ready(self) -> None:
        """Readiness: logged in and the gateway connected (not while it reconnects)."""
        ws = self.client.ws
        if not self.client.is_ready() or self.client.is_closed() or ws is None or not ws.open:
            raise NotReady("not connected")

    async def _on_http_response(
        self, session: aiohttp.ClientSession, context: object, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.response.status == 429:
            self._waits.inc()

    async def _sync_commands(self) -> None:
        guilds = self.settings.discord_guild_ids
        if not guilds:
            await self.tree.sync()
            return
        for guild_id in guilds:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)

    # --- who may talk --------------------------------------------------------------------------------

    def _allowed(self, user: discord.abc.User, guild: discord.Guild | None) -> bool:
        if user.id in self.settings.discord_admins:
            return True
        guilds, roles = self.settings.discord_allowed_guilds, self.settings.discord_allowed_roles
        if guild is None:
            return not roles  # role lists cannot be checked in DMs
        if guilds and guild.id not in guilds:
            return False
        member_roles = {r.id for r in getattr(user, "roles", [])}
        return not roles or bool(member_roles & roles)

    def _is_admin(self, interaction: discord.Interaction) -> bool:
        # default_member_permissions is only a hint guild admins can override: the bot checks itself.
        return (
            interaction.guild is None
            or interaction.user.id in self.settings.discord_admins
            or interaction.permissions.manage_guild
        )

    def _addressed(self, message: discord.Message) -> str | None:
        """The text meant for the bot, or None when the message is not for it."""
        me = self.client.user
        assert me is not None
        text = message.content
        if is_private(message.channel):
            return text
        if me in message.mentions:
            for form in (f"<@{me.id}>", f"<@!{me.id}>"):
                text = text.replace(form, "")
            return text.strip()
        ref = message.reference.resolved if message.reference else None
        if isinstance(ref, discord.Message) and ref.author.id == me.id:
            return text
        if isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id:
            return text
        return None

    # --- messages ------------------------------------------------------------------------------------

    async def on_message(self, message: discord.Message) -> None:
        if message.author.bot:
            return
        text = self._addressed(message)
        if text is None:
            return
        me = self.client.user
        assert me is not None
        try:
            # A resumed gateway session can deliver a message again: answer it once.
            if not await self.engine.claim(f"dc:{me.id}:message:{message.id}", MESSAGE_CLAIM_TTL):
                return
        except StoreUnavailable as exc:
            await self._say(message, explain(exc))
            return
        if not self._allowed(message.author, message.guild):
            await self._say(message, "Sorry, I'm not available to you here.")
            return
        if not text.strip() and message.embeds and not message.attachments:
            await self._say(message, "I can only read text: please write your question in the message itself.")
            return
        try:
            document = await _read_attachment(message.attachments[0]) if message.attachments else None
        except ParleyError as exc:
            await self._say(message, explain(exc))
            return
        request = ChatRequest(
            key=conversation_key(message.channel, message.author.id),
            text=text,
            author=message.author.display_name,
            author_id=str(message.author.id),
            message_id=str(message.id),
            exempt=message.author.id in self.settings.discord_admins,
            document=document,
            scope=kb_scope(message.guild.id if message.guild else None, message.channel.id),
        )
        await self._stream(
            ChannelSurface(message.channel, reply_to=message),
            self.engine.chat(request),
            lambda t: self._say(message, t),
        )

    async def _say(self, message: discord.Message, text: str) -> None:
        try:
            await message.reply(text, allowed_mentions=NO_PINGS, mention_author=False)
        except discord.HTTPException as exc:
            log.info("cannot answer in channel %s: %s", message.channel.id, exc)

    async def _stream(self, surface: Surface, events: AsyncIterator[ChatEvent], say: Callable[[str], Any]) -> None:
        """One answer, with every failure turned into a short message (and one channel's 403 kept there)."""
        try:
            await stream_reply(events, surface, split=split_for_discord, interval=self.interval)
        except ParleyError as exc:
            await say(explain(exc))
        except discord.RateLimited:
            await say(RATE_LIMITED)
        except discord.Forbidden as exc:
            log.info("not allowed to write here (%s); skipping this answer", exc)

    # --- slash commands --------------------------------------------------------------------------------

    def _register_commands(self) -> None:
        tree, commands = self.tree, self.commands

        @tree.command(name="ask", description=COMMANDS["ask"])
        @app_commands.describe(prompt="Your question or request")
        async def ask(interaction: discord.Interaction, prompt: str) -> None:
            await self._answer_interaction(interaction, prompt)

        @tree.command(name="search", description=COMMANDS["search"])
        @app_commands.describe(question="What to look up")
        async def search(interaction: discord.Interaction, question: str) -> None:
            await self._answer_interaction(interaction, question, search=True)

        @tree.command(name="summarize", description=COMMANDS["summarize"])
        @app_commands.describe(
            count=f"How many recent messages to read (default 100, at most {MAX_CATCH_UP})",
            since="Or how far back: 30m, 2h, 3d",
            file="A document to summarise instead",
            how="How to summarise (length, focus)",
        )
        async def summarize(
            interaction: discord.Interaction,
            count: app_commands.Range[int, 1, MAX_CATCH_UP] = 100,
            since: str | None = None,
            file: discord.Attachment | None = None,
            how: str | None = None,
        ) -> None:
            if file is not None:
                await self._answer_file(interaction, file, quoted_instruction(SUMMARIZE, how or ""))
            else:
                await self._catch_up(interaction, count, since, how or "")

        @tree.command(name="reply", description=COMMANDS["reply"])
        @app_commands.describe(
            file="The e-mail (.eml) or document to answer", text="Or the e-mail's text", how="What to answer"
        )
        async def reply(
            interaction: discord.Interaction,
            file: discord.Attachment | None = None,
            text: str | None = None,
            how: str | None = None,
        ) -> None:
            instruction = quoted_instruction(REPLY, how or "")
            if file is not None:
                await self._answer_file(interaction, file, instruction)
            elif text and text.strip():
                document = Document.of_text(text, "the e-mail")
                await self._answer_document(interaction, document, instruction)
            else:
                await interaction.response.send_message(
                    "Give me the e-mail: attach it (file:) or paste it (text:), or use Apps > Draft a reply on a "
                    "message.",
                    ephemeral=True,
                )

        # Apps > … on any message: what Discord offers instead of replying to a message with a command.
        for label, base in (("Summarize", SUMMARIZE), ("Draft a reply", REPLY)):
            tree.add_command(app_commands.ContextMenu(name=label, callback=self._on_message_command(base)))

        @tree.command(name="learn", description=COMMANDS["learn"])
        @app_commands.describe(
            file="A document: text, Markdown, PDF, DOCX, HTML or e-mail",
            text="Or the text itself",
            name="What to call it (default: the file's name)",
        )
        async def learn(
            interaction: discord.Interaction,
            file: discord.Attachment | None = None,
            text: str | None = None,
            name: str | None = None,
        ) -> None:
            # Deferred (reading a PDF takes a while), privately unless the answer will be the public
            # "Learned …": after a deferral, the first follow-up keeps the deferral's visibility.
            await interaction.response.defer(thinking=True, ephemeral=not self._is_admin(interaction))

            async def read() -> Document | None:
                if file is not None:
                    return await _read_attachment(file)
                if text and text.strip():
                    return Document.of_text(text)
                return None

            answer = await commands.learn(self._place(interaction), read, name)
            await interaction.followup.send(answer.text, ephemeral=not answer.public, allowed_mentions=NO_PINGS)

        @tree.command(name="kb", description=COMMANDS["kb"])
        @app_commands.describe(remove="Ids of documents to remove (admins), separated by spaces")
        async def kb(interaction: discord.Interaction, remove: str | None = None) -> None:
            args = ["remove", *remove.split()] if remove else []
            await self._show(interaction, await commands.kb(self._place(interaction), args))

        @tree.command(name="chat", description=COMMANDS["chat"])
        @app_commands.describe(prompt="What the conversation is about")
        async def chat(interaction: discord.Interaction, prompt: str) -> None:
            await self._open_thread(interaction, prompt)

        @tree.command(name="retry", description=COMMANDS["retry"])
        async def retry(interaction: discord.Interaction) -> None:
            await interaction.response.defer(thinking=True)
            await self._stream(
                InteractionSurface(interaction),
                self.engine.retry(
                    self._key(interaction), scope=kb_scope(interaction.guild_id, interaction.channel_id or 0)
                ),
                lambda t: interaction.edit_original_response(content=t),
            )

        @tree.command(name="system", description=COMMANDS["system"])
        @app_commands.describe(persona="The new persona (leave empty to show it; '-' restores the default)")
        async def system(interaction: discord.Interaction, persona: str | None = None) -> None:
            await self._show(interaction, await commands.system(self._place(interaction), persona))

        @tree.command(name="limits", description=COMMANDS["limits"])
        @app_commands.describe(
            requests_per_minute="Requests per minute in this channel (0 = unlimited, - = default)",
            tokens_per_day="Tokens per day in this channel (0 = unlimited, - = default)",
        )
        async def limits(
            interaction: discord.Interaction, requests_per_minute: str | None = None, tokens_per_day: str | None = None
        ) -> None:
            answer = await commands.limits(self._place(interaction), requests_per_minute, tokens_per_day)
            await self._show(interaction, answer)

        # The commands without options: one shared function each.
        simple: dict[str, Callable[[Place], Awaitable[Answer]]] = {
            "new": commands.new,
            "stop": commands.stop,
            "usage": commands.usage,
            "forget": commands.forget,
            "model": commands.model,
            "about": commands.about,
            "help": commands.help,
        }
        for name, run in simple.items():
            tree.add_command(app_commands.Command(name=name, description=COMMANDS[name], callback=self._simple(run)))

    def _simple(
        self, run: Callable[[Place], Awaitable[Answer]]
    ) -> Callable[[discord.Interaction], Coroutine[Any, Any, None]]:
        async def callback(interaction: discord.Interaction) -> None:
            await self._show(interaction, await run(self._place(interaction)))

        return callback

    def _place(self, interaction: discord.Interaction) -> Place:
        async def is_admin() -> bool:
            return self._is_admin(interaction)

        scope = kb_scope(interaction.guild_id, interaction.channel_id or 0)
        return Place(
            self._key(interaction), str(interaction.user.id), interaction.guild is None, is_admin, WORDING, scope
        )

    async def _show(self, interaction: discord.Interaction, answer: Answer) -> None:
        await interaction.response.send_message(answer.text, ephemeral=not answer.public, allowed_mentions=NO_PINGS)

    def _key(self, interaction: discord.Interaction) -> ConversationKey:
        return conversation_key(interaction.channel, interaction.user.id)

    async def _refused(self, interaction: discord.Interaction, prompt: str) -> bool:
        """Refusals before any work are ephemeral: they concern only the caller."""
        if not self._allowed(interaction.user, interaction.guild):
            await interaction.response.send_message("Sorry, I'm not available to you here.", ephemeral=True)
            return True
        try:
            check_input(prompt, max_chars=self.settings.max_input_chars)
        except InputRejected as exc:
            await interaction.response.send_message(explain(exc), ephemeral=True)
            return True
        return False

    def _request(
        self, interaction: discord.Interaction, key: ConversationKey, prompt: str, *, search: bool = False
    ) -> ChatRequest:
        return ChatRequest(
            key=key,
            text=prompt,
            author=interaction.user.display_name,
            author_id=str(interaction.user.id),
            message_id=f"i{interaction.id}",
            exempt=interaction.user.id in self.settings.discord_admins,
            search=search,
            scope=kb_scope(interaction.guild_id, interaction.channel_id or 0),
        )

    async def _answer_interaction(self, interaction: discord.Interaction, prompt: str, *, search: bool = False) -> None:
        if await self._refused(interaction, prompt):
            return
        # Deferring first: generation takes longer than the 3 seconds Discord allows for a response.
        await interaction.response.defer(thinking=True)
        await self._stream(
            InteractionSurface(interaction),
            self.engine.chat(self._request(interaction, self._key(interaction), prompt, search=search)),
            lambda t: interaction.edit_original_response(content=t),
        )

    def _on_message_command(
        self, base: str
    ) -> Callable[[discord.Interaction, discord.Message], Coroutine[Any, Any, None]]:
        async def callback(interaction: discord.Interaction, message: discord.Message) -> None:
            if message.attachments:
                await self._answer_file(interaction, message.attachments[0], base)
            elif message.content.strip():
                name = f"{message.author.display_name}'s message"
                document = Document.of_text(message.content, name)
                await self._answer_document(interaction, document, base)
            else:
                await interaction.response.send_message("That message has no text or file to read.", ephemeral=True)

        return callback

    async def _answer_file(self, interaction: discord.Interaction, file: discord.Attachment, instruction: str) -> None:
        if await self._refused(interaction, instruction):
            return
        await interaction.response.defer(thinking=True)  # reading a long PDF takes longer than 3 s
        await self._answer_document(interaction, await _read_attachment(file), instruction)

    async def _answer_document(
        self,
        interaction: discord.Interaction,
        document: Document,
        instruction: str,
        *,
        key: ConversationKey | None = None,
        lines: list[ChatLine] | None = None,
    ) -> None:
        """A document and what to do with it, answered in the channel (deferred first if it is not yet)."""
        if not interaction.response.is_done():
            if await self._refused(interaction, instruction):
                return
            await interaction.response.defer(thinking=True)
        request = self._request(interaction, key or self._key(interaction), instruction)
        events = self.engine.chat(replace(request, document=document))
        await self._stream(
            InteractionSurface(interaction),
            linked(events, lines) if lines else events,
            lambda t: interaction.edit_original_response(content=t),
        )

    async def _catch_up(self, interaction: discord.Interaction, count: int, since: str | None, how: str) -> None:
        """The channel's recent messages, summarised as topics linking back to where each began."""
        if not self.settings.discord_message_content:
            await interaction.response.send_message(NO_CONTENT_INTENT, ephemeral=True)
            return
        instruction = quoted_instruction(CATCH_UP, how)
        if await self._refused(interaction, instruction):
            return
        channel = interaction.channel
        if not isinstance(channel, discord.abc.Messageable):
            await interaction.response.send_message("I can only catch up on a text channel.", ephemeral=True)
            return
        start = discord.utils.utcnow() - parse_since(since) if since else None
        await interaction.response.defer(thinking=True)
        me = self.client.user
        lines: list[ChatLine] = []
        try:
            async for message in channel.history(limit=count):
                if start is not None and message.created_at < start:
                    break
                if (me is not None and message.author.id == me.id) or message.type not in _CHAT_TYPES:
                    continue
                text = message.content or " ".join(f"(file: {a.filename})" for a in message.attachments)
                if text.strip():
                    lines.append(ChatLine(message.author.display_name, text, message.jump_url))
        except discord.Forbidden:
            await interaction.edit_original_response(content=NO_HISTORY)
            return
        if not lines:
            await interaction.edit_original_response(content="There are no messages to summarise here.")
            return
        lines.reverse()  # oldest first, as the conversation went
        where = f"the last {len(lines)} messages of #{getattr(channel, 'name', None) or 'this chat'}"
        # A catch-up of its own, so the channel's conversation with the bot is not filled with transcripts.
        key = replace(self._key(interaction), thread=f"catch-up-{interaction.id}", user=None)
        await self._answer_document(interaction, transcript(lines, where), instruction, key=key, lines=lines)

    async def _open_thread(self, interaction: discord.Interaction, prompt: str) -> None:
        channel = interaction.channel
        if not isinstance(channel, discord.TextChannel):
            await self._answer_interaction(interaction, prompt)  # DMs and threads: answer in place
            return
        if await self._refused(interaction, prompt):
            return
        topic = _topic(prompt)
        await interaction.response.send_message(
            f"Let's talk about this in a thread: **{topic}**", allowed_mentions=NO_PINGS
        )
        start = await interaction.original_response()
        thread = await start.create_thread(name=topic)
        key = conversation_key(thread, interaction.user.id)
        await self._stream(
            ChannelSurface(thread),
            self.engine.chat(self._request(interaction, key, prompt)),
            lambda t: thread.send(t, allowed_mentions=NO_PINGS),
        )

    async def _on_command_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        cause = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(cause, ParleyError):
            text = explain(cause)
        else:
            log.error("slash command failed", exc_info=cause)
            text = "Sorry, something went wrong."
        with contextlib.suppress(discord.HTTPException):
            if interaction.response.is_done():
                await interaction.followup.send(text, ephemeral=True)
            else:
                await interaction.response.send_message(text, ephemeral=True)
