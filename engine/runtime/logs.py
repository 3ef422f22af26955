"""Logging set-up: text or JSON lines, each with the request id in context, and a filter that keeps
secrets out of every record, traceback included."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Literal

# The request being handled: set per message by the engine and per HTTP request by the server, so every
# line logged while handling it (in any module) can be traced back to it.
request_id: ContextVar[str | None] = ContextVar("parley_request_id", default=None)

# Shapes of bot tokens, so one that reaches a message (say, in a URL) is masked even if not registered.
_TOKEN_SHAPES = re.compile(
    r"\b\d{6,12}:[A-Za-z0-9_-]{30,}\b"  # Telegram
    r"|\b[A-Za-z0-9_-]{23,28}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,}\b"  # Discord
)


@contextmanager
def request_context(rid: str) -> Iterator[None]:
    previous = request_id.get()
    request_id.set(rid)
    try:
        yield
    finally:
        # Not ContextVar.reset(token): an abandoned answer stream may be closed from another context
        # (the event loop's async-generator finaliser), where the token is not valid.
        request_id.set(previous)


class RedactSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        return _TOKEN_SHAPES.sub("[redacted]", text)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = self.redact(message), None
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class WithRequestId(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class TextFormatter(logging.Formatter):
    """``time LEVEL logger [request]: message``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        rid = getattr(record, "request_id", None)
        where = f"{record.name} [{rid}]" if rid else record.name
        return f"{record.asctime} {record.levelname} {where}: {record.message}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, request_id (when set), exc (with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if rid := getattr(record, "request_id", None):
            entry["request_id"] = rid
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False)


def log_handler(secrets: Iterable[str] = (), fmt: Literal["text", "json"] = "text") -> logging.Handler:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(WithRequestId())
    handler.addFilter(RedactSecrets(secrets))
    return handler


def setup_logging(level: str, secrets: Iterable[str] = (), fmt: Literal["text", "json"] = "text") -> None:
    logging.basicConfig(level=level, handlers=[log_handler(secrets, fmt)], force=True)
    # httpx logs every request URL at INFO, and a Telegram URL carries the bot token.
    for noisy in ("httpx", "httpcore", "urllib3", "transformers", "onnxruntime"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
