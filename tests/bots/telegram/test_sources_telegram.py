"""Answers with sources on Telegram, driven the way people use them: /learn, /kb and /search through the
real python-telegram-bot against the fake Bot API, a scripted model and a real Redis."""

from __future__ import annotations

import random
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bench.fakeweb import FakeWeb
from bots.telegram.bot import TelegramBot
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.registry import LoadedModel
from engine.retrieval.kb import GLOBAL, KnowledgeBase
from engine.runtime.settings import Settings
from tests.bots.sources import (
    FEES,
    HOURS,
    QUESTION,
    REGATTA,
    kb_keys,
    learned_id,
    searching,
    source_headers,
)
from tests.fakes.generator import ScriptedGenerator
from tests.fakes.telegram import JSON, FakeTelegram

ONLY_ADMINS = "Only the group's admins can add to the knowledge base here."


def scope_of(chat: JSON) -> str:
    return f"telegram:{chat['id']}"


@pytest.fixture(autouse=True)
async def forget_what_chats_learned(tg: FakeTelegram, redis: Redis) -> AsyncIterator[None]:
    """Knowledge-base keys never expire: what a test taught its fake chats is removed afterwards."""
    yield
    kb = KnowledgeBase(redis)
    for chat_id in list(tg.chats):
        for document in await kb.documents(f"telegram:{chat_id}"):
            await kb.remove(f"telegram:{chat_id}", document.id)


async def teach(tg: FakeTelegram, group: JSON, admin: JSON, text: str, name: str = "") -> str:
    """An admin posts ``text`` and answers it with /learn; the new document's id."""
    before = len(tg.messages(group))
    note = tg.user_says(group, admin, text)["message"]
    tg.user_says(group, admin, f"/learn {name}".strip(), reply_to=note["message_id"])
    answer = await tg.wait_for(lambda: next((m for m in tg.messages(group)[before:] if "Learned" in m.text), None))
    return learned_id(answer.text)


async def test_admin_teaches_a_message_and_a_file_and_answers_cite_them(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, scripted: ScriptedGenerator
) -> None:
    boss, ann = tg.user("Boss"), tg.user("Ann")
    group = tg.group("Rowing", supergroup=True, owner=boss)
    scope = scope_of(group)
    rules = tg.user_says(group, boss, FEES)["message"]  # group chatter: the bot does not even receive it
    tg.user_says(group, boss, "/learn fees.md", reply_to=rules["message_id"])
    fees = await tg.wait_for_message(group, "Learned fees.md")
    tg.user_sends_document(group, boss, HOURS, "hours.md", "text/markdown", caption="/learn")
    hours = await tg.wait_for_message(group, "Learned hours.md")
    documents = {d.name: d for d in await fast_engine.kb_documents(scope)}
    assert sorted(documents) == ["fees.md", "hours.md"]
    assert learned_id(fees.text) == documents["fees.md"].id
    assert learned_id(hours.text) == documents["hours.md"].id
    assert documents["hours.md"].title == "Willowmere hours"
    assert documents["fees.md"].added_by == str(boss["id"])

    asked: list[str] = []

    def script(users: list[str]) -> str:
        asked.append(users[-1])
        return "It opens at 06:30 [2] and costs €37 [1]. See also [9]."

    scripted.script = script
    tg.user_says(group, ann, f"/ask {QUESTION}")
    await tg.wait_for_message(group, "Sources:")
    await tg.wait_for_idle()
    # Both documents reached the model as numbered sources, before the question.
    prompt = asked[-1]
    assert "The Willowmere membership fee is €37 a year; juniors pay €12." in prompt
    assert "The Willowmere boathouse opens at 06:30 and closes at dusk." in prompt
    assert prompt.rstrip().endswith(f"Question: {QUESTION}")
    given = source_headers(prompt)
    assert sorted(given) == ["Willowmere fees", "Willowmere hours"]
    label = {"Willowmere fees": "Willowmere fees (fees.md)", "Willowmere hours": "Willowmere hours (hours.md)"}
    # [2] was cited first, so it is shown as [1]; [9] matches no source and is gone.
    reply = tg.messages(group)[-1]
    assert reply.reply_to_message_id is not None
    assert reply.text == (
        f"It opens at 06:30 [1] and costs €37 [2]. See also.\n\nSources:\n[1] {label[given[1]]}\n[2] {label[given[0]]}"
    )
    assert "[9]" not in reply.text


