"""Fixed-window request counters in Redis: INCR and EXPIRE in one script, so a counter always expires."""

from __future__ import annotations

from redis.asyncio import Redis

from engine.errors import QuotaExceeded
from engine.keys import PREFIX, quote_part

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
        count, ttl = await self._hit(keys=[f"{PREFIX}:quota:{self.name}:{quote_part(scope)}"], args=[self.window])
        if int(count) > self.limit:
            wait = max(int(ttl), 1)
            raise QuotaExceeded(
                f"rate limit reached ({self.limit} requests per {self.window} s); try again in {wait} s", wait
            )
