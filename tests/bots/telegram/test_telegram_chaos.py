"""Telegram under load and through a Redis crash: real python-telegram-bot, the fake Bot API server, a
real Redis, the fast scripted model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from bench.adapter import measure_load, unlimited
from bots.replies import UNAVAILABLE
from bots.telegram.bot import TelegramBot
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store
from engine.model.registry import LoadedModel
from engine.runtime.redis import connect
from engine.runtime.settings import Settings
from tests.fakes.generator import ScriptedGenerator
from tests.fakes.telegram import FakeTelegram
from tests.redis_process import RedisProcess


@pytest.mark.slow
async def test_200_conversations_at_once(settings: Settings, tiny_model: LoadedModel) -> None:
    # Each conversation outgrows the 6-turn window: the later messages run on full windows.
    row = await measure_load(settings, tiny_model, chats=200, messages=5, window=6)
    # measure_load asserts every message was answered exactly once, in order, with no error reply
    assert row["messages"] == 1000
    assert row["turns_stored_per_chat"] == 6  # trimmed to the window on write, read as a fixed window
    # Redis time per message stays flat as histories grow (timing is noisy on a shared machine: a ratio)
    late, early = float(row["redis_ms_late_p50"]), float(row["redis_ms_early_p50"])
    assert late < 3 * early, row
    print(f"\n{row}")


@pytest.mark.slow
async def test_redis_killed_and_restarted(
    tmp_path: Path, tg: FakeTelegram, tg_settings: Settings, tiny_model: LoadedModel
) -> None:
    server = RedisProcess(tmp_path, aof=True)  # AOF, fsync every second
    server.start()
    try:
        async with connect(server.url) as redis:
            settings = unlimited(tg_settings).model_copy(update={"redis_url": server.url})
            engine = Engine(settings, Store(redis, ttl=3600, window=200), ScriptedGenerator(tiny_model), tiny_model)
            async with TelegramBot(engine, settings, private_interval=0.02, group_interval=0.02):
                await _crash_and_recover(tg, server, engine)
    finally:
        server.stop()


async def _crash_and_recover(tg: FakeTelegram, server: RedisProcess, engine: Engine) -> None:
    people = [tg.user(f"P{i}") for i in range(5)]
    chats = [tg.private_chat(p) for p in people]

    async def talk(i: int, text: str, expect: str, timeout: float = 10) -> Any:  # noqa: ASYNC109
        tg.user_says(chats[i], people[i], text)
        return await tg.wait_for_message(chats[i], expect, timeout=timeout)

    # Conversations going: three acknowledged exchanges each, then more while Redis is killed.
    for n in range(3):
        await asyncio.gather(*(talk(i, f"early {n}", f"echo {n + 1}: early {n}") for i in range(5)))
    await asyncio.sleep(1.5)  # AOF fsync is every second: these are now on disk
    for i in range(5):
        tg.user_says(chats[i], people[i], "in flight")
    server.kill()
    killed = time.monotonic()

    # During the outage: a clear "temporarily unavailable", quickly.
    await talk(0, "anyone there?", UNAVAILABLE)
    told_after = time.monotonic() - killed

    server.start()  # same port, same directory: it replays the AOF
    restarted = time.monotonic()
    # The next message is answered without restarting anything.
    reply = await talk(1, "after restart", ": after restart", timeout=30)
    recovered_after = time.monotonic() - restarted

    for i, person in enumerate(people):
        key = ConversationKey("telegram", str(chats[i]["id"]), user=str(person["id"]))
        turns = [t.content for t in await engine.store.history(key)]
        assert turns[:6] == [x for n in range(3) for x in (f"early {n}", f"echo {n + 1}: early {n}")], turns
    # the answer after the restart saw the acknowledged history
    assert int(reply.text.split(":")[0].removeprefix("echo ")) >= 4
    print(
        f"\nRedis SIGKILL: 'temporarily unavailable' {told_after * 1000:.0f} ms after the kill; "
        f"first answer {recovered_after * 1000:.0f} ms after Redis was back"
    )
