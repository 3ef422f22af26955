"""Log lines as `parley serve` writes them: text or JSON, with the request id, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

import pytest

from engine.contract import ChatRequest
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.store import Store
from engine.errors import ConfigError, Refused
from engine.model.registry import LoadedModel
from engine.runtime.logs import log_handler, request_context
from engine.runtime.settings import Settings, load_settings
from tests.fakes.generator import ScriptedGenerator
from tests.logcapture import on_root_logger

TOKEN = "123456789:AAH-fake-telegram-token-0123456789abcdef"  # the shape RedactSecrets also masks
API_KEY = "sk-local-not-a-token-shape"  # only masked because it is registered


@contextmanager
def captured(fmt: Literal["text", "json"]) -> Iterator[io.StringIO]:
    """The root logger through the same handler `parley serve` installs, into a buffer."""
    stream = io.StringIO()
    handler = log_handler([TOKEN, API_KEY], fmt)
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(stream)
    with on_root_logger(handler, logging.INFO):
        yield stream


def test_json_lines_carry_the_request_id_and_never_a_secret() -> None:
    log = logging.getLogger("parley.test")
    with captured("json") as out:
        log.info("outside any request")
        with request_context("req-7"):
            log.warning("calling https://api.telegram.org/bot%s/getMe with key %s", TOKEN, API_KEY)
            try:
                raise RuntimeError(f"token {TOKEN} rejected")
            except RuntimeError:
                log.exception("call failed")
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    outside, first, second = lines
    assert outside["msg"] == "outside any request"
    assert "request_id" not in outside
    assert set(first) == {"ts", "level", "logger", "msg", "request_id"}
    assert first["level"] == "WARNING"
    assert first["logger"] == "parley.test"
    assert first["request_id"] == "req-7"
    assert first["ts"].endswith("+00:00")
    assert first["msg"] == "calling https://api.telegram.org/bot[redacted]/getMe with key [redacted]"
    assert second["request_id"] == "req-7"
    assert "RuntimeError: token [redacted] rejected" in second["exc"]
    assert TOKEN not in out.getvalue()
    assert API_KEY not in out.getvalue()


def test_text_lines_name_the_request_too() -> None:
    log = logging.getLogger("parley.test")
    with captured("text") as out:
        with request_context("req-8"):
            log.info("using %s", TOKEN)
        log.info("after")
    during, after = out.getvalue().splitlines()
    assert during.endswith(" INFO parley.test [req-8]: using [redacted]")
    assert after.endswith(" INFO parley.test: after")


async def test_engine_log_lines_carry_the_message_id(settings: Settings, store: Store, tiny_model: LoadedModel) -> None:
    moderated = settings.model_copy(update={"moderation": "tests.fakes.moderation:flag_forbidden"})
    engine = Engine(moderated, store, ScriptedGenerator(tiny_model), tiny_model)  # type: ignore[arg-type]
    key = ConversationKey("test", "logs", user="ann")
    with captured("json") as out, pytest.raises(Refused):
        async for _ in engine.chat(ChatRequest(key, "something forbidden", message_id="tg:42:7")):
            pass
    refused = [json.loads(line) for line in out.getvalue().splitlines() if "moderation refused" in line]
    assert [line["request_id"] for line in refused] == ["tg:42:7"]


def test_log_format_is_a_setting() -> None:
    assert load_settings(log_format="json").log_format == "json"
    with pytest.raises(ConfigError, match="PARLEY_LOG_FORMAT"):
        load_settings(log_format="xml")
