import os
from pathlib import Path

import pytest
from redis.asyncio import Redis

from engine.runtime.redis_server import PORT_FILE, EmbeddedRedis


async def test_embedded_redis_persists_across_restart_and_stops(tmp_path: Path) -> None:
    first = EmbeddedRedis(tmp_path)
    async with first as url:
        client = Redis.from_url(url)
        await client.set("parley:test", "kept")
        await client.aclose()
        pid = first.process.pid if first.process else 0
        assert (tmp_path / "redis" / PORT_FILE).is_file()
    # stopped: the process is gone and the port file removed
    assert not (tmp_path / "redis" / PORT_FILE).exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    async with EmbeddedRedis(tmp_path) as url:
        client = Redis.from_url(url)
        assert await client.get("parley:test") == b"kept"
        await client.aclose()
    assert any((tmp_path / "redis" / "appendonlydir").iterdir())


async def test_second_process_joins_the_running_server(tmp_path: Path) -> None:
    owner = EmbeddedRedis(tmp_path)
    async with owner as url:
        joiner = EmbeddedRedis(tmp_path)
        async with joiner as url2:
            assert url2 == url
            assert joiner.process is None
        # the joiner leaves the owner's server running
        client = Redis.from_url(url)
        assert await client.ping()
        await client.aclose()