async def test_only_admins_teach_a_group_and_nothing_is_kept_from_others(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, redis: Redis
) -> None:
    boss, ann = tg.user("Boss"), tg.user("Ann")
    group = tg.group("Rowing", supergroup=True, owner=boss)
    scope = scope_of(group)
    note = tg.user_says(group, ann, FEES)["message"]
    tg.user_says(group, ann, "/learn", reply_to=note["message_id"])
    await tg.wait_for_message(group, ONLY_ADMINS)
    tg.user_sends_document(group, ann, HOURS, "hours.md", "text/markdown", caption="/learn hours")
    await tg.wait_for(lambda: sum(m.text == ONLY_ADMINS for m in tg.messages(group)) == 2)
    shared = tg.user_sends_document(group, ann, HOURS, "hours.md", "text/markdown")["message"]
    tg.user_says(group, ann, "/learn", reply_to=shared["message_id"])
    await tg.wait_for(lambda: sum(m.text == ONLY_ADMINS for m in tg.messages(group)) == 3)
    tg.user_says(group, boss, "/learn")  # an admin, but nothing to learn
    await tg.wait_for_message(group, "reply with /learn to the message or file to learn")
    await tg.wait_for_idle()
    assert await fast_engine.kb_documents(scope) == []
    assert await kb_keys(redis, scope) == []
    # In a private chat the person is the admin of their own knowledge base.
    chat = tg.private_chat(ann)
    mine = tg.user_says(chat, ann, FEES)["message"]
    await tg.wait_for_message(chat, "echo 1")
    tg.user_says(chat, ann, "/learn", reply_to=mine["message_id"])
    answer = await tg.wait_for_message(chat, "Learned Willowmere fees")  # named after its first line
    assert [d.id for d in await fast_engine.kb_documents(scope_of(chat))] == [learned_id(answer.text)]
    file = tg.user_sends_document(chat, ann, HOURS, "hours.md", "text/markdown")["message"]
    await tg.wait_for_message(chat, "echo 2")  # a file sent alone is read and summarised
    tg.user_says(chat, ann, "/learn boathouse", reply_to=file["message_id"])
    answer = await tg.wait_for_message(chat, "Learned boathouse")
    assert [d.name for d in await fast_engine.kb_documents(scope_of(chat))] == ["Willowmere fees", "boathouse"]


async def test_kb_lists_and_only_admins_remove_leaving_no_key(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, scripted: ScriptedGenerator, redis: Redis
) -> None:
    boss, ann = tg.user("Boss"), tg.user("Ann")
    group = tg.group("Rowing", supergroup=True, owner=boss)
    scope = scope_of(group)
    doc_id = await teach(tg, group, boss, FEES, "fees.md")
    tg.user_says(group, ann, "/kb")
    listing = await tg.wait_for_message(group, "knowledge base")
    assert f"This group's knowledge base: 1 document(s).\n- fees.md (1 passages, id {doc_id})" in listing.text
    assert "The global knowledge base:" in listing.text
    assert len(await kb_keys(redis, scope)) == 3  # the list, the document, the stamp
    tg.user_says(group, ann, "/about")
    assert "Sources: a knowledge base of 1 document(s) (/kb)." in (await tg.wait_for_message(group, "Up for")).text

    tg.user_says(group, ann, f"/kb remove {doc_id}")
    await tg.wait_for_message(group, "Only the group's admins can remove documents here.")
    assert [d.id for d in await fast_engine.kb_documents(scope)] == [doc_id]
    tg.user_says(group, boss, f"/kb remove {doc_id}")
    await tg.wait_for_message(group, f"Removed {doc_id}.")
    assert await fast_engine.kb_documents(scope) == []
    assert await kb_keys(redis, scope) == []
    tg.user_says(group, ann, "/kb")
    await tg.wait_for_message(group, "This group's knowledge base: no document(s).")
    # and questions no longer draw on it
    scripted.script = lambda users: "no idea"
    tg.user_says(group, ann, "/ask Willowmere membership fee?")
    reply = await tg.wait_for_message(group, "no idea")
    assert "<<<SOURCE" not in scripted.prompts[-1]
    assert "Sources" not in reply.text


