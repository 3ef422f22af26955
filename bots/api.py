"""An OpenAI-compatible HTTP API (chat completions and models) on the engine, served by aiohttp.

Stateless: the client sends the whole conversation; nothing is stored. Errors take OpenAI's shape,
``{"error": {"message", "type", "param", "code"}}``, so existing clients report them properly.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from engine.contract import Delta, Finished, SamplingParams
from engine.conversation.engine import Engine
from engine.conversation.reading import DEFAULT_INSTRUCTION, inline
from engine.documents import read_document
from engine.errors import (
    ContextTooLong,
    DocumentRejected,
    GeneratorBusy,
    InputRejected,
    ParleyError,
    QuotaExceeded,
    Refused,
    StoreUnavailable,
)
from engine.retrieval.search import SearchUnavailable
from engine.runtime.http import HttpServer
from engine.runtime.settings import Settings

ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# Fields OpenAI defines that we accept; those with a value we cannot honour are refused below.
KNOWN_FIELDS = {
    "model", "messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature",
    "top_p", "stop", "seed", "user", "n", "frequency_penalty", "presence_penalty", "logprobs", "top_logprobs",
    "logit_bias", "response_format", "parallel_tool_calls", "metadata", "store", "service_tier",
    "web_search_options",
}  # fmt: skip
_CITATION = re.compile(r"\[(\d{1,3})\]")
MAX_STOPS = 4
MAX_BIASED = 300  # logit_bias entries one request may set: bounds the work each token adds


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.param, self.code, self.headers = status, kind, param, code, headers

    def response(self) -> web.Response:
        body = {"error": {"message": str(self), "type": self.kind, "param": self.param, "code": self.code}}
        return web.json_response(body, status=self.status, headers=self.headers)


def _bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise _bad(f"'{name}' must be a number between {lo} and {hi}", name)
    return float(value)


@dataclass(frozen=True, slots=True)
class FilePart:
    """A file sent as an OpenAI ``file`` content part: its name and decoded bytes, read after parsing."""

    message: int
    name: str | None
    data: bytes


def _file(part: dict[str, Any], index: int) -> FilePart:
    where = f"messages[{index}].content"
    file = part.get("file")
    if not isinstance(file, dict) or set(file) - {"filename", "file_data", "file_id"}:
        raise _bad("a file part needs a 'file' object with 'filename' and 'file_data'", where)
    if "file_id" in file:
        raise _bad("uploaded files (file_id) are not supported: send the file inline as file_data", where)
    name, data_url = file.get("filename"), file.get("file_data")
    if (name is not None and not isinstance(name, str)) or not isinstance(data_url, str):
        raise _bad("'filename' and 'file_data' must be strings", where)
    header, comma, payload = data_url.partition(",")
    if not comma or not header.startswith("data:") or not header.endswith(";base64"):
        raise _bad("'file_data' must be a data URL: data:<type>;base64,<data>", where)
    try:
        data = base64.b64decode(payload, validate=True)
    except ValueError:
        raise _bad("'file_data' is not valid base64", where) from None
    return FilePart(index, name, data)


def _content(message: dict[str, Any], index: int, files: list[FilePart]) -> str:
    content = message.get("content")
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: text, and files (documents) in user messages
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "file" and message.get("role") == "user":
                files.append(_file(part, index))
            elif isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                raise _bad(
                    "only text parts (and file parts in user messages) are supported", f"messages[{index}].content"
                )
        return "".join(texts)
    raise _bad("message content must be a string or a list of text parts", f"messages[{index}].content")


async def read_files(messages: list[dict[str, str]], files: list[FilePart]) -> None:
    """Put each file's text into its message (a file too long for the context is refused as such)."""
    for file in files:
        document = await read_document(file.data, file.name)
        message = messages[file.message]
        message["content"] = inline(message["content"] or DEFAULT_INSTRUCTION, document)


