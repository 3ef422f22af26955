"""A document sent with a message: read whole when it fits, map-reduce when it does not."""

from __future__ import annotations

import asyncio
import re
import threading
from dataclasses import replace

import pytest
from redis.asyncio import Redis

from engine.contract import ChatRequest, Notice, Reply
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.reading import DEFAULT_INSTRUCTION, PARALLEL_PARTS, split_parts
from engine.conversation.store import Store
from engine.documents import Document
from engine.errors import InputRejected
from engine.model.registry import LoadedModel
from engine.runtime.settings import Settings
from tests.fakes.generator import ScriptedGenerator

SECTION = "The committee approved {n} new pontoons for the harbour on day {n}. " * 3


def _document(sections: int) -> Document:
    text = "\n\n".join(f"# Section {n}\n\n{SECTION.format(n=n)}" for n in range(1, sections + 1))
    return Document(name="minutes.md", kind="markdown", text=text, pages=None, truncated=False)


def _reply(users: list[str]) -> str:
    last = users[-1]
    if match := re.search(r"Summarise part (\d+) of (\d+)", last):
        return f"summary of part {match[1]}"
    return "answer: " + ("from summaries" if "<<<SUMMARIES" in last else "from the whole document")


@pytest.fixture
def scripted(tiny_model: LoadedModel) -> ScriptedGenerator:
    return ScriptedGenerator(tiny_model, script=_reply, piece=64, delay=0.001)


@pytest.fixture
def engine(settings: Settings, store: Store, scripted: ScriptedGenerator, tiny_model: LoadedModel) -> Engine:
    return Engine(settings, store, scripted, tiny_model)  # type: ignore[arg-type]


async def _ask(engine: Engine, request: ChatRequest, cancel: threading.Event | None = None) -> list[object]:
    return [event async for event in engine.chat(request, cancel=cancel)]


async def test_a_short_document_is_read_whole(
    engine: Engine, key: ConversationKey, scripted: ScriptedGenerator
) -> None:
    events = await _ask(engine, ChatRequest(key, "", document=_document(2)))
    reply = events[-1]
    assert isinstance(reply, Reply)
    assert reply.text == "answer: from the whole document"
    prompt = scripted.prompts[-1]
    assert DEFAULT_INSTRUCTION in prompt  # no words with it: reading it is the request
    assert "<<<DOCUMENT" in prompt
    assert "day 2" in prompt
    # it stays in the conversation, so a follow-up can ask about it
    history = await engine.store.history(key)
    assert "day 2" in history[0].content


async def test_a_long_document_is_read_in_parts_then_answered_from_their_summaries(
    engine: Engine, key: ConversationKey, scripted: ScriptedGenerator, tiny_model: LoadedModel
) -> None:
    document = _document(100)  # ~25,000 one-byte tokens against a 2,048-token context
    parts = split_parts(document.text, tiny_model, 2048 - 256)
    assert len(parts) > PARALLEL_PARTS  # more parts than are read at once
    assert " ".join(" ".join(parts).split()) == " ".join(document.text.split())  # nothing lost, in order
    events = await _ask(engine, ChatRequest(key, "What was approved?", document=document))
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert notices[0] == f"Reading minutes.md: {len(parts)} parts."
    assert f"Read part {len(parts)} of {len(parts)}." in notices
    assert any("covers all of them" in n for n in notices)
    reply = events[-1]
    assert isinstance(reply, Reply)
    assert reply.text == "answer: from summaries"
    final = scripted.prompts[-1]
    assert "What was approved?" in final
    assert all(f"summary of part {i}" in final for i in range(1, len(parts) + 1))
    assert final.index("summary of part 1") < final.index(f"summary of part {len(parts)}")


async def test_stopping_while_reading_keeps_nothing(
    engine: Engine, key: ConversationKey, scripted: ScriptedGenerator
) -> None:
    scripted.delay, scripted.piece = 0.05, 1  # slow parts, so the stop lands while they are read
    cancel = threading.Event()
    asyncio.get_running_loop().call_later(0.3, cancel.set)
    with pytest.raises(InputRejected, match="stopped while reading"):
        await _ask(engine, ChatRequest(key, "Summarise it", document=_document(40)), cancel)
    assert await engine.store.history(key) == []


