"""The decode loop against the reference (transformers on the dequantised GGUF) and its async wrapper."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from engine.contract import Delta, Finished, SamplingParams
from engine.errors import ModelError
from engine.model.catalog import builtin_gguf
from engine.model.generator import Generator
from engine.model.registry import LoadedModel
from engine.model.runner import OnnxRunner
from tests.model.support import collect, prompt_ids

PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about autumn leaves.",
    "List three prime numbers and explain why they are prime.",
]


@pytest.fixture(scope="module")
def reference() -> Iterator[Any]:
    torch = pytest.importorskip("torch", reason="the reference needs the 'convert' extra")
    from transformers import AutoModelForCausalLM

    gguf = builtin_gguf()
    torch.set_num_threads(2)
    ref = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    ref.eval()
    yield ref
    del ref


def _reference_greedy(reference: Any, prompt: list[int], n: int, eos: frozenset[int]) -> list[int]:
    import torch

    with torch.no_grad():
        out = reference.generate(
            torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=sorted(eos), pad_token_id=2
        )
    return [int(t) for t in out[0, len(prompt) :]]


def _onnx_greedy(runner: OnnxRunner, prompt: list[int], n: int) -> list[int]:
    eos = runner.model.config.eos_token_ids
    runner.reset()
    logits = runner.prefill(prompt)
    out: list[int] = []
    for _ in range(n):
        token = int(np.argmax(logits))
        out.append(token)
        if token in eos:
            break
        logits = runner.forward(np.array([token], dtype=np.int64))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("which", ["fp32_model", "model"])
def test_greedy_equals_the_reference(which: str, request: pytest.FixtureRequest, reference: Any) -> None:
    """fp32 and the default precision (the GGUF's own 4-bit blocks) both give the reference's tokens."""
    model: LoadedModel = request.getfixturevalue(which)
    runner = OnnxRunner(model, device="cpu", max_len=512)
    for text in PROMPTS:
        prompt = prompt_ids(model, text)
        ours = _onnx_greedy(runner, prompt, 32)
        theirs = _reference_greedy(reference, prompt, 32, model.config.eos_token_ids)
        assert ours == theirs, text


def test_logits_only_where_asked_match_all_logits(model: LoadedModel) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=512)
    prompt = prompt_ids(model, PROMPTS[1])
    every = runner.teacher_forced_logits(prompt)
    assert every.shape == (len(prompt), model.config.vocab_size)
    runner.reset()
    last = runner.prefill(prompt)
    np.testing.assert_allclose(last, every[-1], rtol=1e-4, atol=1e-4)


def test_threads_that_sleep_compute_what_spinning_ones_do(model: LoadedModel) -> None:
    # PARLEY_THREAD_SPINNING=false: the same result, only the idle threads' waiting changes.
    prompt = prompt_ids(model, PROMPTS[0])
    spinning = OnnxRunner(model, device="cpu", threads=2, max_len=512)
    sleeping = OnnxRunner(model, device="cpu", threads=2, spinning=False, max_len=512)
    assert sleeping.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert spinning.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert _onnx_greedy(sleeping, prompt, 12) == _onnx_greedy(spinning, prompt, 12)


def test_chunked_prefill_equals_one_pass(model: LoadedModel) -> None:
    runner = OnnxRunner(model, device="cpu", max_len=512)
    prompt = prompt_ids(model, PROMPTS[2])
    assert _onnx_greedy(runner, prompt, 12) == _onnx_greedy_chunked(runner, prompt, 12)


def _onnx_greedy_chunked(runner: OnnxRunner, prompt: list[int], n: int) -> list[int]:
    runner.reset()
    logits = runner.prefill(prompt, chunk=7)
    out = []
    for _ in range(n):
        out.append(int(np.argmax(logits)))
        logits = runner.forward(np.array([out[-1]], dtype=np.int64))
    return out


async def test_answers_paris(generator: Generator, model: LoadedModel) -> None:
    text, fin = await collect(generator, prompt_ids(model, PROMPTS[0]), SamplingParams(max_tokens=32))
    assert "Paris" in text
    assert fin.finish_reason == "stop"
    assert fin.text == text


async def test_deltas_concatenate_to_final_text_with_unicode(generator: Generator, model: LoadedModel) -> None:
    prompt = prompt_ids(model, "Répète exactement: « Café crème 🎉 naïve 日本 »")
    text, fin = await collect(generator, prompt, SamplingParams(max_tokens=40))
    assert text == fin.text
    assert "\ufffd" not in text


async def test_max_tokens_is_honoured(generator: Generator, model: LoadedModel) -> None:
    text, fin = await collect(
        generator, prompt_ids(model, "Tell me a long story about a dragon."), SamplingParams(max_tokens=5)
    )
    assert fin.completion_tokens == 5
    assert fin.finish_reason == "length"
    assert len(model.tokenizer.encode(text, add_special_tokens=False).ids) <= 6


async def test_stop_string_ends_the_reply(generator: Generator, model: LoadedModel) -> None:
    prompt = prompt_ids(model, PROMPTS[0])
    full, _ = await collect(generator, prompt, SamplingParams(max_tokens=32))
    word = full.split()[2]
    text, fin = await collect(generator, prompt, SamplingParams(max_tokens=32, stop=(word,)))
    assert fin.finish_reason == "stop"
    assert word not in text
    assert full.startswith(text)


async def test_greedy_is_deterministic_and_seeded_sampling_reproduces(generator: Generator, model: LoadedModel) -> None:
    prompt = prompt_ids(model, PROMPTS[1])
    greedy = [await collect(generator, prompt, SamplingParams(max_tokens=16)) for _ in range(2)]
    assert greedy[0][0] == greedy[1][0]
    sampled = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.9, top_k=40, seed=1234)
    a, b = (await collect(generator, prompt, sampled))[0], (await collect(generator, prompt, sampled))[0]
    assert a == b


async def test_cancel_stops_early_and_frees_the_worker(generator: Generator, model: LoadedModel) -> None:
    cancel = threading.Event()
    prompt = prompt_ids(model, "Tell me a long story about a dragon.")
    parts = 0
    fin: Finished | None = None
    async for event in generator.stream(prompt, SamplingParams(max_tokens=400), cancel=cancel):
        if isinstance(event, Delta):
            parts += 1
            if parts == 3:
                cancel.set()
        else:
            fin = event
    assert fin is not None
    assert fin.finish_reason == "cancelled"
    assert fin.completion_tokens < 40
    # the worker is free again at once
    text, _ = await asyncio.wait_for(
        collect(generator, prompt_ids(model, PROMPTS[0]), SamplingParams(max_tokens=8)), 60
    )
    assert text


async def test_abandoned_stream_stops_generation(generator: Generator, model: LoadedModel) -> None:
    before = generator.cancelled
    prompt = prompt_ids(model, "Tell me a long story about a dragon.")
    stream = generator.stream(prompt, SamplingParams(max_tokens=400))
    async for _ in stream:
        break
    await stream.aclose()  # type: ignore[attr-defined]
    # The next request runs only after the worker has finished with the abandoned one.
    text, _ = await collect(generator, prompt_ids(model, PROMPTS[0]), SamplingParams(max_tokens=4))
    assert text
    assert generator.cancelled == before + 1  # it was cut short, not written out to 400 tokens


async def test_event_loop_keeps_running_during_generation(generator: Generator, model: LoadedModel) -> None:
    gaps: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.monotonic()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await collect(generator, prompt_ids(model, "Tell me a long story about a dragon."), SamplingParams(max_tokens=64))
    done.set()
    await task
    assert len(gaps) > 10
    # a blocked loop would show a gap as long as the whole generation (seconds)
    assert max(gaps) < 0.5


async def test_prompt_too_long_for_the_cache_is_refused(generator: Generator) -> None:
    with pytest.raises(ModelError, match="does not fit"):
        await collect(generator, [1] * (generator.context_tokens + 1), SamplingParams())
