"""A protocol-faithful fake of Discord (REST API v10 + gateway), served over real HTTP and WebSocket.

``FakeDiscord`` is one aiohttp server on 127.0.0.1 (ephemeral port) that serves the REST API under
``/api/v10/...`` and the gateway WebSocket at ``/`` (``?v=10&encoding=json[&compress=...]``).  The real
discord.py library talks to it once ``patch_discord()`` has pointed ``discord.http.Route.BASE`` and
``DiscordWebSocket.DEFAULT_GATEWAY`` at it.

It keeps the state a chat bot touches (users, guilds with roles / members / channels / threads, DM
channels, messages, application commands, interactions and their webhook follow-ups) and validates
what Discord validates: the bot token (REST 401 / gateway close 4004), privileged intents (close 4014),
message bodies (2000 characters, empty messages, allowed_mentions, message references, nonces),
permissions (403 50013 / 50001), command payloads on bulk overwrite, the 3-second interaction
acknowledgement window (404 10062) and double acknowledgement (400 40060).

Gateway dispatches honour the identified intents, including Discord's MESSAGE_CONTENT rule: without
intent 1<<15 a guild MESSAGE_CREATE carries empty ``content``/``embeds``/``attachments``/``components``
unless the bot is mentioned, the message is the bot's own, or it is a DM.

Tests drive the bot as people do (``user_says``, ``dm``, ``slash``, ``create_thread``), inject one-shot
faults (``fail_next``), and inspect the result (``calls``, ``messages``, ``pings``, ``typing``,
``commands``).  Unknown routes answer 404 and are recorded in ``unimplemented``
(``assert_all_implemented``).

Usage::

    async with FakeDiscord(token=TOKEN) as dc:
        with dc.patch_discord():
            g = dc.guild("Test Guild")                 # GuildRef(id, channel_id, admin_role_id, ...)
            alice = dc.user("alice"); dc.add_member(g.id, alice)
            async with running_client(client, TOKEN):  # login + connect task + wait_until_ready; closes
                await dc.user_says(g.channel_id, alice, "hi", mentions=[dc.bot_id])
                reply = await dc.wait_for_message(g.channel_id, "hi")
                it = await dc.slash(g.channel_id, alice, "ask", {"prompt": "why?"})
                answer = await it.wait_done()
            assert dc.pings == []
            dc.assert_all_implemented()

discord.py imports the deprecated stdlib ``audioop`` module (DeprecationWarning on Python 3.11+); with
``filterwarnings = ["error"]`` pytest needs ``"ignore:'audioop' is deprecated:DeprecationWarning"``.

Deliberate concessions (so nobody mistakes them for Discord's behaviour):
- JSON encoding only, no transport compression: ``compress`` in the gateway URL is ignored and frames are
  text; ``encoding=etf`` is refused with close code 4002.
- Channel permission overwrites are not modelled: permissions come from roles only.
- Rate limits are only what ``fail_next`` injects; normal answers carry generous X-RateLimit headers.
- Attachments are served without auth from ``{base}/attachments/{id}/{filename}`` on the fake's own port
  (Discord's CDN adds a channel id and signed ``ex``/``is``/``hm`` query parameters; the fake needs neither).
  Files people post come from ``attachment(data, filename, content_type)`` passed to
  ``user_says(..., attachments=[...])``; files the bot uploads (multipart ``payload_json`` + ``files[n]``)
  are stored and served the same way.
- ``pings`` is recorded for messages the bot creates or edits (the ones a test wants to keep silent).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import datetime as dt
import fnmatch
import hashlib
import itertools
import json
import re
import secrets
import time
import traceback
import urllib.parse
import warnings
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import aiohttp
from aiohttp import web

JSON = dict[str, Any]

API_VERSION: Final = 10
DISCORD_EPOCH_MS: Final = 1_420_070_400_000
MAX_CONTENT: Final = 2000
INTERACTION_ACK_SECONDS: Final = 3.0
INTERACTION_TOKEN_SECONDS: Final = 15 * 60.0
ATTACHMENT_SIZE_LIMIT: Final = 10 * 1024 * 1024

# Permission bits (https://discord.com/developers/docs/topics/permissions).
CREATE_INSTANT_INVITE: Final = 1 << 0
ADMINISTRATOR: Final = 1 << 3
MANAGE_CHANNELS: Final = 1 << 4
MANAGE_GUILD: Final = 1 << 5
ADD_REACTIONS: Final = 1 << 6
VIEW_CHANNEL: Final = 1 << 10
SEND_MESSAGES: Final = 1 << 11
MANAGE_MESSAGES: Final = 1 << 13
EMBED_LINKS: Final = 1 << 14
ATTACH_FILES: Final = 1 << 15
READ_MESSAGE_HISTORY: Final = 1 << 16
MENTION_EVERYONE: Final = 1 << 17
USE_EXTERNAL_EMOJIS: Final = 1 << 18
CHANGE_NICKNAME: Final = 1 << 26
USE_APPLICATION_COMMANDS: Final = 1 << 31
MANAGE_THREADS: Final = 1 << 34
CREATE_PUBLIC_THREADS: Final = 1 << 35
CREATE_PRIVATE_THREADS: Final = 1 << 36
SEND_MESSAGES_IN_THREADS: Final = 1 << 38
ALL_PERMISSIONS: Final = (1 << 53) - 1
# What a fresh guild's @everyone role may do (Discord's defaults, text-relevant part).
DEFAULT_EVERYONE_PERMISSIONS: Final = (
    CREATE_INSTANT_INVITE
    | ADD_REACTIONS
    | VIEW_CHANNEL
    | SEND_MESSAGES
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | MENTION_EVERYONE
    | USE_EXTERNAL_EMOJIS
    | CHANGE_NICKNAME
    | USE_APPLICATION_COMMANDS
    | CREATE_PUBLIC_THREADS
    | CREATE_PRIVATE_THREADS
    | SEND_MESSAGES_IN_THREADS
)
# The bot's managed role: what a typical invite link grants.
DEFAULT_BOT_PERMISSIONS: Final = (
    VIEW_CHANNEL
    | SEND_MESSAGES
    | SEND_MESSAGES_IN_THREADS
    | CREATE_PUBLIC_THREADS
    | EMBED_LINKS
    | ATTACH_FILES
    | READ_MESSAGE_HISTORY
    | ADD_REACTIONS
    | USE_APPLICATION_COMMANDS
)

# Gateway intents.
INTENT_GUILDS: Final = 1 << 0
INTENT_GUILD_MEMBERS: Final = 1 << 1
INTENT_GUILD_PRESENCES: Final = 1 << 8
INTENT_GUILD_MESSAGES: Final = 1 << 9
INTENT_GUILD_MESSAGE_REACTIONS: Final = 1 << 10
INTENT_GUILD_MESSAGE_TYPING: Final = 1 << 11
INTENT_DIRECT_MESSAGES: Final = 1 << 12
INTENT_DIRECT_MESSAGE_REACTIONS: Final = 1 << 13
INTENT_DIRECT_MESSAGE_TYPING: Final = 1 << 14
INTENT_MESSAGE_CONTENT: Final = 1 << 15
PRIVILEGED_INTENTS: Final = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT
ALL_INTENTS: Final = (1 << 26) - 1
# Application flags saying which privileged intents the developer portal enabled ("limited" variants).
_APP_FLAG_FOR_INTENT: Final = {
    INTENT_GUILD_PRESENCES: 1 << 13,
    INTENT_GUILD_MEMBERS: 1 << 15,
    INTENT_MESSAGE_CONTENT: 1 << 19,
}

# Channel types.
GUILD_TEXT: Final = 0
DM: Final = 1
GUILD_ANNOUNCEMENT: Final = 5
ANNOUNCEMENT_THREAD: Final = 10
PUBLIC_THREAD: Final = 11
PRIVATE_THREAD: Final = 12
THREAD_TYPES: Final = frozenset({ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD})

# Message flags.
FLAG_SUPPRESS_EMBEDS: Final = 1 << 2
FLAG_EPHEMERAL: Final = 1 << 6
FLAG_LOADING: Final = 1 << 7
FLAG_SUPPRESS_NOTIFICATIONS: Final = 1 << 12
FLAG_IS_COMPONENTS_V2: Final = 1 << 15
_CREATE_FLAGS: Final = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | (1 << 13) | FLAG_IS_COMPONENTS_V2
_WEBHOOK_FLAGS: Final = _CREATE_FLAGS | FLAG_EPHEMERAL

_MENTION_RE: Final = re.compile(r"<@!?(\d{15,21})>|<@&(\d{15,21})>|@(everyone|here)")
_GATEWAY_UNKNOWN: Final = 4000


# ----------------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One REST request as the fake received it (path relative to ``/api/v10``)."""

    method: str
    path: str
    query: Mapping[str, str]
    json: Any
    authorized: bool


@dataclass(frozen=True)
class Ping:
    """A notification Discord would deliver for a bot-authored message (given content + allowed_mentions)."""

    message_id: int
    channel_id: int
    kind: Literal["user", "role", "everyone", "here"]
    target_id: int | None
    edit: bool = False


@dataclass
class StoredMessage:
    """A message as the fake keeps it: ``data`` is the wire object Discord would return."""

    data: JSON
    allowed_mentions: JSON | None = None
    interaction_id: int | None = None
    nonce: str | int | None = None
    deleted: bool = False
    edits: list[str] = field(default_factory=list)

    @property
    def id(self) -> int:
        return int(self.data["id"])

    @property
    def channel_id(self) -> int:
        return int(self.data["channel_id"])

    @property
    def content(self) -> str:
        return str(self.data["content"])

    @property
    def flags(self) -> int:
        return int(self.data.get("flags", 0))

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        return bool(self.flags & FLAG_LOADING)

    @property
    def author(self) -> JSON:
        return dict(self.data["author"])

    @property
    def author_id(self) -> int:
        return int(self.data["author"]["id"])

    @property
    def reply_to(self) -> int | None:
        ref = self.data.get("message_reference")
        return int(ref["message_id"]) if ref and ref.get("message_id") else None

    @property
    def embeds(self) -> list[JSON]:
        return list(self.data.get("embeds", []))


@dataclass
class _Member:
    user_id: int
    roles: list[int]
    nick: str | None
    joined_at: str


@dataclass
class _Guild:
    id: int
    name: str
    owner_id: int
    roles: dict[int, JSON]
    members: dict[int, _Member]
    channel_ids: list[int]
    admin_role_id: int


@dataclass(frozen=True)
class GuildRef:
    """Ids of a guild created by ``FakeDiscord.guild``."""

    id: int
    channel_id: int
    everyone_role_id: int
    admin_role_id: int
    bot_role_id: int
    owner_id: int


@dataclass
class _Command:
    data: JSON
    guild_id: int | None


@dataclass
class _Fault:
    method: str
    pattern: str
    status: int
    retry_after: float
    global_: bool
    via: bool
    code: int
    message: str


