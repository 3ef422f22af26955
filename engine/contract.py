"""The engine's public surface, in one place: what a front end sends (a ``ChatRequest``, its
``SamplingParams``), what comes back (``Notice``, ``Delta``, then one ``Reply``; a generator's
``Finished``), and the seam every generator implements (``TextGenerator``). Errors are in
``engine.errors``; the ``Engine`` itself in ``engine.conversation.engine``."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol

from engine.conversation.keys import ConversationKey
from engine.documents.document import Document


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = field(default_factory=tuple)
    seed: int | None = None
    # (token id, bias) pairs added to those tokens' logits before anything else (OpenAI's logit_bias):
    # -100 all but bans a token, +100 all but forces one.
    logit_bias: tuple[tuple[int, float], ...] = ()

    def __post_init__(self) -> None:
        if self.max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.temperature < 0:
            raise ValueError("temperature must not be negative")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.top_k < 0:
            raise ValueError("top_k must not be negative")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be positive")
        for token, bias in self.logit_bias:
            if token < 0 or not -100 <= bias <= 100:
                raise ValueError("logit_bias takes token ids >= 0 and biases from -100 to 100")


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    text: str
    finish_reason: str  # "stop" (EOS or stop string), "length", "loop" (caught repeating) or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float  # seconds from start of work to first token chosen
    decode_seconds: float  # from first token to last
    sources: tuple[dict[str, str], ...] = ()  # set by the engine on a grounded answer (see Reply.sources)

    @property
    def tokens_per_second(self) -> float:
        return (self.completion_tokens - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0


Event = Delta | Finished


@dataclass(slots=True)
class ModelTime:
    """Where the worker's model time went: decode steps (one token for every row that is answering)
    and prompt chunks. Benchmarks read it to tell batching's gain on decoding from prompt reading."""

    decode_steps: int = 0
    decode_tokens: int = 0  # tokens chosen by decode steps (rows still reading their prompt excluded)
    decode_seconds: float = 0.0
    prefill_tokens: int = 0
    prefill_seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ChatRequest:
    key: ConversationKey
    text: str
    author: str | None = None  # display name, shown to the model in shared conversations
    author_id: str | None = None
    message_id: str | None = None  # the platform's id: the same message is answered once
    params: SamplingParams | None = None  # None: the configured defaults
    exempt: bool = False  # admins are not held to quotas
    document: Document | None = None  # sent with the message; ``text`` is then the instruction
    search: bool = False  # answer from a web search (/search), not from the model's memory
    # The community whose knowledge base answers besides the global one ("discord:GUILD", "telegram:CHAT").
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class Notice:
    """Something the person should know that is not part of the answer."""

    kind: str
    text: str


@dataclass(frozen=True, slots=True)
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token_ms: float
    tokens_per_second: float
    stored: bool
    # What the answer rests on, as the sources list under it shows them: {"title", "section", "url" or "document"}.
    sources: tuple[dict[str, str], ...] = ()


ChatEvent = Notice | Delta | Reply


class TextGenerator(Protocol):
    """The seam the engine talks to: the in-process generator, a remote worker pool, or a test double."""

    @property
    def context_tokens(self) -> int: ...

    @property
    def device(self) -> str: ...

    def stream(
        self,
        prompt: list[int],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        cache_key: str | None = None,
    ) -> AsyncIterator[Event]:
        """Deltas, then one Finished. ``cache_key`` names the conversation, so a generator that keeps
        conversations' caches can reuse the one it holds for it."""
        ...

    async def forget(self, scope: str) -> None:
        """Drop what is kept in memory for a conversation (``scope`` = its id), a whole chat (the id's
        start, ``chat_scope``) or, with '', every conversation: resident caches, after /forget or /reset."""
        ...

    def stats(self) -> dict[str, int]:
        """Gauges: requests ``running`` and ``waiting`` (always), and ``free`` rows where the generator
        has a fixed number (a request now would wait when there are none)."""
        ...

    def model_time(self) -> ModelTime | None:
        """Where this process's model time went; None when the model runs elsewhere (workers)."""
        ...

    async def ready(self) -> None:
        """Raise ``NotReady`` (saying what is missing) while requests cannot be answered."""
        ...
