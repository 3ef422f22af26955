"""What the front ends' tests share."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import pytest
from redis.asyncio import Redis

from engine.model.registry import LoadedModel
from engine.runtime.logs import RedactSecrets
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
