"""What the front ends' tests share."""

from __future__ import annotations

import io
import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager

import pytest
from redis.asyncio import Redis

from bench.fakeweb import FakeWeb
from engine.model.registry import LoadedModel
from engine.retrieval.kb import KnowledgeBase
from engine.runtime.logs import RedactSecrets
from tests.bots.sources import BREAD, KEEPERS, LIGHTHOUSE
from tests.fakes.generator import ScriptedGenerator
from tests.logcapture import on_root_logger


@pytest.fixture
def scripted(tiny_model: LoadedModel) -> ScriptedGenerator:
    return ScriptedGenerator(tiny_model)


@contextmanager
def captured_logs(secrets: Iterable[str]) -> Iterator[io.StringIO]:
    """Every log record at DEBUG (the level where libraries log request URLs and gateway payloads) through
    the same redaction filter as `parley serve` uses."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s %(message)s"))
    handler.addFilter(RedactSecrets(secrets))
    with on_root_logger(handler, logging.DEBUG):
        yield stream


async def keys_naming(redis: Redis, *ids: object) -> list[str]:
    """Every key in Redis whose name carries one of these ids (a person's, a chat's): a full SCAN."""
    found = []
    async for raw in redis.scan_iter(count=1000):
        name = raw.decode()
        if any(str(i) in name for i in ids):
            found.append(name)
    return found


def long_second_answer(users: list[str]) -> str:
    """A short first answer, then one long enough to be stopped half-way."""
    return "a short answer" if len(users) == 1 else "word " * 2000


@pytest.fixture
async def taught(redis: Redis) -> AsyncIterator[list[tuple[str, str]]]:
    """(scope, document id) of what a test teaches the global knowledge base, removed afterwards (other tests'
    documents there are left alone)."""
    documents: list[tuple[str, str]] = []
    yield documents
    kb = KnowledgeBase(redis)
    for scope, document_id in documents:
        await kb.remove(scope, document_id)


@pytest.fixture
async def web() -> AsyncIterator[FakeWeb]:
    fake = FakeWeb()
    for slug, page in (("lighthouse", LIGHTHOUSE), ("keepers", KEEPERS), ("bread", BREAD)):
        fake.add_markdown(slug, page)
    async with fake.serve():
        yield fake
