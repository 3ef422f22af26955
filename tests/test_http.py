"""The process's HTTP server: health, readiness and metrics over real sockets, with real Redis."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bots.api import run_api
from engine.conversation.engine import Engine
from engine.conversation.store import Store
from engine.errors import NotReady
from engine.runtime.http import HttpServer
from engine.runtime.metrics import Metrics
from engine.runtime.redis import connect
from engine.runtime.settings import Settings


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page, by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_health_is_alive_and_ready_when_every_check_passes(store: Store, http: aiohttp.ClientSession) -> None:
    server = HttpServer(Metrics(), {"redis": store.ping})
    async with server.serve("127.0.0.1", 0) as url:
        async with http.get(f"{url}/healthz") as r:
            assert r.status == 200
            assert await r.json() == {"status": "ok"}
        async with http.get(f"{url}/readyz") as r:
            assert r.status == 200
            assert await r.json() == {"status": "ready", "failed": [], "checks": {"redis": "ok"}}


async def test_readyz_names_what_is_not_ready(store: Store, http: aiohttp.ClientSession) -> None:
    async with connect(f"redis://127.0.0.1:{_closed_port()}/0", wait_seconds=0.5) as unreachable:

        async def platform() -> None:
            raise NotReady("not connected")

        checks = {"redis": Store(unreachable, ttl=60, window=10).ping, "telegram": platform, "model": store.ping}
        server = HttpServer(Metrics(), checks)
        async with server.serve("127.0.0.1", 0) as url, http.get(f"{url}/readyz") as r:
            assert r.status == 503
            body = await r.json()
    assert body["status"] == "not ready"
    assert sorted(body["failed"]) == ["redis", "telegram"]
    assert "temporarily unavailable" in body["checks"]["redis"]
    assert body["checks"]["telegram"] == "not connected"
    assert body["checks"]["model"] == "ok"


async def test_a_hanging_check_times_out_instead_of_hanging_the_probe(http: aiohttp.ClientSession) -> None:
    async def hangs() -> None:
        await asyncio.Event().wait()

    async with HttpServer(Metrics(), {"model": hangs}).serve("127.0.0.1", 0) as url, http.get(f"{url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"]["model"].startswith("no answer within")


async def test_unknown_paths_and_wrong_methods(http: aiohttp.ClientSession) -> None:
    async with HttpServer(Metrics()).serve("127.0.0.1", 0) as url:
        for method, path, status in [
            ("GET", "/nope", 404),
            ("GET", "/healthz/../../etc/passwd", 404),
            ("GET", "/metrics%00", 404),
            ("POST", "/healthz", 405),
            ("DELETE", "/readyz", 405),
            ("PUT", "/metrics", 405),
        ]:
            async with http.request(method, f"{url}{path}") as r:
                assert r.status == status, (method, path)
        async with http.head(f"{url}/healthz") as r:
            assert r.status == 200


async def test_request_id_is_echoed_and_a_forged_one_replaced(http: aiohttp.ClientSession) -> None:
    async with HttpServer(Metrics()).serve("127.0.0.1", 0) as url:
        async with http.get(f"{url}/healthz", headers={"X-Request-Id": "client-42"}) as r:
            assert r.headers["X-Request-Id"] == "client-42"
        async with http.get(f"{url}/healthz", headers={"X-Request-Id": "x\tINFO forged line " + "y" * 80}) as r:
            rid = r.headers["X-Request-Id"]
            assert len(rid) == 32
            assert rid.isalnum()


async def test_metrics_after_api_requests(engine: Engine, settings: Settings, http: aiohttp.ClientSession) -> None:
    async with run_api(engine, settings) as api:
        base = api.removesuffix("/v1")
        body = {"model": engine.model_name, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4}
        async with http.post(f"{api}/chat/completions", json=body, headers={"X-Request-Id": "whole-1"}) as r:
            assert r.status == 200
            assert r.headers["X-Request-Id"] == "whole-1"
            usage = (await r.json())["usage"]
        streamed = {**body, "stream": True, "stream_options": {"include_usage": True}}
        async with http.post(f"{api}/chat/completions", json=streamed, headers={"X-Request-Id": "stream-1"}) as r:
            assert r.headers["X-Request-Id"] == "stream-1"  # sent before the first chunk
            chunks = [line for line in (await r.text()).splitlines() if line.startswith("data: {")]
            stream_usage = json.loads(chunks[-1].removeprefix("data: "))["usage"]
        too_long = {**body, "messages": [{"role": "user", "content": "word " * 3000}]}
        async with http.post(f"{api}/chat/completions", json=too_long) as r:
            assert r.status == 400
        async with http.get(f"{base}/metrics") as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            got = samples(await r.text())
    api_label = frozenset({("platform", "api")})
    assert got["parley_requests_total", api_label] == 3
    assert got["parley_errors_total", frozenset({("platform", "api"), ("kind", "ContextTooLong")})] == 1
    assert got["parley_tokens_in_total", api_label] == usage["prompt_tokens"] + stream_usage["prompt_tokens"]
    assert got["parley_tokens_out_total", api_label] == usage["completion_tokens"] + stream_usage["completion_tokens"]
    assert got["parley_time_to_first_token_seconds_count", api_label] == 2
    assert got["parley_request_duration_seconds_count", api_label] == 2
    assert got["parley_request_duration_seconds_sum", api_label] > 0
    # read from the generator and the engine at scrape time: nothing is running now
    assert got["parley_queue_depth", frozenset()] == 0
    assert got["parley_active_conversations", frozenset()] == 0
    assert got["parley_jobs_reclaimed_total", frozenset()] == 0
