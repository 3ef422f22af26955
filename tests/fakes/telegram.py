"""A protocol-faithful fake of the Telegram Bot API, served over real HTTP.

``FakeTelegram`` is an aiohttp server on 127.0.0.1 (ephemeral port) that answers the Bot API the way
api.telegram.org does: URLs ``/bot<token>/<method>`` (method names case-insensitive), form-urlencoded,
multipart or JSON bodies (non-string values JSON-encoded, as python-telegram-bot sends them), and the
``{"ok": ..., "result" | "error_code" + "description" [+ "parameters"]}`` envelope with the matching
HTTP status.  It keeps the state a chat bot touches (chats, messages, topics, admins, commands,
the update queue, the webhook), validates what Telegram validates (message length after entity
parsing, HTML / MarkdownV2 / Markdown syntax, "message is not modified", unknown chats/messages/threads)
and lets tests drive the bot as people do (``user_says``), inject one-shot faults (``fail_next``)
and wait for the bot's reaction (``wait_for``, ``wait_for_message``, ``wait_for_idle``).

Any method the fake does not implement answers 404 and is recorded in ``unimplemented`` so that a
test can fail loudly (``assert_all_implemented``) instead of passing against a fake that lies.

Deliberate concessions (documented so nobody mistakes them for Telegram's behaviour):
- setWebhook accepts ``http://`` URLs (the real API demands HTTPS on ports 443/80/88/8443).
- Files exist only where a test creates them (``user_sends_document``): getFile and ``base_file_url`` serve
  those; files the bot uploads are not stored.  ``user_sends_document(..., file_size=N)`` declares a size
  (e.g. over the 20 MB getFile limit) without storing that many bytes.
- close/logOut always succeed (the real API refuses ``close`` in the first 10 minutes after launch).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
import re
import secrets
import socket
import string
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple, TypeVar

import aiohttp
from aiohttp import web

JSON = dict[str, Any]
T = TypeVar("T")

MAX_TEXT_LENGTH: Final = 4096
MAX_CAPTION_LENGTH: Final = 1024
MAX_DOWNLOAD_SIZE: Final = 20 * 1024 * 1024  # getFile refuses bigger files ("file is too big")
_TOKEN_RE: Final = re.compile(r"\d+:[A-Za-z0-9_-]+")
_NOT_MODIFIED: Final = (
    "Bad Request: message is not modified: specified new message content and reply markup are exactly the same "
    "as a current content and reply markup of the message"
)
_UNIMPLEMENTED: Final = "Not Found: method not implemented in fake"
_CHAT_ACTIONS: Final = frozenset(
    {
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    }
)
# Update kinds delivered when allowed_updates is empty / never set (Telegram's documented default).
_NOT_DEFAULT_UPDATES: Final = frozenset({"chat_member", "message_reaction", "message_reaction_count"})
# Parameters whose value is a String in the Bot API: never JSON-decode them (text "123" stays "123").
_STRING_PARAMS: Final = frozenset(
    {
        "text",
        "parse_mode",
        "url",
        "secret_token",
        "callback_query_id",
        "action",
        "language_code",
        "ip_address",
        "inline_message_id",
        "caption",
        "description",
        "short_description",
        "name",
        "title",
        "business_connection_id",
        "message_effect_id",
        "custom_title",
        "emoji",
        "file_id",
    }
)
_DEFAULT_DESCRIPTIONS: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
}


class ApiError(Exception):
    """An error answer of the Bot API: HTTP status == error_code."""

    def __init__(self, status: int, description: str, parameters: JSON | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.description = description
        self.parameters = parameters


def _bad(description: str) -> ApiError:
    return ApiError(400, f"Bad Request: {description}")


def _parse_error(description: str) -> ApiError:
    return _bad(f"can't parse entities: {description}")


class Call(NamedTuple):
    """One Bot API request the fake answered (params decoded back to Python values)."""

    method: str
    params: JSON


@dataclass(frozen=True)
class ApiFault:
    """A one-shot injected failure (see ``FakeTelegram.fail_next``)."""

    status: int
    description: str
    parameters: JSON | None = None


@dataclass
class BotMessage:
    """A message the bot sent, as it currently stands in the chat (after edits)."""

    message_id: int
    chat_id: int
    text: str
    entities: list[JSON]
    parse_mode: str | None
    raw_text: str
    thread_id: int | None
    reply_to_message_id: int | None
    reply_markup: JSON | None
    edits: int
    raw: JSON


@dataclass(frozen=True)
class Draft:
    """One sendMessageDraft call (Bot API 9.3 message streaming)."""

    chat_id: int
    draft_id: int
    text: str
    entities: list[JSON]
    parse_mode: str | None
    thread_id: int | None
    at: float


@dataclass(frozen=True)
class ChatActionRecord:
    """One sendChatAction call."""

    chat_id: int
    action: str
    thread_id: int | None
    at: float


@dataclass
class _Message:
    data: JSON
    from_bot: bool
    parse_mode: str | None = None
    raw_text: str = ""
    edits: int = 0


@dataclass(frozen=True)
class StoredFile:
    """A file people sent (``user_sends_document``): what getFile describes and ``base_file_url`` serves."""

    file_id: str
    file_unique_id: str
    file_path: str
    file_size: int
    data: bytes


@dataclass
class _Chat:
    info: JSON
    forum: bool = False
    owner: int | None = None
    admins: set[int] = field(default_factory=set)
    members: set[int] = field(default_factory=set)
    topics: dict[int, JSON] = field(default_factory=dict)
    messages: dict[int, _Message] = field(default_factory=dict)
    next_message_id: int = 1

    @property
    def id(self) -> int:
        return int(self.info["id"])

    @property
    def type(self) -> str:
        return str(self.info["type"])


# --------------------------------------------------------------------------------------------------------------------
# Text helpers: UTF-16 offsets, trimming, entity parsing (HTML, MarkdownV2, Markdown).
# --------------------------------------------------------------------------------------------------------------------


def utf16_len(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def _byte_offset(text: str, index: int) -> int:
    return len(text[:index].encode("utf-8"))


def _trim(text: str, entities: list[JSON]) -> tuple[str, list[JSON]]:
    """Telegram strips leading/trailing whitespace from message text; shift and clip entities to match."""
    stripped = text.strip()
    if stripped == text:
        return text, entities
    lead = utf16_len(text[: len(text) - len(text.lstrip())])
    total = utf16_len(stripped)
    out: list[JSON] = []
    for ent in entities:
        start = max(int(ent["offset"]) - lead, 0)
        end = min(int(ent["offset"]) + int(ent["length"]) - lead, total)
        if end > start:
            out.append({**ent, "offset": start, "length": end - start})
    return stripped, out


def _sorted_entities(entities: list[JSON]) -> list[JSON]:
    return sorted(entities, key=lambda e: (int(e["offset"]), -int(e["length"])))


_HTML_ENTITY_RE: Final = re.compile(r"&(#[0-9]+|#[xX][0-9a-fA-F]+|[a-zA-Z]+);")
_NAMED_HTML: Final = {"lt": "<", "gt": ">", "amp": "&", "quot": '"'}
_HTML_TAGS: Final = frozenset(
    {
        "a",
        "b",
        "strong",
        "i",
        "em",
        "s",
        "strike",
        "del",
        "u",
        "ins",
        "tg-spoiler",
        "tg-emoji",
        "tg-time",
        "span",
        "pre",
        "code",
        "blockquote",
    }
)
_HTML_SIMPLE: Final = {
    "b": "bold",
    "strong": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "s": "strikethrough",
    "strike": "strikethrough",
    "del": "strikethrough",
    "tg-spoiler": "spoiler",
    "span": "spoiler",
}


def _html_decode_at(src: str, i: int) -> tuple[str, int] | None:
    m = _HTML_ENTITY_RE.match(src, i)
    if not m:
        return None
    body = m.group(1)
    if body.startswith(("#x", "#X")):
        code = int(body[2:], 16)
    elif body.startswith("#"):
        code = int(body[1:])
    elif body in _NAMED_HTML:
        return _NAMED_HTML[body], m.end() - i
    else:
        return None  # Telegram only knows lt/gt/amp/quot; anything else stays literal
    if code <= 0 or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        return None
    return chr(code), m.end() - i


def _html_unescape(value: str) -> str:
    out: list[str] = []
    i = 0
    while i < len(value):
        decoded = _html_decode_at(value, i) if value[i] == "&" else None
        if decoded:
            out.append(decoded[0])
            i += decoded[1]
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


def parse_html(src: str) -> tuple[str, list[JSON]]:
    """Parse Telegram-flavoured HTML into (plain text, entities) like tdlib's parse_html, with its error texts."""
    out: list[str] = []
    pos16 = 0
    stack: list[tuple[str, dict[str, str], int]] = []
    pre_language: dict[int, str] = {}  # stack depth of an open <pre> -> language from its inner <code class>
    entities: list[JSON] = []
    i, n = 0, len(src)

    def emit(chunk: str) -> None:
        nonlocal pos16
        out.append(chunk)
        pos16 += utf16_len(chunk)

    while i < n:
        c = src[i]
        if c == "&":
            decoded = _html_decode_at(src, i)
            if decoded:
                emit(decoded[0])
                i += decoded[1]
            else:
                emit("&")
                i += 1
            continue
        if c != "<":
            emit(c)
            i += 1
            continue
        begin = i
        i += 1
        if i < n and src[i] == "/":
            # end tag
            if not stack:
                raise _parse_error(f"Unexpected end tag at byte offset {_byte_offset(src, begin)}")
            j = i + 1
            while j < n and not src[j].isspace() and src[j] != ">":
                j += 1
            end_name = src[i + 1 : j].lower()
            while j < n and src[j].isspace():
                j += 1
            if j >= n or src[j] != ">":
                raise _parse_error(f"Unclosed end tag at byte offset {_byte_offset(src, begin)}")
            tag, attrs, start16 = stack[-1]
            if end_name and end_name != tag:
                raise _parse_error(
                    f'Unmatched end tag at byte offset {_byte_offset(src, begin)}, expected "</{tag}>", '
                    f'found "</{end_name}>"'
                )
            depth = len(stack) - 1
            stack.pop()
            i = j + 1
            length = pos16 - start16
            if length <= 0:
                continue
            ent: JSON | None = None
            if tag in _HTML_SIMPLE:
                ent = {"type": _HTML_SIMPLE[tag]}
            elif tag == "a":
                href = attrs.get("href", "")
                if m := re.fullmatch(r"tg://user\?id=(\d+)", href):
                    ent = {"type": "text_mention", "user": {"id": int(m.group(1)), "is_bot": False, "first_name": ""}}
                elif href:
                    ent = {"type": "text_link", "url": href}
            elif tag == "code":
                cls = attrs.get("class", "")
                if stack and stack[-1][0] == "pre":
                    if cls.startswith("language-"):
                        pre_language[depth - 1] = cls[len("language-") :]
                    continue  # <pre><code> is a single pre entity
                ent = {"type": "code"}
            elif tag == "pre":
                ent = {"type": "pre"}
                if lang := pre_language.pop(depth, ""):
                    ent["language"] = lang
            elif tag == "blockquote":
                ent = {"type": "expandable_blockquote" if "expandable" in attrs else "blockquote"}
            elif tag == "tg-emoji":
                ent = {"type": "custom_emoji", "custom_emoji_id": attrs["emoji-id"]}
            elif tag == "tg-time":
                ent = {"type": "date_time", "unix_time": int(attrs["unix"])}
                if fmt := attrs.get("format"):
                    ent["date_time_format"] = fmt
            if ent is not None:
                entities.append({**ent, "offset": start16, "length": length})
            continue
        # start tag
        j = i
        while j < n and not src[j].isspace() and src[j] != ">":
            j += 1
        if j >= n:
            raise _parse_error(f"Unclosed start tag at byte offset {_byte_offset(src, begin)}")
        tag = src[i:j].lower()
        if tag not in _HTML_TAGS:
            raise _parse_error(f'Unsupported start tag "{tag}" at byte offset {_byte_offset(src, begin)}')
        attrs = {}
        while True:
            while j < n and src[j].isspace():
                j += 1
            if j >= n:
                raise _parse_error(f"Unclosed start tag at byte offset {_byte_offset(src, begin)}")
            if src[j] == ">":
                break
            k = j
            while k < n and not src[k].isspace() and src[k] not in "=>":
                k += 1
            attr = src[j:k].lower()
            if not attr:
                raise _parse_error(f'Empty attribute name in the tag "{tag}" at byte offset {_byte_offset(src, j)}')
            j = k
            while j < n and src[j].isspace():
                j += 1
            if j >= n or src[j] != "=":
                if tag == "blockquote" and attr == "expandable":
                    attrs[attr] = ""
                    continue
                raise _parse_error(
                    f'Expected equal sign in declaration of an attribute of the tag "{tag}" at byte offset '
                    f"{_byte_offset(src, begin)}"
                )
            j += 1
            while j < n and src[j].isspace():
                j += 1
            if j >= n:
                raise _parse_error(f"Unclosed start tag at byte offset {_byte_offset(src, begin)}")
            if src[j] in "\"'":
                quote = src[j]
                k = src.find(quote, j + 1)
                if k < 0:
                    raise _parse_error(f"Unclosed start tag at byte offset {_byte_offset(src, begin)}")
                value = src[j + 1 : k]
                j = k + 1
            else:
                k = j
                while k < n and not src[k].isspace() and src[k] != ">":
                    k += 1
                value = src[j:k]
                j = k
            attrs[attr] = _html_unescape(value)
        i = j + 1
        if tag == "span" and attrs.get("class") != "tg-spoiler":
            raise _parse_error('Tag "span" must have class "tg-spoiler"')
        if tag == "tg-emoji" and not attrs.get("emoji-id", "").isdigit():
            raise _parse_error('Custom emoji entity must contain a tg://emoji URL with a valid "emoji-id"')
        if tag == "tg-time" and not attrs.get("unix", "").isdigit():
            raise _parse_error('Tag "tg-time" must have a valid "unix" attribute')
        stack.append((tag, attrs, pos16))
    if stack:
        raise _parse_error(f'Can\'t find end tag corresponding to start tag "{stack[-1][0]}"')
    return "".join(out), _sorted_entities(entities)