class SlashInteraction:
    """One APPLICATION_COMMAND interaction dispatched by ``FakeDiscord.slash``: inspect how the bot answered."""

    def __init__(self, dc: FakeDiscord, payload: JSON, command: _Command) -> None:
        self._dc = dc
        self.payload = payload
        self.command = command
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.channel_id = int(payload["channel_id"])
        self.guild_id: int | None = int(payload["guild_id"]) if payload.get("guild_id") else None
        self.user_id = int((payload.get("member") or payload)["user"]["id"])
        self.created = time.monotonic()
        self.response_type: int | None = None
        self.response: JSON | None = None
        self.original_id: int | None = None
        self.followup_ids: list[int] = []

    @property
    def acknowledged(self) -> bool:
        return self.response_type is not None

    @property
    def original(self) -> StoredMessage | None:
        return self._dc._message(self.original_id) if self.original_id is not None else None

    @property
    def followups(self) -> list[StoredMessage]:
        out = [self._dc._message(mid) for mid in self.followup_ids]
        return [m for m in out if m is not None and not m.deleted]

    @property
    def messages(self) -> list[StoredMessage]:
        """The original response (unless deleted) then the follow-ups."""
        original = self.original
        head = [original] if original is not None and not original.deleted else []
        return head + self.followups

    @property
    def ephemeral(self) -> bool:
        original = self.original
        return original is not None and original.ephemeral

    @property
    def text(self) -> str:
        return "\n".join(m.content for m in self.messages)

    async def wait_acknowledged(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self._dc.wait_for(lambda: self.acknowledged, timeout=timeout)

    async def wait_done(self, timeout: float = 5.0) -> StoredMessage:  # noqa: ASYNC109
        """Wait until the original response exists and is no longer a "thinking..." placeholder."""

        def done() -> bool:
            original = self.original
            return original is not None and not original.loading

        await self._dc.wait_for(done, timeout=timeout)
        original = self.original
        assert original is not None
        return original


class _Session:
    def __init__(self, ws: web.WebSocketResponse, query: Mapping[str, str]) -> None:
        self.ws = ws
        self.query = dict(query)
        self.intents = 0
        self.session_id = secrets.token_hex(16)
        self.seq = 0
        self.identified = False
        self.backlog: list[JSON] = []
        self.lock = asyncio.Lock()
        self.heartbeats = 0

    async def send(self, payload: JSON) -> None:
        async with self.lock:
            if not self.ws.closed:
                await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: JSON) -> None:
        self.seq += 1
        payload = {"op": 0, "t": event, "s": self.seq, "d": data}
        self.backlog.append(payload)
        await self.send(payload)


class _HTTPError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body: JSON = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def _form_error(path: str, code: str, message: str) -> _HTTPError:
    errors: JSON = {"_errors": [{"code": code, "message": message}]}
    for part in reversed(path.split(".")):
        errors = {part: errors}
    return _HTTPError(400, 50035, "Invalid Form Body", errors)


def _now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


def _json_response(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    # discord.py compares the Content-Type to "application/json" exactly: no charset parameter.
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(data).encode(), status=status, headers=hdrs)


# ----------------------------------------------------------------------------------------------------------------
# The fake
# ----------------------------------------------------------------------------------------------------------------


