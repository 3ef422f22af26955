"""Answers with sources through the API, with the official `openai` client: `web_search_options` answers
from a (fake) SearXNG with `url_citation` annotations, streamed too; the global knowledge base grounds
answers it matches; bad or unservable search requests get OpenAI-shaped errors."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openai
import pytest
from openai import AsyncOpenAI

from bench.fakeweb import FakeWeb
from bots.api import run_api
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.registry import LoadedModel
from engine.retrieval.grounding import NOTHING_FOUND
from engine.retrieval.kb import GLOBAL
from engine.runtime.settings import Settings
from tests.fakes.generator import ScriptedGenerator

KILN = (
    "# Ropewalk kiln\n\n## Firing\n\nThe Ropewalk kiln is fired on Thursdays to 1,240 degrees; loads go in before "
    "18:45 and the steward on duty seals the door."
)
QUESTION = [{"role": "user", "content": "When is the Ropewalk kiln fired?"}]


@asynccontextmanager
async def served(settings: Settings, store: Store, model: LoadedModel, reply: str) -> AsyncIterator[AsyncOpenAI]:
    engine = Engine(settings, store, ScriptedGenerator(model, script=lambda users: reply), model)
    async with (
        run_api(engine, settings) as url,
        AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=30) as client,
    ):
        yield client


@pytest.fixture
async def web() -> AsyncIterator[FakeWeb]:
    web = FakeWeb()
    web.add_markdown("kiln", KILN)
    async with web.serve():
        yield web


@pytest.fixture
def searching(settings: Settings, web: FakeWeb) -> Settings:
    return settings.model_copy(update={"search_url": web.url, "fetch_allow": "127.0.0.1"})


async def test_web_search_options_answer_with_url_citations(
    searching: Settings, store: Store, tiny_model: LoadedModel, web: FakeWeb
) -> None:
    async with served(searching, store, tiny_model, "On Thursdays [1], to 1,240 degrees [4].") as client:
        r = await client.chat.completions.create(
            model=tiny_model.name, messages=QUESTION, web_search_options={"search_context_size": "low"}
        )  # type: ignore[call-overload]
        message = r.choices[0].message
        url = web.page_url("kiln")
        assert message.content == f"On Thursdays [1], to 1,240 degrees.\n\nSources:\n[1] Ropewalk kiln, Firing <{url}>"
        assert message.annotations is not None
        assert len(message.annotations) == 2  # the citation in the answer, and its line in the list
        first = message.annotations[0].url_citation
        assert (first.url, first.title) == (url, "Ropewalk kiln")
        assert message.content[first.start_index : first.end_index] == "[1]"

        stream = await client.chat.completions.create(
            model=tiny_model.name, messages=QUESTION, web_search_options={}, stream=True
        )  # type: ignore[call-overload]
        content, last = "", None
        async for chunk in stream:
            if chunk.choices:
                content += chunk.choices[0].delta.content or ""
                last = chunk.choices[0]
        assert content == message.content
        assert last is not None
        assert last.finish_reason == "stop"
        assert (last.delta.model_extra or {})["annotations"][0]["url_citation"]["url"] == url


async def test_nothing_relevant_on_the_web_is_said_plainly(
    searching: Settings, store: Store, tiny_model: LoadedModel
) -> None:
    async with served(searching, store, tiny_model, "a guess") as client:
        question = [{"role": "user", "content": "Who won the 1987 snooker championship?"}]
        r = await client.chat.completions.create(model=tiny_model.name, messages=question, web_search_options={})  # type: ignore[call-overload]
        assert r.choices[0].message.content == NOTHING_FOUND


async def test_search_requests_the_server_cannot_serve_are_refused(
    settings: Settings, searching: Settings, store: Store, tiny_model: LoadedModel, web: FakeWeb
) -> None:
    async with served(settings, store, tiny_model, "x") as client:
        with pytest.raises(openai.BadRequestError, match="PARLEY_SEARCH_URL") as err:
            await client.chat.completions.create(model=tiny_model.name, messages=QUESTION, web_search_options={})  # type: ignore[call-overload]
        assert err.value.param == "web_search_options"
    async with served(searching, store, tiny_model, "x") as client:
        with pytest.raises(openai.BadRequestError, match="must be an object"):
            await client.chat.completions.create(
                model=tiny_model.name, messages=QUESTION, extra_body={"web_search_options": "yes please"}
            )
        web.search_status = 500
        with pytest.raises(openai.InternalServerError) as down:
            await client.chat.completions.create(model=tiny_model.name, messages=QUESTION, web_search_options={})  # type: ignore[call-overload]
        assert down.value.status_code == 503
        assert down.value.code == "search_unavailable"


async def test_the_global_knowledge_base_grounds_api_answers(
    settings: Settings, store: Store, tiny_model: LoadedModel
) -> None:
    async with served(settings, store, tiny_model, "Thursdays [1].") as client:
        engine_kb = Engine(settings, store, ScriptedGenerator(tiny_model), tiny_model)
        document, _ = await engine_kb.learn(GLOBAL, "kiln.md", KILN, added_by="admin")
        try:
            r = await client.chat.completions.create(model=tiny_model.name, messages=QUESTION)  # type: ignore[arg-type]
            assert r.choices[0].message.content == "Thursdays [1].\n\nSources:\n[1] Ropewalk kiln (kiln.md), Firing"
            assert r.choices[0].message.annotations == []  # url_citation is for web pages only
        finally:
            await engine_kb.kb_remove(GLOBAL, document.id)
