"""Answers with sources on Discord, driven the way people use them: /learn, /kb and /search through the
real discord.py against the fake Discord, a scripted model and a real Redis."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from bench.fakeweb import FakeWeb
from bots.discord.bot import DiscordBot
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
from tests.fakes.discord import JSON, FakeDiscord, GuildRef, SlashInteraction
from tests.fakes.generator import ScriptedGenerator

ONLY_MANAGERS = "Only members who can manage this server can add to the knowledge base here."


async def _guild(dc: FakeDiscord, name: str) -> GuildRef:
    """A server the bot joins while running (Discord then sends GUILD_CREATE)."""
    g = dc.guild(name)
    await dc.dispatch_guild_create(g.id)
    return g


def _member(dc: FakeDiscord, g: GuildRef, name: str, *, admin: bool = False) -> int:
    user = dc.user(name)
    dc.add_member(g.id, user, roles=[g.admin_role_id] if admin else [])
    return user


@pytest.fixture(autouse=True)
async def forget_what_servers_learned(dc: FakeDiscord, redis: Redis) -> AsyncIterator[None]:
    """Knowledge-base keys never expire: what a test taught its fake servers and DMs is removed afterwards."""
    yield
    kb = KnowledgeBase(redis)
    for place in [*dc.guilds, *dc.channels]:
        for document in await kb.documents(f"discord:{place}"):
            await kb.remove(f"discord:{place}", document.id)


async def run(dc: FakeDiscord, where: int, user: int, name: str, options: JSON | None = None) -> SlashInteraction:
    """A slash command, once its answer is there (not "thinking…")."""
    interaction = await dc.slash(where, user, name, options)
    await interaction.wait_done()
    await dc.wait_for(lambda: interaction.text.strip())
    return interaction


async def settle(dc: FakeDiscord, quiet: float = 0.2) -> None:
    """Until the bot has made no REST call for ``quiet`` seconds: every answer has been written out."""
    count = -1
    while count != len(dc.calls):
        count = len(dc.calls)
        await asyncio.sleep(quiet)


async def teach(dc: FakeDiscord, where: int, admin: int, text: str, name: str | None = None) -> str:
    """/learn text: (and name:) by an admin; the new document's id."""
    learned = await run(dc, where, admin, "learn", {"text": text} | ({"name": name} if name is not None else {}))
    assert learned.text.startswith("Learned "), learned.text
    return learned_id(learned.text)


async def test_admin_teaches_a_file_and_a_text_and_answers_cite_them(
    dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine, scripted: ScriptedGenerator
) -> None:
    assert {"learn", "kb", "search"} <= {c["name"] for c in dc.commands[None]}
    g = await _guild(dc, "Rowing")
    boss, ann = _member(dc, g, "boss", admin=True), _member(dc, g, "ann")
    scope = f"discord:{g.id}"
    hours = await run(dc, g.channel_id, boss, "learn", {"file": dc.attachment(HOURS, "hours.md", "text/markdown")})
    assert hours.text.startswith("Learned hours.md: 1 passage(s)")
    assert not hours.ephemeral  # the channel sees what its knowledge base now holds
    fees = await run(dc, g.channel_id, boss, "learn", {"text": FEES, "name": "fees.md"})
    assert fees.text.startswith("Learned fees.md: 1 passage(s)")
    documents = {d.name: d for d in await fast_engine.kb_documents(scope)}
    assert sorted(documents) == ["fees.md", "hours.md"]
    assert learned_id(hours.text) == documents["hours.md"].id
    assert learned_id(fees.text) == documents["fees.md"].id
    assert documents["fees.md"].added_by == str(boss)
    assert len(dc.downloads) == 1  # the attachment was fetched from the CDN

    asked: list[str] = []

    def script(users: list[str]) -> str:
        asked.append(users[-1])
        return "It opens at 06:30 [2] and costs €37 [1]. See also [9]."

    scripted.script = script
    ask = await dc.slash(g.channel_id, ann, "ask", {"prompt": QUESTION})
    await dc.wait_for(lambda: "Sources:" in ask.text)
    prompt = asked[-1]
    assert "The Willowmere membership fee is €37 a year; juniors pay €12." in prompt
    assert "The Willowmere boathouse opens at 06:30 and closes at dusk." in prompt
    assert prompt.rstrip().endswith(f"Question: {QUESTION}")
    given = source_headers(prompt)
    assert sorted(given) == ["Willowmere fees", "Willowmere hours"]
    label = {"Willowmere fees": "Willowmere fees (fees.md)", "Willowmere hours": "Willowmere hours (hours.md)"}
    # [2] was cited first, so it is shown as [1]; [9] matches no source and is gone.
    expected = (
        f"It opens at 06:30 [1] and costs €37 [2]. See also.\n\nSources:\n[1] {label[given[1]]}\n[2] {label[given[0]]}"
    )
    await dc.wait_for(lambda: ask.text == expected)
    await settle(dc)
    assert ask.text == expected
    assert not ask.ephemeral


