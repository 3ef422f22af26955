"""Adapter overhead: what Parley's Telegram and Discord front ends add per message, model excluded.

The real python-telegram-bot / discord.py talk HTTP (and Discord's gateway WebSocket) to the fake servers
in tests/fakes, the engine uses a real Redis, and the model is the instant scripted generator, so what is
timed is the adapter's own work: receiving the update or gateway event, the dedupe claim, the engine's
Redis reads and the atomic append, the streamed draft or message and its final edit. For each message:
time from the person's message entering the fake to the bot's final reply being there. Run through
`make bench` (it writes bench/adapter.json and the tables in bench/adapter.md) or:

    python -m bench.adapter [--messages N] [--chats C] [--load-chats 200] [--load-messages 12] [--window 8]

The load run has many conversations at once (200 by default) on Telegram without flood limits, and also
reports the Redis time per message (reading the history window and the atomic append) for the first and
the last messages of each conversation: it must stay flat as histories grow, since the store reads a
fixed window.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr
from redis.asyncio import Redis

from bots.discord.bot import DiscordBot
from bots.telegram.bot import TelegramBot
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store, Turn
from engine.model.catalog import resolve_model
from engine.model.registry import LoadedModel, load_model
from engine.runtime.redis import connect
from engine.runtime.redis_server import EmbeddedRedis
from engine.runtime.settings import Settings, load_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.generator import ScriptedGenerator
from tests.fakes.telegram import FakeTelegram, random_token

BENCH_DIR = Path(__file__).resolve().parent
P = TypeVar("P")


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


Row = dict[str, float | int | bool | str]


async def _conversations(
    people: Sequence[P], per_person: int, say: Callable[[P, str], Awaitable[object]],
    answered: Callable[[P, str], Awaitable[object]],
) -> Row:  # fmt: skip
    """Every person talks at once, each waiting for the reply before the next message."""
    latencies: list[float] = []

    async def talk(person: P) -> None:
        for i in range(per_person):
            started = time.perf_counter()
            await say(person, f"message {i}")
            await answered(person, f": message {i}")
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(talk(p) for p in people))
    wall = time.perf_counter() - started
    return {
        "messages": len(latencies),
        "concurrent_chats": len(people),
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(_pct(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
        "messages_per_s": round(len(latencies) / wall, 1),
    }


def unlimited(settings: Settings) -> Settings:
    # One person sends hundreds of messages a minute here: quotas would refuse them.
    return settings.model_copy(
        update={
            "person_requests_per_minute": 0,
            "chat_requests_per_minute": 0,
            "person_tokens_per_day": 0,
            "chat_tokens_per_day": 0,
        }
    )


def _engine(settings: Settings, redis: Redis) -> Engine:
    settings = unlimited(settings)
    model = load_model(resolve_model(settings.model, settings.models_path).path)
    store = Store(redis, ttl=3600, window=settings.history_messages)
    return Engine(settings, store, ScriptedGenerator(model, delay=0.0, piece=64), model)


async def measure_telegram(messages: int, chats: int, data_dir: Path, flood_limits: bool) -> Row:
    async with EmbeddedRedis(data_dir) as url, connect(url) as redis, FakeTelegram(token=random_token()) as tg:
        settings = load_settings().model_copy(
            update={"telegram_bot_token": SecretStr(tg.token), "telegram_base_url": tg.base_url, "redis_url": url}
        )
        bot = TelegramBot(
            _engine(settings, redis), settings, private_interval=0.0, group_interval=0.0, flood_limits=flood_limits
        )
        async with bot:

            async def say(person: dict[str, Any], text: str) -> None:
                tg.user_says(tg.private_chat(person), person, text)

            async def answered(person: dict[str, Any], text: str) -> None:
                await tg.wait_for_message(tg.private_chat(person), text, timeout=60)

            row = await _conversations([tg.user(f"P{i}") for i in range(chats)], messages // chats, say, answered)
    return {"platform": "telegram", "flood_limits": flood_limits, **row}


async def measure_discord(messages: int, chats: int, data_dir: Path) -> Row:
    async with EmbeddedRedis(data_dir) as url, connect(url) as redis, FakeDiscord() as dc:
        settings = load_settings().model_copy(
            update={
                "discord_bot_token": SecretStr(dc.token),
                "discord_api_base": dc.api_base,
                "discord_gateway_url": dc.gateway_url,
                "redis_url": url,
            }
        )
        async with DiscordBot(_engine(settings, redis), settings, edit_interval=0.0, guild_ready_timeout=0.05):

            async def say(person: int, text: str) -> None:
                await dc.dm(person, text)

            async def answered(person: int, text: str) -> None:
                await dc.wait_for_message(dc.dm_channel(person), text, timeout=60)

            row = await _conversations([dc.user(f"p{i}") for i in range(chats)], messages // chats, say, answered)
    # discord.py always follows Discord's rate-limit headers: there is no limiter to switch off.
    return {"platform": "discord", "flood_limits": True, **row}


class TimedStore(Store):
    """Times, per message, the store calls that touch a conversation's growing history: reading its
    window and the atomic append. (Claims, quotas and usage are fixed-size keys.)"""

    def __init__(self, redis: Redis, *, ttl: int, window: int) -> None:
        super().__init__(redis, ttl=ttl, window=window)
        self.per_message: dict[str, list[float]] = defaultdict(list)  # conversation -> ms per message, in order
        self._read: dict[str, float] = {}

    async def history(self, key: ConversationKey, limit: int | None = None) -> list[Turn]:
        started = time.perf_counter()
        try:
            return await super().history(key, limit)
        finally:
            self._read[key.id] = time.perf_counter() - started

    async def append(self, key: ConversationKey, turns: Sequence[Turn], **options: Any) -> bool:
        started = time.perf_counter()
        try:
            return await super().append(key, turns, **options)
        finally:
            spent = self._read.pop(key.id, 0.0) + time.perf_counter() - started
            self.per_message[key.id].append(spent * 1000)


async def measure_load(settings: Settings, model: LoadedModel, chats: int, messages: int, window: int) -> Row:
    """``chats`` private conversations at once, ``messages`` each, histories trimmed to ``window`` turns
    (so the later messages run on full windows). Fails on any error reply, missing or duplicate answer."""
    assert settings.redis_url
    async with connect(settings.redis_url, max_connections=64) as redis, FakeTelegram(token=random_token()) as tg:
        settings = unlimited(settings).model_copy(
            update={"telegram_bot_token": SecretStr(tg.token), "telegram_base_url": tg.base_url,
                    "history_messages": window}
        )  # fmt: skip
        store = TimedStore(redis, ttl=3600, window=window)
        engine = Engine(settings, store, ScriptedGenerator(model, delay=0.0, piece=64), model)
        async with TelegramBot(engine, settings, private_interval=0.0, group_interval=0.0, flood_limits=False):

            async def say(person: dict[str, Any], text: str) -> None:
                tg.user_says(tg.private_chat(person), person, text)

            async def answered(person: dict[str, Any], text: str) -> None:
                chat = tg.private_chat(person)
                await tg.wait_for(lambda: any(m.text.endswith(text) for m in tg.messages(chat)), timeout=120,
                                  interval=0.02)  # fmt: skip

            people = [tg.user(f"P{i}") for i in range(chats)]
            before = await redis.info("commandstats")
            row = await _conversations(people, messages, say, answered)
            after = await redis.info("commandstats")
            await tg.wait_for_idle(timeout=30)
            for person in people:
                replies = [m.text for m in tg.messages(tg.private_chat(person))]
                # each message answered exactly once, in order, and nothing else said (no error replies)
                assert [r.rsplit(": ", 1)[-1] for r in replies] == [f"message {i}" for i in range(messages)], replies
            first = ConversationKey("telegram", str(tg.private_chat(people[0])["id"]), user=str(people[0]["id"]))
            stored = await redis.llen(first.redis_key("turns"))
        tg.assert_all_implemented()
    # Measured around the awaited calls, so they include waiting for the event loop, which ``chats``
    # conversations at once keep busy: what a message experiences, not Redis's own time (below).
    early = [ms for times in store.per_message.values() for ms in times[:2]]
    late = [ms for times in store.per_message.values() for ms in times[-2:]]
    return {
        "platform": "telegram",
        "flood_limits": False,
        **row,
        "history_window": window,
        "turns_stored_per_chat": stored,
        "redis_ms_early_p50": round(statistics.median(early), 2),
        "redis_ms_late_p50": round(statistics.median(late), 2),
        "redis_ms_late_p99": round(_pct(late, 0.99), 2),
        # Redis's own time per call (INFO commandstats), without the client's waits: the window read,
        # and the scripts (the atomic append, usage counters)
        "redis_server_us_per_lrange": _server_us(before, after, "lrange"),
        "redis_server_us_per_script": _server_us(before, after, "evalsha"),
    }


def _server_us(before: dict[str, Any], after: dict[str, Any], command: str) -> float:
    name = f"cmdstat_{command}"
    old = before.get(name, {"calls": 0, "usec": 0})
    calls = after[name]["calls"] - old["calls"]
    return round((after[name]["usec"] - old["usec"]) / calls, 1) if calls else 0.0


async def _load(chats: int, messages: int, window: int, data_dir: Path) -> Row:
    async with EmbeddedRedis(data_dir) as url:
        settings = load_settings().model_copy(update={"redis_url": url})
        model = load_model(resolve_model(settings.model, settings.models_path).path)
        return await measure_load(settings, model, chats, messages, window)


def _tables(results: list[Row], load: Row) -> str:
    lines = [
        "| platform | flood limits | chats at once | messages | p50 ms | p99 ms | max ms | messages/s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*results, load]:
        lines.append(
            f"| {r['platform']} | {'on' if r['flood_limits'] else 'off'} | {r['concurrent_chats']} | {r['messages']} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['messages_per_s']} |"
        )
    lines += [
        "",
        f"Redis time per message ({load['concurrent_chats']} chats, history window {load['history_window']} turns; "
        "reading the window + the atomic append):",
        "",
        "| messages | p50 ms | p99 ms |",
        "|---|---:|---:|",
        f"| first 2 of each chat | {load['redis_ms_early_p50']} | |",
        f"| last 2 of each chat (full window) | {load['redis_ms_late_p50']} | {load['redis_ms_late_p99']} |",
        "",
        f"Redis's own time per call: window read (LRANGE) {load['redis_server_us_per_lrange']} µs, "
        f"scripts (append, usage) {load['redis_server_us_per_script']} µs.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adapter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--chats", type=int, default=1, help="chats talking at once (each waits for its reply)")
    parser.add_argument("--load-chats", type=int, default=200, help="conversations at once in the load run")
    parser.add_argument("--load-messages", type=int, default=12, help="messages per conversation in the load run")
    parser.add_argument("--window", type=int, default=8, help="history window (turns) in the load run")
    args = parser.parse_args(argv)
    import tempfile

    results = []
    # Without flood limits: the adapter's own cost. With them: what people get (Telegram allows ~30
    # requests/s per bot, and a reply takes 3 or more: typing, draft(s), the message).
    for flood_limits in (False, True):
        for chats in sorted({1, args.chats}):
            with tempfile.TemporaryDirectory() as tmp:
                results.append(asyncio.run(measure_telegram(args.messages, chats, Path(tmp), flood_limits)))
    for chats in sorted({1, args.chats}):
        with tempfile.TemporaryDirectory() as tmp:
            results.append(asyncio.run(measure_discord(args.messages, chats, Path(tmp))))
    with tempfile.TemporaryDirectory() as tmp:
        load = asyncio.run(_load(args.load_chats, args.load_messages, args.window, Path(tmp)))
    (BENCH_DIR / "adapter.json").write_text(json.dumps([*results, load], indent=2) + "\n")
    tables = _tables(results, load)
    (BENCH_DIR / "adapter.md").write_text(tables)
    print(tables, end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
