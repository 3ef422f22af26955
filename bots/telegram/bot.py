"""Parley on Telegram: private chats, groups and forum topics, over polling or a webhook."""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from telegram import BotCommand, Message, Update, User
from telegram.constants import ChatMemberStatus, ChatType, MessageEntityType
from telegram.error import BadRequest, Forbidden, InvalidToken, NetworkError, RetryAfter, TelegramError
from telegram.ext import (
    Application,
    ApplicationBuilder,
    ApplicationHandlerStop,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from bots.commands import (
    CATCH_UP,
    COMMANDS,
    INTRO,
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
from bots.replies import explain
from bots.streaming import stream_reply
from bots.telegram.ratelimit import CountingRateLimiter
from bots.telegram.surface import TelegramSurface
from bots.text.split import split_message, utf16_len
from engine.contract import ChatEvent, ChatRequest
from engine.conversation.chatlog import LoggedMessage
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.documents import Document, read_document
from engine.documents.document import DEFAULT_LIMITS, megabytes
from engine.errors import ConfigError, DocumentRejected, NotReady, ParleyError, StoreUnavailable
from engine.runtime.http import HttpServer
from engine.runtime.settings import Settings

log = logging.getLogger(__name__)

PLATFORM = "telegram"
TEXT_LIMIT = 4096  # UTF-16 code units, after entity parsing
# Edits count against Telegram's flood limits: about one message per second in a private chat and
# twenty per minute in a group.
PRIVATE_INTERVAL = 1.0
GROUP_INTERVAL = 3.0
UPDATE_CLAIM_TTL = 24 * 3600  # Telegram keeps undelivered updates for 24 h

# The commands in the menu, in order; /start is /help.
MENU = [
    "ask", "search", "new", "retry", "stop", "summarize", "reply", "learn", "kb", "system", "usage", "limits",
    "forget", "model", "about", "help",
]  # fmt: skip
WORDING = Wording(chat="group", threads="topics", admins="the group's admins", an_admin="an admin")
HELP = (
    f"{INTRO}\n\n"
    "In a private chat, just write to me. In a group, mention me (@{username}), reply to one of my "
    "messages, or use /ask. In a forum, each topic is its own conversation.\n\n" + help_lines(MENU)
)


CATCH_UP_HINT = (
    " To catch up on what was said here, a group admin can turn on /summarize on: I then keep the group's "
    "messages I can see for a day (with privacy mode on, Telegram shows me only commands, mentions and replies)."
)


def _split(text: str) -> list[str]:
    return split_message(text, TEXT_LIMIT, length=utf16_len)


def conversation_key(message: Message) -> ConversationKey:
    chat = message.chat
    if chat.type == ChatType.PRIVATE:
        return ConversationKey(PLATFORM, str(chat.id), user=str(message.from_user.id if message.from_user else chat.id))
    thread = message.message_thread_id if message.is_topic_message else None
    return ConversationKey(PLATFORM, str(chat.id), thread=str(thread) if thread else None)


def message_link(message: Message) -> str | None:
    """Where a group's message opens in Telegram: only supergroups have message links (t.me/NAME/ID when
    public, else t.me/c/ID/ID for members, the chat id without its -100 prefix)."""
    chat = message.chat
    if chat.type != ChatType.SUPERGROUP:
        return None
    if chat.username:
        return f"https://t.me/{chat.username}/{message.message_id}"
    return f"https://t.me/c/{-chat.id - 10**12}/{message.message_id}"


def kb_scope(message: Message) -> str:
    return f"telegram:{message.chat.id}"


def _display_name(user: User | None) -> str | None:
    if user is None:
        return None
    return user.full_name or user.username or str(user.id)


class TelegramBot:
    """``async with TelegramBot(engine, settings):`` serves until the block ends. A webhook is mounted on
    ``http`` (the process's server, started before the bot), or on a server of the bot's own."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        private_interval: float = PRIVATE_INTERVAL,
        group_interval: float = GROUP_INTERVAL,
        flood_limits: bool = True,
        http: HttpServer | None = None,
    ) -> None:
        if settings.telegram_bot_token is None:
            raise ConfigError("TELEGRAM_BOT_TOKEN is not set")
        self.engine = engine
        self.commands = Commands(engine, HELP)
        self.settings = settings
        self.intervals = {True: private_interval, False: group_interval}
        self.flood_limits = flood_limits  # off only to measure the adapter's own overhead
        self.webhook_secret = (
            settings.telegram_webhook_secret.get_secret_value()
            if settings.telegram_webhook_secret
            else secrets.token_urlsafe(32)
        )
        self.app = self._build(settings.telegram_bot_token.get_secret_value())
        self.webhook_url: str | None = None  # where the webhook listens, once started
        self._own_http = http is None  # run alone (tests), the webhook gets a server of its own
        self.http = http or HttpServer(engine.metrics)
        if settings.telegram_webhook_url:
            # Mounted now: the server's routes are fixed once it starts.
            self.webhook_path = urlsplit(settings.telegram_webhook_url).path or "/"
            self.http.app.router.add_post(self.webhook_path, self._receive)

    def _build(self, token: str) -> Application[Any, Any, Any, Any, Any, Any]:
        # Our own request objects, so they can be closed even when initialisation fails (PTB only closes
        # them in shutdown(), which does nothing for an application that never initialised).
        self._requests = [HTTPXRequest(connection_pool_size=64), HTTPXRequest()]
        builder: Any = (  # its generic parameters change with each call; the built app is typed below
            ApplicationBuilder()
            .token(token)
            .request(self._requests[0])
            .get_updates_request(self._requests[1])
            .base_url(self.settings.telegram_base_url)
            .base_file_url(self.settings.telegram_base_url.replace("/bot", "/file/bot"))
            .concurrent_updates(256)  # many chats at once; the engine keeps each conversation in order
        )
        if self.flood_limits:
            builder = builder.rate_limiter(CountingRateLimiter(self.engine.metrics, max_retries=5))
        app: Application[Any, Any, Any, Any, Any, Any] = builder.build()
        app.add_handler(TypeHandler(Update, self._gate), group=-1)
        app.add_handler(CommandHandler("ask", self._ask))
        app.add_handler(CommandHandler("search", self._search))
        app.add_handler(CommandHandler("learn", self._learn))
        app.add_handler(CommandHandler("retry", self._retry))
        app.add_handler(CommandHandler(["summarize", "summarise"], self._summarize))
        app.add_handler(CommandHandler("reply", self._on_replied(REPLY)))
        commands = self.commands
        shared: dict[str, Callable[[Place, list[str]], Awaitable[Answer]]] = {
            "start": lambda place, _: commands.help(place),
            "help": lambda place, _: commands.help(place),
            "new": lambda place, _: commands.new(place),
            "stop": lambda place, _: commands.stop(place),
            "system": lambda place, args: commands.system(place, " ".join(args)),
            "usage": lambda place, _: commands.usage(place),
            "limits": self._limits,
            "forget": lambda place, _: commands.forget(place),
            "model": lambda place, _: commands.model(place),
            "about": lambda place, _: commands.about(place),
            "kb": lambda place, args: commands.kb(place, args),
        }
        for name, run in shared.items():
            app.add_handler(CommandHandler(name, self._shared(run)))
        app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, self._message))
        app.add_handler(MessageHandler(filters.Document.ALL, self._document))
        app.add_handler(MessageHandler(filters.COMMAND, self._unknown_command))  # after the known ones
        app.add_error_handler(self._on_error)
        return app

    # --- lifecycle -------------------------------------------------------------------------------

    async def __aenter__(self) -> TelegramBot:
        self._stack = AsyncExitStack()
        try:
            await self.app.initialize()
        except BaseException as exc:
            for request in self._requests:
                await request.shutdown()
            if isinstance(exc, InvalidToken):
                raise ConfigError("Telegram rejected TELEGRAM_BOT_TOKEN (401 Unauthorized): check the token") from None
            raise
        self._stack.push_async_callback(self.app.shutdown)
        self.commands.help_text = HELP.format(username=self.app.bot.username)  # known once initialised
        await self.app.bot.set_my_commands([BotCommand(name, COMMANDS[name]) for name in MENU])
        await self.app.start()
        self._stack.push_async_callback(self.app.stop)
        if self.settings.telegram_webhook_url:
            await self._stack.enter_async_context(self._webhook(self.settings.telegram_webhook_url))
        else:
            assert self.app.updater is not None
            await self.app.bot.delete_webhook()  # polling and a webhook are exclusive (409 otherwise)
            await self.app.updater.start_polling(
                poll_interval=0, timeout=10, allowed_updates=Update.ALL_TYPES, error_callback=self._polling_error
            )
            self._stack.push_async_callback(self.app.updater.stop)
        log.info("Telegram bot @%s is serving (%s)", self.app.bot.username,
                 "webhook" if self.webhook_url else "polling")  # fmt: skip
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _polling_error(self, exc: TelegramError) -> None:
        log.warning("Telegram polling error: %s", exc)

    async def ready(self) -> None:
        """Readiness: started, and receiving updates (polling, or the webhook registered)."""
        receiving = self.webhook_url is not None or (self.app.updater is not None and self.app.updater.running)
        if not (self.app.running and receiving):
            raise NotReady("not connected")

    @asynccontextmanager
    async def _webhook(self, public_url: str) -> AsyncIterator[None]:
        """Updates POSTed by Telegram to the project's own HTTP server (see ``_receive``)."""
        async with AsyncExitStack() as stack:
            if self._own_http:
                await stack.enter_async_context(self.http.serve(self.settings.http_host, self.settings.http_port))
            if self.http.url is None:
                raise RuntimeError("the shared HTTP server must be serving before the Telegram bot starts")
            await self.app.bot.set_webhook(
                public_url, secret_token=self.webhook_secret, allowed_updates=Update.ALL_TYPES
            )
            self.webhook_url = f"{self.http.url}{self.webhook_path}"
            try:
                yield
            finally:
                self.webhook_url = None

    async def _receive(self, request: web.Request) -> web.Response:
        """One webhook call: the secret checked first, then the update queued for the application."""
        given = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
        if not hmac.compare_digest(given, self.webhook_secret.encode()):
            return web.Response(status=403, text="forbidden")
        try:
            update = Update.de_json(await request.json(loads=json.loads), self.app.bot)
        except (ValueError, TypeError, KeyError):
            return web.Response(status=400, text="bad update")
        await self.app.update_queue.put(update)
        return web.Response(text="ok")

    # --- who may talk, and what is for us ---------------------------------------------------------

    async def _gate(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Runs before every handler: drops a redelivered update and people outside the access lists."""
        try:
            first = await self.engine.claim(f"tg:{self.app.bot.id}:update:{update.update_id}", UPDATE_CLAIM_TTL)
        except StoreUnavailable as exc:
            # Nothing can be answered without Redis; tell whoever was talking to us rather than stay silent.
            message = update.effective_message
            if message is not None and self._addressed(message) is not None:
                await self._say(message, explain(exc))
            raise ApplicationHandlerStop from None
        if not first:
            log.info("update %s delivered again; already handled", update.update_id)
            raise ApplicationHandlerStop
        user, chat = update.effective_user, update.effective_chat
        users, chats = self.settings.telegram_allowed_users, self.settings.telegram_allowed_chats
        allowed = (not users or (user is not None and user.id in users)) and (
            not chats or (chat is not None and chat.id in chats)
        )
        if allowed or self._is_listed_admin(user):
            return
        message = update.effective_message
        if message is not None and self._addressed(message) is not None:
            await message.reply_text("Sorry, I'm a private assistant and can't answer here.")
        raise ApplicationHandlerStop

    def _is_listed_admin(self, user: User | None) -> bool:
        return user is not None and user.id in self.settings.telegram_admins

    async def _is_admin(self, message: Message) -> bool:
        if message.chat.type == ChatType.PRIVATE or self._is_listed_admin(message.from_user):
            return True
        if message.from_user is None:
            return False
        member = await message.chat.get_member(message.from_user.id)
        return member.status in (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)

    def _addressed(self, message: Message) -> str | None:
        """The text meant for the bot, or None when a group message is not for it."""
        text = message.text or message.caption or ""
        if message.chat.type == ChatType.PRIVATE:
            return text
        me = self.app.bot
        replied = message.reply_to_message
        # In forums every message "replies" to the topic's first message; that is not a reply to us.
        topic_root = (
            message.is_topic_message and replied is not None and replied.message_id == message.message_thread_id
        )
        if replied is not None and replied.from_user is not None and replied.from_user.id == me.id and not topic_root:
            return text
        mention = f"@{me.username}".lower()
        entities = message.parse_entities if message.text else message.parse_caption_entities
        for entity, value in entities([MessageEntityType.MENTION]).items():
            if value.lower() == mention:
                start, end = entity.offset, entity.offset + entity.length
                utf16 = text.encode("utf-16-le")
                return (utf16[: start * 2] + utf16[end * 2 :]).decode("utf-16-le").strip()
        return None

    # --- answering --------------------------------------------------------------------------------

    async def _answer(self, message: Message, events: AsyncIterator[ChatEvent]) -> None:
        private = message.chat.type == ChatType.PRIVATE
        surface = TelegramSurface(
            self.app.bot,
            message.chat.id,
            thread_id=message.message_thread_id if message.is_topic_message else None,
            reply_to=None if private else message.message_id,
            draft_id=message.message_id if private else None,
        )
        try:
            await stream_reply(events, surface, split=_split, interval=self.intervals[private])
        except ParleyError as exc:
            await self._say(message, explain(exc))

    async def _say(self, message: Message, text: str) -> None:
        try:
            await message.reply_text(text, do_quote=message.chat.type != ChatType.PRIVATE)
        except Forbidden:
            log.info("cannot write to chat %s (blocked or removed)", message.chat.id)

    def _request(self, message: Message, text: str) -> ChatRequest:
        return ChatRequest(
            key=conversation_key(message),
            text=text,
            author=_display_name(message.from_user),
            author_id=str(message.from_user.id) if message.from_user else None,
            message_id=f"{message.chat.id}:{message.message_id}",
            exempt=self._is_listed_admin(message.from_user),
            scope=kb_scope(message),
        )

    async def _message(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or message.text is None:
            return
        if message.chat.type != ChatType.PRIVATE and message.from_user is not None:
            # Kept only where the group's admins turned catch-up on (/summarize on).
            logged = LoggedMessage(_display_name(message.from_user) or "someone", message.text, message_link(message))
            with contextlib.suppress(StoreUnavailable):  # a lost catch-up line is no reason to fail the update
                await self.engine.chat_log.add(PLATFORM, str(message.chat.id), message.message_id, logged)
        text = self._addressed(message)
        if text is None:
            return  # group chatter not meant for us
        await self._answer(message, self.engine.chat(self._request(message, text)))

    async def _document(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """A file sent to the bot (in groups: with a caption that mentions it, or replying to it): its text
        is read, the caption is the instruction."""
        message = update.effective_message
        if message is None or message.document is None:
            return
        if self._command(message.caption) == "learn":  # a file sent with /learn as its caption
            place = self._place(message, message.from_user) if message.from_user else None
            if place is not None:
                name = (message.caption or "").split(maxsplit=1)[1:]
                answer = await self.commands.learn(place, lambda: self._fetch(message, context), " ".join(name))
                await self._say(message, answer.text)
            return
        instruction = self._addressed(message)
        if instruction is None:
            return  # a file shared in a group, not for us
        document = await self._fetch(message, context)
        await self._answer(message, self.engine.chat(replace(self._request(message, instruction), document=document)))

    async def _fetch(self, message: Message, context: ContextTypes.DEFAULT_TYPE) -> Document:
        """The file a message carries, read as a document."""
        sent = message.document
        assert sent is not None
        if (sent.file_size or 0) > DEFAULT_LIMITS.max_bytes:  # Telegram would not hand it over anyway
            raise DocumentRejected(f"this file is too large: the limit is {megabytes(DEFAULT_LIMITS.max_bytes)}")
        try:
            file = await context.bot.get_file(sent.file_id)
            data = bytes(await file.download_as_bytearray())
        except (BadRequest, NetworkError) as exc:
            raise DocumentRejected(f"I could not fetch this file from Telegram ({exc.message})") from None
        return await read_document(data, sent.file_name, sent.mime_type)

    async def _unknown_command(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None or not message.text:
            return
        command, _, target = message.text.split(maxsplit=1)[0].partition("@")
        # A command for another bot, or a bare one in a group (it may be another bot's), is not ours.
        mine = target.lower() == (self.app.bot.username or "").lower()
        if (target and not mine) or (not target and message.chat.type != ChatType.PRIVATE):
            return
        await self._say(message, f"I don't know {command[:64]}. /help lists what I can do.")

    def _command(self, text: str | None) -> str | None:
        """The command a caption starts with, if it is meant for this bot ("/learn", "/learn@thisbot")."""
        if not text or not text.startswith("/"):
            return None
        command, _, target = text.split(maxsplit=1)[0][1:].partition("@")
        return command.lower() if not target or target.lower() == (self.app.bot.username or "").lower() else None

    async def _ask(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        text = " ".join(context.args or [])
        if not text.strip():
            await self._say(message, "Ask me something after the command, like: /ask What is a black hole?")
            return
        await self._answer(message, self.engine.chat(self._request(message, text)))

    async def _search(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        message = update.effective_message
        if message is None:
            return
        text = " ".join(context.args or [])
        if not text.strip():
            await self._say(message, "Tell me what to look up, like: /search When was the Eiffel Tower built?")
            return
        await self._answer(message, self.engine.chat(replace(self._request(message, text), search=True)))

    async def _replied_document(
        self, source: Message, context: ContextTypes.DEFAULT_TYPE, name: str | None = None
    ) -> Document | None:
        """What a command replying to ``source`` works on: the file it carries, else its text (named ``name``);
        None when it has neither."""
        if source.document is not None:
            return await self._fetch(source, context)
        text = source.text or source.caption
        return Document.of_text(text, name) if text else None

    async def _learn(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/learn as a reply to a message or a file: that message's text, or the file, joins the knowledge base."""
        message = update.effective_message
        if message is None or message.from_user is None:
            return
        source = message.reply_to_message

        async def read() -> Document | None:
            return await self._replied_document(source, context) if source is not None else None

        name = " ".join(context.args or [])
        answer = await self.commands.learn(self._place(message, message.from_user), read, name)
        await self._say(message, answer.text)

    async def _summarize(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """/summarize as a reply: that message or file. /summarize on|off (admins): keep the group's messages
        for catch-ups. /summarize alone in a group: what was said lately, if catch-up is on."""
        message = update.effective_message
        if message is None or message.from_user is None:
            return
        args = context.args or []
        if message.reply_to_message is not None:
            await self._on_replied(SUMMARIZE)(update, context)
            return
        if len(args) == 1 and args[0].lower() in ("on", "off"):
            answer = await self.commands.catch_up_log(self._place(message, message.from_user), args[0].lower() == "on")
            await self._say(message, answer.text)
            return
        chat = str(message.chat.id)
        logged = [] if message.chat.type == ChatType.PRIVATE else await self.engine.chat_log.recent(PLATFORM, chat)
        if not logged:
            hint = "" if message.chat.type == ChatType.PRIVATE else CATCH_UP_HINT
            await self._say(message, "Reply with /summarize to the message or file you mean." + hint)
            return
        lines = [ChatLine(m.author, m.text, m.link) for m in logged]
        where = f"the last {len(lines)} messages of {message.chat.title or 'this group'}"
        request = self._request(message, quoted_instruction(CATCH_UP, " ".join(args)))
        # A catch-up of its own: the group's conversation with the bot is not filled with transcripts.
        key = replace(request.key, thread=f"catch-up-{message.message_id}")
        request = replace(request, key=key, document=transcript(lines, where))
        await self._answer(message, linked(self.engine.chat(request), lines))

    def _on_replied(self, base: str) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        """/summarize and /reply: the message they reply to (its text, or the file it carries) is the
        document, the command's words add to the instruction."""

        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
            if message is None:
                return
            source = message.reply_to_message
            document = await self._replied_document(source, context, "the message") if source else None
            if document is None:
                await self._say(message, "Reply with this command to the message (or file) you mean.")
                return
            instruction = quoted_instruction(base, " ".join(context.args or []))
            request = replace(self._request(message, instruction), document=document)
            await self._answer(message, self.engine.chat(request))

        return handle

    async def _retry(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        if (message := update.effective_message) is not None:
            await self._answer(message, self.engine.retry(conversation_key(message), scope=kb_scope(message)))

    def _shared(
        self, run: Callable[[Place, list[str]], Awaitable[Answer]]
    ) -> Callable[[Update, ContextTypes.DEFAULT_TYPE], Coroutine[Any, Any, None]]:
        """A shared command as a handler; its refusals and outages reach ``_on_error``."""

        async def handle(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
            message = update.effective_message
            if message is None or message.from_user is None:
                return
            answer = await run(self._place(message, message.from_user), context.args or [])
            await self._say(message, answer.text)

        return handle

    def _place(self, message: Message, user: User) -> Place:
        async def is_admin() -> bool:
            return await self._is_admin(message)

        private = message.chat.type == ChatType.PRIVATE
        return Place(conversation_key(message), str(user.id), private, is_admin, WORDING, kb_scope(message))

    async def _limits(self, place: Place, args: list[str]) -> Answer:
        if len(args) > 2:
            return Answer("Usage: /limits REQUESTS_PER_MINUTE [TOKENS_PER_DAY]: give at most two numbers.")
        padded: list[str | None] = [*args, None, None]
        return await self.commands.limits(place, padded[0], padded[1])

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        """The one error funnel: a refusal or an outage is told to the person, anything else logged."""
        message = update.effective_message if isinstance(update, Update) else None
        if isinstance(context.error, ParleyError) and message is not None:
            await self._say(message, explain(context.error))
            return
        if isinstance(context.error, RetryAfter | Forbidden):
            log.info("Telegram refused a call: %s", context.error)
            return
        log.error("error while handling a Telegram update", exc_info=context.error)