async def test_a_groups_documents_stay_there_and_global_ones_serve_every_group(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, scripted: ScriptedGenerator, taught: list[tuple[str, str]]
) -> None:
    boss = tg.user("Boss")
    rowing = tg.group("Rowing", supergroup=True, owner=boss)
    chess = tg.group("Chess", supergroup=True, owner=boss)
    await teach(tg, rowing, boss, FEES, "fees.md")
    asked: list[str] = []
    scripted.script = lambda users: asked.append(users[-1]) or "noted"

    async def ask(group: JSON, question: str) -> str:
        count = len(asked)
        tg.user_says(group, boss, f"/ask {question}")
        await tg.wait_for(lambda: len(asked) > count)
        await tg.wait_for_idle()
        return asked[-1]

    assert source_headers(await ask(rowing, "Willowmere membership fee?")) == ["Willowmere fees"]
    in_chess = await ask(chess, "Willowmere membership fee?")
    assert source_headers(in_chess) == []
    assert "€37" not in in_chess
    assert tg.messages(chess)[-1].text == "noted"  # no sources, no list

    regatta, _ = await fast_engine.learn(GLOBAL, f"regatta-{uuid.uuid4().hex[:8]}.md", REGATTA, added_by="test")
    taught.append((GLOBAL, regatta.id))
    consulted = f"noted\n\nSources consulted:\n- Calderbrook regatta ({regatta.name})"
    for group in (rowing, chess):
        prompt = await ask(group, "When is the Calderbrook regatta?")
        assert source_headers(prompt) == ["Calderbrook regatta"]
        assert "second Saturday of June" in prompt
        # The answer cites nothing: the sources it was given are listed as consulted.
        assert tg.messages(group)[-1].text == consulted
    assert "€37" not in await ask(chess, "Willowmere membership fee?")


async def test_search_answers_from_web_pages_and_lists_them(
    tg: FakeTelegram,
    tg_settings: Settings,
    store: Store,
    scripted: ScriptedGenerator,
    tiny_model: LoadedModel,
    web: FakeWeb,
) -> None:
    engine = Engine(searching(tg_settings, web), store, scripted, tiny_model)  # type: ignore[arg-type]
    asked: list[str] = []

    def script(users: list[str]) -> str:
        asked.append(users[-1])
        return "It was first lit in 1874 [1], and keepers lived there until 1961 [2]."

    scripted.script = script
    async with TelegramBot(engine, engine.settings, private_interval=0.02, group_interval=0.02):
        ann = tg.user("Ann")
        chat = tg.private_chat(ann)
        tg.user_says(chat, ann, "/search Brightwater lighthouse keepers, when lit?")
        await tg.wait_for_message(chat, "Searching the web…")
        await tg.wait_for_message(chat, "Sources:")
        await tg.wait_for_idle()
        assert web.queries == ["Brightwater lighthouse keepers, when lit?"]
        prompt = asked[-1]
        assert "The Brightwater lighthouse was first lit in 1874." in prompt
        assert "Keepers lived at the Brightwater lighthouse until 1961" in prompt
        assert "Sourdough" not in prompt  # a page that matched a word of the question, not the question
        given = source_headers(prompt)
        assert sorted(given) == ["Brightwater Lighthouse", "Brightwater lighthouse keepers"]
        urls = {"Brightwater Lighthouse": web.page_url("lighthouse"),
                "Brightwater lighthouse keepers": web.page_url("keepers")}  # fmt: skip
        reply = tg.messages(chat)[-1]
        assert reply.text.startswith("It was first lit in 1874 [1], and keepers lived there until 1961 [2].")
        # The list's <url> autolinks become Telegram links (text_link entities), shown without the brackets.
        # Each citation names the page that holds its claim, whatever order the pages were given in.
        cited = ["Brightwater Lighthouse", "Brightwater lighthouse keepers"]
        assert reply.text.endswith(f"Sources:\n[1] {cited[0]} {urls[cited[0]]}\n[2] {cited[1]} {urls[cited[1]]}")
        assert [e["url"] for e in reply.entities if e["type"] == "text_link"] == [urls[c] for c in cited]
        assert [m.text for m in tg.messages(chat)][:-1] == ["ℹ️ Searching the web…"]  # noqa: RUF001

        # Nothing on the web about it: said so, and the model is not asked to guess.
        count = len(scripted.prompts)
        tg.user_says(chat, ann, "/search quantum chromodynamics gluon")
        await tg.wait_for_message(chat, "I found nothing reliable about this")
        await tg.wait_for_idle()
        assert len(scripted.prompts) == count
        assert tg.messages(chat)[-1].text == "I found nothing reliable about this, so I won't guess."

        tg.user_says(chat, ann, "/about")
        assert "Sources: web search (/search)." in (await tg.wait_for_message(chat, "Up for")).text
        tg.user_says(chat, ann, "/search")
        await tg.wait_for_message(chat, "Tell me what to look up, like: /search")
        await tg.wait_for_idle()
        assert len(web.queries) == 2


