"""The knowledge base in a real Redis: adding, replacing, listing, removing without a trace, scopes, and the
index every process rebuilds when the base changes."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis

from engine.errors import InputRejected
from engine.retrieval.kb import GLOBAL, KnowledgeBase, check_scope

RULES = (
    "# Guild rules\n\n## Membership\nMembership costs €37 a year; students pay €19.\n\n"
    "## Hours\nThe Copper Room opens at 18:45."
)
KILN = "# Kiln log\n\nThe kiln was fired to 1,240 degrees on 3 March."


@pytest.fixture
def scope() -> str:
    return f"telegram:-{uuid.uuid4().int % 10**12}"  # a chat no other test uses


async def scope_keys(redis: Redis, scope: str) -> list[bytes]:
    quoted = scope.replace(":", "%3A")
    return [key async for key in redis.scan_iter(match=f"parley:kb:{{{quoted}}}:*", count=1000)]


async def test_add_list_and_remove_leaves_no_key(redis: Redis, scope: str) -> None:
    kb = KnowledgeBase(redis)
    rules, replaced = await kb.add(scope, "rules.md", RULES, added_by="42")
    kiln, _ = await kb.add(scope, "kiln.md", KILN, added_by="42")
    assert not replaced
    assert (rules.title, rules.passages, rules.added_by) == ("Guild rules", 2, "42")
    assert [d.name for d in await kb.documents(scope)] == ["rules.md", "kiln.md"]
    assert len(await scope_keys(redis, scope)) == 4  # the list, two documents, the stamp

    assert await kb.remove(scope, rules.id)
    assert not await kb.remove(scope, rules.id)  # already gone
    assert [d.name for d in await kb.documents(scope)] == ["kiln.md"]
    assert await kb.remove(scope, kiln.id)
    assert await scope_keys(redis, scope) == []  # the last document takes the scope's keys with it
    assert await kb.index((scope,)) is None


async def test_a_document_of_the_same_name_is_replaced(redis: Redis, scope: str) -> None:
    kb = KnowledgeBase(redis)
    first, _ = await kb.add(scope, "rules.md", RULES, added_by="1")
    second, replaced = await kb.add(scope, "rules.md", RULES.replace("€37", "€41"), added_by="2")
    assert replaced
    assert second.id != first.id
    assert [d.id for d in await kb.documents(scope)] == [second.id]
    index = await kb.index((scope,))
    assert index is not None
    assert all("€37" not in p.text for p in index.passages)
    assert len(await scope_keys(redis, scope)) == 3  # the old document's passages are gone
    await kb.remove(scope, second.id)


async def test_every_process_sees_a_change_at_its_next_question(redis: Redis, scope: str) -> None:
    front_end, worker = KnowledgeBase(redis), KnowledgeBase(redis)
    rules, _ = await front_end.add(scope, "rules.md", RULES, added_by="1")
    before = await worker.index((GLOBAL, scope))
    assert before is not None
    assert await worker.index((GLOBAL, scope)) is before
    kiln, _ = await front_end.add(scope, "kiln.md", KILN, added_by="1")
    after = await worker.index((GLOBAL, scope))
    assert after is not before
    assert after is not None
    assert [p.source for p, _ in after.search("kiln fired degrees", 1)] == ["kiln.md"]
    await front_end.remove(scope, kiln.id)
    again = await worker.index((GLOBAL, scope))
    assert again is not None
    assert again.search("kiln fired", 1) == []
    await front_end.remove(scope, rules.id)


async def test_scopes_are_separate(redis: Redis, scope: str) -> None:
    kb = KnowledgeBase(redis)
    other = f"discord:{uuid.uuid4().int % 10**12}"
    rules, _ = await kb.add(scope, "rules.md", RULES, added_by="1")
    assert await kb.documents(other) == []
    assert await kb.index((other,)) is None
    assert not await kb.remove(other, rules.id)  # an id from another community removes nothing
    await kb.remove(scope, rules.id)


@pytest.mark.parametrize("bad", ["", "guild", "discord:", "discord:abc", "telegram:1:2", "global:1", "x" * 500, "*"])
def test_a_malformed_scope_is_refused(bad: str) -> None:
    with pytest.raises(InputRejected, match="not a knowledge-base scope"):
        check_scope(bad)


@pytest.mark.parametrize("bad_id", ["", "../../x", "*", "0" * 200, "ABC"])
async def test_a_malformed_id_removes_nothing(redis: Redis, scope: str, bad_id: str) -> None:
    kb = KnowledgeBase(redis)
    rules, _ = await kb.add(scope, "rules.md", RULES, added_by="1")
    assert not await kb.remove(scope, bad_id)
    assert len(await kb.documents(scope)) == 1
    await kb.remove(scope, rules.id)


@pytest.mark.parametrize("text", ["", "   \n\n  ", "# Only a heading\n"])
async def test_a_document_without_text_is_refused(redis: Redis, scope: str, text: str) -> None:
    with pytest.raises(InputRejected, match="no text"):
        await KnowledgeBase(redis).add(scope, "empty.md", text, added_by="1")
    assert await scope_keys(redis, scope) == []


async def test_names_are_cleaned_and_cut(redis: Redis, scope: str) -> None:
    kb = KnowledgeBase(redis)
    document, _ = await kb.add(scope, "a\n\tb " + "n" * 10_000, KILN, added_by="1")
    assert document.name.startswith("a b nnn")
    assert len(document.name) == 120
    await kb.remove(scope, document.id)
