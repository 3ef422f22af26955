"""`parley worker`: takes generation jobs from the Redis job stream and answers them with its own model.

Jobs are read through the consumer group, so each goes to one worker, and are acknowledged only once
their answer is complete. While a job runs its worker refreshes its claim every quarter of
PARLEY_JOB_TIMEOUT, so a slow but alive worker keeps it; a job idle longer than that (its worker died) is
taken over by another worker (XAUTOCLAIM), and one delivered more than PARLEY_MAX_DELIVERIES times goes
to the dead-letter stream instead, with an error to its requester. See engine/scaleout/remote.py for the reply
stream's format.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from engine.contract import Delta, TextGenerator
from engine.errors import ParleyError
from engine.runtime.app import load_local_model, local_generator, open_redis
from engine.runtime.http import HttpServer
from engine.runtime.metrics import Metrics
from engine.runtime.redis import UNREACHABLE
from engine.runtime.settings import Settings
from engine.scaleout.jobs import (
    ASKER_TTL,
    DEAD_JOBS,
    FORGET_CHANNEL,
    GROUP,
    JOBS,
    REPLY_TTL,
    WORKERS,
    Kind,
    decode,
    ensure_group,
    job_key,
    params_from_json,
)

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0  # a worker counts as alive for three of these after its last heartbeat
CANCEL_POLL_SECONDS = 0.25
DEAD_LETTERS_KEPT = 10_000

# Act on a job only while this worker still holds it: refresh the claim (its idle time goes back to 0,
# and the delivery count stays) or acknowledge and delete it. A worker that lost the job to another
# (it stalled past the timeout) must neither keep it alive nor acknowledge the other's work.
_IF_MINE = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == 'ack' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[3])
  redis.call('XDEL', KEYS[1], ARGV[3])
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
end
return 1
"""

