"""Generation on `parley worker` processes through a Redis Stream (PARLEY_ENGINE=remote), and Redis at
start-up. These tests own their Redis: the job stream is global, and they kill workers mid-job."""

from __future__ import annotations

import asyncio
import os
import re
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from engine.contract import ChatRequest, Delta, Event, Finished, Reply, SamplingParams, TextGenerator
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store
from engine.errors import GeneratorBusy, JobFailed, StoreUnavailable, WorkerUnavailable
from engine.model.generator import Generator
from engine.model.registry import LoadedModel
from engine.runtime.app import open_engine
from engine.runtime.redis import connect
from engine.runtime.settings import Settings
from engine.scaleout.jobs import DEAD_JOBS, GROUP, JOBS, REPLY_TTL, WORKERS, job_key
from engine.scaleout.remote import RemoteGenerator
from engine.scaleout.worker import Worker
from tests.fakes.generator import ScriptedGenerator
from tests.model.support import prompt_ids
from tests.redis_process import RedisProcess, free_port

LONG_QUESTION = "Write a long story about a dragon who learns to bake bread. Describe every step."


@pytest.fixture(scope="module")
def jobs_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path_factory.mktemp("jobs-redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def redis(jobs_redis: RedisProcess) -> AsyncIterator[Redis]:
    async with connect(jobs_redis.url, max_connections=64) as client:
        await client.flushall()  # this Redis is these tests' own
        yield client


@pytest.fixture
def store(redis: Redis) -> Store:
    return Store(redis, ttl=3600, window=200)


async def collect(events: AsyncIterator[Event]) -> tuple[str, Finished]:
    shown, finished = "", None
    async for event in events:
        if isinstance(event, Delta):
            shown += event.text
        else:
            finished = event
    assert finished is not None
    return shown, finished


@asynccontextmanager
async def worker_in_process(redis: Redis, generator: TextGenerator, **options: Any) -> AsyncIterator[Worker]:
    stop = asyncio.Event()
    worker = Worker(redis, generator, **{"concurrency": 4, "job_timeout": 5.0, "max_deliveries": 3, **options})
    task = asyncio.create_task(worker.run(stop))
    try:
        yield worker
    finally:
        stop.set()
        await task


async def until(predicate: Any, timeout: float = 10.0) -> None:  # noqa: ASYNC109
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_remote_answer_is_the_local_answer(
    redis: Redis, store: Store, generator: Generator, model: LoadedModel
) -> None:
    ids, params = prompt_ids(model, "What is the capital of France? Answer in one sentence."), SamplingParams(48)
    local_text, local = await collect(generator.stream(ids, params))
    async with worker_in_process(redis, generator), RemoteGenerator(redis, context_tokens=2048, job_timeout=5) as gen:
        shown, finished = await collect(gen.stream(ids, params, cache_key="test:paris"))
    assert "Paris" in shown
    assert shown == finished.text == local_text
    assert (finished.finish_reason, finished.completion_tokens) == (local.finish_reason, local.completion_tokens)
    # acknowledged and deleted; the reply stream is gone
    assert await redis.xlen(JOBS) == 0
    assert (await redis.xpending(JOBS, GROUP))["pending"] == 0
    assert await redis.keys("parley:job:*") == []


async def test_a_remote_front_end_loads_no_onnx_session(
    settings: Settings, jobs_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("a remote front end must not load the model's ONNX session")

    monkeypatch.setattr("engine.runtime.app.OnnxRunner", no_session)
    remote = settings.model_copy(update={"engine": "remote", "redis_url": jobs_redis.url})
    async with open_engine(remote) as engine:
        assert isinstance(engine.generator, RemoteGenerator)
        assert "on remote workers" in engine.model_summary()


async def test_stopping_a_request_stops_its_job(redis: Redis, store: Store, model: LoadedModel) -> None:
    slow = ScriptedGenerator(model, piece=1, delay=0.01, script=lambda _: "x" * 2000)
    ids = prompt_ids(model, "hello")
    async with worker_in_process(redis, slow), RemoteGenerator(redis, context_tokens=2048, job_timeout=5) as gen:
        cancel, events = threading.Event(), []
        async for event in gen.stream(ids, SamplingParams(), cancel=cancel):
            events.append(event)
            if len(events) == 3:
                cancel.set()  # what /stop does
        assert isinstance(events[-1], Finished)
        assert events[-1].finish_reason == "cancelled"
        assert slow.cancelled == 1
        # a requester that just stops listening stops the job too
        stream = gen.stream(ids, SamplingParams())
        await anext(stream)
        await stream.aclose()  # type: ignore[attr-defined]

        async def second_stopped() -> bool:
            return slow.cancelled == 2

        await until(second_stopped)


async def test_too_many_waiting_jobs_is_busy(redis: Redis, store: Store) -> None:
    gen = RemoteGenerator(redis, context_tokens=2048, job_timeout=5, max_waiting=2, worker_wait=60)
    async with gen:
        waiting = [gen.stream([1, 2, 3], SamplingParams()) for _ in range(2)]
        tasks: list[asyncio.Future[Event]] = [asyncio.ensure_future(anext(s)) for s in waiting]

        async def queued() -> bool:
            return await redis.xlen(JOBS) == 2

        await until(queued)
        assert gen.stats() == {"running": 0, "waiting": 2}
        with pytest.raises(GeneratorBusy, match="busy"):
            await anext(gen.stream([1, 2, 3], SamplingParams()))
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert gen.stats() == {"running": 0, "waiting": 0}


async def test_no_worker_is_a_clear_error_and_the_job_is_dropped(
    redis: Redis, store: Store, model: LoadedModel
) -> None:
    started = time.monotonic()
    async with RemoteGenerator(redis, context_tokens=2048, job_timeout=5, worker_wait=1.0) as gen:
        with pytest.raises(WorkerUnavailable, match="no model worker is running"):
            await collect(gen.stream([1, 2, 3], SamplingParams()))
    assert time.monotonic() - started < 5
    # a worker that starts later does not answer the abandoned request
    jobs: Any = await redis.xrange(JOBS)
    [(_, fields)] = jobs
    assert await redis.exists(job_key(fields[b"id"].decode(), "cancel"))
    scripted = ScriptedGenerator(model)
    async with worker_in_process(redis, scripted):

        async def dropped() -> bool:
            return await redis.xlen(JOBS) == 0

        await until(dropped)
    assert scripted.prompts == []


async def test_forget_mid_answer_in_remote_mode_leaves_nothing_behind(
    redis: Redis, store: Store, settings: Settings, model: LoadedModel
) -> None:
    worker_model = ScriptedGenerator(model, piece=1, delay=0.01, script=lambda _: "word " * 2000)
    async with (
        worker_in_process(redis, worker_model),
        RemoteGenerator(redis, context_tokens=2048, job_timeout=5) as gen,
    ):
        engine = Engine(settings, store, gen, model)
        key = ConversationKey("test", "dm-4242", user="4242")
        shown = 0
        async for event in engine.chat(ChatRequest(key, "talk a lot", author_id="4242")):
            shown += isinstance(event, Delta)
            if shown == 3:
                await engine.forget_person("test", "4242", private=key)

        async def settled() -> bool:  # the job is stopped and acknowledged, its worker heard the erasure
            return await redis.xlen(JOBS) == 0 and "test:dm-4242" in worker_model.forgotten

        await until(settled)
        await asyncio.sleep(0.3)  # a late write would land by now
        assert worker_model.cancelled == 1
        leftovers = [k.decode() async for k in redis.scan_iter(count=1000)]
        assert [k for k in leftovers if "4242" in k] == []
        assert [k for k in leftovers if ":reply" in k] == []


@pytest.mark.slow
async def test_after_a_redis_outage_no_abandoned_job_is_generated_again(tmp_path: Path, model: LoadedModel) -> None:
    server = RedisProcess(tmp_path, aof=True)  # as deployed: AOF, fsync every second
    server.start()
    slow = ScriptedGenerator(model, piece=1, delay=0.02, script=lambda _: "word " * 500)
    try:
        async with connect(server.url, max_connections=64) as front, connect(server.url, max_connections=64) as back:
            remote = RemoteGenerator(front, context_tokens=2048, job_timeout=2,
                                     worker_wait=60)  # fmt: skip
            async with worker_in_process(back, slow, concurrency=2, job_timeout=2.0), remote:
                asked = [asyncio.ensure_future(collect(remote.stream(prompt_ids(model, f"question {i}"),
                                                                     SamplingParams()))) for i in range(5)]  # fmt: skip

                async def two_running() -> bool:
                    return len(slow.prompts) == 2

                await until(two_running)
                await asyncio.sleep(1.5)  # the queued jobs are on disk (AOF)
                server.kill()
                outcomes = await asyncio.gather(*asked, return_exceptions=True)
                # every requester was told Redis is unavailable: nobody waits for these answers any more
                assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
                await asyncio.sleep(3)
                server.start()  # replays the AOF: the 3 queued jobs and the 2 unacknowledged ones are back

                async def drained() -> bool:  # read or taken over, then dropped unanswered
                    return await front.xlen(JOBS) == 0 and (await front.xpending(JOBS, GROUP))["pending"] == 0

                await until(drained, timeout=30)
                assert len(slow.prompts) == 2  # none was generated again
                async for name in front.scan_iter(match="parley:job:*", count=1000):
                    assert 0 < await front.ttl(name) <= max(REPLY_TTL, 300), name  # every leftover expires
    finally:
        server.stop()


# --- real `parley worker` processes -----------------------------------------------------------------


def worker_env(tmp_path: Path, redis_url: str, model: LoadedModel, **settings: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PARLEY_") and k != "REDIS_URL"}
    return {
        **clean,
        "REDIS_URL": redis_url,
        "PARLEY_DATA_DIR": str(tmp_path / "data"),
        "PARLEY_MODEL_DIR": str(model.info.path.parent),
        "PARLEY_MODEL": model.name,
        "PARLEY_DEVICE": "cpu",
        "PARLEY_CONTEXT_TOKENS": "2048",
        "PARLEY_HTTP_PORT": "0",  # health and metrics on a free port each
        **{f"PARLEY_{k.upper()}": v for k, v in settings.items()},
    }


def start_workers(n: int, env: dict[str, str], logs: Path) -> list[subprocess.Popen[bytes]]:
    logs.mkdir(exist_ok=True)
    procs = []
    for i in range(n):
        with (logs / f"worker-{i}.log").open("wb") as log:
            cmd = [sys.executable, "-m", "bots.cli", "worker"]
            procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=log))
    return procs


def stop_workers(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


@asynccontextmanager
async def worker_processes(
    n: int, redis: Redis, env: dict[str, str], logs: Path
) -> AsyncIterator[list[subprocess.Popen[bytes]]]:
    """``n`` `parley worker` processes, once all of them are taking jobs."""
    procs = start_workers(n, env, logs)
    try:

        async def all_up() -> bool:
            assert all(p.poll() is None for p in procs), "a worker exited at start"
            return int(await redis.zcard(WORKERS)) == n

        await until(all_up, timeout=60)
        yield procs
    finally:
        stop_workers(procs)


async def holder(redis: Redis) -> tuple[str, int] | None:
    """The worker holding the (only) job, and the job's delivery count."""
    pending: Any = await redis.xpending_range(JOBS, GROUP, "-", "+", 1)
    return (pending[0]["consumer"].decode(), int(pending[0]["times_delivered"])) if pending else None


def pid_of(worker_name: str) -> int:
    return int(worker_name.rsplit("-", 1)[1])


@pytest.mark.slow
async def test_worker_killed_mid_answer_is_answered_once_by_the_other(
    tmp_path: Path,
    jobs_redis: RedisProcess,
    redis: Redis,
    store: Store,
    settings: Settings,
    generator: Generator,
    model: LoadedModel,
) -> None:
    settings = settings.model_copy(update={"max_reply_tokens": 160})
    uninterrupted = Engine(settings, store, generator, model)
    request = ChatRequest(ConversationKey("test", "local", user="ann"), LONG_QUESTION)
    expected = [e async for e in uninterrupted.chat(request)][-1]
    assert isinstance(expected, Reply)
    assert expected.completion_tokens > 60  # long enough to be killed in the middle

    env = worker_env(tmp_path, jobs_redis.url, model, job_timeout="3")
    async with (
        worker_processes(2, redis, env, tmp_path / "logs") as procs,
        RemoteGenerator(redis, context_tokens=2048, job_timeout=3) as remote,
    ):
        engine = Engine(settings, store, remote, model)
        key = ConversationKey("test", "remote", user="ann")
        events, killed, killed_at, resumed_at = [], 0, 0.0, 0.0
        async for event in engine.chat(ChatRequest(key, LONG_QUESTION)):
            events.append(event)
            if killed and not resumed_at:
                resumed_at = time.monotonic()
            if isinstance(event, Delta) and not killed:
                held = await holder(redis)
                assert held is not None
                killed, killed_at = pid_of(held[0]), time.monotonic()
                os.kill(killed, signal.SIGKILL)
        answered_after = time.monotonic() - killed_at
        replies = [e for e in events if isinstance(e, Reply)]
        assert len(replies) == 1
        shown = "".join(e.text for e in events if isinstance(e, Delta))
        assert shown == replies[0].text == expected.text
        assert [t.content for t in await store.history(key)] == [LONG_QUESTION, expected.text]

        async def acknowledged() -> bool:  # just after the answer's end was sent
            return await redis.xlen(JOBS) == 0

        await until(acknowledged)
        assert await redis.xlen(DEAD_JOBS) == 0
        survivor = next(i for i, p in enumerate(procs) if p.pid != killed)
        log = (tmp_path / "logs" / f"worker-{survivor}.log").read_text()
        assert "taking over job" in log
        # counted in the survivor's metrics
        url = re.search(r"HTTP server on (http://\S+)", log)
        assert url is not None
        async with aiohttp.ClientSession() as http, http.get(f"{url[1]}/metrics") as response:
            assert "parley_jobs_reclaimed_total 1.0" in await response.text()
    print(
        f"\nworker SIGKILLed mid-answer (PARLEY_JOB_TIMEOUT=3): the answer went on {resumed_at - killed_at:.1f} s "
        f"after the kill, complete {answered_after:.1f} s after it"
    )


@pytest.mark.slow
async def test_a_job_that_keeps_killing_workers_goes_to_the_dead_letters(
    tmp_path: Path, jobs_redis: RedisProcess, redis: Redis, store: Store, model: LoadedModel
) -> None:
    # What a poison request does to a worker (a crash in the model's runtime, say) is played by SIGKILL:
    # every worker that takes this job dies.
    env = worker_env(tmp_path, jobs_redis.url, model, job_timeout="2", max_deliveries="2")
    async with (
        worker_processes(3, redis, env, tmp_path / "logs"),
        RemoteGenerator(redis, context_tokens=2048, job_timeout=2) as remote,
    ):
        answer = asyncio.create_task(collect(remote.stream(prompt_ids(model, LONG_QUESTION), SamplingParams(400))))
        killed: list[int] = []
        while len(killed) < 2:
            held = await holder(redis)
            if held is not None and held[1] == len(killed) + 1:
                os.kill(pid_of(held[0]), signal.SIGKILL)
                killed.append(pid_of(held[0]))
            await asyncio.sleep(0.02)
        with pytest.raises(JobFailed, match="set aside"):
            await asyncio.wait_for(answer, timeout=30)
        dead_letters: Any = await redis.xrange(DEAD_JOBS)
        [(_, dead)] = dead_letters
        assert dead[b"deliveries"] == b"2"
        assert await redis.xlen(JOBS) == 0
        assert (await redis.xpending(JOBS, GROUP))["pending"] == 0
    assert len(set(killed)) == 2


# --- Redis at start-up --------------------------------------------------------------------------------


def parley(args: Sequence[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "bots.cli", *args],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def stderr_until(proc: subprocess.Popen[str], text: str, timeout: float) -> str:
    """What ``proc`` wrote to stderr until ``text`` appeared (fails after ``timeout`` seconds). Read from
    the descriptor itself: the text wrapper's buffer would hide data from ``select``."""
    assert proc.stderr is not None
    seen, deadline = b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stderr.fileno(), selectors.EVENT_READ)
        while text.encode() not in seen:
            left = deadline - time.monotonic()
            assert left > 0, f"no {text!r} on stderr: {seen!r}"
            if selector.select(left):
                chunk = os.read(proc.stderr.fileno(), 65536)
                assert chunk, f"stderr closed before {text!r}: {seen!r}"
                seen += chunk
    return seen.decode()


@pytest.mark.slow
def test_redis_unreachable_at_start_up_is_retried_then_a_clear_error(tmp_path: Path, model: LoadedModel) -> None:
    port = free_port()
    env = worker_env(tmp_path, f"redis://:hunter22@127.0.0.1:{port}/0", model, redis_wait="2")
    started = time.monotonic()
    proc = parley(["export"], env)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert time.monotonic() - started >= 2  # it retried for PARLEY_REDIS_WAIT
    assert f"cannot reach Redis at redis://127.0.0.1:{port}/0 (tried for 2 s" in err
    assert "hunter22" not in err

    # Redis that comes up within PARLEY_REDIS_WAIT is waited for
    proc = parley(["export"], {**env, "PARLEY_REDIS_WAIT": "30", "REDIS_URL": f"redis://127.0.0.1:{port}/0"})
    # Redis starts once the command says it is waiting for it (a fixed sleep raced a slow start-up).
    waited = stderr_until(proc, "not reachable yet", timeout=60)
    server = RedisProcess(tmp_path, port=port)
    server.start()
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        server.stop()
    assert proc.returncode == 0, waited + err
    assert '"turns": []' in out