_MDV2_RESERVED: Final = "_*[]()~`>#+-=|{}.!"
_MDV2_TYPE_NAMES: Final = {
    "bold": "Bold",
    "italic": "Italic",
    "underline": "Underline",
    "strikethrough": "Strikethrough",
    "spoiler": "Spoiler",
    "code": "Code",
    "pre": "Pre",
    "text_link": "TextUrl",
    "custom_emoji": "CustomEmoji",
}


def parse_markdown_v2(src: str) -> tuple[str, list[JSON]]:
    """Parse MarkdownV2 like tdlib's parse_markdown_v2 (reserved characters must be escaped outside entities)."""
    out: list[str] = []
    pos16 = 0
    # (type, start16, byte offset in src, extra e.g. pre language, len(out) at the start)
    stack: list[tuple[str, int, int, str, int]] = []
    entities: list[JSON] = []
    quote: tuple[int, bool] | None = None  # (start16, expandable) of the blockquote being collected
    i, n = 0, len(src)

    def emit(chunk: str) -> None:
        nonlocal pos16
        out.append(chunk)
        pos16 += utf16_len(chunk)

    def close_quote(end16: int) -> None:
        nonlocal quote
        if quote is not None and end16 > quote[0]:
            kind = "expandable_blockquote" if quote[1] else "blockquote"
            entities.append({"type": kind, "offset": quote[0], "length": end16 - quote[0]})
        quote = None

    def reserved_error(ch: str) -> ApiError:
        return _parse_error(f"Character '{ch}' is reserved and must be escaped with the preceding '\\'")

    while i < n:
        c = src[i]
        in_code = bool(stack) and stack[-1][0] in ("code", "pre")
        at_line_start = i == 0 or src[i - 1] == "\n"
        if at_line_start and not in_code:
            if src.startswith("**>", i) and quote is None:
                quote = (pos16, True)
                i += 3
                continue
            if c == ">":
                if quote is None:
                    quote = (pos16, False)
                i += 1
                continue
            if quote is not None:
                close_quote(pos16 - 1 if out and out[-1].endswith("\n") else pos16)
        if c == "\\" and i + 1 < n and 0 < ord(src[i + 1]) <= 126:
            emit(src[i + 1])
            i += 2
            continue
        reserved = "`" if in_code else _MDV2_RESERVED
        if c not in reserved:
            emit(c)
            i += 1
            continue
        if (
            quote is not None
            and quote[1]
            and not in_code
            and src.startswith("||", i)
            and (i + 2 == n or src[i + 2] == "\n")
            and not (stack and stack[-1][0] == "spoiler")
        ):
            i += 2  # end of an expandable blockquote
            continue
        top = stack[-1][0] if stack else None
        is_end = False
        if top == "bold":
            is_end = c == "*"
        elif top == "italic":
            is_end = c == "_" and not src.startswith("__", i)
        elif top == "underline":
            is_end = src.startswith("__", i)
        elif top == "strikethrough":
            is_end = c == "~"
        elif top == "spoiler":
            is_end = src.startswith("||", i)
        elif top == "code":
            is_end = c == "`"
        elif top == "pre":
            is_end = src.startswith("```", i)
        elif top in ("text_link", "custom_emoji"):
            is_end = c == "]"
        if not is_end:
            start_byte = _byte_offset(src, i)
            extra = ""
            if c == "_":
                kind = "underline" if src.startswith("__", i) else "italic"
                i += 2 if kind == "underline" else 1
            elif c == "*":
                kind, i = "bold", i + 1
            elif c == "~":
                kind, i = "strikethrough", i + 1
            elif c == "|":
                if not src.startswith("||", i):
                    raise reserved_error(c)
                kind, i = "spoiler", i + 2
            elif c == "[":
                kind, i = "text_link", i + 1
            elif c == "`":
                if src.startswith("```", i):
                    kind = "pre"
                    i += 3
                    nl = src.find("\n", i)
                    first_line = src[i:nl] if nl >= 0 else ""
                    if nl >= 0 and first_line and not any(ch.isspace() for ch in first_line) and "`" not in first_line:
                        extra = first_line
                        i = nl + 1
                else:
                    kind, i = "code", i + 1
            elif c == "!" and src.startswith("![", i):
                kind, i = "custom_emoji", i + 2
            else:
                raise reserved_error(c)
            stack.append((kind, pos16, start_byte, extra, len(out)))
            continue
        kind, start16, _start_byte, extra, out_start = stack.pop()
        ent: JSON | None = {"type": kind}
        if kind in ("text_link", "custom_emoji"):
            i += 1
            url = ""
            if i < n and src[i] == "(":
                i += 1
                chars: list[str] = []
                while i < n and src[i] != ")":
                    if src[i] == "\\" and i + 1 < n and 0 < ord(src[i + 1]) <= 126:
                        i += 1
                    chars.append(src[i])
                    i += 1
                if i >= n:
                    raise _parse_error(f"Can't find end of a URL at byte offset {_byte_offset(src, i)}")
                i += 1
                url = "".join(chars)
            if kind == "custom_emoji":
                if m := re.fullmatch(r"tg://emoji\?id=(\d+)", url):
                    ent = {"type": "custom_emoji", "custom_emoji_id": m.group(1)}
                elif m := re.fullmatch(r"tg://time\?unix=(\d+)(?:&format=([a-zA-Z]*))?", url):
                    ent = {"type": "date_time", "unix_time": int(m.group(1))}
                    if m.group(2):
                        ent["date_time_format"] = m.group(2)
                else:
                    raise _parse_error("Custom emoji URL must have an emoji identifier")
            else:
                url = url or "".join(out[out_start:])
                if m := re.fullmatch(r"tg://user\?id=(\d+)", url):
                    ent = {"type": "text_mention", "user": {"id": int(m.group(1)), "is_bot": False, "first_name": ""}}
                else:
                    looks_like_url = re.match(r"[a-zA-Z][\w+.-]*://\S+|[\w-]+(?:\.[\w-]+)+(?:/\S*)?$", url)
                    ent = {"type": "text_link", "url": url} if looks_like_url else None
        elif kind == "pre":
            i += 3
            if extra:
                ent = {"type": "pre", "language": extra}
        elif kind in ("underline", "spoiler"):
            i += 2
        else:
            i += 1
        if ent is not None and pos16 > start16:
            entities.append({**ent, "offset": start16, "length": pos16 - start16})
    if stack:
        kind, _start16, start_byte, _extra, _out = stack[-1]
        raise _parse_error(f"Can't find end of {_MDV2_TYPE_NAMES[kind]} entity at byte offset {start_byte}")
    close_quote(pos16)
    return "".join(out), _sorted_entities(entities)


