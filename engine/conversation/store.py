"""Conversation memory in Redis.

Per conversation (one hash tag, so one cluster slot):
  ``…:turns``  list of JSON turns, trimmed to the stored window
  ``…:seen``   sorted set of message ids already appended (dedupe), newest kept
  ``…:meta``   hash: persona (system prompt) and other per-conversation settings
  ``…:usage``  hash: request and token counters
  ``…:docs``   list of the long documents read here (JSON: name and passages), for follow-up questions
  ``…:lease:<request>``  an answer in flight may still write here (see ``keys.Lease``)
Every key carries the conversation TTL, refreshed on each write (a lease: LEASE_TTL).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from engine.conversation.keys import PREFIX, ConversationKey, Lease, chat_pattern, person_key
from engine.retrieval.passages import Passage
from engine.runtime.redis import guard

KINDS = ("turns", "seen", "meta", "usage", "docs")
DOCUMENTS_KEPT = 5  # long documents a conversation keeps for follow-up questions, newest kept
SEEN_KEEP = 1000  # message ids remembered per conversation for dedupe
# An answer whose lease is older than this may no longer write (it is deleted when the answer ends).
LEASE_TTL = 6 * 3600

# Append turns (and a document read in parts), trim, refresh TTLs and count usage in one atomic step; a
# dedupe id already seen makes the whole call a no-op, so a retried write never adds a second copy. With a
# lease (KEYS[6]), the write happens only if the lease is still there (the conversation was not erased
# meanwhile), and consumes it.
_APPEND = """
local turns, seen, meta, usage, docs = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local dedupe, window, ttl, now = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local ptok, ctok, nturns = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
if KEYS[6] and redis.call('DEL', KEYS[6]) == 0 then return 0 end
if dedupe ~= '' then
  if redis.call('ZSCORE', seen, dedupe) then return 0 end
  redis.call('ZADD', seen, now, dedupe)
  redis.call('ZREMRANGEBYRANK', seen, 0, -(tonumber(ARGV[8]) + 1))
  redis.call('EXPIRE', seen, ttl)
end
for i = 9, 8 + nturns do redis.call('RPUSH', turns, ARGV[i]) end
redis.call('LTRIM', turns, -window, -1)
redis.call('EXPIRE', turns, ttl)
local document = ARGV[9 + nturns]
if document and document ~= '' then
  redis.call('RPUSH', docs, document)
  redis.call('LTRIM', docs, -tonumber(ARGV[10 + nturns]), -1)
end
redis.call('EXPIRE', docs, ttl)
redis.call('HINCRBY', usage, 'requests', 1)
redis.call('HINCRBY', usage, 'prompt_tokens', ptok)
redis.call('HINCRBY', usage, 'completion_tokens', ctok)
redis.call('EXPIRE', usage, ttl)
redis.call('EXPIRE', meta, ttl)
return 1
"""


# Take back the newest exchange (for /retry): an assistant reply if last, then the question before it.
_POP_EXCHANGE = """
local last = redis.call('LINDEX', KEYS[1], -1)
if not last then return false end
if cjson.decode(last)['role'] == 'assistant' then
  redis.call('RPOP', KEYS[1])
  last = redis.call('LINDEX', KEYS[1], -1)
  if not last then return false end