async def test_only_managers_teach_a_server_and_a_dm_teaches_itself(
    dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine, redis: Redis
) -> None:
    g = await _guild(dc, "Rowing")
    ann = _member(dc, g, "ann")
    scope = f"discord:{g.id}"
    for options in ({"text": FEES}, {"file": dc.attachment(HOURS, "hours.md", "text/markdown")}):
        refused = await run(dc, g.channel_id, ann, "learn", options)
        assert refused.text == ONLY_MANAGERS
        assert refused.ephemeral
    assert await fast_engine.kb_documents(scope) == []
    assert await kb_keys(redis, scope) == []
    # In a DM the person is the manager of their own knowledge base, the DM channel's.
    dm = dc.dm_channel(ann)
    learned = await run(dc, dm, ann, "learn", {"text": FEES})
    assert learned.text.startswith("Learned Willowmere fees")  # named after its first line
    assert [d.id for d in await fast_engine.kb_documents(f"discord:{dm}")] == [learned_id(learned.text)]
    assert await fast_engine.kb_documents(f"discord:{ann}") == []


async def test_kb_lists_and_only_managers_remove_leaving_no_key(
    dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine, scripted: ScriptedGenerator, redis: Redis
) -> None:
    g = await _guild(dc, "Rowing")
    boss, ann = _member(dc, g, "boss", admin=True), _member(dc, g, "ann")
    scope = f"discord:{g.id}"
    doc_id = await teach(dc, g.channel_id, boss, FEES, "fees.md")
    listing = await run(dc, g.channel_id, ann, "kb")
    assert f"This channel's knowledge base: 1 document(s).\n- fees.md (1 passages, id {doc_id})" in listing.text
    assert "The global knowledge base:" in listing.text
    assert listing.ephemeral
    assert len(await kb_keys(redis, scope)) == 3  # the list, the document, the stamp
    about = await run(dc, g.channel_id, ann, "about")
    assert "Sources: a knowledge base of 1 document(s) (/kb)." in about.text

    refused = await run(dc, g.channel_id, ann, "kb", {"remove": doc_id})
    assert refused.text == "Only members who can manage this server can remove documents here."
    assert [d.id for d in await fast_engine.kb_documents(scope)] == [doc_id]
    removed = await run(dc, g.channel_id, boss, "kb", {"remove": doc_id})
    assert removed.text == f"Removed {doc_id}."
    assert not removed.ephemeral  # everyone sees what changed
    assert await fast_engine.kb_documents(scope) == []
    assert await kb_keys(redis, scope) == []
    assert "This channel's knowledge base: no document(s)." in (await run(dc, g.channel_id, ann, "kb")).text
    # and questions no longer draw on it
    scripted.script = lambda users: "no idea"
    ask = await run(dc, g.channel_id, ann, "ask", {"prompt": "Willowmere membership fee?"})
    await settle(dc)
    assert ask.text == "no idea"
    assert "<<<SOURCE" not in scripted.prompts[-1]


