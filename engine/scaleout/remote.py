"""The front end's side of generation by `parley worker` processes (PARLEY_ENGINE=remote): a
``TextGenerator`` that queues each request as a job and relays its reply stream (the protocol:
``engine.scaleout.jobs``). A worker that dies mid-answer is replaced by another that redoes the job under
a higher attempt with the same seed: the requester skips what it already passed on and continues, so
the person sees one answer."""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from types import TracebackType
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from engine.contract import Delta, Event, Finished, SamplingParams
from engine.errors import GeneratorBusy, JobFailed, ModelError, NotReady, WorkerUnavailable
from engine.runtime.redis import guard
from engine.scaleout.jobs import (
    ASKER_REFRESH,
    ASKER_TTL,
    FORGET_CHANNEL,
    GROUP,
    JOBS,
    WORKERS,
    Kind,
    cancel_ttl,
    decode,
    ensure_group,
    job_key,
    params_to_json,
)

log = logging.getLogger(__name__)
# Each request waiting on its reply stream holds a connection (a blocking XREAD), plus the store's own.
CONNECTIONS = 256
READ_BLOCK_MS = 250  # how often a waiting requester looks at its cancel flag


# Admission and enqueue in one step, so concurrent requesters never overshoot the bound: jobs waiting for
# a worker are those in the stream (acknowledged ones are deleted) that no worker holds yet.
_ENQUEUE = """
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1])
if not ok then
  redis.call('XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
  pending = {0}
end
if redis.call('XLEN', KEYS[1]) - pending[1] >= tonumber(ARGV[2]) then return false end
return redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
"""

# Workers whose heartbeat has not expired, by the Redis server's clock (machines' clocks may differ).
_ALIVE = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""


