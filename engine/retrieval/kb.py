"""A community's knowledge base: documents admins add, cut into passages, kept in Redis, searched by BM25.

Redis is the source of truth, so every front end and worker sees the same base. Per scope (``global``, a
Discord guild ``discord:ID``, a Telegram chat ``telegram:ID``), under one hash tag (one cluster slot, so a
script may touch them together):
  ``parley:kb:{scope}:docs``      hash: document id -> its description (JSON)
  ``parley:kb:{scope}:doc:<id>``  the document's passages (JSON)
  ``parley:kb:{scope}:stamp``     changes with every addition or removal
These keys have no TTL: they are the one exception to "every key expires" (README, Privacy). Removing a
scope's last document deletes all three keys.

Each process keeps the BM25 index it built for a set of scopes with the stamps it was built from, and
rebuilds it when a stamp differs. The stamp is a random token, not a counter: removing the last document
deletes every key, and a counter starting again at 1 could match an index built before.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import OrderedDict
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from engine.conversation.keys import PREFIX, quote_part
from engine.conversation.text import clean_text
from engine.errors import InputRejected
from engine.retrieval.passages import Passage, split_passages
from engine.retrieval.rank import PassageIndex
from engine.runtime.redis import guard

GLOBAL = "global"
MAX_DOCUMENTS = 1000  # per scope: every question's index holds all of a scope's passages in memory
MAX_NAME_CHARS = 120
_SCOPE = re.compile(r"global|(discord|telegram):-?[0-9]{1,20}")
_INDEXES_KEPT = 64  # (scope set -> index) entries per process

# Add (replacing a document of the same name): KEYS docs, doc, stamp, [old doc]; ARGV id, meta, passages,
# stamp, limit, old id.
_ADD = """
if ARGV[6] ~= '' then
  redis.call('HDEL', KEYS[1], ARGV[6])
  redis.call('DEL', KEYS[4])
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[4])
return 1
"""
# Remove: KEYS docs, doc, stamp; ARGV id, stamp. The last document takes the scope's keys with it.
_REMOVE = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[2])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('DEL', KEYS[1], KEYS[3])
else
  redis.call('SET', KEYS[3], ARGV[2])
end
return 1
"""


def check_scope(scope: str) -> str:
    if not _SCOPE.fullmatch(scope):
        raise InputRejected(
            f"{scope[:40]!r} is not a knowledge-base scope: global, discord:GUILD_ID or telegram:CHAT_ID"
        )
    return scope


def _key(scope: str, kind: str) -> str:
    return f"{PREFIX}:kb:{{{quote_part(scope)}}}:{kind}"


@dataclass(frozen=True, slots=True)
class KbDocument:
    id: str
    name: str
    title: str
    passages: int
    words: int
    added_by: str
    added_at: float


class KnowledgeBase:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._add = redis.register_script(_ADD)
        self._remove = redis.register_script(_REMOVE)
        self._indexes: OrderedDict[tuple[str, ...], tuple[tuple[object, ...], PassageIndex]] = OrderedDict()

    async def add(self, scope: str, name: str, text: str, *, added_by: str) -> tuple[KbDocument, bool]:
        """Adds a document (replacing one of the same name); returns it, and whether it replaced one."""
        check_scope(scope)
        # Invisible characters (zero-width, bidi controls) are no name and no text: clean_text drops them.
        name = " ".join(clean_text(name).split())[:MAX_NAME_CHARS] or "document"
        passages = split_passages(text, source=name) if clean_text(text) else []
        if not passages:
            raise InputRejected("there is no text in it to learn")
        document = KbDocument(
            id=uuid.uuid4().hex[:8],
            name=name,
            title=passages[0].title,
            passages=len(passages),
            words=sum(len(p.text.split()) for p in passages),
            added_by=added_by,
            added_at=time.time(),
        )
        old = next((d.id for d in await self.documents(scope) if d.name == name), "")
        stored = json.dumps({"title": document.title, "passages": [[p.section, p.text] for p in passages]})
        keys = [_key(scope, "docs"), _key(scope, f"doc:{document.id}"), _key(scope, "stamp"), _key(scope, f"doc:{old}")]
        args: list[str | int] = [
            document.id,
            json.dumps(asdict(document)),
            stored,
            uuid.uuid4().hex,
            MAX_DOCUMENTS,
            old,
        ]
        added = await guard(self._add(keys=keys, args=args))
        if not added:
            raise InputRejected(f"this knowledge base already holds {MAX_DOCUMENTS} documents: remove some first")
        return document, bool(old)

    async def documents(self, scope: str) -> list[KbDocument]:
        raw = await guard(self.redis.hgetall(_key(check_scope(scope), "docs")))
        return sorted((KbDocument(**json.loads(v)) for v in raw.values()), key=lambda d: d.added_at)

    async def remove(self, scope: str, document_id: str) -> bool:
        check_scope(scope)
        if not re.fullmatch(r"[0-9a-f]{1,32}", document_id):
            return False
        keys = [_key(scope, "docs"), _key(scope, f"doc:{document_id}"), _key(scope, "stamp")]
        return bool(await guard(self._remove(keys=keys, args=[document_id, uuid.uuid4().hex])))

    async def index(self, scopes: tuple[str, ...]) -> PassageIndex | None:
        """One index over the passages of every scope given (None when none of them has a document)."""
        stamps = tuple([await guard(self.redis.get(_key(scope, "stamp"))) for scope in scopes])
        if not any(stamps):
            return None
        cached = self._indexes.get(scopes)
        if cached is not None and cached[0] == stamps:
            self._indexes.move_to_end(scopes)
            return cached[1]
        passages: list[Passage] = []
        for scope in scopes:
            passages.extend(await self._passages(scope))
        index = PassageIndex(passages)
        self._indexes[scopes] = (stamps, index)
        while len(self._indexes) > _INDEXES_KEPT:
            self._indexes.popitem(last=False)
        return index

    async def _passages(self, scope: str) -> list[Passage]:
        documents = await self.documents(scope)
        if not documents:
            return []
        blobs = await guard(self.redis.mget([_key(scope, f"doc:{d.id}") for d in documents]))
        passages = []
        for document, blob in zip(documents, blobs, strict=True):
            if blob is None:
                continue  # removed between the two reads; the next stamp check rebuilds the index
            data = json.loads(blob)
            for i, (section, text) in enumerate(data["passages"]):
                passages.append(Passage(document.name, data["title"], section, i, text))
        return passages