async def test_a_servers_documents_stay_there_and_global_ones_serve_every_server(
    dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine, scripted: ScriptedGenerator, taught: list[tuple[str, str]]
) -> None:
    rowing, chess = await _guild(dc, "Rowing"), await _guild(dc, "Chess")
    boss = dc.user("boss")
    for g in (rowing, chess):
        dc.add_member(g.id, boss, roles=[g.admin_role_id])
    await teach(dc, rowing.channel_id, boss, FEES, "fees.md")
    asked: list[str] = []
    scripted.script = lambda users: asked.append(users[-1]) or "noted"

    async def ask(g: GuildRef, question: str, answer: str) -> str:
        """The prompt the model got; the answer shown must be ``answer``, and stay so."""
        interaction = await dc.slash(g.channel_id, boss, "ask", {"prompt": question})
        await dc.wait_for(lambda: interaction.text == answer and not interaction.messages[0].loading)
        await settle(dc)  # a sources list would have been added by now
        assert interaction.text == answer
        return asked[-1]

    prompt = await ask(rowing, "Willowmere membership fee?", "noted\n\nSources consulted:\n- Willowmere fees (fees.md)")
    assert source_headers(prompt) == ["Willowmere fees"]
    prompt = await ask(chess, "Willowmere membership fee?", "noted")  # no sources, no list
    assert source_headers(prompt) == []
    assert "€37" not in prompt

    regatta, _ = await fast_engine.learn(GLOBAL, f"regatta-{uuid.uuid4().hex[:8]}.md", REGATTA, added_by="test")
    taught.append((GLOBAL, regatta.id))
    consulted = f"noted\n\nSources consulted:\n- Calderbrook regatta ({regatta.name})"
    for g in (rowing, chess):
        # The answer cites nothing: the sources it was given are listed as consulted.
        prompt = await ask(g, "When is the Calderbrook regatta?", consulted)
        assert source_headers(prompt) == ["Calderbrook regatta"]
        assert "second Saturday of June" in prompt
    assert "€37" not in await ask(chess, "Willowmere membership fee?", "noted")


async def test_search_answers_from_web_pages_and_lists_them_without_embeds(
    dc: FakeDiscord,
    dc_settings: Settings,
    store: Store,
    scripted: ScriptedGenerator,
    tiny_model: LoadedModel,
    web: FakeWeb,
) -> None:
    engine = Engine(searching(dc_settings, web), store, scripted, tiny_model)  # type: ignore[arg-type]
    asked: list[str] = []

    def script(users: list[str]) -> str:
        asked.append(users[-1])
        return "It was first lit in 1874 [1], and keepers lived there until 1961 [2]."

    scripted.script = script
    async with DiscordBot(engine, engine.settings, edit_interval=0.02, guild_ready_timeout=0.05):
        g = await _guild(dc, "Harbour")
        ann = _member(dc, g, "ann")
        search = await dc.slash(g.channel_id, ann, "search", {"question": "Brightwater lighthouse keepers, when lit?"})
        await dc.wait_for(lambda: "Sources:" in search.text)
        assert web.queries == ["Brightwater lighthouse keepers, when lit?"]
        prompt = asked[-1]
        assert "The Brightwater lighthouse was first lit in 1874." in prompt
        assert "Keepers lived at the Brightwater lighthouse until 1961" in prompt
        assert "Sourdough" not in prompt  # a page that matched a word of the question, not the question
        given = source_headers(prompt)
        assert sorted(given) == ["Brightwater Lighthouse", "Brightwater lighthouse keepers"]
        urls = {"Brightwater Lighthouse": web.page_url("lighthouse"),
                "Brightwater lighthouse keepers": web.page_url("keepers")}  # fmt: skip
        expected = (
            "It was first lit in 1874 [1], and keepers lived there until 1961 [2].\n\n"
            # Each citation names the page that holds its claim, whatever order the pages were given in.
            f"Sources:\n[1] Brightwater Lighthouse <{urls['Brightwater Lighthouse']}>\n"
            f"[2] Brightwater lighthouse keepers <{urls['Brightwater lighthouse keepers']}>"
        )
        await dc.wait_for(lambda: search.text == expected)
        # <url> keeps Discord from unfolding a preview under the answer
        assert all(m.embeds == [] for m in search.messages)
        assert not search.ephemeral
        # The question was first shown as a notice (it then gives way to the answer).
        notices = [c.json["content"] for c in dc.calls_to("POST", "/webhooks/*") if c.json]
        assert notices == ["-# Searching the web…"]

        assert "Sources: web search (/search)." in (await run(dc, g.channel_id, ann, "about")).text

        # Nothing on the web about it: said so, and the model is not asked to guess.
        count = len(scripted.prompts)
        nothing = await run(dc, g.channel_id, ann, "search", {"question": "quantum chromodynamics gluon"})
        await settle(dc)
        assert nothing.text == "I found nothing reliable about this, so I won't guess."
        assert len(scripted.prompts) == count


