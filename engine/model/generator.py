"""Async generation over a runner driven by one worker thread.

The event loop never waits on the model: requests go to the worker through a bounded queue, and the
worker hands text deltas back with ``call_soon_threadsafe``. ONNX Runtime releases the GIL inside
``run``, so the loop stays responsive while a step computes. One request runs at a time here; the seam
(``stream`` in, events out) is what a batching scheduler will sit behind.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol

import numpy as np

from engine.errors import ModelError, ParleyError
from engine.model.detok import IncrementalDetokenizer, StopMatcher
from engine.model.runner import OnnxRunner
from engine.model.sampling import Sampler, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Finished:
    text: str
    finish_reason: str  # "stop" (EOS or stop string), "length" or "cancelled"
    prompt_tokens: int
    completion_tokens: int
    time_to_first_token: float  # seconds from start of work to first token chosen
    decode_seconds: float  # from first token to last

    @property
    def tokens_per_second(self) -> float:
        return (self.completion_tokens - 1) / self.decode_seconds if self.decode_seconds > 0 else 0.0


Event = Delta | Finished


class GeneratorBusy(ParleyError):
    pass


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

    def stats(self) -> dict[str, int]:
        """Gauges for metrics: requests ``running`` and ``waiting``."""
        ...


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event
    events: asyncio.Queue[Event | BaseException] = field(default_factory=asyncio.Queue)

    def send(self, item: Event | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


_STOP = object()


class Generator:
    """``async with Generator(runner) as gen: async for event in gen.stream(ids, params)``."""

    def __init__(self, runner: OnnxRunner, *, max_waiting: int = 64) -> None:
        self.runner = runner
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self.active = False  # a request is being generated
        self.cancelled = 0  # requests ended early by their caller (metrics; tests)

    async def __aenter__(self) -> Generator:
        self._thread = threading.Thread(target=self._work, name="parley-generator", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    @property
    def context_tokens(self) -> int:
        return self.runner.max_len

    @property
    def device(self) -> str:
        return self.runner.device

    def stats(self) -> dict[str, int]:
        return {"running": int(self.active), "waiting": self._jobs.qsize()}

    async def stream(
        self,
        prompt: list[int],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        cache_key: str | None = None,
    ) -> AsyncIterator[Event]:
        """Deltas, then one Finished. Setting ``cancel`` ends the reply early (finish_reason
        "cancelled"); leaving the loop early, or being cancelled, stops the work too."""
        if self._thread is None:
            raise RuntimeError("Generator used outside 'async with'")
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.runner.max_len:
            raise ModelError(f"prompt of {len(prompt)} tokens does not fit the context ({self.runner.max_len})")
        job = _Job(list(prompt), params, asyncio.get_running_loop(), cancel=cancel or threading.Event())
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise GeneratorBusy("the model is busy; try again in a moment") from None
        try:
            while True:
                item = await job.events.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, Finished):
                    return
        finally:
            job.cancel.set()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not _STOP:
            assert isinstance(job, _Job)
            if job.cancel.is_set():
                job.send(Finished("", "cancelled", len(job.prompt), 0, 0.0, 0.0))
                continue
            self.active = True
            try:
                self._run(job)
            except Exception as exc:
                log.exception("generation failed")
                job.send(ModelError(f"generation failed: {type(exc).__name__}"))
            finally:
                self.active = False

    def _run(self, job: _Job) -> None:
        runner, params = self.runner, job.params
        tokenizer = runner.model.tokenizer
        eos = runner.model.config.eos_token_ids
        # The cache bounds the reply: what the prompt leaves, at most max_tokens.
        budget = min(params.max_tokens, runner.max_len - len(job.prompt))
        sampler = Sampler(params)
        sampler.observe(job.prompt)
        detok, stops = IncrementalDetokenizer(tokenizer), StopMatcher(params.stop)
        started = time.perf_counter()
        first_at = last_at = started
        runner.reset()
        logits = runner.prefill(job.prompt)
        produced, reason = 0, "length"
        while produced < budget:
            if job.cancel.is_set():
                reason = "cancelled"
                self.cancelled += 1
                break
            token = sampler.choose(logits)
            last_at = time.perf_counter()
            if produced == 0:
                first_at = last_at
            produced += 1
            if token in eos:
                reason = "stop"
                break
            delta = stops.feed(detok.push(token))
            if delta:
                job.send(Delta(delta))
            if stops.stopped:
                reason = "stop"
                break
            if produced < budget:
                logits = runner.forward(np.array([token], dtype=np.int64))
        if not stops.stopped:
            tail = stops.feed(detok.flush()) + stops.flush()
            if tail:
                job.send(Delta(tail))
        job.send(
            Finished(
                text=stops.text,
                finish_reason=reason,
                prompt_tokens=len(job.prompt),
                completion_tokens=produced,
                time_to_first_token=first_at - started,
                decode_seconds=last_at - first_at,
            )
        )
