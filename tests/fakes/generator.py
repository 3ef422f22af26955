"""A fast, deterministic stand-in for the model, for tests where only the plumbing matters.

It speaks the Generator's seam (``stream(prompt_ids, params, cancel=)`` yielding Delta... Finished) and
answers from the prompt it is given, so tests can still see what the engine put in the prompt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from engine.contract import Delta, Finished, SamplingParams
from engine.model.registry import LoadedModel


@dataclass
class ScriptedGenerator:
    """Replies ``script(user_messages)`` (default: an echo naming how many questions it saw), streamed in
    pieces of ``piece`` characters every ``delay`` seconds."""

    model: LoadedModel
    context_tokens: int = 2048
    piece: int = 8
    delay: float = 0.002
    script: Callable[[list[str]], str] | None = None
    prompts: list[str] = field(default_factory=list)
    device: str = "cpu"
    cancelled: int = 0
    forgotten: list[str] = field(default_factory=list)
    active: bool = False

    async def forget(self, scope: str) -> None:
        self.forgotten.append(scope)

    def model_time(self) -> None:
        return None

    async def ready(self) -> None:
        return None

    def stats(self) -> dict[str, int]:
        return {"running": int(self.active), "waiting": 0}

    def users(self, prompt_text: str) -> list[str]:
        parts = prompt_text.split("<|im_start|>user\n")[1:]
        return [p.split("<|im_end|>")[0] for p in parts]

    async def stream(
        self,
        prompt: list[int],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        cache_key: str | None = None,
    ) -> AsyncIterator[Delta | Finished]:
        text = self.model.tokenizer.decode(prompt, skip_special_tokens=False)
        self.prompts.append(text)
        users = self.users(text)
        reply = self.script(users) if self.script else f"echo {len(users)}: {users[-1] if users else ''}"
        sent, reason = "", "stop"
        self.active = True
        try:
            for i in range(0, len(reply), self.piece):
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                    self.cancelled += 1
                    break
                chunk = reply[i : i + self.piece]
                sent += chunk
                yield Delta(chunk)
                await asyncio.sleep(self.delay)
        finally:
            self.active = False
        try:
            yield Finished(sent, reason, len(prompt), max(1, len(sent) // 4), 0.001, 0.01)
        finally:
            if cancel is not None:
                cancel.set()  # as the real generators do: a request's flag is set once it is over
