"""Conversation identity: who is talking where, and the Redis keys that belong to it."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SAFE = re.compile(r"[^A-Za-z0-9_.\-]")
PREFIX = "parley"


def quote_part(part: str) -> str:
    # Percent-encode everything but a safe set, so no part can forge a separator or a hash-tag brace.
    return _SAFE.sub(lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), part)


@dataclass(frozen=True, slots=True)
class ConversationKey:
    """Scoped by platform, chat and (optionally) thread; in DMs also by user.

    ``user`` is set only where a chat belongs to one person (a DM, a terminal), so shared channels
    have one conversation and DMs one each.
    """

    platform: str
    chat: str
    thread: str | None = None
    user: str | None = None

    def __post_init__(self) -> None:
        if not self.platform or not self.chat:
            raise ValueError("a conversation needs a platform and a chat")

    @property
    def id(self) -> str:
        parts = [self.platform, self.chat, self.thread or "-", self.user or "-"]
        return ":".join(quote_part(p) for p in parts)

    def redis_key(self, kind: str) -> str:
        # One hash tag per conversation: all of its keys live in one Redis Cluster slot, so the
        # append script may touch them together.
        return f"{PREFIX}:{{{self.id}}}:{kind}"

    def __str__(self) -> str:
        return self.id


def person_key(platform: str, person: str, kind: str) -> str:
    return f"{PREFIX}:person:{{{quote_part(platform)}:{quote_part(person)}}}:{kind}"


def chat_pattern(platform: str, chat: str) -> str:
    """SCAN pattern for every key of every conversation in a chat (quoted parts hold no glob characters)."""
    return f"{PREFIX}:{{{chat_scope(platform, chat)}:*"


def chat_scope(platform: str, chat: str) -> str:
    """The start every conversation id of a chat shares (all its threads and users)."""
    return f"{quote_part(platform)}:{quote_part(chat)}"


def chat_key(platform: str, chat: str, kind: str) -> str:
    """A key about a whole chat; it matches ``chat_pattern`` so erasing the chat erases it too."""
    return f"{PREFIX}:{{{quote_part(platform)}:{quote_part(chat)}:-}}:{kind}"


@dataclass(frozen=True, slots=True)
class Lease:
    """One answer's right to write: a key in each place it writes to (its conversation, its chat's
    counters and, when it has an author, that person's usage). Erasing a place erases the lease kept
    there, so a write arriving after an erasure finds none and is refused atomically (the write scripts
    check and consume it); nothing is left behind to mark the erasure."""

    conversation: str
    chat: str
    person: str | None

    @classmethod
    def for_request(cls, key: ConversationKey, person: str | None, request: str) -> Lease:
        rid = quote_part(request)
        return cls(
            conversation=key.redis_key(f"lease:{rid}"),
            chat=chat_key(key.platform, key.chat, f"lease:{rid}"),
            person=person_key(key.platform, person, f"lease:{rid}") if person else None,
        )

    @property
    def keys(self) -> list[str]:
        return [self.conversation, self.chat] + ([self.person] if self.person else [])
