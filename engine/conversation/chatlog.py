"""A group's recent messages, kept only where its admins turned it on, so `/summarize` can catch someone up
on a platform whose bots cannot read history (Telegram).

Per chat, beside its other chat keys (so erasing the chat, /forget by an admin, erases them too):
  ``…:log``     sorted set of the newest messages (JSON: author, text, link) by their position in the chat
                (updates are handled concurrently, so arrival order is not the chat's), at most MAX_LOGGED,
                kept LOG_TTL after the last one
  ``…:log:on``  present while logging is on; refreshed with every message logged, so it lasts as long as
                the group talks (and the conversation TTL after that)
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from redis.asyncio import Redis

from engine.conversation.keys import chat_key
from engine.runtime.redis import guard

LOG_TTL = 24 * 3600  # a message is forgotten a day after the group's last one
MAX_LOGGED = 500
MAX_MESSAGE_CHARS = 2000  # of one message: a catch-up is about who said what, not whole documents

# Keep a message only while logging is on (checked in the same step: turning it off cannot race a message).
_ADD = """
if redis.call('EXISTS', KEYS[2]) == 0 then return 0 end
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[4]))
return 1
"""


@dataclass(frozen=True, slots=True)
class LoggedMessage:
    author: str
    text: str
    link: str | None = None


class ChatLog:
    def __init__(self, redis: Redis, *, flag_ttl: int) -> None:
        self.redis = redis
        self.flag_ttl = flag_ttl
        self._add = redis.register_script(_ADD)

    async def enabled(self, platform: str, chat: str) -> bool:
        return bool(await guard(self.redis.exists(chat_key(platform, chat, "log:on"))))

    async def turn(self, platform: str, chat: str, on: bool) -> None:
        """On: messages from now on are kept. Off: logging stops and what was kept is deleted."""
        if on:
            await guard(self.redis.set(chat_key(platform, chat, "log:on"), 1, ex=self.flag_ttl))
        else:
            await guard(self.redis.delete(chat_key(platform, chat, "log:on"), chat_key(platform, chat, "log")))

    async def add(self, platform: str, chat: str, position: int, message: LoggedMessage) -> bool:
        """Keeps the message (``position``: its id, increasing in the chat) if logging is on; whether it did."""
        keys = [chat_key(platform, chat, "log"), chat_key(platform, chat, "log:on")]
        entry = json.dumps(
            {"author": message.author, "text": message.text[:MAX_MESSAGE_CHARS], "link": message.link, "at": position}
        )
        args: list[str | int] = [entry, MAX_LOGGED, LOG_TTL, self.flag_ttl, position]
        return bool(await guard(self._add(keys=keys, args=args)))

    async def recent(self, platform: str, chat: str, count: int = MAX_LOGGED) -> list[LoggedMessage]:
        raw = await guard(self.redis.zrange(chat_key(platform, chat, "log"), -count, -1))
        entries = [json.loads(entry) for entry in raw if isinstance(entry, bytes | str)]
        return [LoggedMessage(e["author"], e["text"], e["link"]) for e in entries]