end
if cjson.decode(last)['role'] ~= 'user' then return false end
return redis.call('RPOP', KEYS[1])
"""


@dataclass(frozen=True, slots=True)
class Turn:
    role: str  # "user" or "assistant"
    content: str
    author: str | None = None  # display name of the speaker (shared channels)
    author_id: str | None = None
    at: float = field(default_factory=time.time)
    stopped: bool = False  # the reply was cancelled part-way
    sources: tuple[dict[str, str], ...] = ()  # an answer's sources (see Reply.sources)
    search: bool = False  # a question asked with /search (a retry searches again)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, False, ())})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Turn:
        data = json.loads(raw)
        if "sources" in data:
            data["sources"] = tuple(data["sources"])
        fields = ("role", "content", "author", "author_id", "at", "stopped", "sources", "search")
        return cls(**{k: data[k] for k in fields if k in data})


class Store:
    def __init__(self, redis: Redis, *, ttl: int, window: int) -> None:
        self.redis = redis
        self.ttl = ttl
        self.window = window
        self._append = redis.register_script(_APPEND)
        self._pop_exchange = redis.register_script(_POP_EXCHANGE)

    async def ping(self) -> None:
        await guard(self.redis.ping())

    async def append(
        self,
        key: ConversationKey,
        turns: Sequence[Turn],
        *,
        dedupe_id: str | None = None,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        lease: Lease | None = None,
        document: tuple[str, Sequence[Passage]] | None = None,
    ) -> bool:
        """Append turns (and a long document's passages, by name) atomically; False when ``dedupe_id`` was
        already recorded, or ``lease`` was erased with the conversation (nothing added)."""
        keys = [key.redis_key(k) for k in KINDS] + ([lease.conversation] if lease else [])
        args: list[str | int | float] = [
            dedupe_id or "",
            self.window,
            self.ttl,
            time.time(),
            prompt_tokens,
            completion_tokens,
            len(turns),
            SEEN_KEEP,
            *(t.to_json() for t in turns),
            _document_json(*document) if document else "",
            DOCUMENTS_KEPT,
        ]
        return bool(await guard(self._append(keys=keys, args=args)))

    async def seen(self, key: ConversationKey, dedupe_id: str) -> bool:
        return await guard(self.redis.zscore(key.redis_key("seen"), dedupe_id)) is not None

    async def history(self, key: ConversationKey, limit: int | None = None) -> list[Turn]:
        """The newest ``limit`` turns (a fixed window: reading never grows with the stored history)."""
        n = min(limit or self.window, self.window)
        raw = await guard(self.redis.lrange(key.redis_key("turns"), -n, -1))
        return [Turn.from_json(r) for r in raw]

    async def pop_exchange(self, key: ConversationKey) -> Turn | None:
        """Remove the newest question and its answer; the question, or None if there is none."""
        raw = await guard(self._pop_exchange(keys=[key.redis_key("turns")]))
        return Turn.from_json(raw) if raw else None

    async def claim(self, name: str, ttl: int) -> bool:
        """True the first time ``name`` is claimed within ``ttl`` seconds (dedupe of deliveries)."""
        return bool(await guard(self.redis.set(f"{PREFIX}:claim:{name}", 1, nx=True, ex=ttl)))

    async def open_lease(self, key: ConversationKey, person: str | None, request: str) -> Lease:
        lease = Lease.for_request(key, person, request)
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in lease.keys:
                pipe.set(name, 1, ex=LEASE_TTL)
            await guard(pipe.execute())
        return lease

    async def close_lease(self, lease: Lease) -> None:
        await guard(self.redis.delete(*lease.keys))

    async def person_usage(self, platform: str, person: str) -> dict[str, int]:
        raw = await guard(self.redis.hgetall(person_key(platform, person, "usage")))
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def erase_person(self, platform: str, person: str) -> int:
        """Everything kept about a person outside conversations (usage, quota counters, the leases of
        their answers in flight); keys removed."""
        return await self._erase_matching(person_key(platform, person, "lease:*"), person_key(platform, person, "*"))

    async def erase_chat(self, platform: str, chat: str) -> int:
        """Erase every conversation of a chat (all its threads, each person's in it, its counters and
        limits, the leases of answers in flight there); keys removed."""
        return await self._erase_matching(chat_pattern(platform, chat) + ":lease:*", chat_pattern(platform, chat))

    async def _erase_matching(self, leases: str, everything: str) -> int:
        # Leases first: from then on no answer in flight can write here, so the second pass (a SCAN
        # is not atomic) cannot miss a key that such an answer writes meanwhile.
        async def erase() -> int:
            removed = 0
            for match in (leases, everything):
                async for found in self.redis.scan_iter(match=match, count=500):
                    removed += int(await self.redis.delete(found))
            return removed

        return int(await guard(erase()))

    async def documents(self, key: ConversationKey) -> list[Passage]:
        """The passages of the long documents read in this conversation, oldest document first."""
        raw = await guard(self.redis.lrange(key.redis_key("docs"), 0, -1))
        passages = []
        for blob in raw:
            data = json.loads(blob)
            for i, (section, text) in enumerate(data["passages"]):
                passages.append(Passage(data["name"], data["title"], section, i, text))
        return passages

    async def reset(self, key: ConversationKey) -> None:
        """Forget the turns and the documents read; the persona stays (it is a setting, not conversation)."""
        await guard(self.redis.delete(key.redis_key("turns"), key.redis_key("seen"), key.redis_key("docs")))

    async def set_persona(self, key: ConversationKey, persona: str | None) -> None:
        meta = key.redis_key("meta")
        if persona:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.hset(meta, "persona", persona)
                pipe.expire(meta, self.ttl)
                await guard(pipe.execute())
        else:
            await guard(self.redis.hdel(meta, "persona"))

    async def persona(self, key: ConversationKey) -> str | None:
        value = await guard(self.redis.hget(key.redis_key("meta"), "persona"))
        return value.decode() if isinstance(value, bytes) else value

    async def usage(self, key: ConversationKey) -> dict[str, int]:
        raw = await guard(self.redis.hgetall(key.redis_key("usage")))
        return {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}

    async def export(self, key: ConversationKey) -> dict[str, Any]:
        return {
            "conversation": key.id,
            "persona": await self.persona(key),
            "usage": await self.usage(key),
            "turns": [asdict(t) for t in await self.history(key)],
            "documents": list(dict.fromkeys(p.source for p in await self.documents(key))),
        }


def _document_json(name: str, passages: Sequence[Passage]) -> str:
    title = passages[0].title if passages else name
    return json.dumps({"name": name, "title": title, "passages": [[p.section, p.text] for p in passages]})


__all__ = ["Store", "Turn"]
