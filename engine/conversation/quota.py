"""Fixed-window request counters in Redis: INCR and EXPIRE in one script, so a counter always expires."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from engine.conversation.keys import PREFIX, ConversationKey, Lease, chat_key, person_key, quote_part
from engine.errors import QuotaExceeded
from engine.runtime.redis import guard

_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('TTL', KEYS[1])
if ttl < 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}
"""


class RateLimit:
    def __init__(self, redis: Redis, *, name: str, limit: int, window_seconds: int) -> None:
        self.limit = limit
        self.window = window_seconds
        self.name = name
        self._hit = redis.register_script(_HIT)

    async def hit(self, scope: str) -> None:
        """Count one request for ``scope``; QuotaExceeded (with the wait) once over the limit."""
        if self.limit <= 0:
            return
        count, ttl = await guard(
            self._hit(keys=[f"{PREFIX}:quota:{self.name}:{quote_part(scope)}"], args=[self.window])
        )
        if int(count) > self.limit:
            wait = max(int(ttl), 1)
            raise QuotaExceeded(
                f"rate limit reached ({self.limit} requests per {self.window} s); try again in {wait} s", wait
            )


# Requests per minute and tokens per day, for a person and for a chat, checked and counted in one step.
# KEYS: person rpm, chat rpm, person tokens/day, chat tokens/day, chat overrides (hash)
# ARGV: person rpm limit, chat rpm limit, person tpd limit, chat tpd limit (0 = unlimited)
# Returns {0} when allowed, else {scope index (1..4), seconds to wait}. A refused request is not counted.
_ADMIT = """
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local rpm = redis.call('HGET', KEYS[5], 'requests_per_minute')
local tpd = redis.call('HGET', KEYS[5], 'tokens_per_day')
if rpm then limits[2] = tonumber(rpm) end
if tpd then limits[4] = tonumber(tpd) end
for i = 1, 4 do
  if limits[i] > 0 then
    local used = tonumber(redis.call('GET', KEYS[i]) or '0')
    local full = (i <= 2 and used + 1 > limits[i]) or (i > 2 and used >= limits[i])
    if full then
      local ttl = redis.call('TTL', KEYS[i])
      return {i, ttl > 0 and ttl or 1}
    end
  end
end
for i = 1, 2 do
  if redis.call('INCR', KEYS[i]) == 1 then redis.call('EXPIRE', KEYS[i], 60) end
end
return {0}
"""

# What an answer spent, counted after it (its size is not known before): the chat's tokens of the day
# and, when it has an author, the person's tokens of the day and usage. Each part only while its lease
# is there, consuming it: after an erasure (of the chat, or of the person) that part writes nothing.
# KEYS: chat lease, chat tpd [, person lease, person tpd, person usage]
# ARGV: prompt tokens, completion tokens, usage TTL, tpd TTL
_SETTLE = """
local spent = tonumber(ARGV[1]) + tonumber(ARGV[2])
local function count(lease, tpd)
  if redis.call('DEL', lease) == 0 then return false end
  redis.call('INCRBY', tpd, spent)
  if redis.call('TTL', tpd) < 0 then redis.call('EXPIRE', tpd, ARGV[4]) end
  return true
end
count(KEYS[1], KEYS[2])
if #KEYS > 2 and count(KEYS[3], KEYS[4]) then
  redis.call('HINCRBY', KEYS[5], 'requests', 1)
  redis.call('HINCRBY', KEYS[5], 'prompt_tokens', ARGV[1])
  redis.call('HINCRBY', KEYS[5], 'completion_tokens', ARGV[2])
  redis.call('EXPIRE', KEYS[5], ARGV[3])
end
"""

DAY = 24 * 3600
KEEP = -1  # set_chat_limits: leave this limit as it is
_SCOPES = ("per minute for you", "per minute in this chat", "per day for you", "per day in this chat")


@dataclass(frozen=True)
class Limits:
    person_requests_per_minute: int
    chat_requests_per_minute: int
    person_tokens_per_day: int
    chat_tokens_per_day: int


