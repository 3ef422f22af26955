"""The process's one HTTP server: health, readiness and metrics, plus what front ends mount on it (the
OpenAI-compatible API under /v1, Telegram's webhook), so a process listens on one port.

aiohttp freezes an application's routes when it starts, so everything is mounted before ``serve``;
readiness checks may be added at any time (a front end that connects later is "not ready" until then).
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from engine.errors import NotReady, ParleyError
from engine.runtime.logs import request_context, request_id
from engine.runtime.metrics import Metrics

log = logging.getLogger(__name__)

# A readiness check returns when its part is ready and raises (NotReady, or whatever failed) otherwise.
Check = Callable[[], Awaitable[None]]
CHECK_TIMEOUT = 2.0  # a probe must answer even when a dependency hangs
# A request id a client sends is kept only if it is short and plain, so it cannot forge log lines.
_CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@web.middleware
async def _with_request_id(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    given = request.headers.get("X-Request-Id", "")
    rid = given if _CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    with request_context(rid):
        response = await handler(request)
    if not response.prepared:
        response.headers["X-Request-Id"] = rid
    return response


async def _echo_request_id(request: web.Request, response: web.StreamResponse) -> None:
    # A streamed response sends its headers inside the handler, while the request id is in context.
    if rid := request_id.get():
        response.headers["X-Request-Id"] = rid


class HttpServer:
    """``server = HttpServer(metrics, {"redis": store.ping}); <mount routes>;
    async with server.serve(host, port) as url: ...``"""

    def __init__(self, metrics: Metrics, checks: Mapping[str, Check] | None = None) -> None:
        self.metrics = metrics
        self.checks: dict[str, Check] = dict(checks or {})
        self.app = web.Application(middlewares=[_with_request_id])
        self.app.on_response_prepare.append(_echo_request_id)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.app.router.add_get("/metrics", self._metrics)
        self.url: str | None = None  # http://host:port, while serving

    @asynccontextmanager
    async def serve(self, host: str, port: int) -> AsyncIterator[str]:
        """Listen until the block ends; yields the base URL (port 0 picks a free one)."""
        runner = web.AppRunner(self.app, access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            bound_host, bound_port = runner.addresses[0][:2]
            self.url = f"http://{bound_host}:{bound_port}"
            log.info("HTTP server on %s (/healthz, /readyz, /metrics)", self.url)
            yield self.url
        finally:
            self.url = None
            await runner.cleanup()

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        names = list(self.checks)
        outcomes = await asyncio.gather(*(self._run(self.checks[n]) for n in names))
        results = dict(zip(names, outcomes, strict=True))
        failed = [n for n, outcome in results.items() if outcome != "ok"]
        body = {"status": "not ready" if failed else "ready", "failed": failed, "checks": results}
        return web.json_response(body, status=503 if failed else 200)

    async def _run(self, check: Check) -> str:
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except TimeoutError:
            return f"no answer within {CHECK_TIMEOUT:.0f} s"
        except (NotReady, ParleyError) as exc:
            return str(exc) or type(exc).__name__
        except Exception as exc:
            # The class only: a library's message may carry an address or credentials.
            return f"failed ({type(exc).__name__})"
        return "ok"

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
