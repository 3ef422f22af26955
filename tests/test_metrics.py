"""What Engine.chat reports, once for every front end: requests, errors, tokens, timings and gauges."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from engine.contract import ChatRequest, Delta, Reply
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store
from engine.errors import InputRejected
from engine.model.registry import LoadedModel
from engine.runtime.logs import request_id
from engine.runtime.metrics import Metrics
from engine.runtime.settings import Settings
from tests.fakes.generator import ScriptedGenerator


def value(metrics: Metrics, name: str, **labels: str) -> float:
    got = metrics.registry.get_sample_value(name, labels)
    return 0.0 if got is None else got


@pytest.fixture
def scripted(tiny_model: LoadedModel) -> ScriptedGenerator:
    return ScriptedGenerator(tiny_model, delay=0.01)


@pytest.fixture
def fast_engine(settings: Settings, store: Store, scripted: ScriptedGenerator, tiny_model: LoadedModel) -> Engine:
    return Engine(settings, store, scripted, tiny_model)  # type: ignore[arg-type]


async def test_a_chat_is_counted_timed_and_tagged(fast_engine: Engine, key: ConversationKey) -> None:
    m = fast_engine.metrics
    seen_ids, reply = set(), None
    async for event in fast_engine.chat(ChatRequest(key, "hello there", author_id="ann", message_id="msg-1")):
        seen_ids.add(request_id.get())  # the caller's own log lines carry it too
        if isinstance(event, Delta):
            # an answer is being written: the gauges say so at scrape time
            assert value(m, "parley_active_conversations") == 1
            assert value(m, "parley_generations_running") == 1
        elif isinstance(event, Reply):
            reply = event
    assert reply is not None
    assert seen_ids == {"msg-1"}
    assert request_id.get() is None
    assert value(m, "parley_requests_total", platform="test") == 1
    assert value(m, "parley_tokens_in_total", platform="test") == reply.prompt_tokens
    assert value(m, "parley_tokens_out_total", platform="test") == reply.completion_tokens
    assert value(m, "parley_time_to_first_token_seconds_count", platform="test") == 1
    assert value(m, "parley_request_duration_seconds_count", platform="test") == 1
    ttft = value(m, "parley_time_to_first_token_seconds_sum", platform="test")
    assert 0 < ttft < value(m, "parley_request_duration_seconds_sum", platform="test")
    assert value(m, "parley_active_conversations") == 0
    assert value(m, "parley_errors_total", platform="test", kind="InputRejected") == 0


async def test_refusals_are_errors_of_their_kind(fast_engine: Engine, key: ConversationKey) -> None:
    m = fast_engine.metrics
    with pytest.raises(InputRejected):
        async for _ in fast_engine.chat(ChatRequest(key, "   ")):
            pass
    async for _ in fast_engine.chat(ChatRequest(key, "once", message_id="dup")):
        pass
    with pytest.raises(InputRejected):  # the same message again: answered once
        async for _ in fast_engine.chat(ChatRequest(key, "once", message_id="dup")):
            pass
    assert value(m, "parley_requests_total", platform="test") == 3
    assert value(m, "parley_errors_total", platform="test", kind="InputRejected") == 2
    assert value(m, "parley_request_duration_seconds_count", platform="test") == 1


async def test_an_abandoned_answer_is_not_an_error(fast_engine: Engine, key: ConversationKey) -> None:
    m = fast_engine.metrics
    events = fast_engine.chat(ChatRequest(key, "tell me more"))
    async for event in events:
        if isinstance(event, Delta):
            break
    await events.aclose()  # type: ignore[attr-defined]
    assert value(m, "parley_requests_total", platform="test") == 1
    assert value(m, "parley_time_to_first_token_seconds_count", platform="test") == 1
    assert value(m, "parley_request_duration_seconds_count", platform="test") == 0
    assert not [s for s in m.errors.collect()[0].samples if s.name.endswith("_total")]
    assert value(m, "parley_active_conversations") == 0


async def test_model_time_is_read_from_the_generator(engine: Engine) -> None:
    m = engine.metrics

    def spent() -> dict[str, float]:
        return {
            "decode_tokens": value(m, "parley_model_tokens_total", phase="decode"),
            "prefill_tokens": value(m, "parley_model_tokens_total", phase="prefill"),
            "decode_seconds": value(m, "parley_model_seconds_total", phase="decode"),
            "steps": value(m, "parley_decode_steps_total"),
        }

    before = spent()
    reply = None
    async for event in engine.chat(ChatRequest(ConversationKey("test", uuid.uuid4().hex, user="a"), "Hi there!")):
        if isinstance(event, Reply):
            reply = event
    assert reply is not None
    after = spent()
    # A new conversation reads its whole prompt; the first reply token comes from the prompt's logits.
    assert after["prefill_tokens"] - before["prefill_tokens"] == reply.prompt_tokens
    assert after["decode_tokens"] - before["decode_tokens"] == reply.completion_tokens - 1
    assert after["steps"] - before["steps"] == reply.completion_tokens - 1  # alone: one row per step
    assert after["decode_seconds"] > before["decode_seconds"]


async def test_queue_depth_is_read_from_the_generator(engine: Engine) -> None:
    """The real model's generator runs one request at a time: a second one waits in its queue."""
    m = engine.metrics
    first = engine.chat(ChatRequest(ConversationKey("test", uuid.uuid4().hex, user="a"), "Tell me a long story."))
    async for event in first:
        if isinstance(event, Delta):
            break

    async def second() -> None:
        async for _ in engine.chat(ChatRequest(ConversationKey("test", uuid.uuid4().hex, user="b"), "Hi.")):
            pass

    waiting = asyncio.create_task(second())
    for _ in range(1000):  # until the second request is queued behind the first
        if value(m, "parley_queue_depth") == 1:
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("the second request never waited in the queue")
    assert value(m, "parley_generations_running") == 1
    assert value(m, "parley_active_conversations") == 2
    await first.aclose()  # type: ignore[attr-defined]
    await waiting
    assert value(m, "parley_queue_depth") == 0


async def test_several_metrics_objects_live_side_by_side(fast_engine: Engine, shared_key: ConversationKey) -> None:
    other = Metrics()  # a registry of its own: nothing is shared through prometheus_client's global one
    async for _ in fast_engine.chat(ChatRequest(shared_key, "hi")):
        pass
    assert value(fast_engine.metrics, "parley_requests_total", platform="test") == 1
    assert value(other, "parley_requests_total", platform="test") == 0
    other.jobs_reclaimed.inc()
    assert value(other, "parley_jobs_reclaimed_total") == 1
    assert b"parley_jobs_reclaimed_total 0.0" in fast_engine.metrics.exposition()


async def test_concurrent_chats_each_keep_their_request_id(fast_engine: Engine) -> None:
    async def one(n: int) -> set[str | None]:
        key = ConversationKey("test", uuid.uuid4().hex, user="u")
        ids = set()
        async for _ in fast_engine.chat(ChatRequest(key, f"question {n}", message_id=f"m{n}")):
            ids.add(request_id.get())
            await asyncio.sleep(0)
        return ids

    results = await asyncio.gather(*(one(n) for n in range(5)))
    assert results == [{f"m{n}"} for n in range(5)]