def parse_request(
    body: Any, engine: Engine, files: list[FilePart]
) -> tuple[list[dict[str, str]], SamplingParams, bool, bool, bool]:
    """(messages, params, stream, include_usage, search) from a request body, or ApiError(400/404); file
    parts are collected into ``files``, for ``read_files``."""
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    unknown = sorted(set(body) - KNOWN_FIELDS)
    if unknown:
        raise _bad(f"Unrecognized request argument supplied: {', '.join(unknown)}", unknown[0])
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("you must provide a model parameter", "model")
    if model != engine.model_name:
        raise ApiError(404, f"The model '{model}' does not exist", param="model", code="model_not_found")
    raw = body.get("messages")
    if not isinstance(raw, list) or not raw:
        raise _bad("'messages' must be a non-empty array", "messages")
    messages = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise _bad(f"messages[{i}] needs a role of system, developer, user or assistant", f"messages[{i}].role")
        text = _content(m, i, files)
        name = m.get("name")
        if isinstance(name, str) and name and m["role"] == "user":
            text = f"{name}: {text}"
        messages.append({"role": ROLES[m["role"]], "content": text})
    if body.get("n", 1) != 1:
        raise _bad("only n=1 is supported", "n")
    for name in ("frequency_penalty", "presence_penalty"):
        if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
            raise _bad(f"'{name}' is not supported (use 0)", name)
    if body.get("logprobs"):
        raise _bad("logprobs are not supported", "logprobs")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, dict) or fmt.get("type") != "text"):
        raise _bad("only response_format {'type': 'text'} is supported", "response_format")

    defaults = engine.default_params()
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    if limit is None:
        max_tokens = defaults.max_tokens
    elif isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise _bad("'max_tokens' must be a positive integer", "max_tokens")
    else:
        max_tokens = min(limit, engine.context_tokens)
    stop = body.get("stop")
    if isinstance(stop, str):
        stops: tuple[str, ...] = (stop,)
    elif stop is None:
        stops = ()
    elif isinstance(stop, list) and len(stop) <= MAX_STOPS and all(isinstance(s, str) for s in stop):
        stops = tuple(stop)
    else:
        raise _bad(f"'stop' must be a string or up to {MAX_STOPS} strings", "stop")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise _bad("'seed' must be an integer", "seed")
    bias = body.get("logit_bias") or {}
    if not isinstance(bias, dict) or len(bias) > MAX_BIASED or not all(
        isinstance(token, str) and token.isdecimal() and len(token) < 10
        and isinstance(value, int | float) and not isinstance(value, bool) and -100 <= value <= 100
        for token, value in bias.items()
    ):  # fmt: skip
        raise _bad(f"'logit_bias' maps up to {MAX_BIASED} token ids to numbers from -100 to 100", "logit_bias")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise _bad("'stream' must be a boolean", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise _bad("'stream_options' must be an object", "stream_options")
    params = replace(
        defaults,
        max_tokens=max_tokens,
        temperature=_number(body, "temperature", defaults.temperature, 0.0, 2.0),
        top_p=_number(body, "top_p", defaults.top_p, 1e-9, 1.0),
        stop=stops,
        seed=seed if seed is not None else defaults.seed,
        logit_bias=tuple((int(token), float(value)) for token, value in bias.items()),
    )
    # OpenAI's field for answering from a web search; its options (context size, location) tune OpenAI's own
    # search engine and are accepted without effect here.
    search = body.get("web_search_options")
    if search is not None and not isinstance(search, dict):
        raise _bad("'web_search_options' must be an object", "web_search_options")
    if search is not None and not engine.can_search:
        raise _bad("web search is not set up on this server (PARLEY_SEARCH_URL)", "web_search_options")
    return messages, params, stream, bool(options.get("include_usage")), search is not None


def url_citations(text: str, sources: tuple[dict[str, str], ...]) -> list[dict[str, Any]]:
    """OpenAI's ``url_citation`` annotations: where each citation of a web page stands in the answer."""
    found = []
    for match in _CITATION.finditer(text):
        n = int(match[1])
        if 1 <= n <= len(sources) and (url := sources[n - 1].get("url")):
            citation = {"start_index": match.start(), "end_index": match.end(), "url": url,
                        "title": sources[n - 1]["title"]}  # fmt: skip
            found.append({"type": "url_citation", "url_citation": citation})
    return found


def _usage(fin: Finished) -> dict[str, int]:
    total = fin.prompt_tokens + fin.completion_tokens
    return {"prompt_tokens": fin.prompt_tokens, "completion_tokens": fin.completion_tokens, "total_tokens": total}


def _finish_reason(fin: Finished) -> str:
    return fin.finish_reason if fin.finish_reason in ("length", "content_filter") else "stop"


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def listen_host(settings: Settings) -> str:
    """Where the API may listen: anywhere asked with keys, loopback only without."""
    return settings.api_host if settings.api_key_list else "127.0.0.1"


class ApiServer:
    """The API's routes, mounted under /v1 on the process's HTTP server (``server.mount()``)."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.keys = [k.encode() for k in settings.api_key_list]
        self.max_body = settings.api_max_body_bytes
        self.limit = engine.rate_limit("api", limit=settings.api_requests_per_minute, window_seconds=60)
        # A sub-application: its middleware (keys, OpenAI-shaped errors) covers /v1 only, not the health
        # endpoints or Telegram's webhook on the same server.
        self.app = web.Application(middlewares=[self._errors])
        self.app.router.add_get("/models", self.models)
        self.app.router.add_get("/models/{model}", self.model)
        self.app.router.add_post("/chat/completions", self.chat_completions)

    def mount(self, server: HttpServer) -> None:
        server.app.add_subapp("/v1", self.app)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if self.keys:
                self._authenticate(request)
            # The body limit is the root application's unless a request carries its own.
            return await handler(request.clone(client_max_size=self.max_body))
        except ApiError as exc:
            return exc.response()
        except web.HTTPRequestEntityTooLarge:
            return ApiError(413, "the request body is too large", code="request_too_large").response()
        except web.HTTPException as exc:  # aiohttp's own 404/405
            return ApiError(exc.status, exc.reason, kind="invalid_request_error").response()
        # Redis unreachable, a worker job set aside, a generation that failed, at any point of a request:
        # the engine's own message, in the API's error shape, rather than aiohttp's bare 500.
        except StoreUnavailable as exc:
            return ApiError(503, str(exc), kind="server_error", code="unavailable").response()
        except ParleyError as exc:
            return ApiError(500, str(exc), kind="server_error").response()

    def _authenticate(self, request: web.Request) -> None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        given = token.strip().encode()
        if scheme.lower() != "bearer" or not any(hmac.compare_digest(given, k) for k in self.keys):
            raise ApiError(401, "Incorrect API key provided", kind="invalid_request_error", code="invalid_api_key")

    def _client(self, request: web.Request) -> str:
        token = request.headers.get("Authorization", "").partition(" ")[2].strip()
        # The key itself never goes into Redis: a digest of it names the counter.
        return hashlib.sha256(token.encode()).hexdigest()[:24] if token else (request.remote or "unknown")

    def _model_card(self) -> dict[str, Any]:
        return {"id": self.engine.model_name, "object": "model", "created": 0, "owned_by": "parley"}

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [self._model_card()]})

    async def model(self, request: web.Request) -> web.Response:
        if request.match_info["model"] != self.engine.model_name:
            raise ApiError(404, f"The model '{request.match_info['model']}' does not exist", code="model_not_found")
        return web.json_response(self._model_card())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json(loads=json.loads)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _bad("the request body is not valid JSON") from None
        files: list[FilePart] = []
        messages, params, stream, include_usage, search = parse_request(body, self.engine, files)
        try:
            await read_files(messages, files)
        except DocumentRejected as exc:
            raise _bad(str(exc), "messages", "invalid_file") from None
        try:
            await self.limit.hit(self._client(request))
        except QuotaExceeded as exc:
            retry = {"Retry-After": str(exc.retry_after)}
            raise ApiError(429, str(exc), kind="rate_limit_error", code="rate_limit_exceeded", headers=retry) from None
        cancel = threading.Event()
        # The API serves the community too: its global knowledge base grounds the answers it matches.
        events = self.engine.complete(messages, params, cancel=cancel, search=search, knowledge=True)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        try:
            first = await anext(aiter(events))
        except ContextTooLong as exc:
            raise _bad(str(exc), "messages", "context_length_exceeded") from None
        except Refused as exc:
            raise _bad(str(exc), "messages", "content_filter") from None
        except InputRejected as exc:
            raise _bad(str(exc), "messages") from None
        except GeneratorBusy as exc:
            retry = {"Retry-After": "1"}
            raise ApiError(503, str(exc), kind="server_error", code="overloaded", headers=retry) from None
        except SearchUnavailable as exc:
            raise ApiError(503, str(exc), kind="server_error", code="search_unavailable") from None
        try:
            if stream:
                return await self._stream(request, completion_id, first, events, include_usage)
            return await self._whole(completion_id, first, events)
        finally:
            cancel.set()  # a client gone mid-stream frees the model at the next token
            await events.aclose()  # type: ignore[attr-defined]

    async def _whole(self, cid: str, first: Delta | Finished, events: AsyncIterator[Delta | Finished]) -> web.Response:
        fin = first if isinstance(first, Finished) else None
        async for event in events:
            if isinstance(event, Finished):
                fin = event
        assert fin is not None
        return web.json_response(
            {
                "id": cid,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": self.engine.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": fin.text,
                            "annotations": url_citations(fin.text, fin.sources),
                        },
                        "finish_reason": _finish_reason(fin),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(fin),
            }
        )

    async def _stream(
        self,
        request: web.Request,
        cid: str,
        first: Delta | Finished,
        events: AsyncIterator[Delta | Finished],
        include_usage: bool,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        created = int(time.time())

        async def send(
            delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None, choices: bool = True
        ) -> None:
            chunk: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.engine.model_name,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}] if choices else [],
            }
            if include_usage:
                chunk["usage"] = usage
            await response.write(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode())

        await send({"role": "assistant", "content": ""})

        async def all_events() -> AsyncIterator[Delta | Finished]:
            yield first
            async for e in events:
                yield e

        async for event in all_events():
            if isinstance(event, Delta):
                await send({"content": event.text})
            else:
                # The citations' places are known once the whole answer is: they come with the last chunk.
                await send({"annotations": url_citations(event.text, event.sources)}, _finish_reason(event))
                if include_usage:
                    await send({}, usage=_usage(event), choices=False)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


@asynccontextmanager
async def run_api(engine: Engine, settings: Settings) -> AsyncIterator[str]:
    """The API on a server of its own until the block ends; yields its base URL (``http://host:port/v1``).
    `parley serve` mounts it on the process's shared server instead."""
    server = HttpServer(engine.metrics)
    ApiServer(engine, settings).mount(server)
    async with server.serve(listen_host(settings), settings.api_port or 0) as url:
        yield f"{url}/v1"
