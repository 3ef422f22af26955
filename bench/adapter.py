"""Adapter overhead: what Parley's Telegram and Discord front ends add per message, model excluded.

The real python-telegram-bot / discord.py talk HTTP (and Discord's gateway WebSocket) to the fake servers
in tests/fakes, the engine uses a real Redis, and the model is the instant scripted generator, so what is
timed is the adapter's own work: receiving the update or gateway event, the dedupe claim, the engine's
Redis reads and the atomic append, the streamed draft or message and its final edit. For each message:
time from the person's message entering the fake to the bot's final reply being there. Run through
`make bench` (it writes bench/adapter.json) or:

    python -m bench.adapter [--messages N] [--chats C]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import SecretStr
from redis.asyncio import Redis

from bots.discord.bot import DiscordBot
from bots.telegram.bot import TelegramBot
from engine.engine import Engine
from engine.model.importer import resolve_model
from engine.model.registry import load_model
from engine.redis_server import EmbeddedRedis
from engine.settings import Settings, load_settings
from engine.store import Store, connect
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


def _engine(settings: Settings, redis: Redis) -> Engine:
    # One person sends hundreds of messages a minute here: quotas would refuse them.
    settings = settings.model_copy(
        update={
            "person_requests_per_minute": 0,
            "chat_requests_per_minute": 0,
            "person_tokens_per_day": 0,
            "chat_tokens_per_day": 0,
        }
    )
    model = load_model(resolve_model(settings.model, settings.models_path).path)
    store = Store(redis, ttl=3600, window=settings.history_messages)
    return Engine(settings, store, ScriptedGenerator(model, delay=0.0, piece=64), model)  # type: ignore[arg-type]


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.adapter", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--chats", type=int, default=1, help="chats talking at once (each waits for its reply)")
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
    (BENCH_DIR / "adapter.json").write_text(json.dumps(results, indent=2) + "\n")
    print("| platform | flood limits | chats at once | messages | p50 ms | p99 ms | max ms | messages/s |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['platform']} | {'on' if r['flood_limits'] else 'off'} | {r['concurrent_chats']} | {r['messages']} "
            f"| {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | {r['messages_per_s']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