async def test_search_without_a_search_engine_says_how_to_set_one(
    dc: FakeDiscord, bot: DiscordBot, scripted: ScriptedGenerator
) -> None:
    ann = dc.user("ann")
    refused = await run(dc, dc.dm_channel(ann), ann, "search", {"question": "When was the lighthouse lit?"})
    await settle(dc)
    assert refused.text.startswith("Sorry: web search is not set up here")
    assert scripted.prompts == []


@pytest.mark.parametrize(
    ("data", "file_name", "refusal"),
    [
        (b"", "empty.txt", "this file is empty"),
        (b"   \n\t \n\n  ", "blank.txt", "this file has no text"),
        ("\u200b \u200b\n\u2060".encode(), "invisible.txt", "there is no text in it to learn"),
        (random.Random(7).randbytes(4096), "x.pdf", "this file is named like a PDF but is not one"),
        (b"%PDF-1.7\n" + random.Random(8).randbytes(2048), "cut.pdf", "this PDF is damaged or truncated"),
    ],
)
async def test_unreadable_files_are_refused_and_nothing_is_kept(
    dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine, redis: Redis, data: bytes, file_name: str, refusal: str
) -> None:
    g = await _guild(dc, "Rowing")
    boss = _member(dc, g, "boss", admin=True)
    learned = await run(dc, g.channel_id, boss, "learn", {"file": dc.attachment(data, file_name)})
    assert learned.text.startswith(f"Sorry: {refusal}")
    assert not learned.ephemeral  # a manager's /learn is answered in the channel (deferred publicly), refusals too
    assert await fast_engine.kb_documents(f"discord:{g.id}") == []
    assert await kb_keys(redis, f"discord:{g.id}") == []


async def test_learn_needs_something_to_learn(dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine) -> None:
    g = await _guild(dc, "Rowing")
    boss = _member(dc, g, "boss", admin=True)
    for options in ({}, {"text": "   \n "}, {"text": "\u200b\u200d"}, {"name": "rules.md"}):
        answer = await run(dc, g.channel_id, boss, "learn", options)
        assert answer.text in (
            "Attach a document to /learn, or reply with /learn to the message or file to learn.",
            "Sorry: there is no text in it to learn.",
        ), options
    assert await fast_engine.kb_documents(f"discord:{g.id}") == []


async def test_hostile_ids_and_names(dc: FakeDiscord, bot: DiscordBot, fast_engine: Engine, redis: Redis) -> None:
    rowing, chess = await _guild(dc, "Rowing"), await _guild(dc, "Chess")
    boss = dc.user("boss")
    for g in (rowing, chess):
        dc.add_member(g.id, boss, roles=[g.admin_role_id])
    scope = f"discord:{rowing.id}"
    doc_id = await teach(dc, rowing.channel_id, boss, FEES, "fees.md")
    for bad in ("../../x", "*", "A" * 200, doc_id.upper() + "}"):
        answer = await run(dc, rowing.channel_id, boss, "kb", {"remove": bad})
        assert answer.text == f"Nothing removed. No document here has the id {bad[:16]}."
    # an id from another server removes nothing there
    elsewhere = await run(dc, chess.channel_id, boss, "kb", {"remove": doc_id})
    assert elsewhere.text == f"Nothing removed. No document here has the id {doc_id}."
    assert [d.id for d in await fast_engine.kb_documents(scope)] == [doc_id]
    removed = await run(dc, rowing.channel_id, boss, "kb", {"remove": f"{doc_id} ../x"})
    assert removed.text == f"Removed {doc_id}. No document here has the id ../x."

    # The longest name an option can carry is cut, not refused.
    long_id = await teach(dc, rowing.channel_id, boss, FEES, "N" * 6000)
    [document] = await fast_engine.kb_documents(scope)
    assert (document.id, document.name) == (long_id, "N" * 120)
    assert (await run(dc, rowing.channel_id, boss, "kb", {"remove": long_id})).text == f"Removed {long_id}."
    assert await kb_keys(redis, scope) == []
