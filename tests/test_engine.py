"""The engine API end to end: real Redis, real model."""

import asyncio
import json
import threading

import pytest
from redis.asyncio import Redis

from engine.contract import ChatRequest, Delta, Notice, Reply, SamplingParams
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store
from engine.errors import InputRejected
from engine.model.generator import Generator
from engine.model.registry import LoadedModel
from engine.model.runner import OnnxRunner
from engine.runtime.settings import Settings
from tests.model.support import until_busy


async def _run(engine: Engine, request: ChatRequest, **kw: object) -> tuple[list[object], Reply]:
    events = [e async for e in engine.chat(request, **kw)]  # type: ignore[arg-type]
    reply = events[-1]
    assert isinstance(reply, Reply)
    return events, reply


async def test_chat_streams_and_remembers(engine: Engine, key: ConversationKey) -> None:
    events, reply = await _run(engine, ChatRequest(key, "What is the capital of France? Answer in one sentence."))
    assert "Paris" in reply.text
    assert "".join(e.text for e in events if isinstance(e, Delta)) == reply.text
    assert reply.stored
    assert reply.prompt_tokens > 0 < reply.completion_tokens
    history = await engine.store.history(key)
    assert [(t.role, t.content) for t in history] == [
        ("user", "What is the capital of France? Answer in one sentence."),
        ("assistant", reply.text),
    ]
    await _run(engine, ChatRequest(key, "And of Italy?"))
    assert len(await engine.store.history(key)) == 4
    usage = await engine.usage(key)
    assert usage["requests"] == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [("", "empty"), ("\u200b\x00  ", "empty"), ("x" * 5000, "limit is 4000 characters")],
)
async def test_refused_input_stores_nothing(engine: Engine, redis: Redis, key: ConversationKey, text: str,
                                            message: str) -> None:  # fmt: skip
    with pytest.raises(InputRejected, match=message):
        await _run(engine, ChatRequest(key, text))
    assert [k async for k in redis.scan_iter(match=f"*{key.chat}*")] == []


async def test_control_characters_never_reach_the_store(engine: Engine, key: ConversationKey) -> None:
    await _run(engine, ChatRequest(key, "Say\u200b hi\x07 \U000e0049\U000e0047please"))
    assert (await engine.store.history(key))[0].content == "Say hi please"


async def test_same_message_id_is_answered_once(engine: Engine, redis: Redis, key: ConversationKey) -> None:
    await _run(engine, ChatRequest(key, "Hello!", message_id="777", author_id="ann"))
    with pytest.raises(InputRejected, match="already answered"):
        await _run(engine, ChatRequest(key, "Hello!", message_id="777", author_id="ann"))
    assert len(await engine.store.history(key)) == 2
    # the stored answer consumed its lease's keys, the refused one deleted its own: none is left
    assert await redis.keys(f"*{key.chat}*:lease:*") == []
    assert await redis.keys("parley:person:{test:ann}:lease:*") == []


async def test_persona_changes_the_system_prompt(engine: Engine, key: ConversationKey) -> None:
    assert await engine.persona(key) == engine.settings.system_prompt
    assert await engine.set_persona(key, "You are a pirate. Always say Arr.") == "You are a pirate. Always say Arr."
    assert await engine.persona(key) == "You are a pirate. Always say Arr."
    await engine.set_persona(key, None)
    assert await engine.persona(key) == engine.settings.system_prompt
    with pytest.raises(InputRejected, match="limit is 2000"):
        await engine.set_persona(key, "p" * 2001)


async def test_reset_and_export(engine: Engine, key: ConversationKey) -> None:
    await _run(engine, ChatRequest(key, "Remember the word banana."))
    data = await engine.export(key)
    assert data["conversation"] == key.id
    assert data["model"] == engine.model_name
    assert data["turns"][0]["content"] == "Remember the word banana."
    json.dumps(data)
    await engine.reset(key)
    assert (await engine.export(key))["turns"] == []


async def test_shared_conversation_records_speakers(engine: Engine, shared_key: ConversationKey) -> None:
    await _run(engine, ChatRequest(shared_key, "Hi, I am here.", author="Ann", author_id="1"))
    await _run(engine, ChatRequest(shared_key, "Me too.", author="Bob", author_id="2"))
    users = [t for t in await engine.store.history(shared_key) if t.role == "user"]
    assert [(t.author, t.author_id) for t in users] == [("Ann", "1"), ("Bob", "2")]


async def test_old_turns_left_out_are_announced(engine: Engine, key: ConversationKey) -> None:
    from engine.conversation.store import Turn

    filler = [Turn("user" if i % 2 == 0 else "assistant", "lorem ipsum dolor " * 60) for i in range(40)]
    await engine.store.append(key, filler)
    events, reply = await _run(engine, ChatRequest(key, "Summarise."))
    notices = [e for e in events if isinstance(e, Notice)]
    assert notices
    assert notices[0].kind == "history_truncated"
    assert "stay stored" in notices[0].text
    assert reply.prompt_tokens <= engine.generator.context_tokens - engine.settings.max_reply_tokens
    assert len(await engine.store.history(key)) == 42