async def test_follow_up_questions_retrieve_the_long_documents_own_passages(
    engine: Engine, key: ConversationKey, scripted: ScriptedGenerator, redis: Redis
) -> None:
    document = _document(100)
    keeper = "# Section 57\n\nThe lighthouse keeper Ilse Varga retires in May. "
    document = replace(document, text=document.text.replace("# Section 57\n\n", keeper))
    await _ask(engine, ChatRequest(key, "What was approved?", document=document))
    assert (await engine.export(key))["documents"] == ["minutes.md"]

    events = await _ask(engine, ChatRequest(key, "When does the lighthouse keeper Ilse Varga retire?"))
    prompt = scripted.prompts[-1]
    # The passage itself, not only the summaries in the history:
    assert "<<<SOURCE [1] minutes.md > Section 57\nThe lighthouse keeper Ilse Varga retires in May." in prompt
    reply = events[-1]
    assert isinstance(reply, Reply)
    assert reply.sources[0] == {"title": "minutes.md", "section": "Section 57", "document": "minutes.md"}

    await engine.reset(key)  # /new: the conversation starts over, its documents go with it
    await _ask(engine, ChatRequest(key, "When does the lighthouse keeper Ilse Varga retire?"))
    assert "<<<SOURCE" not in scripted.prompts[-1]
    assert await redis.exists(key.redis_key("docs")) == 0


async def test_forget_erases_the_documents_kept(engine: Engine, key: ConversationKey, redis: Redis) -> None:
    await _ask(engine, ChatRequest(key, "Summarise it", document=_document(60)))
    assert await redis.exists(key.redis_key("docs")) == 1
    assert 0 < await redis.ttl(key.redis_key("docs")) <= engine.settings.conversation_ttl
    await engine.forget_person(key.platform, key.user or "", private=key)
    assert await redis.exists(key.redis_key("docs")) == 0


async def test_summaries_too_long_together_are_summarised_again(
    engine: Engine, key: ConversationKey, scripted: ScriptedGenerator
) -> None:
    def reply(users: list[str]) -> str:
        last = users[-1]
        if match := re.search(r"Summarise part (\d+) of (\d+)", last):
            if "summary of part" in last:  # a second round: the part is made of first-round summaries
                return f"digest {match[1]}"
            return f"summary of part {match[1]}: " + "detail " * 120  # 60 of these fill far more than the context
        return "answer: " + ("from digests" if "digest 1" in last else "from summaries")

    scripted.script = reply
    events = await _ask(engine, ChatRequest(key, "What was approved?", document=_document(100)))
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert any(n.startswith("Reading the summaries of minutes.md:") for n in notices)
    reply_event = events[-1]
    assert isinstance(reply_event, Reply)
    assert reply_event.text == "answer: from digests"
    assert "detail detail" not in scripted.prompts[-1]


async def test_the_reading_bench_times_the_map_phase(engine: Engine) -> None:
    from bench.reading import render, summarise

    timed = await summarise(engine, _document(100))
    assert timed["parts"] > PARALLEL_PARTS
    assert timed["rounds"] == 1
    assert 0 <= timed["map_s"] <= timed["total_s"]
    results = {"model": "m", "pages": 54, "context_tokens": 2048, "command": "python -m bench.reading",
               "batched": {"parts_at_once": 8, "prefill_s": 3, "decode_s": 1, "decode_steps": 10,
                           "decode_tokens": 75} | timed,
               "serial": {"parts_at_once": 1, "prefill_s": 3, "decode_s": 4, "decode_steps": 80,
                          "decode_tokens": 80} | timed,
               "map_speedup": 1.0, "total_speedup": 1.0, "speedup_bound": 2.33, "rows_per_step": 7.5,
               "step_cost_ratio": 2.0}  # fmt: skip
    table = [line for line in render(results).splitlines() if line.startswith("|")]
    assert table[2].startswith("| batched (8 at once) | ")
    assert "| 7.5 | 100 |" in table[2]  # rows a step, ms a step
    assert {line.count("|") for line in table} == {table[0].count("|")}  # every row has the header's columns


async def test_a_document_not_in_english_is_answered_in_its_language(
    engine: Engine, key: ConversationKey, scripted: ScriptedGenerator
) -> None:
    french = "Le conseil a approuvé le budget du jardin partagé et a décidé de remplacer le four avant l'été."
    await _ask(engine, ChatRequest(key, "", document=Document.of_text(french, "compte-rendu.txt")))
    assert scripted.prompts[-1].endswith(
        "DOCUMENT>>>\n\nWrite your answer in French.<|im_end|>\n<|im_start|>assistant\n"
    )
    await _ask(engine, ChatRequest(replace(key, chat=key.chat + "-en"), "", document=_document(2)))
    assert "Write your answer in" not in scripted.prompts[-1]  # English: the instructions' own language
