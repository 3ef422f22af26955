"""The real discord.py, over real HTTP and WebSocket connections, against the fake Discord."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr

from bots.discord.bot import DiscordBot
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.registry import LoadedModel
from engine.runtime.settings import Settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.generator import ScriptedGenerator


@pytest.fixture
async def dc() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(token="fake-discord-bot-token.abc123.secret-part-xyz") as fake:
        yield fake
        fake.assert_all_implemented()


@pytest.fixture
def dc_settings(settings: Settings, dc: FakeDiscord) -> Settings:
    return settings.model_copy(
        update={
            "discord_bot_token": SecretStr(dc.token),
            "discord_api_base": dc.api_base,
            "discord_gateway_url": dc.gateway_url,
        }
    )


@pytest.fixture
def fast_engine(dc_settings: Settings, store: Store, scripted: ScriptedGenerator, tiny_model: LoadedModel) -> Engine:
    return Engine(dc_settings, store, scripted, tiny_model)  # type: ignore[arg-type]


@pytest.fixture
async def bot(fast_engine: Engine, dc_settings: Settings) -> AsyncIterator[DiscordBot]:
    async with DiscordBot(fast_engine, dc_settings, edit_interval=0.02, guild_ready_timeout=0.05) as b:
        yield b
