"""Async generation with continuous batching, driven by one worker thread.

The event loop never waits on the model: requests go to the worker through a bounded queue, and the
worker hands text deltas back with ``call_soon_threadsafe``. ONNX Runtime releases the GIL inside
``run``, so the loop stays responsive while a step computes.

The worker runs a loop of iterations. Each admits waiting requests into free cache rows, drops the
cancelled ones, runs one prefill chunk for one sequence still reading its prompt (round robin, so a
long prompt shares the model with the others' short ones), then one decode step for every sequence at
once. Requests join and leave between steps. While others are decoding, prefill goes in small chunks,
so a long prompt delays everyone's next token by about one chunk, not by the whole prompt.

When a conversation's answer is done, its KV cache is copied out to a bounded, least-recently-used
host store (``ResidentCaches``), keyed by conversation: its next turn loads the longest prefix that
still matches the new prompt and prefills only the rest. Redis stays the source of truth; an evicted
conversation is simply prefilled again, with the same result.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType

import numpy as np
import numpy.typing as npt

from engine.contract import Delta, Event, Finished, ModelTime, SamplingParams
from engine.errors import GeneratorBusy, ModelError
from engine.model.detok import IncrementalDetokenizer, StopMatcher
from engine.model.runner import OnnxRunner
from engine.model.sampling import LoopGuard, Sampler

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Job:
    prompt: list[int]
    params: SamplingParams
    loop: asyncio.AbstractEventLoop
    cancel: threading.Event
    cache_key: str | None = None
    events: asyncio.Queue[Event | BaseException] = field(default_factory=asyncio.Queue)

    def send(self, item: Event | BaseException) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, item)


@dataclass(eq=False)
class _Sequence:
    """A request holding a cache row: what the row holds, what is left to read, what comes next."""

    job: _Job
    tokens: list[int]  # the positions the row's cache holds
    pending: list[int]  # prompt tokens not read yet
    budget: int
    sampler: Sampler
    detok: IncrementalDetokenizer
    stops: StopMatcher
    started: float
    guard: LoopGuard = field(default_factory=LoopGuard)
    next_token: int | None = None  # chosen, not yet fed to the model
    produced: int = 0
    first_at: float = 0.0
    last_at: float = 0.0


@dataclass(frozen=True, slots=True)
class _Resident:
    tokens: list[int]
    kv: npt.NDArray[np.generic]  # [layers * 2, kv_heads, len(tokens), head]


class ResidentCaches:
    """Finished conversations' KV caches in host memory, least recently used evicted past ``budget``
    bytes. The generator's worker takes and puts; the event loop may drop (a lock between them)."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.bytes = 0
        self.hits = self.misses = 0
        self._entries: OrderedDict[str, _Resident] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries

    def take(self, key: str) -> _Resident | None:
        with self._lock:
            return self._pop(key)

    def _pop(self, key: str) -> _Resident | None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.bytes -= entry.kv.nbytes
        return entry

    def put(self, key: str, tokens: list[int], kv: npt.NDArray[np.generic]) -> None:
        with self._lock:
            self._pop(key)
            if kv.nbytes > self.budget:
                return
            while self.bytes + kv.nbytes > self.budget:
                _, old = self._entries.popitem(last=False)
                self.bytes -= old.kv.nbytes
            self._entries[key] = _Resident(tokens, kv)
            self.bytes += kv.nbytes

    def drop(self, scope: str) -> int:
        """Forget the conversation ``scope`` names, or every conversation whose id starts with it ('': all)."""
        with self._lock:
            keys = [k for k in self._entries if not scope or k == scope or k.startswith(scope + ":")]
            for key in keys:
                self._pop(key)
            return len(keys)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    diff = np.flatnonzero(np.asarray(a[:n]) != np.asarray(b[:n]))
    return int(diff[0]) if diff.size else n


_STOP = object()