class Quotas:
    """Per person and per chat: requests per minute and tokens per day. Counters always expire."""

    def __init__(self, redis: Redis, limits: Limits) -> None:
        self.redis = redis
        self.limits = limits
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    @staticmethod
    def _keys(platform: str, person: str, chat: str) -> list[str]:
        return [
            person_key(platform, person, "quota:rpm"),
            chat_key(platform, chat, "quota:rpm"),
            person_key(platform, person, "quota:tpd"),
            chat_key(platform, chat, "quota:tpd"),
            chat_key(platform, chat, "limits"),
        ]

    def _args(self) -> list[int]:
        lim = self.limits
        return [
            lim.person_requests_per_minute,
            lim.chat_requests_per_minute,
            lim.person_tokens_per_day,
            lim.chat_tokens_per_day,
        ]

    async def admit(self, platform: str, person: str, chat: str) -> None:
        """Count one request, or QuotaExceeded saying which limit and when to try again."""
        result = await guard(self._admit(keys=self._keys(platform, person, chat), args=self._args()))
        scope = int(result[0])
        if scope:
            wait = int(result[1])
            what = "requests" if scope <= 2 else "tokens"
            raise QuotaExceeded(
                f"you've reached the limit of {what} {_SCOPES[scope - 1]}; try again in {_human(wait)}", wait
            )

    async def settle(
        self,
        key: ConversationKey,
        person: str | None,
        lease: Lease,
        prompt_tokens: int,
        completion_tokens: int,
        *,
        usage_ttl: int,
    ) -> None:
        """Count an answer's tokens (see _SETTLE); a person's usage spans conversations, so it lives
        under the person's key, outside any one conversation's."""
        keys = [lease.chat, chat_key(key.platform, key.chat, "quota:tpd")]
        if person and lease.person:
            keys += [lease.person, *(person_key(key.platform, person, k) for k in ("quota:tpd", "usage"))]
        await guard(self._settle(keys=keys, args=[prompt_tokens, completion_tokens, usage_ttl, DAY]))

    async def set_chat_limits(self, platform: str, chat: str, *, requests_per_minute: int | None,
                              tokens_per_day: int | None) -> None:  # fmt: skip
        """A chat's own limits (admins); None restores the configured default, KEEP leaves it."""
        key = chat_key(platform, chat, "limits")
        async with self.redis.pipeline(transaction=True) as pipe:
            for field, value in (("requests_per_minute", requests_per_minute), ("tokens_per_day", tokens_per_day)):
                if value is None:
                    pipe.hdel(key, field)
                elif value != KEEP:
                    pipe.hset(key, field, value)
            pipe.expire(key, 365 * DAY)
            await guard(pipe.execute())

    async def chat_limits(self, platform: str, chat: str) -> tuple[int, int]:
        overrides = await guard(self.redis.hgetall(chat_key(platform, chat, "limits")))
        rpm = overrides.get(b"requests_per_minute")
        tpd = overrides.get(b"tokens_per_day")
        return (
            int(rpm) if rpm is not None else self.limits.chat_requests_per_minute,
            int(tpd) if tpd is not None else self.limits.chat_tokens_per_day,
        )

    async def remaining(self, platform: str, person: str, chat: str) -> dict[str, int | None]:
        """What is left now for this person in this chat (None: unlimited)."""
        keys = self._keys(platform, person, chat)
        raw = await guard(self.redis.mget(keys[:4]))
        overrides = await guard(self.redis.hgetall(keys[4]))
        limits = self._args()
        for i, field in ((1, b"requests_per_minute"), (3, b"tokens_per_day")):
            if field in overrides:
                limits[i] = int(overrides[field])
        left: dict[str, int | None] = {}
        names = ("requests_this_minute", "chat_requests_this_minute", "tokens_today", "chat_tokens_today")
        for name, limit, used in zip(names, limits, raw, strict=True):
            left[name] = None if limit <= 0 else max(0, limit - int(used or 0))
        return left


def _human(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{round(seconds / 60)} min"
    return f"{round(seconds / 3600)} h"
