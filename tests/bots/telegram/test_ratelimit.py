"""python-telegram-bot's own AIORateLimiter, counted: the calls it holds back and the 429s it waits out."""

from __future__ import annotations

from typing import Any

from telegram.error import RetryAfter

from bots.telegram.ratelimit import CountingRateLimiter
from engine.runtime.metrics import Metrics


def waits(metrics: Metrics, cause: str) -> float:
    return (
        metrics.registry.get_sample_value("parley_rate_limit_waits_total", {"platform": "telegram", "cause": cause})
        or 0
    )


async def test_a_call_held_back_by_the_limiter_is_counted() -> None:
    metrics = Metrics()
    limiter = CountingRateLimiter(metrics, overall_max_rate=1, overall_time_period=0.2)
    await limiter.initialize()

    async def send(**kwargs: Any) -> bool:
        return True

    for _ in range(3):  # one at a time: the second and third wait for the bucket to drain
        await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 1}, None)
    assert waits(metrics, "throttle") == 2
    assert waits(metrics, "429") == 0
    await limiter.shutdown()


async def test_a_429_is_counted_and_waited_out() -> None:
    metrics = Metrics()
    limiter = CountingRateLimiter(metrics, max_retries=2)
    await limiter.initialize()
    refusals = [RetryAfter(0), RetryAfter(0)]

    async def send(**kwargs: Any) -> bool:
        if refusals:
            raise refusals.pop()
        return True

    assert await limiter.process_request(send, (), {}, "sendMessage", {"chat_id": 1}, None) is True
    assert waits(metrics, "429") == 2
    assert waits(metrics, "throttle") == 0  # the retries' waits are the 429s', not throttling
    await limiter.shutdown()