def parse_markdown_legacy(src: str) -> tuple[str, list[JSON]]:
    """Parse the legacy ``Markdown`` mode: *bold* _italic_ `code` ```pre``` [text](url); '\\' escapes those."""
    out: list[str] = []
    pos16 = 0
    entities: list[JSON] = []
    i, n = 0, len(src)

    def emit(chunk: str) -> None:
        nonlocal pos16
        out.append(chunk)
        pos16 += utf16_len(chunk)

    while i < n:
        c = src[i]
        if c == "\\" and i + 1 < n and src[i + 1] in "_*`[":
            emit(src[i + 1])
            i += 2
            continue
        if c not in "_*`[":
            emit(c)
            i += 1
            continue
        begin = _byte_offset(src, i)
        if c == "[":
            close = src.find("]", i + 1)
            if close < 0 or not src.startswith("(", close + 1) or src.find(")", close + 2) < 0:
                raise _parse_error(f"Can't find end of the entity starting at byte offset {begin}")
            end = src.find(")", close + 2)
            start16 = pos16
            emit(src[i + 1 : close])
            if pos16 > start16:
                entities.append(
                    {"type": "text_link", "url": src[close + 2 : end], "offset": start16, "length": pos16 - start16}
                )
            i = end + 1
            continue
        marker = "```" if src.startswith("```", i) else c
        close = src.find(marker, i + len(marker))
        if close < 0:
            raise _parse_error(f"Can't find end of the entity starting at byte offset {begin}")
        start16 = pos16
        emit(src[i + len(marker) : close])
        kind = {"*": "bold", "_": "italic", "`": "code", "```": "pre"}[marker]
        if pos16 > start16:
            entities.append({"type": kind, "offset": start16, "length": pos16 - start16})
        i = close + len(marker)
    return "".join(out), _sorted_entities(entities)


_COMMAND_RE: Final = re.compile(r"(?<![\w/@])/[A-Za-z0-9_]{1,32}(?:@[A-Za-z0-9_]{3,32})?(?!\w)")
_MENTION_RE: Final = re.compile(r"(?<![\w@])@[A-Za-z0-9_]{4,32}(?!\w)")
_URL_RE: Final = re.compile(r"(?<![\w@])https?://[^\s<>]+[^\s<>.,;:!?)\]'\"]")


def detect_entities(text: str) -> list[JSON]:
    """Entities Telegram adds to a user's plain text: bot_command, mention, url (offsets in UTF-16 units)."""
    found: list[JSON] = []
    for kind, pattern in (("bot_command", _COMMAND_RE), ("mention", _MENTION_RE), ("url", _URL_RE)):
        for m in pattern.finditer(text):
            found.append({"type": kind, "offset": utf16_len(text[: m.start()]), "length": utf16_len(m.group())})
    return _sorted_entities(found)


def _strip_reply(message: JSON) -> JSON:
    """Telegram does not nest reply_to_message inside reply_to_message."""
    return {k: v for k, v in message.items() if k != "reply_to_message"}


# --------------------------------------------------------------------------------------------------------------------
# The fake server.
# --------------------------------------------------------------------------------------------------------------------

Handler = Callable[[JSON], Awaitable[Any]]


