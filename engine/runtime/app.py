"""Composition root: settings -> Redis (embedded or configured) -> model -> generator -> engine."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from redis.asyncio import Redis

from engine.contract import TextGenerator
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.model.catalog import Progress, resolve_model
from engine.model.generator import Generator
from engine.model.registry import LoadedModel, load_model
from engine.model.runner import OnnxRunner, pick_device
from engine.runtime.redis import connect, wait_until_reachable
from engine.runtime.redis_server import EmbeddedRedis
from engine.runtime.settings import Settings
from engine.scaleout.remote import CONNECTIONS, RemoteGenerator

log = logging.getLogger(__name__)


@asynccontextmanager
async def open_engine(settings: Settings, *, progress: Progress | None = None) -> AsyncIterator[Engine]:
    """Everything a front end needs, started in order and stopped in reverse, even on failure."""
    async with AsyncExitStack() as stack:
        remote = settings.engine == "remote"
        redis = await stack.enter_async_context(open_redis(settings, max_connections=CONNECTIONS if remote else 32))
        store = Store(redis, ttl=settings.conversation_ttl, window=settings.history_messages)
        model, device = await load_local_model(settings, progress)
        generator: TextGenerator
        if remote:
            # Prompts are built here (tokenizer, chat template); the ONNX session lives in the workers.
            remote_generator = RemoteGenerator(
                redis,
                # as the workers' runners cap it: a model's own context may be shorter than the setting
                context_tokens=min(settings.context_tokens, model.config.context_length),
                job_timeout=settings.job_timeout,
                max_waiting=settings.max_waiting,
            )
            generator = await stack.enter_async_context(remote_generator)
        else:
            generator = await stack.enter_async_context(local_generator(settings, model, device))
        yield Engine(settings, store, generator, model)


@asynccontextmanager
async def open_redis(settings: Settings, *, max_connections: int = 32) -> AsyncIterator[Redis]:
    """The configured Redis (or the embedded one), once it answers: PARLEY_REDIS_WAIT seconds of retries."""
    async with AsyncExitStack() as stack:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.redis_url:
            url = settings.redis_url
        else:
            url = await stack.enter_async_context(EmbeddedRedis(settings.data_dir))
        redis = await stack.enter_async_context(connect(url, max_connections=max_connections))
        await wait_until_reachable(redis, url, settings.redis_wait)
        yield redis


async def load_local_model(settings: Settings, progress: Progress | None = None) -> tuple[LoadedModel, str]:
    """The configured model (imported on first use) and the device it is prepared for."""
    device = pick_device(settings.device)
    kwargs = {"progress": progress} if progress else {}
    info = await asyncio.to_thread(resolve_model, settings.model, settings.models_path, device=device, **kwargs)
    return await asyncio.to_thread(load_model, info.path), device


@asynccontextmanager
async def local_generator(settings: Settings, model: LoadedModel, device: str) -> AsyncIterator[Generator]:
    """The model running in this process: the engine's own, or a `parley worker`'s."""
    runner = await asyncio.to_thread(
        OnnxRunner,
        model,
        device=device,
        threads=settings.threads,
        spinning=settings.thread_spinning,
        max_len=settings.context_tokens,
        rows=settings.max_batch,
    )
    cache_bytes = settings.kv_cache_mb << 20
    async with Generator(
        runner, max_waiting=settings.max_waiting, cache_bytes=cache_bytes, prefill_chunk=settings.prefill_chunk
    ) as generator:
        log.info("model %s (%s) on %s", model.name, model.info.precision, runner.device)
        yield generator
