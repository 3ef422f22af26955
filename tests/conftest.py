"""Shared fixtures: a real Redis, the real model (converted once and cached), a real engine."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store
from engine.model.catalog import BUILTIN_NAME, BUILTIN_SOURCE, resolve_model
from engine.model.convert.importer import import_model
from engine.model.generator import Generator
from engine.model.registry import LoadedModel, load_model
from engine.model.runner import OnnxRunner
from engine.runtime.redis import connect
from engine.runtime.settings import Settings, load_settings
from tests.fakes.model import tiny_model as tiny
from tests.redis_process import RedisProcess

CONTEXT_TOKENS = 2048
# The suite runs the small model, whatever the default for `make run` is (a child `parley` process included).
os.environ["PARLEY_MODEL"] = BUILTIN_NAME


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """REDIS_URL when set, else a throwaway redis-server that keeps nothing on disk."""
    if url := os.environ.get("REDIS_URL"):
        yield url
        return
    workdir = tempfile.mkdtemp(prefix="parley-test-redis-")
    server = RedisProcess(Path(workdir))
    server.start()
    yield server.url
    server.stop()
    shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """A model cache of the checkout's own (ignored by git), so the conversion happens once per checkout
    and nothing is written into the user's own data directory."""
    default = Path(__file__).resolve().parent.parent / ".cache" / "test-models"
    return Path(os.environ.get("PARLEY_TEST_MODELS_DIR") or default)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """Tokenizer and chat template only: for the tests where a scripted generator answers."""
    return tiny(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def model(models_dir: Path) -> LoadedModel:
    """The default model, imported on first use exactly as `make run` does."""
    return load_model(resolve_model(BUILTIN_NAME, models_dir).path)


@pytest.fixture(scope="session")
def fp32_model(models_dir: Path, model: LoadedModel) -> LoadedModel:
    info = import_model(BUILTIN_SOURCE, models_dir, name=f"{BUILTIN_NAME}-fp32", precision="fp32",
                        progress=lambda _: None)  # fmt: skip
    return load_model(info.path)


@pytest.fixture(scope="session")
async def generator(model: LoadedModel) -> AsyncIterator[Generator]:
    runner = OnnxRunner(model, device="cpu", max_len=CONTEXT_TOKENS)
    # Resident caches on, as in production: every engine and bot test with the real model runs through them.
    async with Generator(runner, cache_bytes=256 << 20) as gen:
        yield gen


@pytest.fixture(scope="session")
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    async with connect(redis_url) as client:
        yield client


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, models_dir: Path) -> Settings:
    return load_settings(
        redis_url=redis_url, data_dir=tmp_path / "data", model_dir=models_dir, context_tokens=CONTEXT_TOKENS,
        max_reply_tokens=48, conversation_ttl=3600, temperature=0.0,
    )  # fmt: skip


@pytest.fixture
def store(redis: Redis, settings: Settings) -> Store:
    return Store(redis, ttl=settings.conversation_ttl, window=settings.history_messages)


@pytest.fixture
def engine(settings: Settings, store: Store, generator: Generator, model: LoadedModel) -> Engine:
    return Engine(settings, store, generator, model)


@pytest.fixture
def key() -> ConversationKey:
    """A conversation no other test touches (tests may share one Redis)."""
    return ConversationKey(platform="test", chat=uuid.uuid4().hex, user="alice")


@pytest.fixture
def shared_key() -> ConversationKey:
    return ConversationKey(platform="test", chat=uuid.uuid4().hex)
