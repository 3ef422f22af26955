"""python-telegram-bot's flood limiter, counting the calls it holds back (``parley_rate_limit_waits``)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

from telegram.error import RetryAfter
from telegram.ext import AIORateLimiter

from engine.runtime.metrics import Metrics

PLATFORM = "telegram"
# A call the limiter lets through is not suspended at all (microseconds); one it holds back waits at
# least 1/30 s (the overall limit), so anything above a few milliseconds was a wait.
HELD_BACK = 0.005


class CountingRateLimiter(AIORateLimiter):
    """``AIORateLimiter`` unchanged, observed from the one place it exposes: the callback it finally
    runs. The time from asking to that call is the throttle wait; a RetryAfter the call raises is a 429
    that the limiter then waits out (its retries are those of ``max_retries``)."""

    def __init__(self, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._throttled = metrics.rate_limit_waits.labels(PLATFORM, "throttle")
        self._refused = metrics.rate_limit_waits.labels(PLATFORM, "429")

    async def process_request(
        self,
        callback: Callable[..., Coroutine[Any, Any, Any]],
        args: Any,
        kwargs: dict[str, Any],
        endpoint: str,
        data: dict[str, Any],
        rate_limit_args: int | None,
    ) -> Any:
        loop = asyncio.get_running_loop()
        asked: float | None = loop.time()

        async def observed(*a: Any, **kw: Any) -> Any:
            nonlocal asked
            if asked is not None and loop.time() - asked > HELD_BACK:
                self._throttled.inc()
            asked = None  # a retry's wait after a 429 is that 429's, counted below
            try:
                return await callback(*a, **kw)
            except RetryAfter:
                self._refused.inc()
                raise

        return await super().process_request(observed, args, kwargs, endpoint, data, rate_limit_args)
