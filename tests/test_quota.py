"""Quotas: per person and per chat, requests per minute and tokens per day, atomic in Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from engine.contract import ChatRequest, Reply
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.quota import KEEP
from engine.conversation.store import Store
from engine.errors import QuotaExceeded
from engine.model.registry import LoadedModel
from engine.runtime.settings import Settings
from tests.fakes.generator import ScriptedGenerator


def _engine(settings: Settings, store: Store, tiny_model: LoadedModel, **limits: int) -> Engine:
    return Engine(settings.model_copy(update=limits), store, ScriptedGenerator(tiny_model), tiny_model)  # type: ignore[arg-type]


async def _ask(engine: Engine, key: ConversationKey, person: str, *, exempt: bool = False) -> Reply:
    events = [e async for e in engine.chat(ChatRequest(key, "hello", author_id=person, exempt=exempt))]
    reply = events[-1]
    assert isinstance(reply, Reply)
    return reply


async def test_person_requests_per_minute(settings: Settings, store: Store, tiny_model: LoadedModel,
                                          shared_key: ConversationKey, redis: Redis) -> None:  # fmt: skip
    engine = _engine(settings, store, tiny_model, person_requests_per_minute=3, chat_requests_per_minute=0)
    person = f"p-{shared_key.chat}"
    for _ in range(3):
        await _ask(engine, shared_key, person)
    with pytest.raises(QuotaExceeded, match=r"limit of requests per minute for you; try again in \d+ s") as err:
        await _ask(engine, shared_key, person)
    assert 0 < err.value.retry_after <= 60
    # someone else in the same chat is not held back, and admins are exempt
    await _ask(engine, shared_key, person + "-other")
    await _ask(engine, shared_key, person, exempt=True)
    # the refused request stored nothing and counters expire
    assert len([t for t in await store.history(shared_key) if t.role == "user"]) == 5
    async for k in redis.scan_iter(match=f"*{person}*"):
        assert await redis.ttl(k) > 0, k


async def test_chat_requests_per_minute_and_override(settings: Settings, store: Store, tiny_model: LoadedModel,
                                                     shared_key: ConversationKey) -> None:  # fmt: skip
    engine = _engine(settings, store, tiny_model, person_requests_per_minute=0, chat_requests_per_minute=2)
    await _ask(engine, shared_key, "a")
    await _ask(engine, shared_key, "b")
    with pytest.raises(QuotaExceeded, match="per minute in this chat"):
        await _ask(engine, shared_key, "c")
    await engine.set_chat_limits("test", shared_key.chat, requests_per_minute=5, tokens_per_day=KEEP)
    assert await engine.chat_limits("test", shared_key.chat) == (5, engine.settings.chat_tokens_per_day)
    await _ask(engine, shared_key, "c")
    await engine.set_chat_limits("test", shared_key.chat, requests_per_minute=None, tokens_per_day=KEEP)
    assert (await engine.chat_limits("test", shared_key.chat))[0] == 2


async def test_tokens_per_day(settings: Settings, store: Store, tiny_model: LoadedModel, key: ConversationKey) -> None:
    engine = _engine(settings, store, tiny_model, person_tokens_per_day=30, chat_tokens_per_day=0)
    person = f"t-{key.chat}"
    first = await _ask(engine, key, person)
    assert first.prompt_tokens + first.completion_tokens >= 30  # one answer spends the day's allowance
    left = await engine.limits_left("test", person, key.chat)
    assert left["tokens_today"] == 0
    assert left["chat_tokens_today"] is None  # unlimited
    with pytest.raises(QuotaExceeded, match=r"tokens per day for you; try again in \d+ h"):
        await _ask(engine, key, person)


async def test_concurrent_requests_never_exceed_the_limit(settings: Settings, store: Store, tiny_model: LoadedModel,
                                                          shared_key: ConversationKey) -> None:  # fmt: skip
    engine = _engine(settings, store, tiny_model, person_requests_per_minute=0, chat_requests_per_minute=5)
    admitted = 0

    async def one(i: int) -> None:
        nonlocal admitted
        try:
            await engine.quotas.admit("test", f"p{i}", shared_key.chat)
            admitted += 1
        except QuotaExceeded:
            pass

    await asyncio.gather(*(one(i) for i in range(50)))
    assert admitted == 5


async def test_forget_erases_quota_counters(settings: Settings, store: Store, tiny_model: LoadedModel,
                                            key: ConversationKey, redis: Redis) -> None:  # fmt: skip
    engine = _engine(settings, store, tiny_model)
    person = f"f-{key.chat}"
    await _ask(engine, key, person)
    assert [k async for k in redis.scan_iter(match=f"*{person}*")]
    await engine.forget_person("test", person, private=key)
    await engine.forget_chat("test", key.chat)
    assert [k async for k in redis.scan_iter(match=f"*{person}*")] == []
    assert [k async for k in redis.scan_iter(match=f"*{key.chat}*")] == []


@pytest.mark.parametrize("bad", [-5, 10**12])
async def test_bad_limits_are_refused(settings: Settings, store: Store, tiny_model: LoadedModel, bad: int) -> None:
    from engine.errors import InputRejected

    engine = _engine(settings, store, tiny_model)
    with pytest.raises(InputRejected, match="whole number"):
        await engine.set_chat_limits("test", "c", requests_per_minute=bad, tokens_per_day=KEEP)
