"""The real python-telegram-bot, over real HTTP, against the fake Bot API server."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bots.telegram.bot import TelegramBot
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.generator import Generator
from engine.model.registry import LoadedModel
from engine.runtime.settings import Settings
from tests.fakes.generator import ScriptedGenerator
from tests.fakes.telegram import FakeTelegram, random_token


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=random_token()) as fake:
        yield fake
        fake.assert_all_implemented()


@pytest.fixture
def tg_settings(settings: Settings, tg: FakeTelegram) -> Settings:
    return settings.model_copy(
        update={"telegram_bot_token": SecretStr(tg.token), "telegram_base_url": tg.base_url, "http_port": 0}
    )


@pytest.fixture
def fast_engine(tg_settings: Settings, store: Store, scripted: ScriptedGenerator, tiny_model: LoadedModel) -> Engine:
    return Engine(tg_settings, store, scripted, tiny_model)  # type: ignore[arg-type]


@pytest.fixture
def real_engine(tg_settings: Settings, store: Store, generator: Generator, model: LoadedModel) -> Engine:
    return Engine(tg_settings, store, generator, model)


@pytest.fixture
async def bot(fast_engine: Engine, tg_settings: Settings) -> AsyncIterator[TelegramBot]:
    async with TelegramBot(fast_engine, tg_settings, private_interval=0.02, group_interval=0.02) as b:
        yield b
