"""Connecting to Redis, waiting for it at start-up, and one guard that turns an unreachable Redis into
the error people are shown."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import TypeVar
from urllib.parse import urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import StoreUnavailable

log = logging.getLogger(__name__)
T = TypeVar("T")
UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)


async def guard(call: Awaitable[T]) -> T:
    """Await a Redis call; an unreachable Redis becomes StoreUnavailable."""
    try:
        return await call
    except UNREACHABLE as exc:
        raise StoreUnavailable("memory (Redis) is temporarily unavailable; try again shortly") from exc


@asynccontextmanager
async def connect(url: str, *, max_connections: int = 32, wait_seconds: float = 5.0) -> AsyncIterator[Redis]:
    """A client with a blocking pool (waits for a free connection instead of failing) and retries."""
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=wait_seconds,
        socket_timeout=wait_seconds,
        socket_connect_timeout=wait_seconds,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
    client = Redis(connection_pool=pool)
    try:
        yield client
    finally:
        try:
            await client.aclose()
        finally:
            await pool.aclose()


def _where(url: str) -> str:
    """The URL without its password, fit for a message."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return f"{parts.scheme}://{host}{parts.path}"


async def wait_until_reachable(redis: Redis, url: str, wait_seconds: float) -> None:
    """At start-up Redis may still be starting (compose, Kubernetes, a reboot): retry for up to
    ``wait_seconds``, then fail with a message that names it."""
    deadline = time.monotonic() + wait_seconds
    delay = 0.25
    while True:
        try:
            await redis.ping()
            return
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreUnavailable(
                    f"cannot reach Redis at {_where(url)} (tried for {wait_seconds:.0f} s: {exc}); "
                    "check REDIS_URL and that Redis is running"
                ) from None
            log.warning("Redis at %s is not reachable yet (%s); retrying for %.0f s more", _where(url), exc, left)
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, 2.0)