class FakeDiscord:
    """Fake Discord: REST under ``api_base`` and the gateway at ``gateway_url``, both on one local port."""

    def __init__(
        self,
        token: str = "fake-bot-token",
        *,
        bot_name: str = "parley",
        enabled_privileged_intents: int = PRIVILEGED_INTENTS,
        heartbeat_interval_ms: int = 41_250,
        interaction_ack_seconds: float = INTERACTION_ACK_SECONDS,
    ) -> None:
        self.token = token
        self.enabled_privileged_intents = enabled_privileged_intents
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.interaction_ack_seconds = interaction_ack_seconds
        self._last_snowflake = 0
        self._counter = itertools.count()
        self.users: dict[int, JSON] = {}
        self.bot_id = self.user(bot_name, bot=True)
        self.application_id = self.bot_id  # modern applications share the bot user's id
        self.owner_id = self.user(f"{bot_name}-developer")
        self.guilds: dict[int, _Guild] = {}
        self.channels: dict[int, JSON] = {}
        self._dm_by_user: dict[int, int] = {}
        self._messages: dict[int, StoredMessage] = {}
        self._channel_messages: dict[int, list[int]] = {}
        self._nonces: dict[tuple[int, int, str], int] = {}
        self.commands: dict[int | None, list[JSON]] = {}
        self._command_ids: dict[tuple[int | None, int, str], int] = {}
        self.interactions: dict[int, SlashInteraction] = {}
        self._interactions_by_token: dict[str, SlashInteraction] = {}
        self.calls: list[Call] = []
        self.unimplemented: list[str] = []
        self.errors: list[str] = []  # exceptions raised inside the fake's handlers (fake bugs)
        self.pings: list[Ping] = []
        self.typing: list[tuple[int, float]] = []
        self.reactions: dict[tuple[int, str], list[int]] = {}  # (message id, emoji) -> user ids, in order
        self.gateway_connects: list[dict[str, str]] = []
        self.identifies: list[JSON] = []
        self.presence_updates: list[JSON] = []
        self._sessions: list[_Session] = []
        self._faults: list[_Fault] = []
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._route_table: list[tuple[str, re.Pattern[str], Any, bool]] | None = None
        self._attachment_files: dict[int, tuple[str, str | None, bytes]] = {}  # id -> (filename, type, bytes)
        self.downloads: list[int] = []  # attachment ids served from the fake CDN, in order
        self.port = 0

    # -- lifecycle ---------------------------------------------------------------------------------------------

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/api/{version}/{tail:.*}", self._rest)
        app.router.add_get("/", self._gateway)
        app.router.add_get("/attachments/{aid}/{filename}", self._cdn)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    async def stop(self) -> None:
        for session in list(self._sessions):
            if not session.ws.closed:
                await session.ws.close(code=1001, message=b"Going away")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v{API_VERSION}"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"

    @property
    def cdn_base(self) -> str:
        """Where attachments are served (Discord's ``https://cdn.discordapp.com``)."""
        return f"http://127.0.0.1:{self.port}"

    def attachment(self, data: bytes, filename: str, content_type: str | None = "application/octet-stream") -> JSON:
        """Store ``data`` and return a Discord attachment object for ``user_says(..., attachments=[...])``.

        ``url`` and ``proxy_url`` point at ``{cdn_base}/attachments/{id}/{filename}``, served by the fake
        without auth (as Discord's CDN serves them), so ``discord.Attachment.read()`` returns ``data``.
        """
        aid = self.snowflake()
        self._attachment_files[aid] = (filename, content_type, bytes(data))
        url = f"{self.cdn_base}/attachments/{aid}/{urllib.parse.quote(filename, safe='')}"
        out: JSON = {"id": str(aid), "filename": filename, "size": len(data), "url": url, "proxy_url": url}
        if content_type is not None:
            out["content_type"] = content_type
        return out

    async def _cdn(self, request: web.Request) -> web.Response:
        try:
            aid = int(request.match_info["aid"])
        except ValueError:
            aid = -1
        stored = self._attachment_files.get(aid)
        if stored is None:
            return web.Response(status=404, text="404: Not Found")
        self.downloads.append(aid)
        return web.Response(body=stored[2], content_type=stored[1] or "application/octet-stream")

    @contextlib.contextmanager
    def patch_discord(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this fake; restore them afterwards."""
        import yarl

        with warnings.catch_warnings():
            # discord.py imports the stdlib audioop module, deprecated since Python 3.11.
            warnings.filterwarnings("ignore", "'audioop' is deprecated", DeprecationWarning)
            import discord.gateway
            import discord.http

        old_base = discord.http.Route.BASE
        old_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    # -- ids, users, guilds, channels ---------------------------------------------------------------------------

    def snowflake(self) -> int:
        ms = int(time.time() * 1000) - DISCORD_EPOCH_MS
        value = (ms << 22) | (1 << 17) | (next(self._counter) & 0xFFF)
        value = max(value, self._last_snowflake + 1)
        self._last_snowflake = value
        return value

    def user(self, name: str, *, bot: bool = False) -> int:
        """Create a user; returns its id."""
        uid = self.snowflake()
        self.users[uid] = {
            "id": str(uid),
            "username": name,
            "global_name": None if bot else name.title(),
            "discriminator": "0",
            "avatar": None,
            "bot": bot,
            "system": False,
            "public_flags": 0,
            "flags": 0,
        }
        return uid

    def guild(
        self,
        name: str,
        *,
        channel: str = "general",
        owner: int | None = None,
        bot_permissions: int = DEFAULT_BOT_PERMISSIONS,
        everyone_permissions: int = DEFAULT_EVERYONE_PERMISSIONS,
    ) -> GuildRef:
        """Create a guild with @everyone, an "Admin" role (MANAGE_GUILD), the bot's managed role, a text channel,
        the owner and the bot as members."""
        gid = self.snowflake()
        owner_id = owner if owner is not None else self.user(f"{name.lower().replace(' ', '-')}-owner")
        everyone = self._role(gid, "@everyone", everyone_permissions, position=0, rid=gid)
        admin = self._role(gid, "Admin", MANAGE_GUILD, position=1)
        bot_role = self._role(gid, self.users[self.bot_id]["username"], bot_permissions, position=2)
        bot_role["managed"] = True
        bot_role["tags"] = {"bot_id": str(self.bot_id)}
        g = _Guild(gid, name, owner_id, {}, {}, [], int(admin["id"]))
        for role in (everyone, admin, bot_role):
            g.roles[int(role["id"])] = role
        self.guilds[gid] = g
        self.add_member(gid, owner_id)
        self.add_member(gid, self.bot_id, roles=[int(bot_role["id"])])
        cid = self.add_channel(gid, channel)
        return GuildRef(gid, cid, gid, int(admin["id"]), int(bot_role["id"]), owner_id)

    def _role(self, gid: int, name: str, permissions: int, *, position: int, rid: int | None = None) -> JSON:
        rid = rid if rid is not None else self.snowflake()
        return {
            "id": str(rid),
            "name": name,
            "color": 0,
            "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "icon": None,
            "unicode_emoji": None,
            "position": position,
            "permissions": str(permissions),
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }

    def add_role(self, guild_id: int, name: str, *, permissions: int = 0, mentionable: bool = False) -> int:
        g = self.guilds[guild_id]
        role = self._role(guild_id, name, permissions, position=len(g.roles))
        role["mentionable"] = mentionable
        g.roles[int(role["id"])] = role
        return int(role["id"])

    def add_member(self, guild_id: int, user_id: int, *, roles: Sequence[int] = (), nick: str | None = None) -> None:
        g = self.guilds[guild_id]
        for rid in roles:
            if rid not in g.roles:
                raise ValueError(f"role {rid} is not in guild {guild_id}")
        g.members[user_id] = _Member(user_id, list(roles), nick, _now_iso())

    def add_channel(self, guild_id: int, name: str, *, type_: int = GUILD_TEXT, topic: str | None = None) -> int:
        g = self.guilds[guild_id]
        cid = self.snowflake()
        self.channels[cid] = {
            "id": str(cid),
            "type": type_,
            "guild_id": str(guild_id),
            "name": name,
            "position": len(g.channel_ids),
            "permission_overwrites": [],
            "topic": topic,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }
        g.channel_ids.append(cid)
        self._channel_messages[cid] = []
        return cid

    def dm_channel(self, user_id: int) -> int:
        """The DM channel between the bot and ``user_id`` (created on first use)."""
        if user_id in self._dm_by_user:
            return self._dm_by_user[user_id]
        cid = self.snowflake()
        self.channels[cid] = {
            "id": str(cid),
            "type": DM,
            "last_message_id": None,
            "recipients": [self.users[user_id]],
            "flags": 0,
        }
        self._dm_by_user[user_id] = cid
        self._channel_messages[cid] = []
        return cid

    def permissions(self, guild_id: int, user_id: int) -> int:
        """Guild-level permissions of a member (roles only; owner and ADMINISTRATOR get everything)."""
        g = self.guilds[guild_id]
        if user_id == g.owner_id:
            return ALL_PERMISSIONS
        member = g.members.get(user_id)
        if member is None:
            return 0
        perms = int(g.roles[guild_id]["permissions"])
        for rid in member.roles:
            perms |= int(g.roles[rid]["permissions"])
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def _member_json(self, guild_id: int, user_id: int, *, with_user: bool = True) -> JSON:
        m = self.guilds[guild_id].members[user_id]
        out: JSON = {
            "roles": [str(r) for r in m.roles],
            "nick": m.nick,
            "avatar": None,
            "banner": None,
            "joined_at": m.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
        }
        if with_user:
            out["user"] = self.users[user_id]
        return out

    def _guild_of(self, channel: JSON) -> _Guild | None:
        gid = channel.get("guild_id")
        return self.guilds[int(gid)] if gid else None

    def _channel(self, channel_id: int) -> JSON:
        ch = self.channels.get(channel_id)
        if ch is None:
            raise _HTTPError(404, 10003, "Unknown Channel")
        return ch

    def _message(self, message_id: int | None) -> StoredMessage | None:
        return self._messages.get(message_id) if message_id is not None else None

    # -- inspection ---------------------------------------------------------------------------------------------

    def messages(self, channel_id: int) -> list[StoredMessage]:
        """Current (post-edit, not deleted) messages of a channel, oldest first; ephemeral ones included."""
        return [self._messages[m] for m in self._channel_messages.get(channel_id, []) if not self._messages[m].deleted]

    def bot_messages(self, channel_id: int) -> list[StoredMessage]:
        return [m for m in self.messages(channel_id) if m.author_id == self.bot_id]

    def calls_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and fnmatch.fnmatchcase(c.path, pattern)]

    def assert_all_implemented(self) -> None:
        assert not self.unimplemented, f"the bot called routes the fake does not implement: {self.unimplemented}"
        assert not self.errors, "the fake itself failed:\n" + "\n".join(self.errors)

    # -- waiting ------------------------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 5.0) -> Any:  # noqa: ASYNC109
        """Wait until ``predicate()`` is truthy (re-checked on every change the fake sees); returns its value."""
        async with asyncio.timeout(timeout):
            while True:
                value = predicate()
                if value:
                    return value
                # Poll too: predicates may look at client-side state the fake never sees change.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), 0.02)

    async def wait_for_message(
        self,
        channel_id: int,
        contains: str = "",
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        author_id: int | None = None,
    ) -> StoredMessage:
        """Wait for a finished (not loading) message by the bot (or ``author_id``) containing ``contains``."""
        who = self.bot_id if author_id is None else author_id

        def find() -> StoredMessage | None:
            for m in self.messages(channel_id):
                if m.author_id == who and not m.loading and contains in m.content:
                    return m
            return None

        result: StoredMessage = await self.wait_for(find, timeout=timeout)
        return result

    # -- fault injection ------------------------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_pattern: str,
        status: int = 429,
        *,
        retry_after: float = 0.5,
        global_: bool = False,
        via: bool = True,
        code: int | None = None,
        message: str | None = None,
    ) -> None:
        """Make the next request matching ``method`` and the glob ``path_pattern`` (path after ``/api/v10``,
        e.g. ``/channels/*/messages``) fail once with ``status``.  429 answers carry Discord's body and
        X-RateLimit-* headers (plus ``Via`` unless ``via=False``, which looks like a Cloudflare ban)."""
        defaults = {
            401: (0, "401: Unauthorized"),
            403: (50013, "Missing Permissions"),
            404: (0, "404: Not Found"),
            429: (0, "You are being rate limited."),
            500: (0, "500: Internal Server Error"),
            502: (0, "502: Bad Gateway"),
        }
        dcode, dmsg = defaults.get(status, (0, f"{status}: Error"))
        self._faults.append(
            _Fault(
                method.upper(),
                path_pattern,
                status,
                retry_after,
                global_,
                via,
                dcode if code is None else code,
                dmsg if message is None else message,
            )
        )

    def _take_fault(self, method: str, path: str) -> _Fault | None:
        for i, f in enumerate(self._faults):
            if f.method == method and fnmatch.fnmatchcase(path, f.pattern):
                return self._faults.pop(i)
        return None

    def _fault_response(self, f: _Fault, bucket: str) -> web.Response:
        if f.status == 429:
            headers = {
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + f.retry_after:.3f}",
                "X-RateLimit-Reset-After": f"{f.retry_after:.3f}",
                "X-RateLimit-Bucket": bucket,
                "X-RateLimit-Scope": "global" if f.global_ else "user",
                "Retry-After": str(max(1, int(f.retry_after + 0.999))),
            }
            if f.global_:
                headers["X-RateLimit-Global"] = "true"
            if f.via:
                headers["Via"] = "1.1 google"
            body = {"message": f.message, "retry_after": f.retry_after, "global": f.global_}
            if not f.via:  # Cloudflare's ban page is HTML, not JSON
                return web.Response(
                    body=b"<html><body>Error 1015: You are being rate limited.</body></html>",
                    status=429,
                    headers={k: v for k, v in headers.items() if not k.startswith("X-")}
                    | {"Content-Type": "text/html"},
                )
            return _json_response(body, 429, headers)
        return _json_response({"message": f.message, "code": f.code}, f.status)

    # -- gateway --------------------------------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        session = _Session(ws, request.query)
        self.gateway_connects.append(dict(request.query))
        self._sessions.append(session)
        self._notify()
        try:
            if request.query.get("v", str(API_VERSION)) != str(API_VERSION):
                await ws.close(code=4012, message=b"Invalid API version")
                return ws
            if request.query.get("encoding", "json") != "json":
                await ws.close(code=4002, message=b"Error while decoding payload.")
                return ws
            await session.send(
                {"op": 10, "s": None, "t": None, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}
            )
            async for msg in ws:
                if msg.type is not aiohttp.WSMsgType.TEXT:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                try:
                    payload = json.loads(msg.data)
                    op = payload["op"]
                except (ValueError, KeyError, TypeError):
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                await self._gateway_op(session, op, payload.get("d"))
                self._notify()
        finally:
            self._notify()
        return ws

    async def _gateway_op(self, session: _Session, op: int, d: Any) -> None:
        ws = session.ws
        if op == 1:
            session.heartbeats += 1
            await session.send({"op": 11})
            return
        if op == 2:
            await self._identify(session, d)
            return
        if op == 6:
            await self._resume(session, d)
            return
        if not session.identified:
            await ws.close(code=4003, message=b"Not authenticated.")
            return
        if op == 3:
            self.presence_updates.append(d)
        elif op == 8:
            await self._request_members(session, d)
        elif op == 4:
            pass  # voice state update: nothing to do for a text bot
        else:
            await ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, session: _Session, d: Any) -> None:
        ws = session.ws
        if session.identified:
            await ws.close(code=4005, message=b"Already authenticated.")
            return
        if not isinstance(d, dict) or "token" not in d or "properties" not in d:
            await ws.close(code=4002, message=b"Error while decoding payload.")
            return
        self.identifies.append(d)
        if d["token"] != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents < 0 or intents & ~ALL_INTENTS:
            await ws.close(code=4013, message=b"Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~self.enabled_privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        session.intents = intents
        session.identified = True
        await session.dispatch(
            "READY",
            {
                "v": API_VERSION,
                "user": self.users[self.bot_id] | {"verified": True, "mfa_enabled": False, "email": None},
                "guilds": [{"id": str(gid), "unavailable": True} for gid in self.guilds],
                "session_id": session.session_id,
                "resume_gateway_url": self.gateway_url,
                "shard": d.get("shard", [0, 1]),
                "application": {"id": str(self.application_id), "flags": self._application_flags()},
                "private_channels": [],
                "relationships": [],
                "presences": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "_trace": ["fake-discord"],
            },
        )
        if intents & INTENT_GUILDS:
            for gid in self.guilds:
                await session.dispatch("GUILD_CREATE", self._guild_create(gid, session.intents))

    async def _resume(self, session: _Session, d: Any) -> None:
        old = next(
            (
                s
                for s in self._sessions
                if s is not session and isinstance(d, dict) and s.session_id == d.get("session_id")
            ),
            None,
        )
        if old is None or not isinstance(d, dict) or d.get("token") != self.token:
            await session.send({"op": 9, "d": False, "s": None, "t": None})
            return
        session.session_id, session.intents, session.seq, session.backlog = (
            old.session_id,
            old.intents,
            old.seq,
            old.backlog,
        )
        session.identified = True
        self._sessions.remove(old)
        for payload in old.backlog:
            if payload["s"] > int(d.get("seq") or 0):
                await session.send(payload)
        await session.dispatch("RESUMED", {"_trace": ["fake-discord"]})

    async def _request_members(self, session: _Session, d: Any) -> None:
        gid = int(d["guild_id"])
        members = [self._member_json(gid, uid) for uid in self.guilds[gid].members]
        await session.dispatch(
            "GUILD_MEMBERS_CHUNK",
            {
                "guild_id": str(gid),
                "members": members,
                "chunk_index": 0,
                "chunk_count": 1,
                "not_found": [],
                "nonce": d.get("nonce"),
            },
        )

    def _application_flags(self) -> int:
        flags = 0
        for intent, flag in _APP_FLAG_FOR_INTENT.items():
            if self.enabled_privileged_intents & intent:
                flags |= flag
        return flags

    def _guild_create(self, gid: int, intents: int) -> JSON:
        g = self.guilds[gid]
        threads = [self.channels[c] for c in g.channel_ids if self.channels[c]["type"] in THREAD_TYPES]
        channels = [self.channels[c] for c in g.channel_ids if self.channels[c]["type"] not in THREAD_TYPES]
        members = list(g.members) if intents & INTENT_GUILD_MEMBERS else [self.bot_id]
        return {
            "id": str(gid),
            "name": g.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(g.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": list(g.roles.values()),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": g.channel_ids[0] and str(g.channel_ids[0]),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "joined_at": g.members[self.bot_id].joined_at,
            "large": False,
            "unavailable": False,
            "member_count": len(g.members),
            "voice_states": [],
            "members": [self._member_json(gid, uid) for uid in members],
            "channels": channels,
            "threads": threads,
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
        }

    @property
    def connected(self) -> bool:
        return any(s.identified and not s.ws.closed for s in self._sessions)

    async def wait_connected(self, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        await self.wait_for(lambda: self.connected, timeout=timeout)

    async def dispatch(self, event: str, data: JSON, *, intent: int = 0) -> int:
        """Send a DISPATCH to every identified session whose intents include ``intent`` (0: always).
        Returns how many sessions got it."""
        sent = 0
        for s in list(self._sessions):
            if s.identified and not s.ws.closed and (intent == 0 or s.intents & intent):
                await s.dispatch(event, self._filter_for(s, event, data))
                sent += 1
        self._notify()
        return sent

    async def dispatch_guild_create(self, guild_id: int) -> int:
        """Announce a guild (e.g. one created after READY) with GUILD_CREATE."""
        sent = 0
        for s in list(self._sessions):
            if s.identified and not s.ws.closed and s.intents & INTENT_GUILDS:
                await s.dispatch("GUILD_CREATE", self._guild_create(guild_id, s.intents))
                sent += 1
        return sent

    async def drop_connections(self, code: int = _GATEWAY_UNKNOWN) -> None:
        """Close every gateway socket with ``code`` (4000: the client should reconnect and RESUME)."""
        for s in list(self._sessions):
            if not s.ws.closed:
                await s.ws.close(code=code, message=b"Unknown error.")

    def _filter_for(self, session: _Session, event: str, data: JSON) -> JSON:
        if event not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or session.intents & INTENT_MESSAGE_CONTENT:
            return data
        return self._strip_content(data)

    def _strip_content(self, data: JSON) -> JSON:
        """Discord's MESSAGE_CONTENT rule for apps without the privileged intent (applied to a referenced
        message on its own terms)."""
        out = dict(data)
        if isinstance(out.get("referenced_message"), dict):
            out["referenced_message"] = self._strip_content(out["referenced_message"])
        if not data.get("guild_id"):
            return out  # DMs
        if (data.get("author") or {}).get("id") == str(self.bot_id):
            return out  # the app's own messages
        if any(u.get("id") == str(self.bot_id) for u in data.get("mentions", [])):
            return out  # messages that mention the app
        if "content" in out:
            out["content"] = ""
        for key in ("embeds", "attachments", "components"):
            if key in out:
                out[key] = []
        out.pop("poll", None)
        return out

    def _message_intent(self, channel: JSON) -> int:
        return INTENT_GUILD_MESSAGES if channel.get("guild_id") else INTENT_DIRECT_MESSAGES

    # -- messages (shared by REST and the test-side API) ------------------------------------------------------------

    def _new_message(
        self,
        channel: JSON,
        author_id: int,
        content: str,
        *,
        type_: int = 0,
        flags: int = 0,
        embeds: list[JSON] | None = None,
        attachments: list[JSON] | None = None,
        components: list[JSON] | None = None,
        mentions: list[int] | None = None,
        mention_roles: list[int] | None = None,
        mention_everyone: bool = False,
        reference: JSON | None = None,
        nonce: str | int | None = None,
        extra: JSON | None = None,
    ) -> JSON:
        mid = self.snowflake()
        cid = int(channel["id"])
        g = self._guild_of(channel)
        data: JSON = {
            "id": str(mid),
            "channel_id": str(cid),
            "author": self.users[author_id],
            "content": content,
            "timestamp": _now_iso(),
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": mention_everyone,
            "mentions": [self._mention_user(g, uid) for uid in (mentions or [])],
            "mention_roles": [str(r) for r in (mention_roles or [])],
            "mention_channels": [],
            "attachments": attachments or [],
            "embeds": embeds or [],
            "reactions": [],
            "pinned": False,
            "type": type_,
            "flags": flags,
            "components": components or [],
            "channel_type": channel["type"],
        }
        if nonce is not None:
            data["nonce"] = nonce
        if g is not None:
            data["guild_id"] = str(g.id)
            if author_id in g.members:
                data["member"] = self._member_json(g.id, author_id, with_user=False)
        if reference is not None:
            data["message_reference"] = reference
            ref = self._message(int(reference["message_id"]))
            data["referenced_message"] = copy.deepcopy(ref.data) if ref is not None else None
            if data["referenced_message"] is not None:
                data["referenced_message"].pop("referenced_message", None)
        if extra:
            data.update(extra)
        return data

    def _mention_user(self, g: _Guild | None, uid: int) -> JSON:
        user = dict(self.users[uid])
        if g is not None and uid in g.members:
            user["member"] = self._member_json(g.id, uid, with_user=False)
        return user

    def _store(self, data: JSON, **kwargs: Any) -> StoredMessage:
        msg = StoredMessage(data=data, **kwargs)
        self._messages[msg.id] = msg
        self._channel_messages.setdefault(msg.channel_id, []).append(msg.id)
        ch = self.channels.get(msg.channel_id)
        if ch is not None:
            ch["last_message_id"] = data["id"]
            if ch["type"] in THREAD_TYPES:
                ch["message_count"] = ch.get("message_count", 0) + 1
                ch["total_message_sent"] = ch.get("total_message_sent", 0) + 1
        self._notify()
        return msg

    def _resolve_mentions(
        self,
        channel: JSON,
        author_id: int,
        content: str,
        allowed: JSON | None,
        reply_author: int | None,
    ) -> tuple[list[int], list[int], bool, list[tuple[Literal["user", "role", "everyone", "here"], int | None]]]:
        """What Discord would mention (and notify) for ``content`` under ``allowed_mentions``."""
        g = self._guild_of(channel)
        perms = self.permissions(g.id, author_id) if g is not None else 0
        parse = {"users", "roles", "everyone"} if allowed is None else set(allowed.get("parse", []))
        allowed_users = {int(u) for u in (allowed or {}).get("users", [])}
        allowed_roles = {int(r) for r in (allowed or {}).get("roles", [])}
        replied_user = True if allowed is None else bool(allowed.get("replied_user", False))
        users: list[int] = []
        roles: list[int] = []
        everyone = False
        pings: list[tuple[Literal["user", "role", "everyone", "here"], int | None]] = []
        for m in _MENTION_RE.finditer(content):
            uid, rid, word = m.group(1), m.group(2), m.group(3)
            if uid is not None:
                u = int(uid)
                if u in self.users and u not in users and ("users" in parse or u in allowed_users):
                    users.append(u)
                    pings.append(("user", u))
            elif rid is not None:
                r = int(rid)
                if g is None or r not in g.roles or r in roles:
                    continue
                if ("roles" in parse or r in allowed_roles) and (g.roles[r]["mentionable"] or perms & MENTION_EVERYONE):
                    roles.append(r)
                    pings.append(("role", r))
            elif word is not None and g is not None and "everyone" in parse and perms & MENTION_EVERYONE:
                if not everyone:
                    everyone = True
                pings.append((word, None))  # type: ignore[arg-type]
        if reply_author is not None and replied_user and reply_author not in users and reply_author != author_id:
            users.append(reply_author)
            pings.append(("user", reply_author))
        return users, roles, everyone, pings

    def _record_pings(self, msg: StoredMessage, pings: Sequence[tuple[Any, int | None]], *, edit: bool) -> None:
        if msg.ephemeral or msg.flags & FLAG_SUPPRESS_NOTIFICATIONS:
            return
        for kind, target in pings:
            self.pings.append(Ping(msg.id, msg.channel_id, kind, target, edit))

    # -- the test-side API: people doing things --------------------------------------------------------------------

    async def user_says(
        self,
        channel_id: int,
        user_id: int,
        content: str,
        *,
        mentions: Sequence[int] = (),
        reply_to: int | None = None,
        mention_author: bool = True,
        attachments: Sequence[JSON] = (),
    ) -> StoredMessage:
        """A person posts a message.  ``mentions`` user ids missing from ``content`` are prefixed as ``<@id>``
        (a real mention is always in the text).  ``reply_to`` makes it a reply (pinging the replied author
        unless ``mention_author=False``)."""
        channel = self._channel(channel_id)
        g = self._guild_of(channel)
        if g is not None and user_id not in g.members:
            raise AssertionError(f"user {user_id} is not a member of guild {g.id}")
        if channel["type"] == DM and self.channels[channel_id]["recipients"][0]["id"] != str(user_id):
            raise AssertionError("only the DM's recipient can post in it")
        missing = [f"<@{u}>" for u in mentions if f"<@{u}>" not in content and f"<@!{u}>" not in content]
        if missing:
            content = " ".join([*missing, content])
        reference = None
        reply_author = None
        if reply_to is not None:
            ref = self._message(reply_to)
            if ref is None or ref.channel_id != channel_id:
                raise AssertionError(f"message {reply_to} is not in channel {channel_id}")
            reference = {"type": 0, "message_id": str(reply_to), "channel_id": str(channel_id)}
            if g is not None:
                reference["guild_id"] = str(g.id)
            reply_author = ref.author_id if mention_author else None
        users, roles, everyone, _ = self._resolve_mentions(channel, user_id, content, None, reply_author)
        data = self._new_message(
            channel,
            user_id,
            content,
            type_=19 if reference else 0,
            attachments=list(attachments),
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
        )
        msg = self._store(data)
        await self.dispatch("MESSAGE_CREATE", data, intent=self._message_intent(channel))
        return msg

    async def dm(self, user_id: int, content: str) -> StoredMessage:
        """A person DMs the bot."""
        return await self.user_says(self.dm_channel(user_id), user_id, content)

    async def create_thread(
        self,
        channel_id: int,
        user_id: int,
        name: str,
        *,
        message_id: int | None = None,
        private: bool = False,
    ) -> int:
        """A person starts a thread (from a message, or standalone); dispatches THREAD_CREATE.  Returns its id."""
        thread = self._make_thread(channel_id, user_id, name, message_id=message_id, private=private)
        await self._announce_thread(thread)
        return int(thread["id"])

    def _make_thread(
        self,
        channel_id: int,
        owner_id: int,
        name: str,
        *,
        message_id: int | None,
        private: bool,
        auto_archive_duration: int = 4320,
        rate_limit_per_user: int = 0,
    ) -> JSON:
        parent = self._channel(channel_id)
        g = self._guild_of(parent)
        if g is None or parent["type"] not in (GUILD_TEXT, GUILD_ANNOUNCEMENT):
            raise _HTTPError(400, 50024, "Cannot execute action on this channel type")
        tid = message_id if message_id is not None else self.snowflake()
        if message_id is not None:
            src = self._message(message_id)
            if src is None or src.channel_id != channel_id or src.deleted:
                raise _HTTPError(404, 10008, "Unknown Message")
            if tid in self.channels:
                raise _HTTPError(400, 160004, "A thread has already been created for this message")
        type_ = (
            PRIVATE_THREAD
            if private
            else (ANNOUNCEMENT_THREAD if parent["type"] == GUILD_ANNOUNCEMENT else PUBLIC_THREAD)
        )
        now = _now_iso()
        thread: JSON = {
            "id": str(tid),
            "type": type_,
            "guild_id": str(g.id),
            "parent_id": str(channel_id),
            "owner_id": str(owner_id),
            "name": name,
            "last_message_id": None,
            "message_count": 0,
            "total_message_sent": 0,
            "member_count": 1,
            "rate_limit_per_user": rate_limit_per_user,
            "flags": 0,
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": auto_archive_duration,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
                **({"invitable": True} if private else {}),
            },
        }
        self.channels[tid] = thread
        g.channel_ids.append(tid)
        self._channel_messages[tid] = []
        if message_id is not None:
            src = self._messages[message_id]
            src.data["thread"] = thread
            src.data["flags"] = src.flags | (1 << 5)  # HAS_THREAD
        self._notify()
        return thread

    async def _announce_thread(self, thread: JSON) -> None:
        await self.dispatch("THREAD_CREATE", thread | {"newly_created": True}, intent=INTENT_GUILDS)

    async def message_command(self, where: int, user_id: int, name: str, message_id: int) -> SlashInteraction:
        """A person picks Apps > ``name`` on message ``message_id`` of channel ``where``: a message command
        (type 3), sent as Discord sends it, the message's id as ``data.target_id`` and the message itself (with
        its content: an app always gets the text of a message it is invoked on) in ``data.resolved.messages``."""
        _, msg = self._channel_message(str(where), str(message_id))
        return await self.slash(where, user_id, name, target=msg.data)

    async def slash(
        self,
        where: int,
        user_id: int,
        name: str,
        options: Mapping[str, Any] | None = None,
        *,
        locale: str = "en-US",
        target: JSON | None = None,
    ) -> SlashInteraction:
        """A person runs ``/name`` (``"group sub"`` for subcommands) in channel ``where`` (a guild channel,
        thread, or a DM channel id; a guild id means its first channel).  The command must have been synced
        to that guild or globally, and the user must be allowed to see it.  An attachment option takes an
        object from ``attachment()``: it is sent as Discord sends it, the id in ``options`` and the object in
        ``data.resolved.attachments``.  Returns a handle."""
        if where in self.guilds:
            where = self.guilds[where].channel_ids[0]
        channel = self._channel(where)
        g = self._guild_of(channel)
        parts = [name] if target is not None else name.split()
        cmd = self._find_command(parts[0], g.id if g else None, 1 if target is None else 3)
        if cmd is None:
            scope = f"guild {g.id}" if g else "DMs"
            raise AssertionError(f"/{parts[0]} is not synced for {scope}; synced: {self.commands}")
        data = cmd.data
        if g is None:
            contexts = data.get("contexts")
            if (
                cmd.guild_id is not None
                or data.get("dm_permission") is False
                or (contexts is not None and 1 not in contexts)
            ):
                raise AssertionError(f"/{parts[0]} is not usable in DMs")
        else:
            if user_id not in g.members:
                raise AssertionError(f"user {user_id} is not in guild {g.id}")
            needed = data.get("default_member_permissions")
            have = self.permissions(g.id, user_id)
            if not have & USE_APPLICATION_COMMANDS:
                raise AssertionError(f"user {user_id} lacks USE_APPLICATION_COMMANDS in guild {g.id}")
            # "0" hides the command from everyone but administrators.
            if needed is not None and (
                (have & int(needed)) != int(needed) or (int(needed) == 0 and have != ALL_PERMISSIONS)
            ):
                raise AssertionError(f"user {user_id} lacks permissions {needed} to see /{parts[0]}")
            contexts = data.get("contexts")
            if contexts is not None and 0 not in contexts:
                raise AssertionError(f"/{parts[0]} is not usable in guilds")
        resolved: JSON = {}
        opt_defs: list[JSON] = data.get("options") or []
        top: list[JSON] = []
        sink = top
        for part in parts[1:]:
            d = next((o for o in opt_defs if o["name"] == part and o["type"] in (1, 2)), None)
            if d is None:
                raise AssertionError(f"/{name}: no subcommand {part!r}")
            node: JSON = {"name": part, "type": d["type"], "options": []}
            sink.append(node)
            sink = node["options"]
            opt_defs = d.get("options") or []
        sink.extend(self._build_options(name, opt_defs, dict(options or {}), g, resolved))
        iid = self.snowflake()
        token = "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(120)
        interaction_data: JSON = {"id": data["id"], "name": data["name"], "type": data.get("type", 1)}
        if target is not None:
            interaction_data["target_id"] = target["id"]
            resolved.setdefault("messages", {})[target["id"]] = target
        if top:
            interaction_data["options"] = top
        if resolved:
            interaction_data["resolved"] = resolved
        if cmd.guild_id is not None:
            interaction_data["guild_id"] = str(cmd.guild_id)
        payload: JSON = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 2,
            "data": interaction_data,
            "channel_id": str(where),
            "channel": dict(channel),
            "token": token,
            "version": 1,
            "locale": locale,
            "entitlements": [],
            "attachment_size_limit": ATTACHMENT_SIZE_LIMIT,
        }
        if g is not None:
            payload["guild_id"] = str(g.id)
            payload["guild"] = {"id": str(g.id), "locale": "en-US", "features": []}
            payload["guild_locale"] = "en-US"
            payload["member"] = self._member_json(g.id, user_id) | {"permissions": str(self.permissions(g.id, user_id))}
            payload["channel"]["permissions"] = str(self.permissions(g.id, user_id))
            payload["app_permissions"] = str(self.permissions(g.id, self.bot_id))
            payload["authorizing_integration_owners"] = {"0": str(g.id)}
            payload["context"] = 0
        else:
            payload["user"] = self.users[user_id]
            payload["app_permissions"] = str(
                VIEW_CHANNEL | SEND_MESSAGES | EMBED_LINKS | ATTACH_FILES | READ_MESSAGE_HISTORY | ADD_REACTIONS
            )
            payload["authorizing_integration_owners"] = {"0": str(user_id)}
            payload["context"] = 1
        handle = SlashInteraction(self, payload, cmd)
        self.interactions[iid] = handle
        self._interactions_by_token[token] = handle
        await self.dispatch("INTERACTION_CREATE", payload)
        return handle

    def _find_command(self, name: str, guild_id: int | None, kind: int = 1) -> _Command | None:
        scopes: list[int | None] = [guild_id, None] if guild_id is not None else [None]
        for scope in scopes:
            for c in self.commands.get(scope, []):
                if c["name"] == name and c.get("type", 1) == kind:
                    return _Command(c, scope)
        return None

    def _build_options(
        self, name: str, defs: list[JSON], given: dict[str, Any], g: _Guild | None, resolved: JSON
    ) -> list[JSON]:
        out: list[JSON] = []
        by_name = {d["name"]: d for d in defs}
        for key in given:
            if key not in by_name:
                raise AssertionError(f"/{name} has no option {key!r} (has {sorted(by_name)})")
        for d in defs:
            if d["name"] not in given:
                if d.get("required"):
                    raise AssertionError(f"/{name}: required option {d['name']!r} missing")
                continue
            value = given[d["name"]]
            t = d["type"]
            if t == 3:
                value = str(value)
                if "min_length" in d and len(value) < d["min_length"]:
                    raise AssertionError(f"/{name} {d['name']}: shorter than {d['min_length']}")
                if len(value) > d.get("max_length", 6000):
                    raise AssertionError(f"/{name} {d['name']}: longer than {d.get('max_length', 6000)}")
            elif t == 4:
                value = int(value)
            elif t == 10:
                value = float(value)
            elif t == 5:
                value = bool(value)
            elif t == 6:
                uid = int(value)
                resolved.setdefault("users", {})[str(uid)] = self.users[uid]
                if g is not None and uid in g.members:
                    member = self._member_json(g.id, uid, with_user=False) | {
                        "permissions": str(self.permissions(g.id, uid))
                    }
                    resolved.setdefault("members", {})[str(uid)] = member
                value = str(uid)
            elif t == 7:
                cid = int(value)
                ch = self.channels[cid]
                resolved.setdefault("channels", {})[str(cid)] = {
                    "id": ch["id"],
                    "name": ch.get("name"),
                    "type": ch["type"],
                    "permissions": str(ALL_PERMISSIONS),
                    **(
                        {"parent_id": ch["parent_id"], "thread_metadata": ch["thread_metadata"]}
                        if "thread_metadata" in ch
                        else {}
                    ),
                }
                value = str(cid)
            elif t == 8:
                assert g is not None
                rid = int(value)
                resolved.setdefault("roles", {})[str(rid)] = g.roles[rid]
                value = str(rid)
            elif t == 11:
                # An upload: the option carries its id, the attachment object travels in data.resolved.
                if not isinstance(value, Mapping) or "id" not in value:
                    raise AssertionError(f"/{name} {d['name']}: pass an attachment from FakeDiscord.attachment()")
                resolved.setdefault("attachments", {})[str(value["id"])] = {**value, "ephemeral": True}
                value = str(value["id"])
            choices = d.get("choices")
            if choices and value not in [c["value"] for c in choices]:
                raise AssertionError(f"/{name} {d['name']}: {value!r} is not one of the choices")
            out.append({"name": d["name"], "type": t, "value": value})
        return out

    # -- REST -----------------------------------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        self.unimplemented.append(f"{request.method} {request.path}")
        return _json_response({"message": "404: Not Found", "code": 0}, 404)

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        body, files = await self._read_body(request)
        auth = request.headers.get("Authorization")
        authorized = auth == f"Bot {self.token}"
        recorded = None if body is _INVALID_JSON else body
        self.calls.append(Call(method, path, dict(request.query), recorded, authorized))
        self._notify()
        if request.match_info["version"] != f"v{API_VERSION}":
            self.unimplemented.append(f"{method} /api/{request.match_info['version']}{path}")
            return _json_response({"message": "404: Not Found", "code": 0}, 404)
        route = self._match(method, path)
        bucket = secrets.token_hex(8) if route is None else route[2]
        fault = self._take_fault(method, path)
        if fault is not None:
            self._notify()
            return self._fault_response(fault, bucket)
        if route is None:
            self.unimplemented.append(f"{method} {path}")
            self._notify()
            return _json_response({"message": "404: Not Found", "code": 0}, 404)
        handler, args, bucket, needs_auth = route
        if needs_auth and not authorized:
            return _json_response({"message": "401: Unauthorized", "code": 0}, 401)
        if body is _INVALID_JSON:
            return _json_response({"message": "The request body contains invalid JSON.", "code": 50109}, 400)
        ratelimit = {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Bucket": bucket,
        }
        if isinstance(body, list) and method != "PUT":
            return _json_response(_form_error("_root", "BASE_TYPE_DICT", "Must be an object.").body, 400, ratelimit)
        try:
            status, result = await handler(request, body if isinstance(body, dict | list) else {}, files, *args)
        except _HTTPError as e:
            return _json_response(e.body, e.status, ratelimit)
        except Exception as e:  # a bug in the fake: surface it instead of letting the client retry a 500
            self.errors.append(f"{method} {path}: {e!r}\n{traceback.format_exc()}")
            return _json_response({"message": "500: Internal Server Error (fake)", "code": 0}, 500)
        finally:
            self._notify()
        if status == 204:
            return web.Response(status=204, headers=ratelimit)
        return _json_response(result, status, ratelimit)

    async def _read_body(self, request: web.Request) -> tuple[Any, list[JSON]]:
        files: list[JSON] = []
        if not request.can_read_body:
            return None, files
        ctype = request.content_type
        if ctype == "multipart/form-data":
            payload: Any = {}
            reader = await request.multipart()
            while True:
                part = await reader.next()
                if part is None:
                    break
                if not isinstance(part, aiohttp.BodyPartReader):
                    continue
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                else:
                    data = await part.read()
                    files.append(
                        {
                            "field": part.name,
                            "filename": part.filename,
                            "size": len(data),
                            "content_type": part.headers.get("Content-Type"),
                            "data": bytes(data),
                        }
                    )
            return payload, files
        raw = await request.read()
        if not raw:
            return None, files
        try:
            return json.loads(raw), files
        except ValueError:
            return _INVALID_JSON, files

    def _match(self, method: str, path: str) -> tuple[Any, tuple[str, ...], str, bool] | None:
        if self._route_table is None:
            self._route_table = self._routes()
        for m, regex, handler, needs_auth in self._route_table:
            if m != method:
                continue
            match = regex.fullmatch(path)
            if match:
                return (
                    handler,
                    match.groups(),
                    hashlib.sha1(f"{m} {regex.pattern}".encode()).hexdigest()[:32],
                    needs_auth,
                )
        return None

    def _routes(self) -> list[tuple[str, re.Pattern[str], Any, bool]]:
        s = r"(\d+)"
        t = r"([A-Za-z0-9_.\-]+)"
        table: list[tuple[str, str, Any, bool]] = [
            ("GET", "/users/@me", self._get_me, True),
            ("GET", f"/users/{s}", self._get_user, True),
            ("POST", "/users/@me/channels", self._create_dm, True),
            ("GET", "/oauth2/applications/@me", self._get_application, True),
            ("GET", "/applications/@me", self._get_application, True),
            ("GET", "/gateway", self._get_gateway, False),
            ("GET", "/gateway/bot", self._get_gateway_bot, True),
            ("GET", f"/applications/{s}/commands", self._get_commands, True),
            ("PUT", f"/applications/{s}/commands", self._put_commands, True),
            ("GET", f"/applications/{s}/guilds/{s}/commands", self._get_guild_commands, True),
            ("PUT", f"/applications/{s}/guilds/{s}/commands", self._put_guild_commands, True),
            ("GET", f"/channels/{s}", self._get_channel, True),
            ("GET", f"/channels/{s}/messages", self._get_messages, True),
            ("POST", f"/channels/{s}/messages", self._post_message, True),
            ("GET", f"/channels/{s}/messages/{s}", self._get_message, True),
            ("PATCH", f"/channels/{s}/messages/{s}", self._patch_message, True),
            ("DELETE", f"/channels/{s}/messages/{s}", self._delete_message, True),
            ("POST", f"/channels/{s}/typing", self._typing, True),
            ("PUT", f"/channels/{s}/messages/{s}/reactions/([^/]+)/@me", self._add_reaction, True),
            ("DELETE", f"/channels/{s}/messages/{s}/reactions/([^/]+)/@me", self._remove_reaction, True),
            ("POST", f"/channels/{s}/messages/{s}/threads", self._thread_from_message, True),
            ("POST", f"/channels/{s}/threads", self._thread_without_message, True),
            ("GET", f"/guilds/{s}", self._get_guild, True),
            ("GET", f"/guilds/{s}/members/{s}", self._get_member, True),
            ("POST", f"/interactions/{s}/{t}/callback", self._interaction_callback, False),
            ("POST", f"/webhooks/{s}/{t}", self._webhook_execute, False),
            ("GET", f"/webhooks/{s}/{t}/messages/(@original|\\d+)", self._webhook_get, False),
            ("PATCH", f"/webhooks/{s}/{t}/messages/(@original|\\d+)", self._webhook_patch, False),
            ("DELETE", f"/webhooks/{s}/{t}/messages/(@original|\\d+)", self._webhook_delete, False),
        ]
        return [(m, re.compile(p), h, a) for m, p, h, a in table]

    # users, application, gateway

    async def _get_me(self, request: web.Request, body: Any, files: list[JSON]) -> tuple[int, Any]:
        return 200, self.users[self.bot_id] | {"verified": True, "mfa_enabled": False, "locale": "en-US", "email": None}

    async def _get_user(self, request: web.Request, body: Any, files: list[JSON], uid: str) -> tuple[int, Any]:
        user = self.users.get(int(uid))
        if user is None:
            raise _HTTPError(404, 10013, "Unknown User")
        return 200, user

    async def _create_dm(self, request: web.Request, body: JSON, files: list[JSON]) -> tuple[int, Any]:
        rid = body.get("recipient_id")
        if rid is None:
            raise _form_error("recipient_id", "BASE_TYPE_REQUIRED", "This field is required")
        if int(rid) not in self.users:
            raise _HTTPError(400, 50033, "Invalid Recipient(s)")
        return 200, self.channels[self.dm_channel(int(rid))]

    async def _get_application(self, request: web.Request, body: Any, files: list[JSON]) -> tuple[int, Any]:
        return 200, {
            "id": str(self.application_id),
            "name": self.users[self.bot_id]["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "verify_key": secrets.token_hex(32),
            "flags": self._application_flags(),
            "owner": self.users[self.owner_id],
            "team": None,
            "bot": self.users[self.bot_id],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": len(self.guilds),
            "tags": [],
        }

    async def _get_gateway(self, request: web.Request, body: Any, files: list[JSON]) -> tuple[int, Any]:
        return 200, {"url": self.gateway_url.rstrip("/")}

    async def _get_gateway_bot(self, request: web.Request, body: Any, files: list[JSON]) -> tuple[int, Any]:
        return 200, {
            "url": self.gateway_url.rstrip("/"),
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1},
        }

    # commands

    def _check_app(self, app_id: str) -> None:
        if int(app_id) != self.application_id:
            raise _HTTPError(403, 50001, "Missing Access")

    async def _get_commands(self, request: web.Request, body: Any, files: list[JSON], app: str) -> tuple[int, Any]:
        self._check_app(app)
        return 200, self.commands.get(None, [])

    async def _get_guild_commands(
        self, request: web.Request, body: Any, files: list[JSON], app: str, gid: str
    ) -> tuple[int, Any]:
        self._check_app(app)
        if int(gid) not in self.guilds:
            raise _HTTPError(404, 10004, "Unknown Guild")
        return 200, self.commands.get(int(gid), [])

    async def _put_commands(self, request: web.Request, body: Any, files: list[JSON], app: str) -> tuple[int, Any]:
        self._check_app(app)
        return 200, self._overwrite_commands(None, body)

    async def _put_guild_commands(
        self, request: web.Request, body: Any, files: list[JSON], app: str, gid: str
    ) -> tuple[int, Any]:
        self._check_app(app)
        if int(gid) not in self.guilds:
            raise _HTTPError(404, 10004, "Unknown Guild")
        return 200, self._overwrite_commands(int(gid), body)

    def _overwrite_commands(self, guild_id: int | None, payload: Any) -> list[JSON]:
        if not isinstance(payload, list):
            raise _form_error("_root", "BASE_TYPE_ARRAY", "Must be an array.")
        if len(payload) > 110:
            raise _form_error("_root", "BASE_TYPE_MAX_LENGTH", "Must be 110 or fewer in length.")
        seen: set[tuple[int, str]] = set()
        out: list[JSON] = []
        for i, cmd in enumerate(payload):
            ctype = int(cmd.get("type", 1))
            self._validate_command(f"{i}", cmd, ctype)
            key = (ctype, cmd["name"])
            if key in seen:
                raise _form_error(
                    f"{i}.name", "APPLICATION_COMMANDS_DUPLICATE_NAME", "Application command names must be unique"
                )
            seen.add(key)
            cid = self._command_ids.setdefault((guild_id, ctype, cmd["name"]), self.snowflake())
            perms = cmd.get("default_member_permissions")
            stored: JSON = {
                "id": str(cid),
                "application_id": str(self.application_id),
                "version": str(self.snowflake()),
                "default_member_permissions": None if perms is None else str(perms),
                "type": ctype,
                "name": cmd["name"],
                "name_localizations": cmd.get("name_localizations"),
                "description": cmd.get("description", ""),
                "description_localizations": cmd.get("description_localizations"),
                "options": cmd.get("options") or [],
                "nsfw": bool(cmd.get("nsfw", False)),
                "contexts": cmd.get("contexts"),
                "integration_types": cmd.get("integration_types") or [0],
            }
            if "dm_permission" in cmd:
                stored["dm_permission"] = cmd["dm_permission"]
            if guild_id is not None:
                stored["guild_id"] = str(guild_id)
            out.append(stored)
        self.commands[guild_id] = out
        return copy.deepcopy(out)

    def _validate_name(self, where: str, name: Any, *, lower: bool) -> None:
        ok = (
            isinstance(name, str)
            and 1 <= len(name) <= 32
            and all(c.isalnum() or c in "-_'" for c in name)
            and (not lower or name == name.lower())
        )
        if not ok:
            raise _form_error(f"{where}.name", "APPLICATION_COMMAND_INVALID_NAME", f"Command name is invalid: {name!r}")

    def _validate_command(self, where: str, cmd: JSON, ctype: int) -> None:
        if ctype == 1:
            self._validate_name(where, cmd.get("name"), lower=True)
            desc = cmd.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                raise _form_error(
                    f"{where}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
                )
            self._validate_options(where, cmd.get("options") or [])
        elif ctype in (2, 3):
            name = cmd.get("name")
            if not isinstance(name, str) or not 1 <= len(name) <= 32:
                raise _form_error(f"{where}.name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
            if cmd.get("description"):
                raise _form_error(
                    f"{where}.description", "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION", "Must be empty."
                )
        else:
            raise _form_error(f"{where}.type", "BASE_TYPE_CHOICES", f"Value must be one of {{1, 2, 3, 4}}: {ctype}")
        perms = cmd.get("default_member_permissions")
        # Documented as a string; Discord also accepts an integer (discord.py sends one).
        if perms is not None and not (isinstance(perms, int) or (isinstance(perms, str) and perms.isdigit())):
            raise _form_error(f"{where}.default_member_permissions", "BASE_TYPE_BAD_INT", "Must be a string of digits.")

    def _validate_options(self, where: str, options: list[JSON]) -> None:
        if len(options) > 25:
            raise _form_error(f"{where}.options", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        names: set[str] = set()
        optional_seen = False
        for j, opt in enumerate(options):
            w = f"{where}.options.{j}"
            self._validate_name(w, opt.get("name"), lower=True)
            if opt["name"] in names:
                raise _form_error(
                    f"{w}.name", "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS", "Option names must be unique"
                )
            names.add(opt["name"])
            desc = opt.get("description")
            if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
                raise _form_error(f"{w}.description", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
            otype = opt.get("type")
            if otype not in range(1, 12):
                raise _form_error(f"{w}.type", "BASE_TYPE_CHOICES", f"Value must be one of 1..11: {otype}")
            if otype in (1, 2):
                self._validate_options(w, opt.get("options") or [])
                continue
            if opt.get("required"):
                if optional_seen:
                    raise _form_error(
                        f"{w}.required",
                        "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                        "Required options must be placed before non-required options",
                    )
            else:
                optional_seen = True
            if len(opt.get("choices") or []) > 25:
                raise _form_error(f"{w}.choices", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")

    # channels, guilds

    async def _get_channel(self, request: web.Request, body: Any, files: list[JSON], cid: str) -> tuple[int, Any]:
        channel = self._channel(int(cid))
        self._require(channel, VIEW_CHANNEL)
        return 200, channel

    async def _get_guild(self, request: web.Request, body: Any, files: list[JSON], gid: str) -> tuple[int, Any]:
        if int(gid) not in self.guilds:
            raise _HTTPError(404, 10004, "Unknown Guild")
        data = self._guild_create(int(gid), 0)
        for key in (
            "members",
            "channels",
            "threads",
            "presences",
            "voice_states",
            "joined_at",
            "large",
            "member_count",
        ):
            data.pop(key, None)
        return 200, data

    async def _get_member(
        self, request: web.Request, body: Any, files: list[JSON], gid: str, uid: str
    ) -> tuple[int, Any]:
        g = self.guilds.get(int(gid))
        if g is None:
            raise _HTTPError(404, 10004, "Unknown Guild")
        if int(uid) not in g.members:
            raise _HTTPError(404, 10007, "Unknown Member")
        return 200, self._member_json(g.id, int(uid))

    def _require(self, channel: JSON, perms: int) -> None:
        g = self._guild_of(channel)
        if g is None:
            return
        have = self.permissions(g.id, self.bot_id)
        if not have & VIEW_CHANNEL:
            raise _HTTPError(403, 50001, "Missing Access")
        if have & perms != perms:
            raise _HTTPError(403, 50013, "Missing Permissions")

    # messages

    def _validate_payload(self, body: JSON, files: list[JSON], *, create: bool, allowed_flags: int) -> None:
        content = body.get("content")
        if content is not None:
            if not isinstance(content, str):
                raise _form_error("content", "BASE_TYPE_STRING", "Must be a string.")
            if len(content) > MAX_CONTENT:
                raise _form_error("content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length.")
        embeds = body.get("embeds")
        if embeds is not None:
            if len(embeds) > 10:
                raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
            for i, e in enumerate(embeds):
                if len(e.get("title") or "") > 256:
                    raise _form_error(f"embeds.{i}.title", "BASE_TYPE_MAX_LENGTH", "Must be 256 or fewer in length.")
                if len(e.get("description") or "") > 4096:
                    raise _form_error(
                        f"embeds.{i}.description", "BASE_TYPE_MAX_LENGTH", "Must be 4096 or fewer in length."
                    )
        am = body.get("allowed_mentions")
        if am is not None:
            parse = am.get("parse", [])
            for p in parse:
                if p not in ("users", "roles", "everyone"):
                    raise _form_error(
                        "allowed_mentions.parse",
                        "BASE_TYPE_CHOICES",
                        "Value must be one of ('roles', 'users', 'everyone').",
                    )
            for kind in ("users", "roles"):
                if kind in parse and am.get(kind):
                    raise _form_error(
                        "allowed_mentions",
                        "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                        f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                    )
                if len(am.get(kind) or []) > 100:
                    raise _form_error(
                        f"allowed_mentions.{kind}", "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length."
                    )
        flags = body.get("flags")
        if flags is not None and int(flags) & ~allowed_flags:
            raise _form_error("flags", "MESSAGE_CREATE_INVALID_FLAGS", "Invalid flags")
        nonce = body.get("nonce")
        if nonce is not None and isinstance(nonce, str) and len(nonce) > 25:
            raise _form_error("nonce", "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if create:
            has = (
                (isinstance(content, str) and content.strip())
                or embeds
                or files
                or body.get("sticker_ids")
                or body.get("components")
                or body.get("poll")
            )
            if not has:
                raise _HTTPError(400, 50006, "Cannot send an empty message")

    def _resolve_reference(self, channel: JSON, ref: JSON | None) -> tuple[JSON | None, int | None]:
        if ref is None:
            return None, None
        mid = ref.get("message_id")
        target = self._message(int(mid)) if mid is not None else None
        if target is None or target.deleted or target.channel_id != int(ref.get("channel_id") or channel["id"]):
            if ref.get("fail_if_not_exists", True):
                raise _form_error("message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message")
            return None, None
        self._require(channel, READ_MESSAGE_HISTORY)
        out: JSON = {
            "type": int(ref.get("type", 0)),
            "message_id": str(target.id),
            "channel_id": str(target.channel_id),
        }
        if channel.get("guild_id"):
            out["guild_id"] = channel["guild_id"]
        return out, target.author_id

    def _uploaded(self, f: JSON) -> JSON:
        """The attachment object for a file the bot uploaded (stored and served like people's attachments)."""
        return self.attachment(f.get("data", b""), f.get("filename") or "file", f.get("content_type"))

    def _create_bot_message(
        self,
        channel: JSON,
        body: JSON,
        files: list[JSON],
        *,
        type_: int = 0,
        flags: int = 0,
        extra: JSON | None = None,
        interaction_id: int | None = None,
    ) -> StoredMessage:
        reference, reply_author = self._resolve_reference(channel, body.get("message_reference"))
        content = body.get("content") or ""
        allowed = body.get("allowed_mentions")
        users, roles, everyone, pings = self._resolve_mentions(channel, self.bot_id, content, allowed, reply_author)
        attachments = [self._uploaded(f) for f in files]
        data = self._new_message(
            channel,
            self.bot_id,
            content,
            type_=type_ if type_ else (19 if reference else 0),
            flags=flags | (int(body.get("flags") or 0)),
            embeds=body.get("embeds") or [],
            attachments=attachments,
            components=body.get("components") or [],
            mentions=users,
            mention_roles=roles,
            mention_everyone=everyone,
            reference=reference,
            nonce=body.get("nonce"),
            extra=extra,
        )
        msg = self._store(data, allowed_mentions=allowed, interaction_id=interaction_id, nonce=body.get("nonce"))
        self._record_pings(msg, pings, edit=False)
        return msg

    async def _post_message(self, request: web.Request, body: JSON, files: list[JSON], cid: str) -> tuple[int, Any]:
        channel = self._channel(int(cid))
        if channel["type"] in THREAD_TYPES:
            self._require(channel, SEND_MESSAGES_IN_THREADS)
            if channel["thread_metadata"]["locked"]:
                raise _HTTPError(403, 50083, "Thread is archived")
            channel["thread_metadata"]["archived"] = False
        else:
            self._require(channel, SEND_MESSAGES)
        self._validate_payload(body, files, create=True, allowed_flags=_CREATE_FLAGS)
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            existing = self._nonces.get((int(cid), self.bot_id, str(nonce)))
            if existing is not None and not self._messages[existing].deleted:
                return 200, self._messages[existing].data
        msg = self._create_bot_message(channel, body, files)
        if nonce is not None and body.get("enforce_nonce"):
            self._nonces[(int(cid), self.bot_id, str(nonce))] = msg.id
        await self.dispatch("MESSAGE_CREATE", msg.data, intent=self._message_intent(channel))
        return 200, msg.data

    def _channel_message(self, cid: str, mid: str) -> tuple[JSON, StoredMessage]:
        channel = self._channel(int(cid))
        msg = self._message(int(mid))
        if msg is None or msg.deleted or msg.channel_id != int(cid) or msg.ephemeral:
            raise _HTTPError(404, 10008, "Unknown Message")
        return channel, msg

    async def _get_message(
        self, request: web.Request, body: Any, files: list[JSON], cid: str, mid: str
    ) -> tuple[int, Any]:
        channel, msg = self._channel_message(cid, mid)
        self._require(channel, READ_MESSAGE_HISTORY)
        return 200, self._strip_content(msg.data) if not self._bot_has_content() else msg.data

    def _bot_has_content(self) -> bool:
        # Over REST the rule depends on the app's portal setting, not on a session's intents.
        return bool(self.enabled_privileged_intents & INTENT_MESSAGE_CONTENT)

    async def _get_messages(self, request: web.Request, body: Any, files: list[JSON], cid: str) -> tuple[int, Any]:
        channel = self._channel(int(cid))
        self._require(channel, READ_MESSAGE_HISTORY)
        limit = int(request.query.get("limit", "50"))
        if not 1 <= limit <= 100:
            raise _form_error("limit", "NUMBER_TYPE_MAX", "int value should be less than or equal to 100.")
        msgs = [m for m in self.messages(int(cid)) if not m.ephemeral]
        if "before" in request.query:
            msgs = [m for m in msgs if m.id < int(request.query["before"])]
        if "after" in request.query:
            msgs = [m for m in msgs if m.id > int(request.query["after"])][:limit]
        msgs = list(reversed(msgs))[:limit]
        return 200, [m.data if self._bot_has_content() else self._strip_content(m.data) for m in msgs]

    def _edit(
        self,
        channel: JSON,
        msg: StoredMessage,
        body: JSON,
        files: list[JSON],
        *,
        allowed_flags: int,
        is_edit: bool = True,
    ) -> None:
        self._validate_payload(body, files, create=False, allowed_flags=allowed_flags)
        if "content" in body:
            msg.edits.append(msg.content)
            content = body["content"] or ""
            allowed = body.get("allowed_mentions", msg.allowed_mentions)
            if "allowed_mentions" in body:
                msg.allowed_mentions = allowed
            users, roles, everyone, pings = self._resolve_mentions(channel, msg.author_id, content, allowed, None)
            g = self._guild_of(channel)
            msg.data["content"] = content
            msg.data["mentions"] = [self._mention_user(g, u) for u in users]
            msg.data["mention_roles"] = [str(r) for r in roles]
            msg.data["mention_everyone"] = everyone
            self._record_pings(msg, pings, edit=is_edit)
        for key in ("embeds", "components"):
            if key in body:
                msg.data[key] = body[key] or []
        if "flags" in body and body["flags"] is not None:
            keep = msg.flags & ~FLAG_SUPPRESS_EMBEDS & ~FLAG_LOADING
            msg.data["flags"] = keep | (int(body["flags"]) & FLAG_SUPPRESS_EMBEDS)
        msg.data["flags"] = msg.flags & ~FLAG_LOADING
        if "attachments" in body or files:
            kept = [
                a
                for a in msg.data["attachments"]
                if any(str(x.get("id")) == a["id"] for x in body.get("attachments") or [])
            ]
            msg.data["attachments"] = kept + [self._uploaded(f) for f in files]
        msg.data["edited_timestamp"] = _now_iso()
        if not (msg.data["content"] or msg.data["embeds"] or msg.data["attachments"] or msg.data["components"]):
            raise _HTTPError(400, 50006, "Cannot send an empty message")
        self._notify()

    async def _patch_message(
        self, request: web.Request, body: JSON, files: list[JSON], cid: str, mid: str
    ) -> tuple[int, Any]:
        channel, msg = self._channel_message(cid, mid)
        if msg.author_id != self.bot_id:
            if set(body) - {"flags"}:
                raise _HTTPError(403, 50005, "Cannot edit a message authored by another user")
            self._require(channel, MANAGE_MESSAGES)
        self._edit(channel, msg, body, files, allowed_flags=_CREATE_FLAGS)
        await self.dispatch("MESSAGE_UPDATE", msg.data, intent=self._message_intent(channel))
        return 200, msg.data

    async def _delete_message(
        self, request: web.Request, body: Any, files: list[JSON], cid: str, mid: str
    ) -> tuple[int, Any]:
        channel, msg = self._channel_message(cid, mid)
        if msg.author_id != self.bot_id:
            self._require(channel, MANAGE_MESSAGES)
        await self._delete(channel, msg)
        return 204, None

    async def _delete(self, channel: JSON, msg: StoredMessage) -> None:
        msg.deleted = True
        data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
        if channel.get("guild_id"):
            data["guild_id"] = channel["guild_id"]
        if not msg.ephemeral:
            await self.dispatch("MESSAGE_DELETE", data, intent=self._message_intent(channel))

    async def _typing(self, request: web.Request, body: Any, files: list[JSON], cid: str) -> tuple[int, Any]:
        channel = self._channel(int(cid))
        self._require(channel, SEND_MESSAGES_IN_THREADS if channel["type"] in THREAD_TYPES else SEND_MESSAGES)
        self.typing.append((int(cid), time.monotonic()))
        return 204, None

    # reactions

    async def _add_reaction(
        self, request: web.Request, body: Any, files: list[JSON], cid: str, mid: str, emoji: str
    ) -> tuple[int, Any]:
        channel, msg = self._channel_message(cid, mid)
        self._require(channel, ADD_REACTIONS | READ_MESSAGE_HISTORY)
        await self._react(channel, msg, self.bot_id, emoji, add=True)
        return 204, None

    async def _remove_reaction(
        self, request: web.Request, body: Any, files: list[JSON], cid: str, mid: str, emoji: str
    ) -> tuple[int, Any]:
        channel, msg = self._channel_message(cid, mid)
        await self._react(channel, msg, self.bot_id, emoji, add=False)
        return 204, None

    async def user_reacts(
        self, channel_id: int, message_id: int, user_id: int, emoji: str, *, add: bool = True
    ) -> None:
        """A person adds (or removes) a reaction: ``emoji`` is a unicode emoji or ``name:id``."""
        channel, msg = self._channel_message(str(channel_id), str(message_id))
        await self._react(channel, msg, user_id, emoji, add=add)

    async def _react(self, channel: JSON, msg: StoredMessage, user_id: int, emoji: str, *, add: bool) -> None:
        name, _, eid = emoji.partition(":")
        emoji_json: JSON = {"id": eid or None, "name": name}
        users = self.reactions.setdefault((msg.id, emoji), [])
        if add == (user_id in users):
            return  # adding twice / removing what is not there: Discord answers 204 and changes nothing
        if add:
            users.append(user_id)
        else:
            users.remove(user_id)
        msg.data["reactions"] = [
            {
                "count": len(u),
                "count_details": {"burst": 0, "normal": len(u)},
                "me": self.bot_id in u,
                "me_burst": False,
                "burst_colors": [],
                "emoji": {"id": e.partition(":")[2] or None, "name": e.partition(":")[0]},
            }
            for (m, e), u in self.reactions.items()
            if m == msg.id and u
        ]
        data: JSON = {
            "user_id": str(user_id),
            "channel_id": str(msg.channel_id),
            "message_id": str(msg.id),
            "emoji": emoji_json,
            "burst": False,
            "type": 0,
        }
        g = self._guild_of(channel)
        if g is not None:
            data["guild_id"] = str(g.id)
            if add and user_id in g.members:
                data["member"] = self._member_json(g.id, user_id)
        if add:
            data["message_author_id"] = str(msg.author_id)
        intent = INTENT_GUILD_MESSAGE_REACTIONS if g is not None else INTENT_DIRECT_MESSAGE_REACTIONS
        await self.dispatch("MESSAGE_REACTION_ADD" if add else "MESSAGE_REACTION_REMOVE", data, intent=intent)

    # threads

    def _validate_thread_body(self, body: JSON) -> None:
        name = body.get("name")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise _form_error("name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length.")
        aad = body.get("auto_archive_duration")
        if aad is not None and aad not in (60, 1440, 4320, 10080):
            raise _form_error(
                "auto_archive_duration", "BASE_TYPE_CHOICES", "Value must be one of {60, 1440, 4320, 10080}."
            )
        rl = body.get("rate_limit_per_user")
        if rl is not None and not 0 <= int(rl) <= 21600:
            raise _form_error(
                "rate_limit_per_user", "NUMBER_TYPE_MAX", "int value should be less than or equal to 21600."
            )

    async def _thread_from_message(
        self, request: web.Request, body: JSON, files: list[JSON], cid: str, mid: str
    ) -> tuple[int, Any]:
        channel = self._channel(int(cid))
        self._require(channel, CREATE_PUBLIC_THREADS | READ_MESSAGE_HISTORY)
        self._validate_thread_body(body)
        thread = self._make_thread(
            int(cid),
            self.bot_id,
            body["name"],
            message_id=int(mid),
            private=False,
            auto_archive_duration=int(body.get("auto_archive_duration") or 4320),
            rate_limit_per_user=int(body.get("rate_limit_per_user") or 0),
        )
        await self._announce_thread(thread)
        return 201, thread

    async def _thread_without_message(
        self, request: web.Request, body: JSON, files: list[JSON], cid: str
    ) -> tuple[int, Any]:
        channel = self._channel(int(cid))
        ttype = body.get("type", PRIVATE_THREAD)
        if ttype not in THREAD_TYPES:
            raise _form_error("type", "BASE_TYPE_CHOICES", "Value must be one of {10, 11, 12}.")
        self._require(channel, CREATE_PRIVATE_THREADS if ttype == PRIVATE_THREAD else CREATE_PUBLIC_THREADS)
        self._validate_thread_body(body)
        thread = self._make_thread(
            int(cid),
            self.bot_id,
            body["name"],
            message_id=None,
            private=ttype == PRIVATE_THREAD,
            auto_archive_duration=int(body.get("auto_archive_duration") or 4320),
            rate_limit_per_user=int(body.get("rate_limit_per_user") or 0),
        )
        await self._announce_thread(thread)
        return 201, thread

    # interactions and webhooks

    def _interaction_message_extra(self, it: SlashInteraction) -> JSON:
        user = self.users[it.user_id]
        return {
            "webhook_id": str(self.application_id),
            "application_id": str(self.application_id),
            "interaction": {"id": str(it.id), "type": 2, "name": it.command.data["name"], "user": user},
            "interaction_metadata": {
                "id": str(it.id),
                "type": 2,
                "user": user,
                "authorizing_integration_owners": it.payload.get("authorizing_integration_owners", {}),
                "name": it.command.data["name"],
                "command_type": 1,
            },
        }

    async def _interaction_callback(
        self, request: web.Request, body: JSON, files: list[JSON], iid: str, token: str
    ) -> tuple[int, Any]:
        it = self.interactions.get(int(iid))
        if it is None or it.token != token or time.monotonic() - it.created > self.interaction_ack_seconds:
            raise _HTTPError(404, 10062, "Unknown interaction")
        if it.acknowledged:
            raise _HTTPError(400, 40060, "Interaction has already been acknowledged.")
        rtype = body.get("type")
        data = body.get("data") or {}
        if rtype not in (4, 5, 9):
            # 1 PONG is for HTTP pings, 6/7 for component interactions, 8 for autocomplete.
            raise _form_error(
                "type", "INTERACTION_RESPONSE_TYPE_INVALID", "Interaction response type is invalid for this interaction"
            )
        channel = self._channel(it.channel_id)
        flags = int(data.get("flags") or 0)
        message: StoredMessage | None = None
        if rtype == 4:
            self._validate_payload(data, files, create=True, allowed_flags=_WEBHOOK_FLAGS)
            message = self._create_bot_message(
                channel,
                {k: v for k, v in data.items() if k not in ("flags", "message_reference", "nonce")},
                files,
                type_=20,
                flags=flags,
                extra=self._interaction_message_extra(it),
                interaction_id=it.id,
            )
        elif rtype == 5:
            message = self._store(
                self._new_message(
                    channel,
                    self.bot_id,
                    "",
                    type_=20,
                    flags=FLAG_LOADING | (flags & FLAG_EPHEMERAL),
                    extra=self._interaction_message_extra(it),
                ),
                interaction_id=it.id,
            )
        it.response_type = rtype
        it.response = body
        result: JSON = {"interaction": {"id": str(it.id), "type": 2}}
        if message is not None:
            it.original_id = message.id
            result["interaction"] |= {
                "response_message_id": str(message.id),
                "response_message_loading": message.loading,
                "response_message_ephemeral": message.ephemeral,
            }
            result["resource"] = {"type": rtype, "message": message.data}
            if not message.ephemeral:
                await self.dispatch("MESSAGE_CREATE", message.data, intent=self._message_intent(channel))
        else:
            result["resource"] = {"type": rtype}
        if request.query.get("with_response") in ("1", "true", "True"):
            return 200, result
        return 204, None

    def _webhook_interaction(self, app: str, token: str) -> SlashInteraction:
        it = self._interactions_by_token.get(token)
        if (
            it is None
            or int(app) != self.application_id
            or time.monotonic() - it.created > INTERACTION_TOKEN_SECONDS
            or not it.acknowledged
        ):
            raise _HTTPError(404, 10015, "Unknown Webhook")
        return it

    def _webhook_message(self, it: SlashInteraction, mid: str) -> StoredMessage:
        if mid == "@original":
            msg = it.original
        else:
            msg = self._message(int(mid))
            if msg is not None and msg.interaction_id != it.id:
                msg = None
        if msg is None or msg.deleted:
            raise _HTTPError(404, 10008, "Unknown Message")
        return msg

    async def _webhook_execute(
        self, request: web.Request, body: JSON, files: list[JSON], app: str, token: str
    ) -> tuple[int, Any]:
        it = self._webhook_interaction(app, token)
        channel = self._channel(it.channel_id)
        self._validate_payload(body, files, create=True, allowed_flags=_WEBHOOK_FLAGS)
        original = it.original
        if original is not None and original.loading:
            # The first follow-up after a deferral replaces the "thinking..." placeholder (keeping its ephemerality).
            edit = {k: v for k, v in body.items() if k in ("content", "embeds", "components", "allowed_mentions")}
            self._edit(channel, original, edit, files, allowed_flags=_WEBHOOK_FLAGS, is_edit=False)
            msg = original
            if not msg.ephemeral:
                await self.dispatch("MESSAGE_UPDATE", msg.data, intent=self._message_intent(channel))
        else:
            flags = int(body.get("flags") or 0)
            msg = self._create_bot_message(
                channel,
                {k: v for k, v in body.items() if k not in ("flags", "message_reference", "nonce")},
                files,
                type_=0,
                flags=flags,
                extra={"webhook_id": str(self.application_id), "application_id": str(self.application_id)},
                interaction_id=it.id,
            )
            it.followup_ids.append(msg.id)
            if not msg.ephemeral:
                await self.dispatch("MESSAGE_CREATE", msg.data, intent=self._message_intent(channel))
        if request.query.get("wait", "false").lower() in ("1", "true"):
            return 200, msg.data
        return 204, None

    async def _webhook_get(
        self, request: web.Request, body: Any, files: list[JSON], app: str, token: str, mid: str
    ) -> tuple[int, Any]:
        it = self._webhook_interaction(app, token)
        return 200, self._webhook_message(it, mid).data

    async def _webhook_patch(
        self, request: web.Request, body: JSON, files: list[JSON], app: str, token: str, mid: str
    ) -> tuple[int, Any]:
        it = self._webhook_interaction(app, token)
        msg = self._webhook_message(it, mid)
        channel = self._channel(it.channel_id)
        self._edit(channel, msg, body, files, allowed_flags=_WEBHOOK_FLAGS)
        if not msg.ephemeral:
            await self.dispatch("MESSAGE_UPDATE", msg.data, intent=self._message_intent(channel))
        return 200, msg.data

    async def _webhook_delete(
        self, request: web.Request, body: Any, files: list[JSON], app: str, token: str, mid: str
    ) -> tuple[int, Any]:
        it = self._webhook_interaction(app, token)
        msg = self._webhook_message(it, mid)
        await self._delete(self._channel(it.channel_id), msg)
        return 204, None


class _InvalidJSON:
    pass


_INVALID_JSON: Final = _InvalidJSON()


@contextlib.asynccontextmanager
async def running_client(
    client: Any,
    token: str,
    *,
    timeout: float = 5.0,  # noqa: ASYNC109
    reconnect: bool = False,
) -> AsyncIterator[Any]:
    """Log ``client`` (a discord.Client) in, connect it in a task, wait until ready; close it afterwards."""
    await client.login(token)
    task = asyncio.create_task(client.connect(reconnect=reconnect))
    try:
        async with asyncio.timeout(timeout):
            ready = asyncio.ensure_future(client.wait_until_ready())
            done, _ = await asyncio.wait({ready, task}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                ready.cancel()
                task.result()  # raises what connect() raised
                raise AssertionError("client.connect() returned before READY")
        yield client
    finally:
        await client.close()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=timeout)
