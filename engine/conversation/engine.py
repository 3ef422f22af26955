"""The platform-neutral engine: one entry point (a request in, an async stream of events out) and the
commands every front end shares (reset, persona, export, usage)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import threading
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from engine.contract import ChatEvent, ChatRequest, Delta, Finished, Notice, Reply, SamplingParams, TextGenerator
from engine.conversation.chatlog import ChatLog
from engine.conversation.keys import ConversationKey, Lease, chat_scope
from engine.conversation.moderation import REFUSAL, WITHDRAWN, Moderator, load_moderator
from engine.conversation.prompt import Prompt, build_prompt
from engine.conversation.quota import KEEP, Limits, Quotas, RateLimit
from engine.conversation.reading import (
    DEFAULT_INSTRUCTION,
    PART_OVERHEAD_TOKENS,
    from_summaries,
    inline,
    split_parts,
    summarise_parts,
)
from engine.conversation.store import Store, Turn
from engine.conversation.text import check_input, clean_text
from engine.errors import ContextTooLong, ConversationBusy, InputRejected, Refused, StoreUnavailable
from engine.model.registry import LoadedModel
from engine.retrieval.fetch import parse_allow
from engine.retrieval.grounding import (
    CHECK_MARGIN,
    MAX_SOURCES,
    NOT_IN_SOURCES,
    NOTHING_FOUND,
    Citations,
    Source,
    checked_message,
    grounded_message,
)
from engine.retrieval.kb import GLOBAL, KbDocument, KnowledgeBase
from engine.retrieval.passages import Passage, split_passages
from engine.retrieval.rank import GATE_COVERAGE, WEB_GATE_COVERAGE, PassageIndex
from engine.retrieval.search import WebSearch, best_passages
from engine.runtime.logs import request_context, request_id
from engine.runtime.metrics import Metrics
from engine.runtime.settings import Settings

log = logging.getLogger(__name__)
MAX_PERSONA_CHARS = 2000
# Messages that may wait for an answer in progress in the same conversation before new ones are refused.
MAX_WAITING_PER_CONVERSATION = 2
# How long /forget waits for the answers it stopped to end (their writes are refused in any case).
ERASE_WAIT_SECONDS = 10.0
NO_SEARCH = "web search is not set up here (the operator sets PARLEY_SEARCH_URL to a SearXNG instance)"


def _declined(sources: list[Source]) -> Finished:
    """The answer when the model does not find one in its sources: it says so, and where it looked."""
    citations = Citations(sources)
    text = citations.feed(NOT_IN_SOURCES) + citations.finish()
    return Finished(text, "stop", 0, 0, 0.0, 0.0, sources=tuple(source.as_dict() for source in citations.used))


class _OutputWatch:
    """Moderation of an answer while it is written. Text is held back until it has been checked, so
    nothing refused is ever shown; checks run every CHECK_EVERY new characters and at the end, not per
    token (a classifier call per token would be the slowest part of the loop)."""

    CHECK_EVERY = 64

    def __init__(self, moderator: Moderator | None) -> None:
        self.moderator = moderator
        self.text = ""
        self.checked = self.released = 0
        self.withdrawn = False

    def feed(self, delta: str) -> str:
        """The text that may be shown now ('' while it is held back or withdrawn)."""
        if self.moderator is None:
            return delta
        self.text += delta
        if len(self.text) - self.checked >= self.CHECK_EVERY:
            self._check()
        return self._release(self.checked)

    def finish(self) -> str:
        """The last check; whatever may still be shown."""
        if self.moderator is None:
            return ""
        self._check()
        return self._release(len(self.text))

    def _check(self) -> None:
        assert self.moderator is not None
        if not self.withdrawn and (reason := self.moderator(self.text)):
            log.info("moderation withdrew an answer (%s)", reason)
            self.withdrawn = True
        self.checked = len(self.text)

    def _release(self, upto: int) -> str:
        if self.withdrawn:
            return ""
        out, self.released = self.text[self.released : upto], upto
        return out


@dataclass(eq=False)
class _Slot:
    """The answer being written in one conversation, and who waits for it to finish."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    waiting: int = 0
    cancel: threading.Event | None = None  # the answer being written
    # Every request here, written or waiting: its cancel flag, and an event set when it has left.
    requests: dict[threading.Event, asyncio.Event] = field(default_factory=dict)