class FakeTelegram:
    """The fake Bot API server. Use as ``async with FakeTelegram(token=...) as tg:``."""

    def __init__(
        self,
        token: str = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11",
        *,
        bot_username: str = "parley_test_bot",
        bot_name: str = "Parley",
        privacy_mode: bool = True,
    ) -> None:
        if not _TOKEN_RE.fullmatch(token):
            raise ValueError(f"not a Bot API token: {token!r}")
        self.token = token
        self.privacy_mode = privacy_mode
        self.bot: JSON = {
            "id": int(token.split(":", 1)[0]),
            "is_bot": True,
            "first_name": bot_name,
            "username": bot_username,
            "can_join_groups": True,
            "can_read_all_group_messages": not privacy_mode,
            "supports_inline_queries": False,
            "can_connect_to_business": False,
            "has_main_web_app": False,
        }
        # recorded traffic
        self.calls: list[Call] = []
        self.unimplemented: list[str] = []
        self.drafts: list[Draft] = []
        self.chat_actions: list[ChatActionRecord] = []
        self.answered_callbacks: list[JSON] = []
        self.withheld: list[JSON] = []  # group updates the bot never receives because of privacy mode
        self.webhook_deliveries: list[tuple[int, int | str]] = []  # (update_id, HTTP status or error)
        self.downloads: list[str] = []  # file_path of every file served from base_file_url, in order
        # state
        self.users: dict[int, JSON] = {int(self.bot["id"]): self._public_user(self.bot)}
        self.chats: dict[int, _Chat] = {}
        self.blocked: set[int] = set()
        self.commands: dict[tuple[str, str], list[JSON]] = {}
        self.webhook: JSON | None = None
        self.allowed_updates: list[str] | None = None
        self.files: dict[str, StoredFile] = {}  # by file_id
        self._files_by_path: dict[str, StoredFile] = {}
        self._updates: deque[JSON] = deque()
        self._delivered: set[int] = set()
        # Fresh id ranges per instance, as two real bots never share update ids, and tests that share one
        # Redis must not meet each other's users or chats.
        rng = random.Random()
        self._next_update_id = rng.randrange(100_000_000, 900_000_000)
        self._user_ids = itertools.count(rng.randrange(100_000_000, 5_000_000_000, 1000))
        self._group_ids = itertools.count(rng.randrange(1_000_000, 900_000_000, 1000))
        self._supergroup_ids = itertools.count(1_000_000_000_000 + rng.randrange(1, 900_000_000_000, 1000))
        self._callback_ids = itertools.count(9_000_000_000_001)
        self._callbacks: dict[str, bool] = {}
        self._faults: dict[str, deque[ApiFault]] = {}
        self._changed = asyncio.Event()
        self._poll_generation = 0
        self._inflight = 0
        self._last_activity = time.monotonic()
        self._closing = False
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._pusher: asyncio.Task[None] | None = None
        self.port = 0
        self._methods: dict[str, tuple[str, Handler]] = {}
        for name, handler in (
            ("getMe", self._get_me),
            ("logOut", self._true),
            ("close", self._true),
            ("getUpdates", self._get_updates),
            ("setWebhook", self._set_webhook),
            ("deleteWebhook", self._delete_webhook),
            ("getWebhookInfo", self._get_webhook_info),
            ("setMyCommands", self._set_my_commands),
            ("getMyCommands", self._get_my_commands),
            ("deleteMyCommands", self._delete_my_commands),
            ("sendMessage", self._send_message),
            ("editMessageText", self._edit_message_text),
            ("sendMessageDraft", self._send_message_draft),
            ("sendChatAction", self._send_chat_action),
            ("deleteMessage", self._delete_message),
            ("deleteMessages", self._delete_messages),
            ("getChat", self._get_chat),
            ("getChatMember", self._get_chat_member),
            ("getChatAdministrators", self._get_chat_administrators),
            ("answerCallbackQuery", self._answer_callback_query),
            ("getFile", self._get_file),
        ):
            self._methods[name.lower()] = (name, handler)

    # ---------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> FakeTelegram:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/bot{token}/{method}", self._handle)
        app.router.add_route("*", "/file/bot{token}/{path:.*}", self._handle_file)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._session = aiohttp.ClientSession()

    async def close(self) -> None:
        self._closing = True
        self._notify()
        await self._stop_pusher()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def base_url(self) -> str:
        """What ``ApplicationBuilder().base_url()`` takes: PTB appends the token and the method."""
        return f"http://127.0.0.1:{self.port}/bot"

    @property
    def base_file_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/file/bot"

    # ---------------------------------------------------------------- test-side: people and chats

    def user(
        self, first_name: str, username: str | None = None, *, last_name: str | None = None, language_code: str = "en"
    ) -> JSON:
        """A new human user with a fresh id."""
        user: JSON = {"id": next(self._user_ids), "is_bot": False, "first_name": first_name}
        if last_name:
            user["last_name"] = last_name
        if username:
            user["username"] = username
        user["language_code"] = language_code
        self.users[int(user["id"])] = user
        return user

    def private_chat(self, user: Mapping[str, Any]) -> JSON:
        """The private chat between ``user`` and the bot (created on first use; its id is the user's id)."""
        uid = int(user["id"])
        if uid not in self.chats:
            info: JSON = {"id": uid, "type": "private", "first_name": user["first_name"]}
            for key in ("last_name", "username"):
                if key in user:
                    info[key] = user[key]
            self.chats[uid] = _Chat(info=info, members={uid, int(self.bot["id"])})
        return self.chats[uid].info

    def group(
        self,
        title: str,
        forum: bool = False,
        *,
        supergroup: bool = False,
        username: str | None = None,
        owner: Mapping[str, Any] | None = None,
        admins: Iterable[Mapping[str, Any]] = (),
        bot_is_admin: bool = False,
    ) -> JSON:
        """A group with the bot in it: basic "group", or "supergroup" (always for forums, ``is_forum: true``)."""
        is_super = supergroup or forum
        chat_id = -next(self._supergroup_ids) if is_super else -next(self._group_ids)
        info: JSON = {"id": chat_id, "type": "supergroup" if is_super else "group", "title": title}
        if username:
            info["username"] = username
        if forum:
            info["is_forum"] = True
        # In forums message 1 is the "General" topic (thread id 1): real topics get ids from 2 on.
        chat = _Chat(info=info, forum=forum, members={int(self.bot["id"])}, next_message_id=2 if forum else 1)
        self.chats[chat_id] = chat
        if owner is not None:
            chat.owner = int(owner["id"])
            chat.members.add(chat.owner)
        self.set_admins(info, admins, bot=bot_is_admin)
        return info

    def set_admins(self, chat: Mapping[str, Any], admins: Iterable[Mapping[str, Any]], *, bot: bool = False) -> None:
        """Replace the chat's administrators (the owner stays the creator); ``bot`` makes the bot an admin."""
        rec = self._chat_rec(chat)
        rec.admins = {int(u["id"]) for u in admins}
        rec.members |= rec.admins
        if bot:
            rec.admins.add(int(self.bot["id"]))

    def create_topic(self, chat: Mapping[str, Any], name: str, *, by: Mapping[str, Any] | None = None) -> int:
        """Create a forum topic; returns its message_thread_id (the id of the forum_topic_created message)."""
        rec = self._chat_rec(chat)
        if not rec.forum:
            raise ValueError("topics exist only in forum supergroups")
        creator = dict(by) if by is not None else self.users[int(self.bot["id"])]
        mid = self._next_mid(rec)
        message: JSON = {
            "message_id": mid,
            "message_thread_id": mid,
            "from": creator,
            "chat": rec.info,
            "date": int(time.time()),
            "forum_topic_created": {"name": name, "icon_color": 7322096},
            "is_topic_message": True,
        }
        rec.topics[mid] = message
        rec.messages[mid] = _Message(data=message, from_bot=creator["id"] == self.bot["id"])
        if creator["id"] != self.bot["id"]:
            self._enqueue({"message": message})
        return mid

    def block(self, user: Mapping[str, Any]) -> None:
        """The user blocks the bot: sends to their private chat answer 403."""
        self.blocked.add(int(user["id"]))

    # ---------------------------------------------------------------- test-side: what people do

    def user_says(
        self,
        chat: Mapping[str, Any],
        user: Mapping[str, Any],
        text: str,
        *,
        reply_to: int | Mapping[str, Any] | None = None,
        thread_id: int | None = None,
        entities: list[JSON] | None = None,
        enqueue: bool = True,
    ) -> JSON:
        """A user sends ``text``; returns the Update (queued for getUpdates / pushed to the webhook).

        Commands (``/cmd``, ``/cmd@bot``), ``@mentions`` and URLs get their entities as Telegram adds them,
        unless ``entities`` is given.  In forums, ``thread_id`` names a topic from ``create_topic``; the message
        then carries ``is_topic_message`` and, like on Telegram, replies to the topic's creation message when it
        replies to nothing else.  With ``enqueue=False`` the update is only built (for ``deliver_webhook``).
        """
        rec = self._chat_rec(chat)
        message = self._user_message(rec, user, reply_to, thread_id)
        message["text"] = text
        ents = detect_entities(text) if entities is None else entities
        if ents:
            message["entities"] = ents
        rec.messages[int(message["message_id"])] = _Message(data=message, from_bot=False, raw_text=text)
        return self._deliver_user_message(rec, message, enqueue=enqueue)

    def user_sends_document(
        self,
        chat: Mapping[str, Any],
        user: Mapping[str, Any],
        data: bytes,
        file_name: str,
        mime_type: str = "application/octet-stream",
        caption: str | None = None,
        reply_to: int | Mapping[str, Any] | None = None,
        thread_id: int | None = None,
        *,
        caption_entities: list[JSON] | None = None,
        file_size: int | None = None,
        enqueue: bool = True,
    ) -> JSON:
        """A user sends a file as a document (with an optional ``caption``); returns the Update, like ``user_says``.

        The message carries ``document`` = {file_id, file_unique_id, file_name, mime_type, file_size} and, with a
        caption, ``caption`` + ``caption_entities`` (commands, mentions, URLs detected as in ``user_says`` unless
        ``caption_entities`` is given).  The bytes are stored: getFile answers for ``file_id`` and
        ``base_file_url`` serves them.  ``file_size`` declares a different size than ``len(data)`` (getFile
        refuses files over 20 MB) without storing that many bytes.
        """
        rec = self._chat_rec(chat)
        message = self._user_message(rec, user, reply_to, thread_id)
        stored = self.store_file(data, file_name, kind="documents", file_size=file_size)
        message["document"] = {
            "file_name": file_name,
            "mime_type": mime_type,
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
        }
        if caption is not None:
            ents = detect_entities(caption) if caption_entities is None else caption_entities
            caption, ents = _trim(caption, ents)
            if len(caption) > MAX_CAPTION_LENGTH:
                raise ValueError(f"Telegram captions are at most {MAX_CAPTION_LENGTH} characters")
            if caption:
                message["caption"] = caption
                if ents:
                    message["caption_entities"] = ents
        rec.messages[int(message["message_id"])] = _Message(data=message, from_bot=False, raw_text=caption or "")
        return self._deliver_user_message(rec, message, enqueue=enqueue)

    def store_file(
        self, data: bytes, file_name: str = "", *, kind: str = "documents", file_size: int | None = None
    ) -> StoredFile:
        """Store bytes as Telegram would (``<kind>/file_<n>.<ext>``); getFile and ``base_file_url`` then serve them."""
        n = len(self._files_by_path)
        ext = file_name.rsplit(".", 1)[1] if "." in file_name.strip(".") else ""
        path = f"{kind}/file_{n}" + (f".{ext}" if ext and re.fullmatch(r"[A-Za-z0-9]{1,10}", ext) else "")
        stored = StoredFile(
            file_id="BQACAgIAAxkBAA" + secrets.token_urlsafe(48)[:57],
            file_unique_id="AgAD" + secrets.token_urlsafe(9)[:12],
            file_path=path,
            file_size=len(data) if file_size is None else int(file_size),
            data=bytes(data),
        )
        self.files[stored.file_id] = stored
        self._files_by_path[path] = stored
        return stored

    def _user_message(
        self,
        rec: _Chat,
        user: Mapping[str, Any],
        reply_to: int | Mapping[str, Any] | None,
        thread_id: int | None,
    ) -> JSON:
        """The common part of a message a user sends: id, from, chat, date, topic and reply."""
        uid = int(user["id"])
        rec.members.add(uid)
        self.users.setdefault(uid, dict(user))
        message: JSON = {
            "message_id": self._next_mid(rec),
            "from": dict(user),
            "chat": rec.info,
            "date": int(time.time()),
        }
        if thread_id is not None and not (rec.forum and thread_id == 1):
            if not rec.forum or thread_id not in rec.topics:
                raise ValueError(f"chat {rec.id} has no topic {thread_id}; create it with create_topic()")
            message["message_thread_id"] = thread_id
            message["is_topic_message"] = True
        reply_msg: JSON | None = None
        if reply_to is not None:
            rid = reply_to if isinstance(reply_to, int) else int(reply_to["message_id"])
            if rid not in rec.messages:
                raise ValueError(f"no message {rid} in chat {rec.id}")
            reply_msg = rec.messages[rid].data
        elif "message_thread_id" in message:
            reply_msg = rec.topics[thread_id] if thread_id is not None else None
        if reply_msg is not None:
            message["reply_to_message"] = _strip_reply(reply_msg)
        return message

    def _deliver_user_message(self, rec: _Chat, message: JSON, *, enqueue: bool) -> JSON:
        update: JSON = {"message": message}
        if enqueue:
            if self._bot_sees(rec, message):
                self._enqueue(update)
            else:
                update["update_id"] = self._take_update_id()
                self.withheld.append(update)
        else:
            update["update_id"] = self._take_update_id()
        return {"update_id": update["update_id"], "message": message}

    def user_edits(self, chat: Mapping[str, Any], user: Mapping[str, Any], message_id: int, text: str) -> JSON:
        """The user edits one of their messages: an ``edited_message`` update."""
        rec = self._chat_rec(chat)
        stored = rec.messages.get(message_id)
        if stored is None or stored.from_bot or stored.data["from"]["id"] != user["id"]:
            raise ValueError(f"user {user['id']} has no message {message_id} in chat {rec.id}")
        stored.data = {**stored.data, "text": text, "edit_date": int(time.time())}
        ents = detect_entities(text)
        stored.data.pop("entities", None)
        if ents:
            stored.data["entities"] = ents
        return self._enqueue({"edited_message": stored.data})

    def user_clicks(self, chat: Mapping[str, Any], user: Mapping[str, Any], message_id: int, data: str) -> JSON:
        """The user presses an inline-keyboard button with ``callback_data=data`` under a bot message."""
        rec = self._chat_rec(chat)
        stored = rec.messages.get(message_id)
        if stored is None:
            raise ValueError(f"no message {message_id} in chat {rec.id}")
        query_id = str(next(self._callback_ids))
        self._callbacks[query_id] = False
        query: JSON = {
            "id": query_id,
            "from": dict(user),
            "message": stored.data,
            "chat_instance": str(abs(rec.id) * 7919),
            "data": data,
        }
        return self._enqueue({"callback_query": query})

    def push_update(self, raw: JSON) -> JSON:
        """Queue any raw update as is (hostile, malformed, duplicate update_id...). Assigns an update_id if absent."""
        update = dict(raw)
        if "update_id" not in update:
            update["update_id"] = self._take_update_id()
        elif isinstance(update["update_id"], int):
            self._next_update_id = max(self._next_update_id, update["update_id"] + 1)
        self._updates.append(update)
        self._notify()
        return update

    # ---------------------------------------------------------------- test-side: inspection

    def messages(self, chat: Mapping[str, Any] | int, thread_id: int | None = None) -> list[BotMessage]:
        """The bot's messages currently in the chat (deleted ones gone, edits applied), oldest first."""
        rec = self._chat_rec(chat)
        out: list[BotMessage] = []
        for stored in rec.messages.values():
            data = stored.data
            if not stored.from_bot or "text" not in data:
                continue
            if thread_id is not None and data.get("message_thread_id") != thread_id:
                continue
            reply = data.get("reply_to_message")
            out.append(
                BotMessage(
                    message_id=int(data["message_id"]),
                    chat_id=rec.id,
                    text=str(data["text"]),
                    entities=list(data.get("entities", [])),
                    parse_mode=stored.parse_mode,
                    raw_text=stored.raw_text,
                    thread_id=data.get("message_thread_id"),
                    reply_to_message_id=int(reply["message_id"]) if reply else None,
                    reply_markup=data.get("reply_markup"),
                    edits=stored.edits,
                    raw=data,
                )
            )
        return out

    def calls_to(self, method: str) -> list[JSON]:
        """The params of every call of ``method`` (case-insensitive), in order."""
        return [c.params for c in self.calls if c.method.lower() == method.lower()]

    @property
    def pending_updates(self) -> list[JSON]:
        """Updates queued and not yet confirmed (polling) or acknowledged (webhook)."""
        return list(self._updates)

    def assert_all_implemented(self) -> None:
        if self.unimplemented:
            names = ", ".join(sorted(set(self.unimplemented)))
            raise AssertionError(f"the bot called Bot API methods the fake does not implement: {names}")

    # ---------------------------------------------------------------- test-side: faults

    def fail_next(
        self, method: str, status: int = 429, *, retry_after: int | None = None, description: str | None = None
    ) -> None:
        """The next call of ``method`` answers ``status`` (then the method behaves normally again).

        429 carries ``parameters.retry_after`` (default 1 s) and Telegram's "Too Many Requests: retry after N".
        Repeated calls queue several faults.
        """
        if status == 429 and retry_after is None:
            retry_after = 1
        if description is None:
            base = _DEFAULT_DESCRIPTIONS.get(status, "Error")
            description = f"{base}: retry after {retry_after}" if status == 429 else base
        params = {"retry_after": retry_after} if retry_after is not None else None
        self._faults.setdefault(method.lower(), deque()).append(ApiFault(status, description, params))

    # ---------------------------------------------------------------- test-side: webhook

    async def deliver_webhook(self, update: Mapping[str, Any], *, secret_token: str | bool | None = True) -> int:
        """POST ``update`` to the registered webhook like Telegram does; returns the HTTP status.

        ``secret_token=True`` (default) sends the secret registered with setWebhook (if any); a string sends
        that string; ``None``/``False`` sends no secret header.
        """
        if self.webhook is None:
            raise RuntimeError("no webhook registered (the bot never called setWebhook)")
        secret = self.webhook.get("secret_token") if secret_token is True else (secret_token or None)
        return await self._post_webhook(dict(update), secret)

    # ---------------------------------------------------------------- test-side: waiting

    # The wait helpers take a timeout on purpose (tests read better than with asyncio.timeout blocks).
    async def wait_for(
        self,
        predicate: Callable[[], T | None],
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
        interval: float = 0.01,
    ) -> T:
        """Poll ``predicate`` until it returns something truthy; return it (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise AssertionError(f"condition not met within {timeout} s: {predicate!r}")
            await asyncio.sleep(interval)

    async def wait_for_message(
        self,
        chat: Mapping[str, Any] | int,
        contains: str = "",
        *,
        thread_id: int | None = None,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> BotMessage:
        """Wait until the bot has a message in ``chat`` whose text contains ``contains``; return the newest."""

        def find() -> BotMessage | None:
            hits = [m for m in self.messages(chat, thread_id) if contains in m.text]
            return hits[-1] if hits else None

        return await self.wait_for(find, timeout=timeout)

    async def wait_for_idle(self, *, quiet: float = 0.2, timeout: float = 5.0) -> None:  # noqa: ASYNC109
        """Wait until all queued updates were delivered and the bot made no call but getUpdates for ``quiet`` s."""

        def idle() -> bool:
            undelivered = [u for u in self._updates if u.get("update_id") not in self._delivered]
            return not undelivered and self._inflight == 0 and time.monotonic() - self._last_activity >= quiet

        await self.wait_for(idle, timeout=timeout)

    # ---------------------------------------------------------------- HTTP plumbing

    async def _handle_file(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        if not _TOKEN_RE.fullmatch(token):
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        if token != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        stored = self._files_by_path.get(request.match_info["path"])
        if stored is None or request.method not in ("GET", "HEAD"):
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        self.downloads.append(stored.file_path)
        self._touch()
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _decode(self, request: web.Request) -> JSON:
        params: JSON = {}
        for key, value in request.query.items():
            params[key] = self._decode_value(key, value)
        if request.method != "POST" or not request.can_read_body:
            return params
        ctype = request.content_type
        if ctype == "application/json":
            body = await request.json()
            if not isinstance(body, dict):
                raise ApiError(400, "Bad Request: request body must be a JSON object")
            params.update(body)
        elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
            form = await request.post()
            for name, item in form.items():
                if isinstance(item, str):
                    params[name] = self._decode_value(name, item)
                elif isinstance(item, bytes | bytearray):
                    params[name] = self._decode_value(name, bytes(item).decode())
                else:  # an uploaded file
                    params[name] = {"filename": item.filename, "size": len(item.file.read())}
        return params

    @staticmethod
    def _decode_value(key: str, value: str) -> Any:
        if key in _STRING_PARAMS:
            return value
        try:
            return json.loads(value)
        except ValueError:
            return value

    @staticmethod
    def _envelope_error(err: ApiError | ApiFault) -> web.Response:
        body: JSON = {"ok": False, "error_code": err.status, "description": err.description}
        if err.parameters:
            body["parameters"] = err.parameters
        return web.json_response(body, status=err.status)

    async def _handle(self, request: web.Request) -> web.Response:
        token = request.match_info["token"]
        raw_method = request.match_info["method"]
        if not _TOKEN_RE.fullmatch(token):
            return web.json_response({"ok": False, "error_code": 404, "description": "Not Found"}, status=404)
        if token != self.token:
            return web.json_response({"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401)
        spec = self._methods.get(raw_method.lower())
        name = spec[0] if spec else raw_method
        try:
            params = await self._decode(request)
        except ApiError as err:
            return self._envelope_error(err)
        except ValueError:
            return self._envelope_error(_bad("can't parse request body"))
        self.calls.append(Call(name, params))
        if name != "getUpdates":
            self._touch()
        if spec is None:
            self.unimplemented.append(name)
            return web.json_response({"ok": False, "error_code": 404, "description": _UNIMPLEMENTED}, status=404)
        faults = self._faults.get(name.lower())
        if faults:
            fault = faults.popleft()
            return self._envelope_error(fault)
        counted = name != "getUpdates"
        if counted:
            self._inflight += 1
        try:
            result = await spec[1](params)
        except ApiError as err:
            return self._envelope_error(err)
        finally:
            if counted:
                self._inflight -= 1
                self._touch()
        return web.json_response({"ok": True, "result": result})

    def _touch(self) -> None:
        self._last_activity = time.monotonic()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ---------------------------------------------------------------- state helpers

    @staticmethod
    def _public_user(user: Mapping[str, Any]) -> JSON:
        keys = ("id", "is_bot", "first_name", "last_name", "username", "language_code")
        return {k: user[k] for k in keys if k in user}

    def _chat_rec(self, chat: Mapping[str, Any] | int) -> _Chat:
        chat_id = chat if isinstance(chat, int) else int(chat["id"])
        if chat_id not in self.chats:
            raise KeyError(f"unknown chat {chat_id}")
        return self.chats[chat_id]

    def _next_mid(self, rec: _Chat) -> int:
        mid = rec.next_message_id
        rec.next_message_id += 1
        return mid

    def _take_update_id(self) -> int:
        uid = self._next_update_id
        self._next_update_id += 1
        return uid

    def _enqueue(self, update: JSON) -> JSON:
        update["update_id"] = self._take_update_id()
        self._updates.append(update)
        self._notify()
        return update

    def _bot_sees(self, rec: _Chat, message: Mapping[str, Any]) -> bool:
        """Privacy mode: in groups a non-admin bot only gets commands, replies to it and mentions of it."""
        if rec.type == "private" or not self.privacy_mode or int(self.bot["id"]) in rec.admins:
            return True
        text = str(message.get("text", message.get("caption", "")))
        username = str(self.bot["username"]).lower()
        for ent in message.get("entities", message.get("caption_entities", [])):
            piece = text.encode("utf-16-le")[2 * ent["offset"] : 2 * (ent["offset"] + ent["length"])]
            word = piece.decode("utf-16-le").lower()
            if ent["type"] == "bot_command" and ("@" not in word or word.endswith("@" + username)):
                return True
            if ent["type"] == "mention" and word == "@" + username:
                return True
        reply = message.get("reply_to_message")
        return bool(reply and reply.get("from", {}).get("id") == self.bot["id"] and "forum_topic_created" not in reply)

    def _require_chat(self, params: Mapping[str, Any]) -> _Chat:
        chat_id = params.get("chat_id")
        if chat_id is None or chat_id == "":
            raise _bad("chat_id is empty")
        if isinstance(chat_id, str):
            if chat_id.startswith("@"):
                for rec in self.chats.values():
                    if str(rec.info.get("username", "")).lower() == chat_id[1:].lower() and rec.type != "private":
                        return rec
                raise _bad("chat not found")
            try:
                chat_id = int(chat_id)
            except ValueError:
                raise _bad("chat not found") from None
        if not isinstance(chat_id, int) or chat_id not in self.chats:
            raise _bad("chat not found")
        return self.chats[chat_id]

    def _check_can_write(self, rec: _Chat) -> None:
        if rec.type == "private" and rec.id in self.blocked:
            raise ApiError(403, "Forbidden: bot was blocked by the user")

    @staticmethod
    def _int(params: Mapping[str, Any], key: str, *, required: bool = False) -> int | None:
        value = params.get(key)
        if value is None or value == "":
            if required:
                raise _bad(f"{key} is empty" if key != "message_id" else "message identifier is not specified")
            return None
        try:
            return int(value)
        except (TypeError, ValueError):
            raise _bad(f"invalid {key} specified") from None

    def _format(self, text: str, parse_mode: Any, entities: Any) -> tuple[str, list[JSON]]:
        if parse_mode:
            mode = str(parse_mode).lower()
            if mode == "html":
                return parse_html(text)
            if mode == "markdownv2":
                return parse_markdown_v2(text)
            if mode == "markdown":
                return parse_markdown_legacy(text)
            raise _bad("unsupported parse_mode")
        if entities:
            if not isinstance(entities, list) or not all(isinstance(e, dict) for e in entities):
                raise _bad("can't parse entities JSON object")
            total = utf16_len(text)
            for ent in entities:
                off, length = ent.get("offset"), ent.get("length")
                if not isinstance(off, int) or not isinstance(length, int) or off < 0 or length < 0:
                    raise _bad("can't parse entities: entity offset/length must be non-negative integers")
                if off + length > total:
                    raise _bad("can't parse entities: entity beyond the end of the text")
            return text, _sorted_entities([dict(e) for e in entities])
        return text, []

    def _thread(self, rec: _Chat, params: Mapping[str, Any]) -> int | None:
        thread_id = self._int(params, "message_thread_id")
        if thread_id is None or (thread_id == 1 and rec.forum):
            return None
        if rec.forum:
            if thread_id not in rec.topics:
                raise _bad("message thread not found")
        elif rec.type != "supergroup":
            raise _bad("message thread not found")
        return thread_id

    def _reply(self, rec: _Chat, params: Mapping[str, Any]) -> JSON | None:
        reply_params = params.get("reply_parameters")
        if isinstance(reply_params, str):
            try:
                reply_params = json.loads(reply_params)
            except ValueError:
                raise _bad("can't parse reply parameters JSON object") from None
        if reply_params is None and params.get("reply_to_message_id") is not None:
            reply_params = {
                "message_id": params["reply_to_message_id"],
                "allow_sending_without_reply": params.get("allow_sending_without_reply", False),
            }
        if reply_params is None:
            return None
        if not isinstance(reply_params, dict) or "message_id" not in reply_params:
            raise _bad("can't parse reply parameters JSON object")
        target = rec
        if reply_params.get("chat_id") not in (None, rec.id):
            target = self._require_chat({"chat_id": reply_params["chat_id"]})
        stored = target.messages.get(int(reply_params["message_id"]))
        if stored is None:
            if reply_params.get("allow_sending_without_reply"):
                return None
            raise _bad("message to be replied not found")
        return stored.data

    def _text_checks(self, raw: Any, parse_mode: Any, entities: Any, *, too_long: str) -> tuple[str, list[JSON]]:
        if raw is None or raw == "":
            raise _bad("message text is empty")
        text, ents = self._format(str(raw), parse_mode, entities)
        text, ents = _trim(text, ents)
        if not text:
            raise _bad("message text is empty")
        if len(text) > MAX_TEXT_LENGTH:
            raise _bad(too_long)
        return text, ents

    # ---------------------------------------------------------------- Bot API methods

    async def _true(self, params: JSON) -> bool:
        return True

    async def _get_me(self, params: JSON) -> JSON:
        return dict(self.bot)

    async def _get_updates(self, params: JSON) -> list[JSON]:
        if self.webhook is not None:
            raise ApiError(
                409,
                "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete "
                "the webhook first",
            )
        offset = self._int(params, "offset")
        limit = self._int(params, "limit") or 100
        limit = min(max(limit, 1), 100)
        timeout = float(params.get("timeout") or 0)
        allowed = params.get("allowed_updates")
        if allowed is not None:
            self.allowed_updates = list(allowed) if allowed else None
        if offset is not None:
            if offset < 0:
                while len(self._updates) > -offset:
                    self._updates.popleft()
            else:
                while self._updates and int(self._updates[0].get("update_id", 0)) < offset:
                    self._delivered.discard(self._updates.popleft().get("update_id", 0))
        # A newer getUpdates terminates an older one still waiting (Telegram answers the old one 409).
        self._poll_generation += 1
        generation = self._poll_generation
        self._notify()
        deadline = time.monotonic() + timeout
        while True:
            if generation != self._poll_generation:
                raise ApiError(
                    409,
                    "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running",
                )
            ready = self._deliverable()
            if ready or self._closing:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)
        batch = ready[:limit]
        self._delivered.update(int(u["update_id"]) for u in batch)
        return batch

    def _allowed(self, update: Mapping[str, Any]) -> bool:
        kinds = [k for k in update if k != "update_id"]
        if not kinds:
            return True
        if self.allowed_updates:
            return kinds[0] in self.allowed_updates
        return kinds[0] not in _NOT_DEFAULT_UPDATES

    def _deliverable(self) -> list[JSON]:
        kept: deque[JSON] = deque(u for u in self._updates if self._allowed(u))
        self._updates = kept
        return list(kept)

    async def _set_webhook(self, params: JSON) -> bool:
        url = str(params.get("url") or "")
        if not url:
            return await self._delete_webhook(params)
        if not re.match(r"https?://[^/\s]+", url):
            raise _bad("bad webhook: An HTTPS URL must be provided for webhook")
        secret = params.get("secret_token")
        if secret is not None and not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", str(secret)):
            raise _bad("bad webhook: secret token contains unallowed characters")
        max_connections = self._int(params, "max_connections") or 40
        if not 1 <= max_connections <= 100:
            raise _bad("bad webhook: max_connections must be between 1 and 100")
        if params.get("drop_pending_updates"):
            self._updates.clear()
        allowed = params.get("allowed_updates")
        if allowed is not None:
            self.allowed_updates = list(allowed) if allowed else None
        self.webhook = {
            "url": url,
            "secret_token": str(secret) if secret is not None else None,
            "max_connections": max_connections,
            "ip_address": params.get("ip_address"),
            "last_error_date": None,
            "last_error_message": None,
        }
        self._poll_generation += 1  # a waiting getUpdates is terminated
        self._notify()
        await self._stop_pusher()
        self._pusher = asyncio.create_task(self._push_loop(), name="FakeTelegram:webhook-pusher")
        return True

    async def _delete_webhook(self, params: JSON) -> bool:
        if params.get("drop_pending_updates"):
            self._updates.clear()
        self.webhook = None
        await self._stop_pusher()
        return True

    async def _get_webhook_info(self, params: JSON) -> JSON:
        info: JSON = {"url": "", "has_custom_certificate": False, "pending_update_count": len(self._updates)}
        if self.webhook is not None:
            info["url"] = self.webhook["url"]
            info["max_connections"] = self.webhook["max_connections"]
            if self.webhook["ip_address"]:
                info["ip_address"] = self.webhook["ip_address"]
            if self.webhook["last_error_date"]:
                info["last_error_date"] = self.webhook["last_error_date"]
                info["last_error_message"] = self.webhook["last_error_message"]
            if self.allowed_updates:
                info["allowed_updates"] = list(self.allowed_updates)
        return info

    @staticmethod
    def _commands_key(params: Mapping[str, Any]) -> tuple[str, str]:
        scope = params.get("scope") or {"type": "default"}
        return json.dumps(scope, sort_keys=True), str(params.get("language_code") or "")

    async def _set_my_commands(self, params: JSON) -> bool:
        commands = params.get("commands")
        if not isinstance(commands, list):
            raise _bad("can't parse commands JSON object")
        if len(commands) > 100:
            raise _bad("too many commands specified")
        clean: list[JSON] = []
        for cmd in commands:
            if not isinstance(cmd, dict):
                raise _bad("can't parse BotCommand JSON object")
            name = str(cmd.get("command", ""))
            desc = str(cmd.get("description", ""))
            if not re.fullmatch(r"[a-z0-9_]{1,32}", name):
                raise _bad("BOT_COMMAND_INVALID")
            if not 1 <= len(desc) <= 256:
                raise _bad("BOT_COMMAND_DESCRIPTION_INVALID")
            clean.append({"command": name, "description": desc})
        key = self._commands_key(params)
        if clean:
            self.commands[key] = clean
        else:
            self.commands.pop(key, None)
        return True

    async def _get_my_commands(self, params: JSON) -> list[JSON]:
        return list(self.commands.get(self._commands_key(params), []))

    async def _delete_my_commands(self, params: JSON) -> bool:
        self.commands.pop(self._commands_key(params), None)
        return True

    async def _send_message(self, params: JSON) -> JSON:
        rec = self._require_chat(params)
        self._check_can_write(rec)
        text, ents = self._text_checks(
            params.get("text"), params.get("parse_mode"), params.get("entities"), too_long="message is too long"
        )
        thread_id = self._thread(rec, params)
        reply = self._reply(rec, params)
        if thread_id is None and rec.forum and reply is not None and reply.get("is_topic_message"):
            thread_id = int(reply["message_thread_id"])  # like Telegram: a reply lands in the replied-to topic
        mid = self._next_mid(rec)
        message: JSON = {
            "message_id": mid,
            "from": self._public_user(self.bot),
            "chat": rec.info,
            "date": int(time.time()),
        }
        if thread_id is not None:
            message["message_thread_id"] = thread_id
            if rec.forum:
                message["is_topic_message"] = True
                if reply is None:
                    reply = rec.topics[thread_id]
        if reply is not None:
            message["reply_to_message"] = _strip_reply(reply)
        message["text"] = text
        if ents:
            message["entities"] = ents
        markup = params.get("reply_markup")
        if isinstance(markup, dict) and "inline_keyboard" in markup:
            message["reply_markup"] = markup
        if isinstance(params.get("link_preview_options"), dict):
            message["link_preview_options"] = params["link_preview_options"]
        rec.messages[mid] = _Message(
            data=message, from_bot=True, parse_mode=params.get("parse_mode"), raw_text=str(params["text"])
        )
        return message

    async def _edit_message_text(self, params: JSON) -> JSON | bool:
        if params.get("inline_message_id"):
            self._text_checks(
                params.get("text"), params.get("parse_mode"), params.get("entities"), too_long="MESSAGE_TOO_LONG"
            )
            return True
        rec = self._require_chat(params)
        mid = self._int(params, "message_id", required=True)
        assert mid is not None
        text, ents = self._text_checks(
            params.get("text"), params.get("parse_mode"), params.get("entities"), too_long="MESSAGE_TOO_LONG"
        )
        stored = rec.messages.get(mid)
        if stored is None:
            raise _bad("message to edit not found")
        if not stored.from_bot or "text" not in stored.data:
            raise _bad("message can't be edited")
        markup = params.get("reply_markup")
        new_markup = markup if isinstance(markup, dict) and "inline_keyboard" in markup else None
        if (
            stored.data["text"] == text
            and stored.data.get("entities", []) == ents
            and stored.data.get("reply_markup") == new_markup
        ):
            raise _bad(_NOT_MODIFIED[len("Bad Request: ") :])
        data = {k: v for k, v in stored.data.items() if k not in ("entities", "reply_markup")}
        data["text"] = text
        if ents:
            data["entities"] = ents
        if new_markup is not None:
            data["reply_markup"] = new_markup
        data["edit_date"] = int(time.time())
        stored.data = data
        stored.parse_mode = params.get("parse_mode")
        stored.raw_text = str(params["text"])
        stored.edits += 1
        return data

    async def _send_message_draft(self, params: JSON) -> bool:
        rec = self._require_chat(params)
        if rec.type != "private":
            raise _bad("message drafts can be sent only to private chats")
        self._check_can_write(rec)
        draft_id = self._int(params, "draft_id", required=True)
        if not draft_id:
            raise _bad("draft_id must be non-zero")
        raw = params.get("text")
        text, ents = self._format(str(raw or ""), params.get("parse_mode"), params.get("entities"))
        text, ents = _trim(text, ents)
        if len(text) > MAX_TEXT_LENGTH:
            raise _bad("message is too long")
        thread_id = self._int(params, "message_thread_id")
        self.drafts.append(
            Draft(
                chat_id=rec.id,
                draft_id=draft_id,
                text=text,
                entities=ents,
                parse_mode=params.get("parse_mode"),
                thread_id=thread_id,
                at=time.monotonic(),
            )
        )
        return True

    async def _send_chat_action(self, params: JSON) -> bool:
        rec = self._require_chat(params)
        self._check_can_write(rec)
        action = params.get("action")
        if action not in _CHAT_ACTIONS:
            raise _bad("wrong parameter action in request")
        thread_id = self._thread(rec, params)
        self.chat_actions.append(ChatActionRecord(rec.id, str(action), thread_id, time.monotonic()))
        return True

    def _delete_one(self, rec: _Chat, mid: int) -> None:
        stored = rec.messages.get(mid)
        if stored is None:
            raise _bad("message to delete not found")
        if not stored.from_bot and rec.type != "private" and int(self.bot["id"]) not in rec.admins:
            raise _bad("message can't be deleted")
        del rec.messages[mid]

    async def _delete_message(self, params: JSON) -> bool:
        rec = self._require_chat(params)
        mid = self._int(params, "message_id", required=True)
        assert mid is not None
        self._delete_one(rec, mid)
        return True

    async def _delete_messages(self, params: JSON) -> bool:
        rec = self._require_chat(params)
        ids = params.get("message_ids")
        if not isinstance(ids, list) or not 1 <= len(ids) <= 100:
            raise _bad("message_ids must be a list of 1-100 message identifiers")
        deleted = 0
        for mid in ids:
            with contextlib.suppress(ApiError):
                self._delete_one(rec, int(mid))
                deleted += 1
        if not deleted:
            raise _bad("message to delete not found")
        return True

    async def _get_chat(self, params: JSON) -> JSON:
        rec = self._require_chat(params)
        full: JSON = {
            **rec.info,
            "accent_color_id": 0,
            "max_reaction_count": 11,
            "accepted_gift_types": {
                "unlimited_gifts": True,
                "limited_gifts": True,
                "unique_gifts": True,
                "premium_subscription": True,
                "gifts_from_channels": True,
            },
        }
        return full

    def _member(self, rec: _Chat, uid: int) -> JSON:
        user = self.users.get(uid)
        if user is None:
            raise _bad("user not found")
        public = self._public_user(user)
        if rec.type != "private" and uid == rec.owner:
            return {"status": "creator", "user": public, "is_anonymous": False}
        if rec.type != "private" and uid in rec.admins:
            rights = {
                "can_be_edited": False,
                "is_anonymous": False,
                "can_manage_chat": True,
                "can_delete_messages": True,
                "can_manage_video_chats": True,
                "can_restrict_members": True,
                "can_promote_members": False,
                "can_change_info": True,
                "can_invite_users": True,
                "can_post_stories": False,
                "can_edit_stories": False,
                "can_delete_stories": False,
                "can_pin_messages": True,
            }
            if rec.forum:
                rights["can_manage_topics"] = True
            return {"status": "administrator", "user": public, **rights}
        if uid in rec.members:
            return {"status": "member", "user": public}
        return {"status": "left", "user": public}

    async def _get_chat_member(self, params: JSON) -> JSON:
        rec = self._require_chat(params)
        uid = self._int(params, "user_id", required=True)
        assert uid is not None
        return self._member(rec, uid)

    async def _get_chat_administrators(self, params: JSON) -> list[JSON]:
        rec = self._require_chat(params)
        if rec.type == "private":
            raise _bad("there are no administrators in the private chat")
        ids = ([rec.owner] if rec.owner is not None else []) + sorted(rec.admins - {rec.owner})
        return [self._member(rec, uid) for uid in ids]

    async def _answer_callback_query(self, params: JSON) -> bool:
        query_id = str(params.get("callback_query_id") or "")
        if self._callbacks.get(query_id, True):
            raise _bad("query is too old and response timeout expired or query ID is invalid")
        self._callbacks[query_id] = True
        self.answered_callbacks.append(dict(params))
        return True

    async def _get_file(self, params: JSON) -> JSON:
        file_id = params.get("file_id")
        if file_id is None or file_id == "":
            raise _bad("file_id is empty")
        stored = self.files.get(str(file_id))
        if stored is None:
            raise _bad("invalid file_id")
        if stored.file_size > MAX_DOWNLOAD_SIZE:
            raise _bad("file is too big")
        return {
            "file_id": stored.file_id,
            "file_unique_id": stored.file_unique_id,
            "file_size": stored.file_size,
            "file_path": stored.file_path,
        }

    # ---------------------------------------------------------------- webhook pushing

    async def _post_webhook(self, update: JSON, secret: str | None) -> int:
        assert self.webhook is not None
        assert self._session is not None
        headers = {"Content-Type": "application/json"}
        if secret:
            headers["X-Telegram-Bot-Api-Secret-Token"] = secret
        async with self._session.post(
            self.webhook["url"], data=json.dumps(update), headers=headers, timeout=aiohttp.ClientTimeout(total=10)
        ) as resp:
            await resp.read()
            return resp.status

    async def _push_loop(self) -> None:
        """Like Telegram: push queued updates to the webhook one by one, retrying until one is acknowledged."""
        while not self._closing and self.webhook is not None:
            changed = self._changed
            ready = self._deliverable()
            if not ready:
                await changed.wait()
                continue
            update = ready[0]
            try:
                status: int | str = await self._post_webhook(update, self.webhook.get("secret_token"))
            except (aiohttp.ClientError, TimeoutError) as exc:
                status = f"{type(exc).__name__}: {exc}"
            self.webhook_deliveries.append((int(update["update_id"]), status))
            if isinstance(status, int) and 200 <= status < 300:
                self._delivered.add(int(update["update_id"]))
                with contextlib.suppress(ValueError):
                    self._updates.remove(update)
                continue
            if self.webhook is not None:
                self.webhook["last_error_date"] = int(time.time())
                self.webhook["last_error_message"] = (
                    f"Wrong response from the webhook: {status}" if isinstance(status, int) else "Connection refused"
                )
            await asyncio.sleep(0.05)

    async def _stop_pusher(self) -> None:
        task, self._pusher = self._pusher, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def random_token() -> str:
    """A well-formed bot token with a random bot id (tests sharing one Redis never share a bot)."""
    alphabet = string.ascii_letters + string.digits
    return f"{random.randrange(10**8, 10**10)}:{''.join(random.choices(alphabet, k=35))}"


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a bot's webhook server in tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


__all__ = [
    "ApiError",
    "ApiFault",
    "BotMessage",
    "Call",
    "ChatActionRecord",
    "Draft",
    "FakeTelegram",
    "StoredFile",
    "detect_entities",
    "free_port",
    "parse_html",
    "parse_markdown_legacy",
    "parse_markdown_v2",
    "utf16_len",
]
