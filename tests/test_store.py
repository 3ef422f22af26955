import asyncio
import json

import pytest
from redis.asyncio import Redis

from engine.conversation.keys import ConversationKey
from engine.conversation.store import KINDS, Store, Turn
from engine.errors import StoreUnavailable
from engine.runtime.redis import connect


async def _assert_all_keys_expire(redis: Redis, key: ConversationKey) -> None:
    found = [k async for k in redis.scan_iter(match=key.redis_key("*").replace("{", "\\{").replace("}", "\\}"))]
    assert found, "nothing stored"
    for k in found:
        assert await redis.ttl(k) > 0, f"{k!r} has no TTL"


async def test_two_hundred_concurrent_appends_leave_exact_history(redis: Redis, key: ConversationKey) -> None:
    store = Store(redis, ttl=600, window=1000)

    async def one(i: int) -> bool:
        return await store.append(
            key, [Turn("user", f"q{i}"), Turn("assistant", f"a{i}")], dedupe_id=f"m:{i}", prompt_tokens=3,
            completion_tokens=2,
        )  # fmt: skip

    results = await asyncio.gather(*(one(i) for i in range(200)))
    assert all(results)
    history = await store.history(key, 400)
    assert len(history) == 400
    # every question is directly followed by its own answer: appends never interleave
    pairs = {(history[j].content, history[j + 1].content) for j in range(0, 400, 2)}
    assert pairs == {(f"q{i}", f"a{i}") for i in range(200)}
    assert await store.usage(key) == {"requests": 200, "prompt_tokens": 600, "completion_tokens": 400}
    await _assert_all_keys_expire(redis, key)


async def test_window_is_trimmed_and_read_is_fixed(redis: Redis, key: ConversationKey) -> None:
    small = Store(redis, ttl=600, window=10)
    for i in range(30):
        await small.append(key, [Turn("user", str(i))])
    assert [t.content for t in await small.history(key)] == [str(i) for i in range(20, 30)]
    assert [t.content for t in await small.history(key, 3)] == ["27", "28", "29"]
    assert await redis.llen(key.redis_key("turns")) == 10


async def test_retried_append_is_deduplicated(store: Store, key: ConversationKey) -> None:
    turns = [Turn("user", "hello"), Turn("assistant", "hi")]
    assert await store.append(key, turns, dedupe_id="m:42", prompt_tokens=5)
    assert not await store.append(key, turns, dedupe_id="m:42", prompt_tokens=5)
    assert len(await store.history(key)) == 2
    assert (await store.usage(key))["prompt_tokens"] == 5
    assert await store.seen(key, "m:42")


async def test_persona_reset_and_export(store: Store, redis: Redis, key: ConversationKey) -> None:
    await store.set_persona(key, "You are a pirate.")
    await store.append(key, [Turn("user", "ahoy", author="Ann"), Turn("assistant", "arr")], dedupe_id="m:1")
    data = await store.export(key)
    assert data["persona"] == "You are a pirate."
    assert [t["content"] for t in data["turns"]] == ["ahoy", "arr"]
    assert data["turns"][0]["author"] == "Ann"
    json.dumps(data)  # exportable as it is
    await _assert_all_keys_expire(redis, key)
    await store.reset(key)
    assert await store.history(key) == []
    assert await store.persona(key) == "You are a pirate."
    await store.erase_chat(key.platform, key.chat)
    assert await store.persona(key) is None
    for kind in KINDS:
        assert not await redis.exists(key.redis_key(kind))


async def test_a_write_after_the_erasure_is_refused(store: Store, redis: Redis, key: ConversationKey) -> None:
    # An answer in flight holds a lease; erasing its conversation takes the lease, so its late write
    # (the stopped answer, its usage) is refused atomically and nothing reappears.
    lease = await store.open_lease(key, "alice", "r1")
    assert await redis.exists(*lease.keys) == 3
    await store.erase_chat(key.platform, key.chat)
    assert await redis.exists(lease.conversation, lease.chat) == 0
    assert not await store.append(key, [Turn("user", "late"), Turn("assistant", "late too")], lease=lease)
    assert await redis.keys(f"*{key.chat}*") == []
    # With its lease still there the write goes through, once, and consumes it.
    lease = await store.open_lease(key, "alice", "r2")
    assert await store.append(key, [Turn("user", "hi")], lease=lease)
    assert not await store.append(key, [Turn("user", "hi again")], lease=lease)
    assert [t.content for t in await store.history(key)] == ["hi"]


async def test_conversations_are_isolated(store: Store, key: ConversationKey) -> None:
    other = ConversationKey(key.platform, key.chat, user="mallory")
    await store.append(key, [Turn("user", "secret")])
    assert await store.history(other) == []


async def test_unreachable_redis_is_a_clear_error() -> None:
    async with connect("redis://127.0.0.1:1/0", wait_seconds=0.5) as client:
        store = Store(client, ttl=60, window=10)
        with pytest.raises(StoreUnavailable, match="temporarily unavailable"):
            await store.history(ConversationKey("test", "x"))
