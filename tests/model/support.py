"""What the model tests share: prompts, and reading a generator's stream."""

from __future__ import annotations

import asyncio
from typing import Any

from engine.contract import Delta, Finished, SamplingParams
from engine.model.generator import Generator
from engine.model.registry import LoadedModel

QUESTIONS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about autumn leaves.",
    "List three prime numbers and explain why they are prime.",
    "Why is the sky blue?",
    "Give me two tips for learning to cook.",
    "What do owls eat?",
]


def prompt_ids(model: LoadedModel, text: str) -> list[int]:
    rendered = model.template.render([{"role": "user", "content": text}])
    return list(model.tokenizer.encode(rendered, add_special_tokens=False).ids)


async def collect(gen: Generator, prompt: list[int], params: SamplingParams, **kw: Any) -> tuple[str, Finished]:
    parts: list[str] = []
    async for event in gen.stream(prompt, params, **kw):
        if isinstance(event, Delta):
            parts.append(event.text)
        else:
            assert isinstance(event, Finished)
            return "".join(parts), event
    raise AssertionError("no Finished event")


async def until_busy(gen: Generator) -> None:
    for _ in range(3000):
        if gen.active:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the generator never took the request")
