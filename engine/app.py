"""Composition root: settings -> Redis (embedded or configured) -> model -> generator -> engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from engine.engine import Engine
from engine.model.generator import Generator
from engine.model.importer import Progress, resolve_model
from engine.model.registry import load_model
from engine.model.runner import OnnxRunner, pick_device
from engine.redis_server import EmbeddedRedis
from engine.settings import Settings
from engine.store import Store, connect

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_engine(settings: Settings, *, progress: Progress | None = None) -> AsyncIterator[Engine]:
    """Everything a front end needs, started in order and stopped in reverse, even on failure."""
    async with AsyncExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.redis_url:
            url = settings.redis_url
        else:
            url = await stack.enter_async_context(EmbeddedRedis(settings.data_dir))
        redis = await stack.enter_async_context(connect(url))
        store = Store(redis, ttl=settings.conversation_ttl, window=settings.history_messages)
        await store.ping()
        device = pick_device(settings.device)
        kwargs = {"progress": progress} if progress else {}
        info = await asyncio.to_thread(resolve_model, settings.model, settings.models_path, device=device, **kwargs)
        model = await asyncio.to_thread(load_model, info.path)
        runner = await asyncio.to_thread(
            OnnxRunner,
            model,
            device=device,
            threads=settings.threads,
            max_len=settings.context_tokens,
            rows=settings.max_batch,
        )
        generator = await stack.enter_async_context(
            Generator(runner, max_waiting=settings.max_waiting, cache_bytes=settings.kv_cache_mb << 20)
        )
        log.info("model %s (%s) on %s", model.name, info.precision, runner.device)
        yield Engine(settings, store, generator, model)