class Generator:
    """``async with Generator(runner) as gen: async for event in gen.stream(ids, params)``.

    As many requests run at once as the runner has rows; up to ``max_waiting`` more wait their turn.
    ``cache_bytes`` bounds the resident conversation caches (0: none kept). ``prefill_chunk`` is the
    prompt slice read per iteration while others decode (alone, a prompt is read ``ALONE_CHUNK`` at a
    time, which is fastest).
    """

    ALONE_CHUNK = 1024

    def __init__(
        self, runner: OnnxRunner, *, max_waiting: int = 64, cache_bytes: int = 0, prefill_chunk: int = 64
    ) -> None:
        self.runner = runner
        self.prefill_chunk = prefill_chunk
        self.resident = ResidentCaches(cache_bytes)
        self._jobs: queue.Queue[_Job | object] = queue.Queue(maxsize=max_waiting)
        self._thread: threading.Thread | None = None
        self._rows: list[_Sequence] = []  # index = cache row
        self._turn = 0  # round robin over sequences still reading their prompts
        self._stopping = False
        self.cancelled = 0  # requests ended early by their caller (metrics; tests)
        self.reused_tokens = 0  # prompt tokens loaded from resident caches instead of prefilled
        self.time = ModelTime()

    async def __aenter__(self) -> Generator:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="parley-generator", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._thread is None:
            return
        self._stopping = True
        self._jobs.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self._thread = None

    @property
    def context_tokens(self) -> int:
        return self.runner.max_len

    @property
    def device(self) -> str:
        return self.runner.device

    @property
    def active(self) -> bool:
        """Some request holds a cache row."""
        return bool(self._rows)

    async def forget(self, scope: str) -> None:
        # An answer still being written puts its cache back when done: /forget stops it first (a
        # stopped answer keeps no cache); after /reset the next prompt shares only the system prompt.
        self.resident.drop(scope)

    def model_time(self) -> ModelTime:
        return self.time

    async def ready(self) -> None:
        return None  # loaded before anything is served

    def stats(self) -> dict[str, int]:
        return {
            "running": len(self._rows),
            "free": self.runner.rows - len(self._rows),
            "waiting": self._jobs.qsize(),
        }

    async def stream(
        self,
        prompt: list[int],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        cache_key: str | None = None,
    ) -> AsyncIterator[Event]:
        """Deltas, then one Finished. Setting ``cancel`` ends the reply early (finish_reason
        "cancelled"); leaving the loop early, or being cancelled, stops the work too. A reply caught
        repeating one span over and over (``LoopGuard``) ends with finish_reason "loop"."""
        if self._thread is None:
            raise RuntimeError("Generator used outside 'async with'")
        if not prompt:
            raise ValueError("empty prompt")
        if len(prompt) >= self.runner.max_len:
            raise ModelError(f"prompt of {len(prompt)} tokens does not fit the context ({self.runner.max_len})")
        job = _Job(list(prompt), params, asyncio.get_running_loop(), cancel or threading.Event(), cache_key)
        try:
            self._jobs.put_nowait(job)
        except queue.Full:
            raise GeneratorBusy(
                f"the model is busy: {self._jobs.qsize()} requests are waiting already; try again in a moment"
            ) from None
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

    # Everything below runs on the worker thread.
    def _work(self) -> None:
        while self._admit():
            for row in reversed(range(len(self._rows))):
                if self._rows[row].job.cancel.is_set():
                    self.cancelled += 1
                    self._finish(row, "cancelled")
            try:
                self._prefill_one()
                self._decode_all()
            except Exception as exc:
                # A failed step leaves every row it touched in doubt: fail them all, keep serving.
                log.exception("generation failed")
                for seq in self._rows:
                    seq.job.send(ModelError(f"generation failed: {type(exc).__name__}"))
                self._rows.clear()
        for seq in self._rows:  # shutting down
            self._send_finished(seq, "cancelled")
        self._rows.clear()

    def _admit(self) -> bool:
        """Move waiting requests into free rows (blocking while there is nothing to do); False to stop."""
        while len(self._rows) < self.runner.rows:
            try:
                job = self._jobs.get() if not self._rows else self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is _STOP or self._stopping:
                return False
            assert isinstance(job, _Job)
            if job.cancel.is_set():
                job.send(Finished("", "cancelled", len(job.prompt), 0, 0.0, 0.0))
                continue
            self._rows.append(self._start(job, row=len(self._rows)))
        return not self._stopping

    def _start(self, job: _Job, row: int) -> _Sequence:
        params, prompt = job.params, job.prompt
        tokens: list[int] = []
        entry = self.resident.take(job.cache_key) if job.cache_key else None
        if entry is not None:
            # At least the prompt's last token is read again: its logits choose the first reply token.
            reuse = min(_common_prefix(entry.tokens, prompt), len(prompt) - 1)
            if reuse > 0:
                self.runner.load(row, entry.kv[:, :, :reuse])
                tokens = prompt[:reuse]
                self.reused_tokens += reuse
        if tokens:
            self.resident.hits += 1
        elif job.cache_key:
            self.resident.misses += 1
        sampler = Sampler(params)
        sampler.observe(prompt)
        tokenizer = self.runner.model.tokenizer
        return _Sequence(
            job=job,
            tokens=tokens,
            pending=prompt[len(tokens) :],
            # The cache bounds the reply: what the prompt leaves, at most max_tokens.
            budget=min(params.max_tokens, self.runner.max_len - len(prompt)),
            sampler=sampler,
            detok=IncrementalDetokenizer(tokenizer),
            stops=StopMatcher(params.stop),
            started=time.perf_counter(),
        )

    def _prefill_one(self) -> None:
        reading = [row for row, seq in enumerate(self._rows) if seq.pending]
        if not reading:
            return
        row = reading[self._turn % len(reading)]
        self._turn += 1
        seq = self._rows[row]
        others_decoding = any(s.next_token is not None for s in self._rows)
        chunk = self.prefill_chunk if others_decoding else self.ALONE_CHUNK
        ids, seq.pending = seq.pending[:chunk], seq.pending[chunk:]
        started = time.perf_counter()
        logits = self.runner.run(row, np.array([ids], dtype=np.int64), [len(seq.tokens)])
        self.time.prefill_seconds += time.perf_counter() - started
        self.time.prefill_tokens += len(ids)
        seq.tokens.extend(ids)
        if not seq.pending:
            self._choose([row], logits)

    def _decode_all(self) -> None:
        rows = [row for row, seq in enumerate(self._rows) if seq.next_token is not None]
        if not rows:
            return
        # A step runs rows 0 to the last decoding one: rows after it are all still reading their prompts
        # and are left out (a row costs about as much as it computes on a CPU). Reading rows before it
        # ride along with a placeholder token: it lands on the position their next prompt chunk
        # overwrites, and its logits are ignored.
        ids = np.zeros((rows[-1] + 1, 1), dtype=np.int64)
        for row in rows:
            token = self._rows[row].next_token
            assert token is not None
            ids[row, 0] = token
        started = time.perf_counter()
        logits = self.runner.run(0, ids, [len(seq.tokens) for seq in self._rows[: len(ids)]])
        self.time.decode_seconds += time.perf_counter() - started
        self.time.decode_steps += 1
        self.time.decode_tokens += len(rows)
        for row in rows:
            self._rows[row].tokens.append(int(ids[row, 0]))
        self._choose(rows, logits[rows])

    def _choose(self, rows: list[int], logits: npt.NDArray[np.float32]) -> None:
        """Pick each row's next token and pass its text on; rows that are done leave the batch."""
        eos = self.runner.model.config.eos_token_ids
        done: list[tuple[int, str]] = []
        for row, row_logits in zip(rows, logits, strict=True):
            seq = self._rows[row]
            token = seq.sampler.choose(row_logits)
            seq.last_at = time.perf_counter()
            if seq.produced == 0:
                seq.first_at = seq.last_at
            seq.produced += 1
            seq.next_token = None
            if token in eos:
                done.append((row, "stop"))
                continue
            if delta := seq.stops.feed(seq.detok.push(token)):
                seq.job.send(Delta(delta))
            if seq.stops.stopped:
                done.append((row, "stop"))
            elif seq.guard.push(token):
                # The same span over and over: more of it would only spend the budget (greedy never leaves it).
                log.debug("reply looping on a %d-token span after %d tokens; stopped", seq.guard.period, seq.produced)
                done.append((row, "loop"))
            elif seq.produced >= seq.budget:
                done.append((row, "length"))
            else:
                seq.next_token = token
        for row, reason in sorted(done, reverse=True):
            self._finish(row, reason)

    def _finish(self, row: int, reason: str) -> None:
        """Answer done: keep its cache resident, give the row to the last sequence, send the rest (last,
        so whoever sees Finished also sees the row free)."""
        seq = self._rows[row]
        key, held = seq.job.cache_key, len(seq.tokens)
        # A stopped answer keeps nothing: /forget stops the answer before it drops the cache.
        if key and held and self.resident.budget and reason != "cancelled":
            self.resident.put(key, seq.tokens, self.runner.save(row, held))
        last = len(self._rows) - 1
        if row != last:
            self.runner.move(last, row, len(self._rows[last].tokens))
            self._rows[row] = self._rows[last]
        self._rows.pop()
        self._send_finished(seq, reason)

    @staticmethod
    def _send_finished(seq: _Sequence, reason: str) -> None:
        if not seq.stops.stopped and (tail := seq.stops.feed(seq.detok.flush()) + seq.stops.flush()):
            seq.job.send(Delta(tail))
        first = seq.first_at or seq.started
        seq.job.send(
            Finished(
                text=seq.stops.text,
                finish_reason=reason,
                prompt_tokens=len(seq.job.prompt),
                completion_tokens=seq.produced,
                time_to_first_token=first - seq.started,
                decode_seconds=(seq.last_at or first) - first,
            )
        )
