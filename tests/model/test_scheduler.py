"""Continuous batching and resident conversation caches, on the real model (CPU)."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import AsyncIterator

import numpy as np
import pytest

from engine.contract import Delta, Finished, SamplingParams
from engine.errors import GeneratorBusy
from engine.model.generator import Generator, ResidentCaches
from engine.model.registry import LoadedModel
from engine.model.runner import OnnxRunner
from tests.model.support import QUESTIONS, collect, prompt_ids, until_busy

GREEDY = SamplingParams(max_tokens=24)


@pytest.fixture(scope="module")
async def batched(model: LoadedModel) -> AsyncIterator[Generator]:
    """Four rows, so six requests at once means some join while others are mid-answer."""
    runner = OnnxRunner(model, device="cpu", max_len=1024, rows=4)
    async with Generator(runner, cache_bytes=256 << 20, prefill_chunk=16) as gen:
        yield gen


async def _timed(gen: Generator, prompt: list[int], params: SamplingParams, **kw: object) -> list[float]:
    """When each delta arrived."""
    times = []
    async for event in gen.stream(prompt, params, **kw):  # type: ignore[arg-type]
        if isinstance(event, Delta):
            times.append(time.monotonic())
    return times


async def test_batched_greedy_equals_single_runs(batched: Generator, generator: Generator, model: LoadedModel) -> None:
    # Different lengths: requests leave the batch at different steps and waiting ones take their rows.
    params = [SamplingParams(max_tokens=8 + 6 * i) for i in range(len(QUESTIONS))]
    prompts = [prompt_ids(model, q) for q in QUESTIONS]
    single = [await collect(generator, p, sp) for p, sp in zip(prompts, params, strict=True)]
    before = dataclasses.replace(batched.time)
    together = await asyncio.gather(*(collect(batched, p, sp) for p, sp in zip(prompts, params, strict=True)))
    assert [t for t, _ in together] == [t for t, _ in single]
    assert [f.completion_tokens for _, f in together] == [f.completion_tokens for _, f in single]
    assert not batched.active
    # The model-time account: every prompt token read once, every reply token after the first (which
    # the prompt's last logits choose) from a decode step, and steps that served several rows at once.
    spent = batched.time
    assert spent.prefill_tokens - before.prefill_tokens == sum(len(p) for p in prompts)
    decoded = spent.decode_tokens - before.decode_tokens
    assert decoded == sum(f.completion_tokens - 1 for _, f in together)
    assert decoded > 1.5 * (spent.decode_steps - before.decode_steps)
    assert spent.decode_seconds > before.decode_seconds
    assert spent.prefill_seconds > before.prefill_seconds


async def test_cancel_frees_the_row_at_once(model: LoadedModel) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=512, rows=1)
    async with Generator(runner) as gen:
        story = prompt_ids(model, "Tell me a long story about a dragon.")
        cancel = threading.Event()
        first = asyncio.create_task(collect(gen, story, SamplingParams(max_tokens=400), cancel=cancel))
        await until_busy(gen)
        second = asyncio.create_task(collect(gen, prompt_ids(model, QUESTIONS[0]), GREEDY))
        await asyncio.sleep(0.3)
        assert gen.stats()["waiting"] == 1  # the only row is taken
        cancel.set()
        _, fin = await first
        assert fin.finish_reason == "cancelled"
        assert fin.completion_tokens < 400
        text, _ = await asyncio.wait_for(second, 60)
        assert "Paris" in text


async def test_long_prompt_is_read_in_chunks_between_decode_steps(batched: Generator, model: LoadedModel) -> None:
    story = prompt_ids(model, "Tell me a long story about a dragon.")
    long_question = prompt_ids(model, "Summarise this: " + " ".join(f"item {i} is blue." for i in range(120)))
    assert len(long_question) > 500
    decoding = asyncio.create_task(_timed(batched, story, SamplingParams(max_tokens=200)))
    await asyncio.sleep(1.0)  # the story is being written
    submitted = time.monotonic()
    reader = await _timed(batched, long_question, SamplingParams(max_tokens=2))
    story_times = await decoding
    # While the long prompt was read (16 tokens per iteration), the story kept getting tokens: one per
    # chunk. Read in one piece it would have got none until the prompt was done.
    during = [t for t in story_times if submitted < t < reader[0]]
    assert len(during) >= 10


async def test_rows_still_reading_after_the_last_decoding_row_are_left_out_of_decode_steps(
    model: LoadedModel,
) -> None:
    calls: list[tuple[int, tuple[int, ...]]] = []  # (first row, token ids' shape) of every step

    class Recording(OnnxRunner):
        def run(self, first: int, token_ids: np.ndarray, past: object, **kw: bool) -> np.ndarray:  # type: ignore[override]
            calls.append((first, token_ids.shape))
            return super().run(first, token_ids, past, **kw)  # type: ignore[arg-type]

    long_question = prompt_ids(model, "Summarise this: " + " ".join(f"item {i} is blue." for i in range(120)))
    async with Generator(Recording(model, device="cpu", max_len=1024, rows=2), prefill_chunk=16) as gen:
        story = gen.stream(prompt_ids(model, "Tell me a long story about a dragon."), SamplingParams(max_tokens=200))
        assert isinstance(await anext(story), Delta)  # the story is decoding in row 0
        await collect(gen, long_question, SamplingParams(max_tokens=2))  # read in row 1, 16 tokens a step
        async for _ in story:
            pass
    reading = [i for i, (first, _) in enumerate(calls) if first == 1]
    during = [shape for first, shape in calls[reading[0] : reading[-1]] if first == 0]
    # Each decode step while row 1 read its prompt ran row 0 alone, not row 1 beside it with a placeholder.
    assert len(during) >= 10
    assert set(during) == {(1, 1)}


async def test_full_queue_answers_busy_with_the_count(model: LoadedModel) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=256, rows=1)
    async with Generator(runner, max_waiting=1) as gen:
        prompt = prompt_ids(model, "Tell me a long story about a dragon.")
        cancel = threading.Event()
        first = asyncio.create_task(collect(gen, prompt, SamplingParams(max_tokens=200), cancel=cancel))
        await until_busy(gen)
        second = asyncio.create_task(collect(gen, prompt, SamplingParams(max_tokens=4)))
        await asyncio.sleep(0.1)
        with pytest.raises(GeneratorBusy, match="1 requests are waiting"):
            await collect(gen, prompt, SamplingParams(max_tokens=4))
        cancel.set()
        await first
        await second


def _follow_up(model: LoadedModel, question: str, answer: str, next_question: str) -> list[int]:
    messages = [
        {"role": "user", "content": question},
        {"role": "assistant", "content": answer},
        {"role": "user", "content": next_question},
    ]
    rendered = model.template.render(messages)
    return list(model.tokenizer.encode(rendered, add_special_tokens=False).ids)


async def test_follow_up_reuses_the_resident_cache_and_answers_as_a_cold_start(
    batched: Generator, generator: Generator, model: LoadedModel
) -> None:
    first, _ = await collect(batched, prompt_ids(model, QUESTIONS[0]), GREEDY, cache_key="conv-a")
    follow = _follow_up(model, QUESTIONS[0], first, "And of Italy?")
    # Other conversations use the rows in between: the follow-up must load its own cache back.
    await asyncio.gather(*(collect(batched, prompt_ids(model, q), GREEDY) for q in QUESTIONS[2:6]))
    reused, hits = batched.reused_tokens, batched.resident.hits
    warm, _ = await collect(batched, follow, GREEDY, cache_key="conv-a")
    assert batched.resident.hits == hits + 1
    # Everything up to the end of the first answer came from the cache, not a new prefill.
    assert batched.reused_tokens - reused >= len(prompt_ids(model, QUESTIONS[0]))
    cold, _ = await collect(generator, follow, GREEDY)
    assert warm == cold


async def test_evicted_conversation_is_prefilled_again_with_the_same_answer(
    model: LoadedModel, generator: Generator
) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=512, rows=2)
    per_token = runner.bytes_per_token
    # Room for about one short conversation: the second evicts the first.
    async with Generator(runner, cache_bytes=per_token * 80) as gen:
        first, _ = await collect(gen, prompt_ids(model, QUESTIONS[0]), GREEDY, cache_key="a")
        await collect(gen, prompt_ids(model, QUESTIONS[3]), GREEDY, cache_key="b")
        assert len(gen.resident) == 1
        assert gen.resident.bytes <= per_token * 80
        misses = gen.resident.misses
        follow = _follow_up(model, QUESTIONS[0], first, "And of Italy?")
        again, _ = await collect(gen, follow, GREEDY, cache_key="a")
        assert gen.resident.misses == misses + 1
    cold, _ = await collect(generator, follow, GREEDY)
    assert again == cold


async def test_a_changed_history_reuses_only_the_common_prefix(batched: Generator, model: LoadedModel) -> None:
    await collect(batched, prompt_ids(model, QUESTIONS[1]), GREEDY, cache_key="conv-b")
    # The stored answer differs from what was generated (e.g. moderated or edited): only the prefix
    # up to the difference is reused, and the answer is still the cold one.
    follow = _follow_up(model, QUESTIONS[1], "Something else entirely.", "Another one, please.")
    reused = batched.reused_tokens
    warm, fin = await collect(batched, follow, GREEDY, cache_key="conv-b")
    assert 0 < batched.reused_tokens - reused < len(follow) - 8
    assert fin.finish_reason in ("stop", "length")
    assert warm


def test_resident_caches_evict_least_recently_used_within_budget() -> None:
    caches = ResidentCaches(budget=3000)
    kv = np.zeros((2, 1, 100, 1), np.float32)  # 800 bytes each
    for key in "abc":
        caches.put(key, [1] * 100, kv.copy())
    assert caches.take("a") is not None  # taken out: it is being answered again
    caches.put("a", [1] * 100, kv.copy())  # back, most recent
    caches.put("d", [1] * 100, kv.copy())  # over budget: "b" (least recently used) goes
    assert caches.take("b") is None
    assert len(caches) == 3
    assert caches.bytes == 2400
    caches.put("huge", [1], np.zeros((1000,), np.float32))  # bigger than the budget: not kept
    assert caches.take("huge") is None
    assert caches.bytes == 2400


async def test_events_end_with_one_finished(batched: Generator, model: LoadedModel) -> None:
    events = [e async for e in batched.stream(prompt_ids(model, QUESTIONS[5]), GREEDY)]
    assert isinstance(events[-1], Finished)
    assert all(isinstance(e, Delta) for e in events[:-1])


def test_forgetting_drops_a_conversation_or_a_whole_chat() -> None:
    caches = ResidentCaches(budget=1 << 20)
    kv = np.zeros((1, 1, 4, 1), np.float32)
    for key in ("tg:12:-:-", "tg:12:7:-", "tg:123:-:-", "dc:12:-:-"):
        caches.put(key, [1] * 4, kv.copy())
    assert caches.drop("tg:12:7:-") == 1  # one conversation (a thread)
    assert caches.drop("tg:12") == 1  # the rest of chat 12, not chat 123
    assert "tg:123:-:-" in caches
    assert "dc:12:-:-" in caches
    assert caches.bytes == 2 * kv.nbytes


async def test_a_stopped_answer_keeps_no_cache(batched: Generator, model: LoadedModel) -> None:
    # /forget stops the answer and then drops the cache: the stopped answer must not put it back.
    cancel = threading.Event()
    async for event in batched.stream(prompt_ids(model, QUESTIONS[3]), GREEDY, cancel=cancel, cache_key="conv-stop"):
        if isinstance(event, Delta):
            cancel.set()
        else:
            assert event.finish_reason == "cancelled"
    assert "conv-stop" not in batched.resident