_HEARTBEAT = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"""


@dataclass(eq=False)
class _Job:
    entry: str  # id in the job stream
    attempt: int  # its delivery count
    fields: dict[str, str]
    cancel: threading.Event = field(default_factory=threading.Event)
    lost: bool = False  # another worker took it over

    @property
    def request_id(self) -> str:
        return self.fields["id"]


class Worker:
    def __init__(
        self,
        redis: Redis,
        generator: TextGenerator,
        *,
        concurrency: int,
        job_timeout: float,
        max_deliveries: int,
        name: str | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.redis = redis
        self.generator = generator
        self.concurrency = concurrency
        self.job_timeout = job_timeout
        self.max_deliveries = max_deliveries
        self.name = name or f"{socket.gethostname()}-{os.getpid()}"
        self._if_mine = redis.register_script(_IF_MINE)
        self._heartbeat = redis.register_script(_HEARTBEAT)
        self._tasks: dict[asyncio.Task[None], _Job] = {}
        self._cursor = "0-0"  # where the next XAUTOCLAIM scan continues
        self.metrics = metrics or Metrics()

    async def run(self, stop: asyncio.Event) -> None:
        """Take and answer jobs until ``stop`` is set; then finish the jobs in hand (up to the job
        timeout) and hand back the rest for other workers to take at once."""
        beat = asyncio.create_task(self._beat(stop))
        erasures = asyncio.create_task(self._hear_erasures(stop))
        stopping = asyncio.create_task(stop.wait())
        log.info("worker %s taking jobs (%d at once)", self.name, self.concurrency)
        next_reclaim = resume_at = 0.0
        try:
            while not stop.is_set():
                if (pause := resume_at - time.monotonic()) > 0:
                    await asyncio.sleep(min(pause, 0.5))
                    continue
                free = self.concurrency - len(self._tasks)
                if free <= 0:
                    await asyncio.wait([*self._tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
                    continue
                try:
                    jobs: list[_Job] = []
                    if time.monotonic() >= next_reclaim:
                        next_reclaim = time.monotonic() + min(1.0, self.job_timeout / 4)
                        jobs = await self._reclaim(free)
                    if not jobs:
                        jobs = await self._read(free)
                except UNREACHABLE as exc:
                    log.warning("Redis unreachable (%s); retrying", exc)
                    await self._forget_everything()
                    # Requesters waiting when Redis went away gave up, but their asker keys may outlive
                    # the outage by up to ASKER_TTL: take no job until those have lapsed.
                    resume_at = time.monotonic() + ASKER_TTL
                    continue
                except ResponseError as exc:
                    if "NOGROUP" not in str(exc):
                        raise
                    await ensure_group(self.redis)  # Redis came back without our data
                    continue
                for job in jobs:
                    task = asyncio.create_task(self._answer(job))
                    self._tasks[task] = job
                    task.add_done_callback(self._tasks.pop)
        finally:
            stopping.cancel()
            await self._drain()
            beat.cancel()
            erasures.cancel()
            with contextlib.suppress(*UNREACHABLE):
                await self.redis.zrem(WORKERS, self.name)

    async def _drain(self) -> None:
        if not self._tasks:
            return
        log.info("finishing %d job(s) before stopping", len(self._tasks))
        _, left = await asyncio.wait(list(self._tasks), timeout=self.job_timeout)
        jobs = [self._tasks[t] for t in left]
        for task in left:
            task.cancel()
        if jobs:
            # Mark them idle for the full timeout, so the next worker's XAUTOCLAIM takes them at once.
            ids: list[Any] = [j.entry for j in jobs]
            idle = int(self.job_timeout * 1000)
            with contextlib.suppress(*UNREACHABLE):
                await self.redis.xclaim(JOBS, GROUP, self.name, 0, ids, idle=idle, justid=True)

    async def _hear_erasures(self, stop: asyncio.Event) -> None:
        """Drop the resident caches of conversations erased by /forget (RemoteGenerator.forget)."""
        while not stop.is_set():
            try:
                async with self.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(FORGET_CHANNEL)
                    while not stop.is_set():
                        message = await pubsub.get_message(timeout=1.0)
                        if message is not None:
                            await self.generator.forget(message["data"].decode())
            except UNREACHABLE:
                await self._forget_everything()
                await asyncio.sleep(1.0)

    async def _forget_everything(self) -> None:
        # Cut off from Redis, this worker may have missed an erasure: it keeps no conversation's cache.
        await self.generator.forget("")

    async def _beat(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(*UNREACHABLE):
                await self._heartbeat(keys=[WORKERS], args=[self.name, 3 * HEARTBEAT_SECONDS])
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _read(self, count: int) -> list[_Job]:
        found: Any = await self.redis.xreadgroup(GROUP, self.name, {JOBS: ">"}, count=count, block=500)
        return [_Job(e.decode(), 1, decode(f)) for e, f in found[0][1]] if found else []

    async def _reclaim(self, count: int) -> list[_Job]:
        """Jobs whose worker went silent for the job timeout; those delivered too often go to the dead
        letters instead."""
        idle = int(self.job_timeout * 1000)
        response: Any = await self.redis.xautoclaim(JOBS, GROUP, self.name, idle, start_id=self._cursor, count=count)
        cursor, claimed = response[0], response[1]  # (Redis 7 adds the ids it found deleted)
        self._cursor = cursor.decode()
        jobs = []
        for raw_id, raw in claimed:
            entry = raw_id.decode()
            pending = await self.redis.xpending_range(JOBS, GROUP, entry, entry, 1)
            job = _Job(entry, int(pending[0]["times_delivered"]), decode(raw))
            if job.attempt > self.max_deliveries:
                await self._dead_letter(job)
                continue
            log.warning("taking over job %s (request %s, delivery %d)", entry, job.request_id, job.attempt)
            self.metrics.jobs_reclaimed.inc()
            jobs.append(job)
        return jobs

    async def _dead_letter(self, job: _Job) -> None:
        log.error(
            "job %s (request %s) stopped %d workers; moved to the dead letters (%s)",
            job.entry, job.request_id, job.attempt - 1, DEAD_JOBS,
        )  # fmt: skip
        message = "this request stopped the model several times and was set aside; try rephrasing it"
        reply = job_key(job.request_id, "reply")
        async with self.redis.pipeline(transaction=True) as pipe:
            dead: dict[Any, Any] = {**job.fields, "entry": job.entry, "deliveries": job.attempt - 1}
            pipe.xadd(DEAD_JOBS, dead,
                      maxlen=DEAD_LETTERS_KEPT)  # fmt: skip
            pipe.xadd(reply, {"attempt": job.attempt, "kind": Kind.FAILED.value, "message": message})
            pipe.expire(reply, REPLY_TTL)
            pipe.xack(JOBS, GROUP, job.entry)
            pipe.xdel(JOBS, job.entry)
            await pipe.execute()

    async def _send(self, job: _Job, kind: Kind, **fields: Any) -> None:
        reply = job_key(job.request_id, "reply")
        async with self.redis.pipeline(transaction=False) as pipe:
            entry: dict[Any, Any] = {"attempt": job.attempt, "kind": kind.value, **fields}
            pipe.xadd(reply, entry)
            pipe.expire(reply, REPLY_TTL)  # with every entry: the requester may have deleted the stream
            await pipe.execute()

    async def _mine(self, job: _Job, action: str) -> bool:
        return bool(await self._if_mine(keys=[JOBS], args=[GROUP, self.name, job.entry, action]))

    async def _answer(self, job: _Job) -> None:
        watch = asyncio.create_task(self._watch(job))
        try:
            if not await self._wanted(job):
                log.info("job %s dropped: its requester stopped waiting (delivery %d)", job.entry, job.attempt)
                self.metrics.jobs_dropped.inc()
                await self._mine(job, "ack")
                return
            await self._send(job, Kind.START, worker=self.name)
            prompt, params = json.loads(job.fields["prompt"]), params_from_json(job.fields["params"])
            try:
                events = self.generator.stream(
                    prompt, params, cancel=job.cancel, cache_key=job.fields["cache_key"] or None
                )
                async for event in events:
                    if job.lost:
                        break
                    if isinstance(event, Delta):
                        await self._send(job, Kind.DELTA, text=event.text)
                    else:
                        await self._send(job, Kind.FINISHED, finished=json.dumps(asdict(event)))
            except ParleyError as exc:  # the job itself is at fault (say, too long): a redo fails alike
                await self._send(job, Kind.ERROR, message=str(exc))
            if job.lost or not await self._mine(job, "ack"):
                log.warning("job %s was taken over by another worker", job.entry)
        except UNREACHABLE as exc:
            # Not acknowledged: it stays pending and is redone once Redis is back and the timeout passes.
            log.warning("job %s abandoned: Redis unreachable (%s)", job.entry, exc)
        except Exception:
            # Not acknowledged either: another worker redoes it after the timeout (the fault may be this
            # worker's), and after PARLEY_MAX_DELIVERIES it goes to the dead letters.
            log.exception("job %s failed", job.entry)
        finally:
            job.cancel.set()
            watch.cancel()

    async def _wanted(self, job: _Job) -> bool:
        """Its requester still waits for it: it has not stopped it, and keeps its asker key alive."""
        cancel_flag, asker = job_key(job.request_id, "cancel"), job_key(job.request_id, "asker")
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(cancel_flag)
            pipe.exists(asker)
            cancelled, asking = await pipe.execute()
        return not cancelled and bool(asking)

    async def _watch(self, job: _Job) -> None:
        """While a job runs: stop it when its requester does (or is gone); keep the claim fresh, or notice
        it was lost."""
        refresh_every = self.job_timeout / 4
        next_refresh = time.monotonic() + refresh_every
        while True:
            await asyncio.sleep(CANCEL_POLL_SECONDS)
            try:
                if not await self._wanted(job):
                    job.cancel.set()
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + refresh_every
                    if not await self._mine(job, "refresh"):
                        job.lost = True
                        job.cancel.set()
                        return
            except UNREACHABLE:
                pass  # the job's own writes fail too, and it is abandoned there


async def run_worker(settings: Settings, stop: asyncio.Event) -> None:
    """The `parley worker` process: Redis, the model in this process, health and metrics on
    PARLEY_HTTP_HOST:PARLEY_HTTP_PORT, then jobs until ``stop``."""
    # Two connections per job in hand (its writes, its watch) and a few for reading and heartbeats.
    async with open_redis(settings, max_connections=2 * settings.worker_concurrency + 8) as redis:
        await ensure_group(redis)
        model, device = await load_local_model(settings)
        async with local_generator(settings, model, device) as generator:
            metrics = Metrics()
            metrics.watch_generator(generator.stats)
            metrics.watch_model_time(lambda: generator.time)

            async def redis_ready() -> None:
                await redis.ping()

            http = HttpServer(metrics, {"redis": redis_ready})
            async with http.serve(settings.http_host, settings.http_port):
                worker = Worker(
                    redis,
                    generator,
                    concurrency=settings.worker_concurrency,
                    job_timeout=settings.job_timeout,
                    max_deliveries=settings.max_deliveries,
                    metrics=metrics,
                )
                await worker.run(stop)