async def test_cancelled_reply_keeps_the_partial_answer(engine: Engine, key: ConversationKey) -> None:
    cancel = threading.Event()
    parts = 0
    reply = None
    request = ChatRequest(key, "Tell me a long story about a dragon.", params=SamplingParams(max_tokens=300))
    async for event in engine.chat(request, cancel=cancel):
        if isinstance(event, Delta):
            parts += 1
            if parts == 3:
                cancel.set()
        elif isinstance(event, Reply):
            reply = event
    assert reply is not None
    assert reply.finish_reason == "cancelled"
    history = await engine.store.history(key)
    assert history[-1].stopped
    assert history[-1].content == reply.text


async def test_stop_cancels_the_answer_in_progress(engine: Engine, key: ConversationKey) -> None:
    assert not engine.stop(key)
    request = ChatRequest(key, "Tell me a long story about a dragon.", params=SamplingParams(max_tokens=300))
    reply = None
    deltas = 0
    async for event in engine.chat(request):
        if isinstance(event, Delta):
            deltas += 1
            if deltas == 2:
                assert engine.stop(key)
        elif isinstance(event, Reply):
            reply = event
    assert reply is not None
    assert reply.finish_reason == "cancelled"
    assert not engine.stop(key)


async def test_one_answer_at_a_time_per_conversation(engine: Engine, key: ConversationKey) -> None:
    import asyncio

    async def ask(text: str) -> Reply:
        return (await _run(engine, ChatRequest(key, text, params=SamplingParams(max_tokens=8))))[1]

    first = asyncio.create_task(ask("one"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(ask(t)) for t in ("two", "three")]
    await asyncio.sleep(0)
    from engine.errors import ConversationBusy

    with pytest.raises(ConversationBusy, match="still answering"):
        await ask("four")
    await asyncio.gather(first, *waiting)
    # answered in order, each seeing the one before
    assert [t.content for t in await engine.store.history(key) if t.role == "user"] == ["one", "two", "three"]
    assert engine._slots == {}


async def test_retry_answers_the_last_question_again(engine: Engine, key: ConversationKey) -> None:
    with pytest.raises(InputRejected, match="no earlier question"):
        [e async for e in engine.retry(key)]
    await _run(engine, ChatRequest(key, "Name a colour.", params=SamplingParams(max_tokens=8)))
    sampled = SamplingParams(max_tokens=8, temperature=1.0, seed=99)
    events = [e async for e in engine.retry(key, params=sampled)]
    assert isinstance(events[-1], Reply)
    history = await engine.store.history(key)
    assert [t.content for t in history if t.role == "user"] == ["Name a colour."]
    assert history[-1].content == events[-1].text


async def test_person_usage_and_forget(engine: Engine, key: ConversationKey, shared_key: ConversationKey,
                                       redis: Redis) -> None:  # fmt: skip
    person = f"p-{key.chat}"
    await _run(engine, ChatRequest(key, "Hello!", author_id=person, params=SamplingParams(max_tokens=4)))
    await _run(engine, ChatRequest(shared_key, "Hi all", author_id=person, params=SamplingParams(max_tokens=4)))
    usage = await engine.person_usage("test", person)
    assert usage["requests"] == 2
    await engine.forget_person("test", person, private=key)
    assert await engine.person_usage("test", person) == {}
    assert await engine.store.history(key) == []
    assert await engine.forget_chat("test", shared_key.chat) >= 2
    assert [k async for k in redis.scan_iter(match=f"*{shared_key.chat}*")] == []
    assert [k async for k in redis.scan_iter(match=f"*{person}*")] == []


def test_model_summary_names_model_and_device(engine: Engine) -> None:
    assert engine.model.name in engine.model_summary()
    assert "cpu" in engine.model_summary()


async def test_a_request_waiting_for_a_free_row_is_told_its_place(
    settings: Settings, store: Store, model: LoadedModel, key: ConversationKey
) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=512, rows=1)
    async with Generator(runner) as gen:
        engine = Engine(settings, store, gen, model)
        busy = ConversationKey(platform="test", chat=key.chat + "-other", user="bob")
        cancel = threading.Event()
        long = ChatRequest(busy, "Tell me a long story about a dragon.", params=SamplingParams(max_tokens=300))
        first = asyncio.create_task(_run(engine, long, cancel=cancel))
        await until_busy(gen)  # the only row is taken
        waiting = asyncio.create_task(_run(engine, ChatRequest(key, "Hi!", params=SamplingParams(max_tokens=4))))
        await asyncio.sleep(0.3)
        third = ConversationKey(platform="test", chat=key.chat + "-third", user="carol")
        queued = asyncio.create_task(_run(engine, ChatRequest(third, "Hello?", params=SamplingParams(max_tokens=4))))
        await asyncio.sleep(0.3)
        cancel.set()
        await first
        events, _ = await waiting
        later, _ = await queued
    notices = [e for e in events if isinstance(e, Notice)]
    assert [n.kind for n in notices] == ["queued"]
    assert "you are number 1 in line" in notices[0].text
    assert any(isinstance(e, Notice) and "number 2 in line" in e.text for e in later)


async def test_reset_and_forget_drop_the_resident_cache(engine: Engine, key: ConversationKey,
                                                         shared_key: ConversationKey) -> None:  # fmt: skip
    resident = engine.generator.resident  # type: ignore[attr-defined]
    for k in (key, shared_key):
        await _run(engine, ChatRequest(k, "Hi!", params=SamplingParams(max_tokens=4)))
        assert k.id in resident
    await engine.reset(key)
    assert key.id not in resident
    await engine.forget_chat(shared_key.platform, shared_key.chat)
    assert shared_key.id not in resident