class Engine:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        generator: TextGenerator,
        model: LoadedModel,
        *,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.generator = generator
        self.model = model
        self._slots: dict[str, _Slot] = {}
        self.metrics = metrics or Metrics()
        self.metrics.watch_generator(generator.stats)
        if (spent := generator.model_time()) is not None:  # the model runs in this process
            self.metrics.watch_model_time(lambda: spent)
        self.metrics.active_conversations.set_function(self.active_conversations)
        self.moderator = load_moderator(settings.moderation)
        self.kb = KnowledgeBase(store.redis)
        self.chat_log = ChatLog(store.redis, flag_ttl=settings.conversation_ttl)
        # How much of a question (IDF-weighted) the best passage must cover to ground an answer, in the
        # knowledge bases and among web search results (rank.py).
        self.grounding_gate = GATE_COVERAGE
        self.web_gate = WEB_GATE_COVERAGE
        self.web = (
            WebSearch(settings.search_url, allow=parse_allow(settings.fetch_allow)) if settings.search_url else None
        )
        self.quotas = Quotas(
            store.redis,
            Limits(
                person_requests_per_minute=settings.person_requests_per_minute,
                chat_requests_per_minute=settings.chat_requests_per_minute,
                person_tokens_per_day=settings.person_tokens_per_day,
                chat_tokens_per_day=settings.chat_tokens_per_day,
            ),
        )

    @property
    def model_name(self) -> str:
        return self.model.name

    @property
    def context_tokens(self) -> int:
        return self.generator.context_tokens

    async def ping(self) -> None:
        """Readiness: Redis answers."""
        await self.store.ping()

    async def model_ready(self) -> None:
        """Readiness: the model can answer (in-process it is loaded; remote, a worker must be alive)."""
        await self.generator.ready()

    async def claim(self, name: str, ttl: int) -> bool:
        """True the first time ``name`` (a platform's delivery id) is claimed within ``ttl`` seconds."""
        return await self.store.claim(name, ttl)

    def rate_limit(self, name: str, *, limit: int, window_seconds: int) -> RateLimit:
        """A fixed-window limit kept in this engine's Redis (the API's requests per key, say)."""
        return RateLimit(self.store.redis, name=name, limit=limit, window_seconds=window_seconds)

    def default_params(self) -> SamplingParams:
        """Each sampling field from the settings, else the model's own defaults, else Parley's fallback."""
        s = self.settings
        return self.model.sampling_params(
            max_tokens=s.max_reply_tokens,
            seed=s.seed,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            repetition_penalty=s.repetition_penalty,
        )

    @asynccontextmanager
    async def _one_at_a_time(self, key: ConversationKey, cancel: threading.Event) -> AsyncIterator[None]:
        """One answer at a time per conversation (the next question must see the previous answer);
        a few may wait their turn, more are refused."""
        slot = self._slots.setdefault(key.id, _Slot())
        if slot.lock.locked() and slot.waiting >= MAX_WAITING_PER_CONVERSATION:
            raise ConversationBusy("I'm still answering earlier messages here: wait a moment, or /stop that answer")
        slot.waiting += 1
        slot.requests[cancel] = ended = asyncio.Event()
        try:
            async with slot.lock:
                slot.waiting -= 1
                slot.cancel = cancel
                try:
                    yield
                finally:
                    slot.cancel = None
        finally:
            del slot.requests[cancel]
            ended.set()
            if slot.waiting == 0 and not slot.lock.locked():
                self._slots.pop(key.id, None)

    def active_conversations(self) -> int:
        """Conversations with an answer being written (those only waiting their turn are not counted)."""
        return sum(slot.lock.locked() for slot in self._slots.values())

    def stop(self, key: ConversationKey) -> bool:
        """Cancel the answer being written in a conversation; False when there is none."""
        slot = self._slots.get(key.id)
        if slot is None or slot.cancel is None:
            return False
        slot.cancel.set()
        return True

    def _stop_all(self, scope: str) -> list[asyncio.Event]:
        """Cancel every answer written or waiting in a conversation (``scope``: its id) or a chat (the
        ids' start); the events that are set once each has ended."""
        ended = []
        for conversation, slot in self._slots.items():
            if conversation == scope or conversation.startswith(scope + ":"):
                for cancel, done in slot.requests.items():
                    cancel.set()
                    ended.append(done)
        return ended

    async def _erase(self, scope: str, *erasures: Callable[[], Awaitable[int]]) -> int:
        """Stop what is in flight in ``scope``, erase, then let the stopped answers end before the model's
        memory of the scope is dropped (a stopped answer writes nothing: its leases went with the erasure)."""
        ended = self._stop_all(scope)
        removed = 0
        for erasure in erasures:
            removed += await erasure()
        if ended:
            waits = [asyncio.ensure_future(e.wait()) for e in ended]
            _, late = await asyncio.wait(waits, timeout=ERASE_WAIT_SECONDS)
            for wait in late:
                wait.cancel()
            if late:
                log.warning("%d stopped answer(s) had not ended %.0f s after an erasure", len(late), ERASE_WAIT_SECONDS)
        await self.generator.forget(scope)
        return removed

    async def chat(self, request: ChatRequest, *, cancel: threading.Event | None = None) -> AsyncIterator[ChatEvent]:
        """Answer one message: Notice*, Delta*, then one Reply. Refusals raise InputRejected before any
        event and store nothing; a message id already answered raises InputRejected too."""
        # Observed here, once for every front end; the request id tags every log line written meanwhile.
        with (
            request_context(request.message_id or uuid.uuid4().hex),
            self.metrics.request(request.key.platform) as observed,
        ):
            async with aclosing(self._chat(request, cancel)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        observed.shown()
                    elif isinstance(event, Reply):
                        observed.finished(event.prompt_tokens, event.completion_tokens)
                    yield event

    async def _chat(self, request: ChatRequest, cancel: threading.Event | None) -> AsyncGenerator[ChatEvent]:
        # A document may come without words: reading it is then the request.
        words = request.text if request.text.strip() or request.document is None else DEFAULT_INSTRUCTION
        text = check_input(words, max_chars=self.settings.max_input_chars)
        self._moderate_input(text)
        if request.search and self.web is None:
            raise InputRejected(NO_SEARCH)
        params = request.params or self.default_params()
        # The reply may not outgrow the cache the prompt leaves; the prompt keeps room for the reply.
        params = replace(params, max_tokens=min(params.max_tokens, self.settings.max_reply_tokens))
        cancel = cancel or threading.Event()
        key = request.key
        if request.author_id and not request.exempt:
            # Before waiting for a turn: a flood is refused at once, and a refused request is not counted.
            await self.quotas.admit(key.platform, request.author_id, key.chat)
        async with self._one_at_a_time(request.key, cancel):
            # From here on an erasure of the conversation, the chat or the person takes the lease, and
            # this answer's writes are refused. An erasure here stops this request before it erases
            # (_stop_all), so a lease opened after it is caught by the check below.
            lease = await self.store.open_lease(key, request.author_id, uuid.uuid4().hex)
            spent = False  # a stored answer's writes consumed every key of its lease
            try:
                if cancel.is_set():
                    raise InputRejected(
                        "stopped before I could answer (was the conversation erased?); nothing was kept"
                    )
                async for event in self._answer(request, text, params, cancel, lease):
                    spent = isinstance(event, Reply) and event.stored
                    yield event
            finally:
                if not spent:
                    with contextlib.suppress(StoreUnavailable):
                        await self.store.close_lease(lease)

    async def _answer(
        self, request: ChatRequest, text: str, params: SamplingParams, cancel: threading.Event, lease: Lease
    ) -> AsyncIterator[ChatEvent]:
        key, reply_budget = request.key, params.max_tokens
        if request.message_id and await self.store.seen(key, f"m:{request.message_id}"):
            raise InputRejected("this message was already answered")
        history = await self.store.history(key, self.settings.history_messages)
        system = await self.store.persona(key) or self.settings.system_prompt
        document = request.document
        content = text if document is None else inline(text, document)
        user_turn = Turn(
            role="user", content=content, author=request.author, author_id=request.author_id, search=request.search
        )
        sources: list[Source] = []
        if document is None:
            if request.search:
                yield Notice("searching", "Searching the web…")
            sources = await self.sources(text, scope=request.scope, search=request.search, conversation=key)
        read_in_parts: tuple[str, list[Passage]] | None = None  # kept for follow-up questions

        def prompt_for(turn: Turn) -> Prompt:
            return build_prompt(
                self.model,
                system=system,
                history=history,
                new=turn,
                budget_tokens=self.generator.context_tokens - reply_budget,
                label_speakers=key.user is None,
            )

        try:
            # The model reads the question with its sources; the conversation keeps the question alone.
            while True:
                try:
                    asked = replace(user_turn, content=grounded_message(text, sources)) if sources else user_turn
                    prompt = prompt_for(asked)
                    break
                except InputRejected:
                    if not sources:
                        raise
                    sources = sources[:-1]  # the least relevant source makes room
        except InputRejected:
            if document is None:
                raise
            # Too long to read at once: read it in parts, then answer from their summaries. When even those do
            # not fit together (a book against a small context), they are summarised in turn, round by round.
            budget = self.context_tokens - PART_OVERHEAD_TOKENS
            parts = split_parts(document.text, self.model, budget)
            texts, reading = parts, None
            while True:
                summaries: list[str] = []
                reads = summarise_parts(
                    self.generator, self.model, document, texts, params, cancel, summaries, reading=reading
                )
                async for notice in reads:
                    yield notice
                if len(summaries) < len(texts):
                    raise InputRejected("stopped while reading the document; nothing was kept") from None
                user_turn = replace(user_turn, content=from_summaries(text, document, summaries))
                try:
                    prompt = prompt_for(user_turn)
                    break
                except InputRejected:
                    texts = split_parts("\n\n".join(summaries), self.model, budget)
                    if len(texts) >= len(summaries):
                        raise  # summaries that do not shrink: more rounds would not help
                    reading = f"the summaries of {document.name or 'the document'}"
            name = document.name or "the document"
            read_in_parts = (name, split_passages(document.text, source=name, title=name))
            yield Notice("document", f"I read it in {len(parts)} parts; this answer covers all of them.")
        if prompt.history_left_out:
            yield Notice(
                "history_truncated",
                f"{prompt.history_left_out} older message(s) are beyond what the model can see now; they stay stored.",
            )
        finished: Finished | None = None
        if request.search and not sources:
            # Nothing on the web supports an answer: saying so beats the model's guess.
            finished = Finished(NOTHING_FOUND, "stop", 0, 0, 0.0, 0.0)
            yield Delta(NOTHING_FOUND)
        elif sources and not await self._supported(
            lambda: prompt_for(replace(user_turn, content=checked_message(text, sources))).token_ids, cancel, key.id
        ):
            finished = _declined(sources)
            yield Delta(finished.text)
        else:
            events = self._generate(prompt.token_ids, params, cancel, key.id, Citations(sources) if sources else None)
            async for event in events:
                if isinstance(event, Finished):
                    finished = event
                else:
                    yield event
        assert finished is not None
        turns = [user_turn]
        if finished.text or finished.finish_reason != "cancelled":
            stopped = finished.finish_reason == "cancelled"
            turns.append(Turn(role="assistant", content=finished.text, stopped=stopped, sources=finished.sources))
        stored = await self.store.append(
            key,
            turns,
            dedupe_id=f"m:{request.message_id}" if request.message_id else f"w:{uuid.uuid4().hex}",
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            lease=lease,
            document=read_in_parts,
        )
        if stored:
            await self.quotas.settle(
                key, request.author_id, lease, finished.prompt_tokens, finished.completion_tokens,
                usage_ttl=self.store.ttl,
            )  # fmt: skip
        yield Reply(
            text=finished.text,
            finish_reason=finished.finish_reason,
            prompt_tokens=finished.prompt_tokens,
            completion_tokens=finished.completion_tokens,
            time_to_first_token_ms=finished.time_to_first_token * 1000,
            tokens_per_second=finished.tokens_per_second,
            stored=stored,
            sources=finished.sources,
        )

    async def _generate(
        self,
        token_ids: list[int],
        params: SamplingParams,
        cancel: threading.Event,
        cache_key: str | None,
        citations: Citations | None,
    ) -> AsyncIterator[ChatEvent | Finished]:
        """The model's answer as it may be shown: moderated, its citations checked and renumbered (with the
        sources listed at the end), then the Finished event carrying the text exactly as shown."""
        load = self.generator.stats()
        if load["waiting"] or load.get("free") == 0:
            # The model is answering as many people as it can at once: say so rather than leave them guessing.
            place = load["waiting"] + 1
            yield Notice("queued", f"Many people are talking to me right now: you are number {place} in line.")
        finished: Finished | None = None
        watch = _OutputWatch(self.moderator)
        async for event in self.generator.stream(token_ids, params, cancel=cancel, cache_key=cache_key):
            if isinstance(event, Finished):
                finished = event
                continue
            shown = watch.feed(event.text)
            if watch.withdrawn:
                cancel.set()  # stop writing it
            elif shown := citations.feed(shown) if citations else shown:
                yield Delta(shown)
        assert finished is not None
        tail = watch.finish()
        if watch.withdrawn:
            yield replace(finished, text=WITHDRAWN, finish_reason="content_filter")
            return
        if citations is not None:
            tail = citations.feed(tail) + citations.finish()
            finished = replace(
                finished, text=citations.text, sources=tuple(source.as_dict() for source in citations.used)
            )
        if tail:
            yield Delta(tail)
        yield finished

    async def _supported(
        self, check_prompt: Callable[[], list[int]], cancel: threading.Event, cache_key: str | None
    ) -> bool:
        """Whether the model finds the answer in the sources it was given (``CHECK``, one token, Yes unless
        No is ``CHECK_MARGIN`` likelier). ``check_prompt`` is the answer's prompt with the check after the
        question; under the answer's cache key, the answer then re-reads only what differs."""
        try:
            ids = check_prompt()
        except InputRejected:
            return True  # the check does not fit beside the history: answer, as without it
        if len(ids) >= self.generator.context_tokens:
            return True
        if cancel.is_set():
            return True  # stopped already: the answer's own stream says so
        yes, no = (self.model.tokenizer.encode(word, add_special_tokens=False).ids[0] for word in ("Yes", "No"))
        verdict = SamplingParams(max_tokens=1, logit_bias=((yes, 100.0), (no, 100.0 - CHECK_MARGIN)))
        # Its own stop flag: a generator sets the flag of a request it has finished, and the answer's must
        # stay clear. (One token: a stop during the check is seen by the answer, at once.)
        async for event in self.generator.stream(ids, verdict, cancel=threading.Event(), cache_key=cache_key):
            if isinstance(event, Finished):
                return event.text.strip() != "No"
        return True

    def _encode(self, messages: Sequence[dict[str, str]]) -> list[int]:
        text = self.model.template.render(messages, add_generation_prompt=True)
        return list(self.model.tokenizer.encode(text, add_special_tokens=False).ids)

    async def sources(
        self,
        question: str,
        *,
        scope: str | None = None,
        search: bool = False,
        conversation: ConversationKey | None = None,
    ) -> list[Source]:
        """The passages an answer to ``question`` should rest on: the web's (``search``); else those of the
        long documents read in ``conversation`` and of the knowledge bases (global and ``scope``) that
        match it (`PassageIndex.supporting`), the conversation's first; none when nothing matches."""
        if search:
            if self.web is None:
                raise InputRejected(NO_SEARCH)
            passages = await self.web.passages(question)
            passages = best_passages(passages, question, MAX_SOURCES, self.web_gate)
        else:
            passages = []
            if conversation is not None and (read := await self.store.documents(conversation)):
                passages += PassageIndex(read).supporting(question, MAX_SOURCES, gate=self.grounding_gate)
            index = await self.kb.index((GLOBAL,) if scope in (None, GLOBAL) else (GLOBAL, scope))
            if index is not None:
                passages += index.supporting(question, MAX_SOURCES, gate=self.grounding_gate)
        return [Source.from_passage(passage) for passage in passages[:MAX_SOURCES]]

    async def complete(
        self,
        messages: Sequence[Mapping[str, str]],
        params: SamplingParams,
        *,
        cancel: threading.Event | None = None,
        search: bool = False,
        knowledge: bool = False,
    ) -> AsyncIterator[Delta | Finished]:
        """Stateless completion of a whole conversation the caller sends (the HTTP API): nothing is
        read from or written to the store. Without a system message the configured one is used. With
        ``search`` the last question is answered from the web, with ``knowledge`` from the global
        knowledge base when it matches; the Finished event then lists the sources."""
        # The HTTP server has set a request id already; a direct caller gets one here.
        with request_context(request_id.get() or uuid.uuid4().hex), self.metrics.request("api") as observed:
            async with aclosing(self._complete(messages, params, cancel, search, knowledge)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        observed.shown()
                    else:
                        observed.finished(event.prompt_tokens, event.completion_tokens)
                    yield event

    async def _complete(
        self,
        messages: Sequence[Mapping[str, str]],
        params: SamplingParams,
        cancel: threading.Event | None,
        search: bool,
        knowledge: bool,
    ) -> AsyncGenerator[Delta | Finished]:
        cleaned = [{"role": m["role"], "content": clean_text(m["content"])} for m in messages]
        if not cleaned:
            raise InputRejected("messages must not be empty")
        for m in cleaned:
            if m["role"] == "user":
                self._moderate_input(m["content"])
        if cleaned[0]["role"] != "system":
            cleaned.insert(0, {"role": "system", "content": self.settings.system_prompt})
        sources: list[Source] = []
        last = max((i for i, m in enumerate(cleaned) if m["role"] == "user"), default=None)
        if search and last is None:
            raise InputRejected("a web search needs a user message to search for")
        # A follow-up repeats the conversation so far: its cache, kept under the conversation's start, saves
        # reading it again (two conversations that start alike share what they have in common, no more).
        cache_key = "api:" + hashlib.sha256(json.dumps(cleaned[:2]).encode()).hexdigest()[:32]
        cancel = cancel or threading.Event()
        if (search or knowledge) and last is not None:
            question = cleaned[last]["content"]
            sources = await self.sources(question, search=search)
            if search and not sources:
                yield Delta(NOTHING_FOUND)
                yield Finished(NOTHING_FOUND, "stop", 0, 0, 0.0, 0.0)
                return
            if sources:
                checked = list(cleaned)
                checked[last] = {"role": "user", "content": checked_message(question, sources)}
                if not await self._supported(lambda: self._encode(checked), cancel, cache_key):
                    declined = _declined(sources)
                    yield Delta(declined.text)
                    yield declined
                    return
                cleaned[last] = {"role": "user", "content": grounded_message(question, sources)}
        ids = self._encode(cleaned)
        room = self.generator.context_tokens - len(ids)
        if room < 1:
            raise ContextTooLong(
                f"the messages take {len(ids)} tokens; the model's context holds {self.generator.context_tokens}"
            )
        params = replace(params, max_tokens=min(params.max_tokens, room))
        events = self._generate(ids, params, cancel, cache_key, Citations(sources) if sources else None)
        async for event in events:
            if isinstance(event, Delta | Finished):
                yield event

    async def retry(
        self,
        key: ConversationKey,
        *,
        params: SamplingParams | None = None,
        cancel: threading.Event | None = None,
        scope: str | None = None,
    ) -> AsyncIterator[ChatEvent]:
        """Take back the last answer and answer its question again (from the web again, if it was a search)."""
        question = await self.store.pop_exchange(key)
        if question is None:
            raise InputRejected("there is no earlier question here to answer again")
        request = ChatRequest(
            key, question.content, author=question.author, author_id=question.author_id, params=params,
            search=question.search, scope=scope,
        )  # fmt: skip
        async for event in self.chat(request, cancel=cancel):
            yield event

    async def person_usage(self, platform: str, person: str) -> dict[str, int]:
        return await self.store.person_usage(platform, person)

    async def limits_left(self, platform: str, person: str, chat: str) -> dict[str, int | None]:
        """What this person may still use in this chat (None: unlimited)."""
        return await self.quotas.remaining(platform, person, chat)

    async def chat_limits(self, platform: str, chat: str) -> tuple[int, int]:
        """The chat's requests per minute and tokens per day in force (0 = unlimited)."""
        return await self.quotas.chat_limits(platform, chat)

    async def set_chat_limits(
        self, platform: str, chat: str, *, requests_per_minute: int | None, tokens_per_day: int | None
    ) -> None:
        for name, value in (("requests per minute", requests_per_minute), ("tokens per day", tokens_per_day)):
            if value is not None and value != KEEP and not 0 <= value <= 1_000_000_000:
                raise InputRejected(f"{name} must be a whole number from 0 (unlimited) up")
        await self.quotas.set_chat_limits(
            platform, chat, requests_per_minute=requests_per_minute, tokens_per_day=tokens_per_day
        )

    async def forget_person(self, platform: str, person: str, private: ConversationKey | None = None) -> None:
        """Erase what is stored about a person (usage, counters) and, given their private conversation,
        that whole private chat. Its answers in flight are stopped first and write nothing afterwards;
        their answers in flight elsewhere no longer count towards their usage."""
        if private is None:
            await self.store.erase_person(platform, person)
            return
        await self._erase(
            chat_scope(platform, private.chat),
            partial(self.store.erase_person, platform, person),
            partial(self.store.erase_chat, platform, private.chat),
        )

    async def forget_chat(self, platform: str, chat: str) -> int:
        """Erase every conversation of a chat (all its threads), stopping its answers in flight first."""
        return await self._erase(chat_scope(platform, chat), partial(self.store.erase_chat, platform, chat))

    async def learn(self, scope: str, name: str, text: str, *, added_by: str) -> tuple[KbDocument, bool]:
        """Add a document to a knowledge base (replacing one of the same name); True if it replaced one."""
        return await self.kb.add(scope, name, text, added_by=added_by)

    async def kb_documents(self, scope: str) -> list[KbDocument]:
        return await self.kb.documents(scope)

    async def kb_remove(self, scope: str, document_id: str) -> bool:
        return await self.kb.remove(scope, document_id)

    @property
    def can_search(self) -> bool:
        return self.web is not None

    def model_summary(self) -> str:
        info = self.model.info
        return (
            f"{info.name} ({info.precision}, ONNX Runtime on {self.generator.device}, "
            f"{self.generator.context_tokens}-token context)"
        )

    def _moderate_input(self, text: str) -> None:
        if self.moderator is not None and (reason := self.moderator(text)):
            log.info("moderation refused a request (%s)", reason)
            raise Refused(REFUSAL)

    async def reset(self, key: ConversationKey) -> None:
        await self.store.reset(key)
        await self.generator.forget(key.id)

    async def set_persona(self, key: ConversationKey, text: str | None) -> str:
        """Set (or with None/empty, clear) the conversation's system prompt; returns the one in force."""
        if text is None or not text.strip():
            await self.store.set_persona(key, None)
            return self.settings.system_prompt
        persona = check_input(text, max_chars=MAX_PERSONA_CHARS)
        await self.store.set_persona(key, persona)
        return persona

    async def persona(self, key: ConversationKey) -> str:
        return await self.store.persona(key) or self.settings.system_prompt

    async def export(self, key: ConversationKey) -> dict[str, Any]:
        data = await self.store.export(key)
        data["model"] = self.model_name
        return data

    async def usage(self, key: ConversationKey) -> dict[str, int]:
        return await self.store.usage(key)