class RemoteGenerator:
    """The TextGenerator seam over the worker pool: ``stream`` queues a job and relays its reply stream."""

    def __init__(
        self,
        redis: Redis,
        *,
        context_tokens: int,
        job_timeout: float,
        max_waiting: int = 64,
        worker_wait: float = 15.0,
    ) -> None:
        self.redis = redis
        self._context_tokens = context_tokens
        self.cancel_ttl = cancel_ttl(job_timeout)
        self.max_waiting = max_waiting
        self.worker_wait = worker_wait  # how long no live worker is tolerated before the request fails
        self._enqueue = self.redis.register_script(_ENQUEUE)
        self._alive = self.redis.register_script(_ALIVE)
        self._running = self._waiting = 0

    async def __aenter__(self) -> RemoteGenerator:
        await guard(ensure_group(self.redis))
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    @property
    def context_tokens(self) -> int:
        return self._context_tokens

    @property
    def device(self) -> str:
        return "remote workers"

    async def forget(self, scope: str) -> None:
        """Workers keep resident caches in their own memory: tell every worker to drop the scope's. A
        worker that cannot hear it (Redis unreachable) drops all of its caches once it reconnects."""
        await guard(self.redis.publish(FORGET_CHANNEL, scope))

    def model_time(self) -> None:
        return None  # spent in the workers: each reports its own

    async def ready(self) -> None:
        if not await self.workers_alive():
            raise NotReady("no live `parley worker`")

    def stats(self) -> dict[str, int]:
        """This front end's requests: taken by a worker, and still waiting for one."""
        return {"running": self._running, "waiting": self._waiting}

    async def workers_alive(self) -> int:
        return int(await guard(self._alive(keys=[WORKERS])))

    async def stream(
        self,
        prompt: list[int],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        cache_key: str | None = None,
    ) -> AsyncIterator[Event]:
        if not prompt:
            raise ValueError("empty prompt")
        if params.seed is None:
            # A redone job must write the same text: fix the seed the first attempt samples with.
            params = replace(params, seed=secrets.randbits(63))
        cancel = cancel or threading.Event()
        request_id = uuid.uuid4().hex
        reply, cancel_flag, asker = (job_key(request_id, k) for k in ("reply", "cancel", "asker"))
        job = {"id": request_id, "prompt": json.dumps(prompt), "params": params_to_json(params),
               "cache_key": cache_key or ""}  # fmt: skip
        args: list[Any] = [GROUP, self.max_waiting, *(x for kv in job.items() for x in kv)]
        await guard(self.redis.set(asker, 1, ex=ASKER_TTL))
        if not await guard(self._enqueue(keys=[JOBS], args=args)):
            await guard(self.redis.delete(asker))
            raise GeneratorBusy("the model is busy; try again in a moment")
        done = started = False
        self._waiting += 1
        try:
            relay = _Relay()
            last_id, cancel_sent = "0-0", False
            quiet_since = no_worker_since = asked = time.monotonic()
            while True:
                if time.monotonic() - asked >= ASKER_REFRESH:
                    asked = time.monotonic()
                    await guard(self.redis.set(asker, 1, ex=ASKER_TTL))
                if cancel.is_set() and not cancel_sent:
                    await guard(self.redis.set(cancel_flag, 1, ex=self.cancel_ttl))
                    cancel_sent = True
                found: Any = await guard(self.redis.xread({reply: last_id}, count=256, block=READ_BLOCK_MS))
                if not found:
                    now = time.monotonic()
                    if now - quiet_since >= 1.0:  # silence: is anyone still there to answer?
                        quiet_since = now
                        if await self.workers_alive():
                            no_worker_since = now
                        elif now - no_worker_since >= self.worker_wait:
                            raise WorkerUnavailable("no model worker is running to answer; try again in a moment")
                    continue
                quiet_since = no_worker_since = time.monotonic()
                for entry_id, raw in found[0][1]:
                    last_id = entry_id
                    fields = decode(raw)
                    if fields["kind"] == Kind.START and not started:
                        started = True
                        self._waiting -= 1
                        self._running += 1
                    event = relay.feed(fields)
                    if event is not None:
                        yield event
                        if isinstance(event, Finished):
                            done = True
                            return
        finally:
            if started:
                self._running -= 1
            else:
                self._waiting -= 1
            await self._clean_up(reply, cancel_flag, asker, stop_worker=not done)

    async def _clean_up(self, reply: str, cancel_flag: str, asker: str, *, stop_worker: bool) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if stop_worker:  # the requester stopped listening: the worker need not go on
                    pipe.set(cancel_flag, 1, ex=self.cancel_ttl)
                pipe.delete(reply, asker)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            # Redis down: the asker key lapses meanwhile, so no worker takes the job on once it is back.
            log.info("could not clean up after a remote request (%s)", type(exc).__name__)


class _Relay:
    """Turns reply-stream entries into the events passed on, once each across attempts."""

    def __init__(self) -> None:
        self.attempt = 0
        self.shown = ""  # text already passed on
        self.redo = 0  # characters the current attempt has written so far

    def feed(self, fields: dict[str, str]) -> Event | None:
        attempt = int(fields["attempt"])
        if attempt < self.attempt:
            return None  # a superseded worker still writing
        if attempt > self.attempt:
            if self.attempt:
                log.info("a worker stopped mid-answer; attempt %d continues it", attempt)
            self.attempt, self.redo = attempt, 0
        kind = fields["kind"]
        if kind == Kind.DELTA:
            text = fields["text"]
            new = text[max(0, len(self.shown) - self.redo) :]
            self.redo += len(text)
            if not new:
                return None
            self.shown += new
            return Delta(new)
        if kind == Kind.FINISHED:
            finished = Finished(**json.loads(fields["finished"]))
            if finished.text != self.shown:
                # Only a redo on a different kind of worker (another device or precision) can write
                # other text; what the person saw is what is kept.
                log.warning("a redone answer differed from the part already shown; keeping what was shown")
                finished = replace(finished, text=self.shown)
            return finished
        if kind == Kind.ERROR:
            raise ModelError(fields["message"])
        if kind == Kind.FAILED:
            raise JobFailed(fields["message"])
        return None  # start