async def test_search_without_a_search_engine_says_how_to_set_one(
    tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator
) -> None:
    ann = tg.user("Ann")
    group = tg.group("G", supergroup=True)
    tg.user_says(group, ann, "/search When was the Brightwater lighthouse lit?")
    refusal = await tg.wait_for_message(group, "PARLEY_SEARCH_URL")
    assert refusal.text.startswith("Sorry: web search is not set up here")
    assert scripted.prompts == []


@pytest.mark.parametrize(
    ("data", "file_name", "refusal"),
    [
        (b"", "empty.txt", "this file is empty"),
        (b"   \n\t \n\n  ", "blank.txt", "this file has no text"),
        (random.Random(7).randbytes(4096), "x.pdf", "this file is named like a PDF but is not one"),
        (b"%PDF-1.7\n" + random.Random(8).randbytes(2048), "cut.pdf", "this PDF is damaged or truncated"),
    ],
)
async def test_unreadable_files_are_refused_and_nothing_is_kept(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, redis: Redis, data: bytes, file_name: str, refusal: str
) -> None:
    boss = tg.user("Boss")
    group = tg.group("Rowing", supergroup=True, owner=boss)
    sent = tg.user_sends_document(group, boss, data, file_name)["message"]  # shared in the group, not for the bot
    tg.user_says(group, boss, "/learn", reply_to=sent["message_id"])
    await tg.wait_for_message(group, f"Sorry: {refusal}")
    tg.user_sends_document(group, boss, data, file_name, caption="/learn")
    await tg.wait_for(lambda: sum(refusal in m.text for m in tg.messages(group)) == 2)
    await tg.wait_for_idle()
    assert not any("Learned" in m.text for m in tg.messages(group))
    assert await fast_engine.kb_documents(scope_of(group)) == []
    assert await kb_keys(redis, scope_of(group)) == []


async def test_invisible_text_is_not_learned(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, redis: Redis
) -> None:
    boss = tg.user("Boss")
    group = tg.group("Rowing", supergroup=True, owner=boss)
    blank = tg.user_says(group, boss, "\u200b\u200d\u2060")["message"]
    tg.user_says(group, boss, "/learn", reply_to=blank["message_id"])
    await tg.wait_for_message(group, "Sorry: there is no text in it to learn")
    zero_width = "\u200b \u200b\n\u200b".encode()
    tg.user_sends_document(group, boss, zero_width, "blank.txt", "text/plain", caption="/learn")
    await tg.wait_for(lambda: sum("no text" in m.text for m in tg.messages(group)) == 2)
    assert await fast_engine.kb_documents(scope_of(group)) == []
    assert await kb_keys(redis, scope_of(group)) == []


async def test_hostile_ids_and_names(tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, redis: Redis) -> None:
    boss = tg.user("Boss")
    group, other = tg.group("Rowing", supergroup=True, owner=boss), tg.group("Chess", supergroup=True, owner=boss)
    scope = scope_of(group)
    doc_id = await teach(tg, group, boss, FEES, "fees.md")
    for bad in ("../../x", "*", "A" * 200, doc_id.upper() + "}"):
        tg.user_says(group, boss, f"/kb remove {bad}")
        answer = await tg.wait_for_message(group, f"No document here has the id {bad[:16]}")
        assert answer.text == f"Nothing removed. No document here has the id {bad[:16]}."
    # an id from another group removes nothing there
    tg.user_says(other, boss, f"/kb remove {doc_id}")
    await tg.wait_for_message(other, f"No document here has the id {doc_id}")
    assert [d.id for d in await fast_engine.kb_documents(scope)] == [doc_id]

    # The longest name a message can carry is cut, not refused.
    tg.user_says(group, boss, f"/kb remove {doc_id}")
    await tg.wait_for_message(group, f"Removed {doc_id}.")
    long_id = await teach(tg, group, boss, FEES, "N" * 4000)
    [document] = await fast_engine.kb_documents(scope)
    assert (document.id, document.name) == (long_id, "N" * 120)
    tg.user_says(group, boss, f"/kb remove {long_id}")
    await tg.wait_for_message(group, f"Removed {long_id}.")
    assert await kb_keys(redis, scope) == []
