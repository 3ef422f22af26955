"""The fake Telegram Bot API, proven with the real python-telegram-bot over real sockets (no Parley code)."""

from __future__ import annotations

import asyncio
import datetime as dtm
import gc
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from telegram import Update
from telegram.constants import ParseMode
from telegram.error import BadRequest, EndPointNotFound, Forbidden, InvalidToken, NetworkError, RetryAfter
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationBuilder,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    MessageHandler,
    TypeHandler,
    filters,
)
from telegram.request import HTTPXRequest

from tests.fakes.telegram import FakeTelegram, free_port

AnyApp = Application[Any, Any, Any, Any, Any, Any]
TOKEN = "123456:ABC-DEF1234ghIkl-zyx57W2v1u123ew11"

pytestmark = pytest.mark.timeout(10)


@pytest.fixture(autouse=True)
def _ptb_timedelta(monkeypatch: pytest.MonkeyPatch) -> None:
    # PTB >= 22.2 warns (PTBDeprecationWarning) whenever RetryAfter is *constructed* unless durations are opted in
    # to datetime.timedelta; with filterwarnings=error every 429 would blow up inside PTB. Opt in, as the bot should.
    monkeypatch.setenv("PTB_TIMEDELTA", "true")


@pytest.fixture
async def tg() -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram(token=TOKEN) as fake:
        yield fake
        fake.assert_all_implemented()
    gc.collect()  # surface leaked sockets (ResourceWarning -> error) in the test that leaked them


def build_app(tg: FakeTelegram, *, token: str = TOKEN, rate_limiter: AIORateLimiter | None = None) -> AnyApp:
    builder = ApplicationBuilder().token(token).base_url(tg.base_url).base_file_url(tg.base_file_url)
    app: AnyApp = builder.build() if rate_limiter is None else builder.rate_limiter(rate_limiter).build()
    seen: list[int] = []
    app.bot_data["seen"] = seen

    async def record(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        seen.append(update.update_id)

    async def start(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        await update.message.reply_text(f"started args={context.args}")

    async def echo(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        assert update.message.text is not None
        await update.message.reply_text(f"echo: {update.message.text}")

    async def clicked(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.callback_query is not None
        await update.callback_query.answer(f"you chose {update.callback_query.data}")

    app.add_handler(TypeHandler(Update, record), group=-1)
    app.add_handler(CommandHandler(["start", "ask"], start))
    app.add_handler(MessageHandler(filters.TEXT & ~filters.COMMAND, echo))
    app.add_handler(CallbackQueryHandler(clicked))
    return app


@asynccontextmanager
async def polling(tg: FakeTelegram, **kwargs: Any) -> AsyncIterator[AnyApp]:
    app = build_app(tg, **kwargs)
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            yield app
        finally:
            await app.updater.stop()
            await app.stop()


async def raw(tg: FakeTelegram, method: str, token: str = TOKEN, **params: Any) -> tuple[int, dict[str, Any]]:
    """One Bot API call with a JSON body, bypassing PTB."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{tg.base_url}{token}/{method}", json=params) as resp,
    ):
        return resp.status, await resp.json()


# ------------------------------------------------------------------------------------------------ with PTB polling


async def test_echo_in_private_chat(tg: FakeTelegram) -> None:
    alice = tg.user("Alice", "alice")
    chat = tg.private_chat(alice)
    async with polling(tg):
        update = tg.user_says(chat, alice, "hello there")
        reply = await tg.wait_for_message(chat, "echo: hello there")
    assert reply.raw["from"]["id"] == 123456
    assert reply.raw["from"]["is_bot"] is True
    assert reply.raw["chat"] == {"id": alice["id"], "type": "private", "first_name": "Alice", "username": "alice"}
    assert reply.message_id == update["message"]["message_id"] + 1
    assert reply.reply_to_message_id is None  # PTB's reply_text does not quote in private chats by default
    assert [c.method for c in tg.calls][:2] == ["getMe", "deleteWebhook"]
    assert tg.pending_updates == []  # confirmed by PTB's final getUpdates on stop


async def test_command_gets_bot_command_entity(tg: FakeTelegram) -> None:
    bob = tg.user("Bob")
    chat = tg.private_chat(bob)
    async with polling(tg):
        update = tg.user_says(chat, bob, "/start@parley_test_bot now please")
        await tg.wait_for_message(chat, "started args=['now', 'please']")
    assert update["message"]["entities"] == [{"type": "bot_command", "offset": 0, "length": 22}]


async def test_polling_confirms_offsets_and_never_redelivers(tg: FakeTelegram) -> None:
    carol = tg.user("Carol")
    chat = tg.private_chat(carol)
    async with polling(tg) as app:
        sent = [tg.user_says(chat, carol, f"message {i}")["update_id"] for i in range(3)]
        await tg.wait_for(lambda: len(tg.messages(chat)) == 3)
        dup = tg.push_update(tg.user_says(chat, carol, "twice", enqueue=False))
        tg.push_update(dup)  # Telegram-side duplicate delivery: the same update_id twice
        await tg.wait_for(lambda: len(tg.messages(chat)) == 5)
        await tg.wait_for_idle(quiet=0.1)
    seen = app.bot_data["seen"]
    assert seen == [*sent, dup["update_id"], dup["update_id"]]
    offsets = [p.get("offset") for p in tg.calls_to("getUpdates")]
    assert offsets[-1] == dup["update_id"] + 1
    assert tg.pending_updates == []


async def test_get_updates_offset_timeout_limit_allowed_updates(tg: FakeTelegram) -> None:
    dan = tg.user("Dan")
    chat = tg.private_chat(dan)
    first = tg.user_says(chat, dan, "one")["update_id"]
    tg.user_says(chat, dan, "two")
    status, body = await raw(tg, "getUpdates", limit=1)
    assert status == 200
    assert [u["update_id"] for u in body["result"]] == [first]
    status, body = await raw(tg, "getUpdates")  # nothing confirmed yet: both again
    assert [u["message"]["text"] for u in body["result"]] == ["one", "two"]
    status, body = await raw(tg, "getUpdates", offset=first + 2, timeout=0)
    assert body == {"ok": True, "result": []}
    assert tg.pending_updates == []
    # long polling returns as soon as an update arrives
    start = time.monotonic()
    poll = asyncio.create_task(raw(tg, "getUpdates", offset=first + 2, timeout=5))
    await asyncio.sleep(0.1)
    tg.user_says(chat, dan, "three")
    _, body = await poll
    assert [u["message"]["text"] for u in body["result"]] == ["three"]
    assert time.monotonic() - start < 1
    # ... and waits out its timeout when nothing comes
    start = time.monotonic()
    _, body = await raw(tg, "getUpdates", offset=first + 3, timeout=1)
    assert body["result"] == []
    assert time.monotonic() - start >= 0.9
    # allowed_updates filters by update type
    tg.user_says(chat, dan, "filtered out")
    _, body = await raw(tg, "getUpdates", offset=first + 3, allowed_updates=["callback_query"])
    assert body["result"] == []


async def test_wrong_token_raises_invalid_token(tg: FakeTelegram) -> None:
    # A failed initialize() leaves PTB's httpx clients open (shutdown() is a no-op when not initialized), which
    # surfaces as ResourceWarning: pass our own request objects so the test can close them.
    requests = HTTPXRequest(), HTTPXRequest()
    app = (
        ApplicationBuilder()
        .token("654321:WRONG-token")
        .base_url(tg.base_url)
        .request(requests[0])
        .get_updates_request(requests[1])
        .build()
    )
    try:
        with pytest.raises(InvalidToken):
            await app.initialize()
    finally:
        for request in requests:
            await request.shutdown()
    status, body = await raw(tg, "getMe", token="654321:WRONG-token")
    assert (status, body) == (401, {"ok": False, "error_code": 401, "description": "Unauthorized"})


async def test_429_raises_retry_after(tg: FakeTelegram) -> None:
    erin = tg.user("Erin")
    chat = tg.private_chat(erin)
    tg.fail_next("sendMessage", 429, retry_after=3)
    async with build_app(tg) as app:
        with pytest.raises(RetryAfter) as info:
            await app.bot.send_message(chat["id"], "hi")
        assert info.value.retry_after == dtm.timedelta(seconds=3)
        await app.bot.send_message(chat["id"], "hi again")  # one shot: next call is normal
    assert [m.text for m in tg.messages(chat)] == ["hi again"]


async def test_rate_limiter_waits_out_429(tg: FakeTelegram) -> None:
    erin = tg.user("Erin")
    chat = tg.private_chat(erin)
    tg.fail_next("sendMessage", 429, retry_after=1)
    async with build_app(tg, rate_limiter=AIORateLimiter(max_retries=2)) as app:
        start = time.monotonic()
        await app.bot.send_message(chat["id"], "patience")
        elapsed = time.monotonic() - start
    assert elapsed >= 1.0
    assert len(tg.calls_to("sendMessage")) == 2
    assert [m.text for m in tg.messages(chat)] == ["patience"]


async def test_other_injected_faults(tg: FakeTelegram) -> None:
    frank = tg.user("Frank")
    chat = tg.private_chat(frank)
    tg.fail_next("sendMessage", 403, description="Forbidden: bot was blocked by the user")
    tg.fail_next("sendMessage", 500)
    tg.fail_next("SENDMESSAGE", 400, description="Bad Request: can't parse entities: boom")
    async with build_app(tg) as app:
        with pytest.raises(Forbidden, match="blocked by the user"):
            await app.bot.send_message(chat["id"], "x")
        with pytest.raises(NetworkError, match="Internal Server Error"):
            await app.bot.send_message(chat["id"], "x")
        with pytest.raises(BadRequest, match="parse entities: boom"):
            await app.bot.send_message(chat["id"], "x")
        await app.bot.send_message(chat["id"], "fine")
        tg.block(frank)
        with pytest.raises(Forbidden, match="blocked by the user"):
            await app.bot.send_message(chat["id"], "x")


async def test_html_parse_errors_and_entities(tg: FakeTelegram) -> None:
    gina = tg.user("Gina")
    chat = tg.private_chat(gina)
    async with build_app(tg) as app:
        for bad, why in [
            ("<b>unclosed", 'can\'t find end tag corresponding to start tag "b"'),
            ("<b>x</i>", 'unmatched end tag at byte offset 4, expected "</b>", found "</i>"'),
            ("<blink>x</blink>", 'unsupported start tag "blink" at byte offset 0'),
            ("1 < 2", 'unsupported start tag "" at byte offset 2'),
        ]:
            with pytest.raises(BadRequest) as info:
                await app.bot.send_message(chat["id"], bad, parse_mode=ParseMode.HTML)
            assert str(info.value).lower() == f"can't parse entities: {why}".lower()
        msg = await app.bot.send_message(
            chat["id"], "<b>bold</b> &lt;tag&gt; <a href='https://x.org'>link</a>", parse_mode=ParseMode.HTML
        )
        assert msg.text == "bold <tag> link"
        with pytest.raises(BadRequest, match=r"(?i)character '!' is reserved"):
            await app.bot.send_message(chat["id"], "Hello!", parse_mode=ParseMode.MARKDOWN_V2)
        await app.bot.send_message(chat["id"], "*Hello\\!*", parse_mode=ParseMode.MARKDOWN_V2)
    sent = tg.messages(chat)
    assert sent[0].entities == [
        {"type": "bold", "offset": 0, "length": 4},
        {"type": "text_link", "url": "https://x.org", "offset": 11, "length": 4},
    ]
    assert sent[0].parse_mode == "HTML"
    assert sent[0].raw_text.startswith("<b>bold</b>")
    assert (sent[1].text, sent[1].entities) == ("Hello!", [{"type": "bold", "offset": 0, "length": 6}])


async def test_message_length_is_checked_after_entity_parsing(tg: FakeTelegram) -> None:
    hal = tg.user("Hal")
    chat = tg.private_chat(hal)
    async with build_app(tg) as app:
        with pytest.raises(BadRequest, match="Message is too long"):
            await app.bot.send_message(chat["id"], "x" * 4097)
        with pytest.raises(BadRequest, match="Message text is empty"):
            await app.bot.send_message(chat["id"], "  \n ")
        with pytest.raises(BadRequest, match="Message text is empty"):
            await app.bot.send_message(chat["id"], "<b></b>", parse_mode=ParseMode.HTML)
        await app.bot.send_message(chat["id"], "<i>" + "y" * 4096 + "</i>", parse_mode=ParseMode.HTML)
    assert len(tg.messages(chat)[0].text) == 4096


async def test_edit_not_modified_and_not_found(tg: FakeTelegram) -> None:
    ivy = tg.user("Ivy")
    chat = tg.private_chat(ivy)
    async with build_app(tg) as app:
        msg = await app.bot.send_message(chat["id"], "draft", parse_mode=ParseMode.HTML)
        with pytest.raises(BadRequest, match="Message is not modified: specified new message content"):
            await app.bot.edit_message_text("draft", chat_id=chat["id"], message_id=msg.message_id)
        edited = await app.bot.edit_message_text(
            "<b>final</b>", chat_id=chat["id"], message_id=msg.message_id, parse_mode=ParseMode.HTML
        )
        assert not isinstance(edited, bool)
        assert edited.edit_date is not None
        with pytest.raises(BadRequest, match="Message to edit not found"):
            await app.bot.edit_message_text("x", chat_id=chat["id"], message_id=999)
        with pytest.raises(BadRequest, match="too_long"):
            await app.bot.edit_message_text("z" * 5000, chat_id=chat["id"], message_id=msg.message_id)
    [current] = tg.messages(chat)
    assert (current.text, current.edits, current.entities) == ("final", 1, [{"type": "bold", "offset": 0, "length": 5}])


async def test_unknown_method_is_recorded(tg: FakeTelegram) -> None:
    jo = tg.user("Jo")
    chat = tg.private_chat(jo)
    async with build_app(tg) as app:
        # PTB maps any 404 of a regular method to InvalidToken (Telegram's 404 usually means a malformed token)
        with pytest.raises(InvalidToken, match="not implemented in fake"):
            await app.bot.send_dice(chat["id"])
        with pytest.raises(EndPointNotFound, match="'getHologram' not found"):
            await app.bot.do_api_request("getHologram", api_kwargs={"chat_id": chat["id"]})
    with pytest.raises(AssertionError, match="getHologram, sendDice"):
        tg.assert_all_implemented()
    assert [c.method for c in tg.calls[-2:]] == ["sendDice", "getHologram"]
    tg.unimplemented.clear()  # the fixture would fail this test otherwise


async def test_forum_topic_reply_keeps_thread(tg: FakeTelegram) -> None:
    kim = tg.user("Kim", "kim")
    forum = tg.group("Parley HQ", forum=True, owner=kim)
    topic = tg.create_topic(forum, "Questions", by=kim)
    async with polling(tg):
        update = tg.user_says(forum, kim, "/ask what is up", thread_id=topic)
        reply = await tg.wait_for_message(forum, "started", thread_id=topic)
        tg.user_says(forum, kim, "plain chatter", thread_id=topic)  # privacy mode: the bot never sees this
        await tg.wait_for_idle(quiet=0.1)
    msg = update["message"]
    assert msg["is_topic_message"] is True
    assert msg["message_thread_id"] == topic
    assert msg["reply_to_message"]["forum_topic_created"] == {"name": "Questions", "icon_color": 7322096}
    assert msg["chat"]["is_forum"] is True
    assert msg["chat"]["type"] == "supergroup"
    assert reply.thread_id == topic
    assert reply.raw["is_topic_message"] is True
    assert reply.reply_to_message_id == msg["message_id"]  # PTB quotes in groups by default
    assert [u["message"]["text"] for u in tg.withheld] == ["plain chatter"]
    assert len(tg.messages(forum)) == 1


async def test_group_admins_chat_and_members(tg: FakeTelegram) -> None:
    owner, admin, member = tg.user("Olga"), tg.user("Adam"), tg.user("Mia")
    group = tg.group("Team", owner=owner, admins=[admin])
    tg.user_says(group, member, "hi all")
    async with build_app(tg) as app:
        admins = await app.bot.get_chat_administrators(group["id"])
        assert [(a.user.id, a.status) for a in admins] == [(owner["id"], "creator"), (admin["id"], "administrator")]
        assert (await app.bot.get_chat_member(group["id"], member["id"])).status == "member"
        assert (await app.bot.get_chat_member(group["id"], app.bot.id)).status == "member"
        full = await app.bot.get_chat(group["id"])
        assert (full.type, full.title) == ("group", "Team")
        with pytest.raises(BadRequest, match="Chat not found"):
            await app.bot.get_chat(-42)
        with pytest.raises(BadRequest, match="no administrators in the private chat"):
            await app.bot.get_chat_administrators(tg.private_chat(member)["id"])


async def test_drafts_actions_commands_and_callbacks(tg: FakeTelegram) -> None:
    lee = tg.user("Lee")
    chat = tg.private_chat(lee)
    group = tg.group("Grp")
    async with polling(tg) as app:
        assert await app.bot.send_message_draft(chat["id"], draft_id=7, text="<i>thinking</i>", parse_mode="HTML")
        assert await app.bot.send_message_draft(chat["id"], draft_id=7)  # Bot API 10: empty text = placeholder
        with pytest.raises(BadRequest, match="private chats"):
            await app.bot.send_message_draft(group["id"], draft_id=1, text="no")
        assert await app.bot.send_chat_action(chat["id"], "typing")
        with pytest.raises(BadRequest, match="Wrong parameter action"):
            await app.bot.send_chat_action(chat["id"], "dancing")
        await app.bot.set_my_commands([("start", "Start"), ("ask", "Ask something")])
        assert [c.command for c in await app.bot.get_my_commands()] == ["start", "ask"]
        with pytest.raises(BadRequest, match="Bot_command_invalid"):
            await app.bot.set_my_commands([("Start", "Upper case is invalid")])
        assert await app.bot.delete_my_commands()
        assert await app.bot.get_my_commands() == ()
        msg = await app.bot.send_message(chat["id"], "pick one")
        tg.user_clicks(chat, lee, msg.message_id, "blue")
        await tg.wait_for(lambda: tg.answered_callbacks)
    assert tg.calls_to("sendMessageDraft")[0] == {
        "chat_id": chat["id"],
        "draft_id": 7,
        "text": "<i>thinking</i>",
        "parse_mode": "HTML",
    }
    assert [(d.draft_id, d.text, d.entities) for d in tg.drafts] == [
        (7, "thinking", [{"type": "italic", "offset": 0, "length": 8}]),
        (7, "", []),
    ]
    assert [(a.chat_id, a.action) for a in tg.chat_actions] == [(chat["id"], "typing")]
    assert tg.answered_callbacks[0]["text"] == "you chose blue"


async def test_hostile_updates_do_not_stop_the_bot(tg: FakeTelegram) -> None:
    max_ = tg.user("Max")
    chat = tg.private_chat(max_)
    async with polling(tg) as app:
        tg.push_update({"some_future_update_kind": {"x": 1}})  # unknown kind: PTB keeps it in api_kwargs
        tg.user_says(chat, max_, "still alive?")
        await tg.wait_for_message(chat, "echo: still alive?")
    assert len(app.bot_data["seen"]) == 2


# ------------------------------------------------------------------------------------------------ webhook


async def test_webhook_delivery_with_right_and_wrong_secret(tg: FakeTelegram) -> None:
    nia = tg.user("Nia")
    chat = tg.private_chat(nia)
    port = free_port()
    app = build_app(tg)
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_webhook(
            listen="127.0.0.1",
            port=port,
            url_path="tg-hook",
            webhook_url=f"http://127.0.0.1:{port}/tg-hook",
            secret_token="s3cret-Token_1",
        )
        try:
            assert tg.webhook is not None
            assert tg.webhook["secret_token"] == "s3cret-Token_1"
            tg.user_says(chat, nia, "pushed by telegram")  # the fake pushes it to the webhook itself
            await tg.wait_for_message(chat, "echo: pushed by telegram")
            update = tg.user_says(chat, nia, "manual", enqueue=False)
            assert await tg.deliver_webhook(update, secret_token="wrong") == 403
            assert await tg.deliver_webhook(update, secret_token=None) == 403
            assert await tg.deliver_webhook(update) == 200
            await tg.wait_for_message(chat, "echo: manual")
            status, body = await raw(tg, "getUpdates")
            assert status == 409
            assert "webhook is active" in body["description"]
            info = await app.bot.get_webhook_info()
            assert info.url == f"http://127.0.0.1:{port}/tg-hook"
            assert info.pending_update_count == 0
        finally:
            await app.updater.stop()
            await app.stop()
    assert [status for _, status in tg.webhook_deliveries] == [200]
    assert len(tg.messages(chat)) == 2


# ------------------------------------------------------------------------------------------------ raw protocol


async def test_raw_protocol_shapes(tg: FakeTelegram) -> None:
    ola = tg.user("Ola")
    chat = tg.private_chat(ola)
    status, body = await raw(tg, "GETME")  # method names are case-insensitive
    assert status == 200
    assert body["result"]["username"] == "parley_test_bot"
    status, body = await raw(
        tg, "sendMessage", chat_id=chat["id"], text="json body", reply_parameters={"message_id": 99}
    )
    assert (status, body["description"]) == (400, "Bad Request: message to be replied not found")
    status, body = await raw(tg, "sendMessage", chat_id=str(chat["id"]), text="123", reply_to_message_id=99,
                             allow_sending_without_reply=True)  # fmt: skip
    assert status == 200
    assert body["result"]["text"] == "123"
    assert "reply_to_message" not in body["result"]
    status, body = await raw(tg, "sendMessage", chat_id=chat["id"], text="x", parse_mode="Klingon")
    assert (status, body) == (
        400,
        {"ok": False, "error_code": 400, "description": "Bad Request: unsupported parse_mode"},
    )
    tg.fail_next("getMe", 429, retry_after=5)
    status, body = await raw(tg, "getMe")
    assert (status, body) == (
        429,
        {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 5",
            "parameters": {"retry_after": 5},
        },
    )
    async with aiohttp.ClientSession() as session, session.get(f"{tg.base_file_url}{TOKEN}/photos/x.jpg") as resp:
        assert resp.status == 404


# ------------------------------------------------------------------------------------------------ files


async def test_document_reaches_ptb_and_downloads(tg: FakeTelegram) -> None:
    pia = tg.user("Pia", "pia")
    chat = tg.private_chat(pia)
    payload = bytes(range(256)) * 40  # binary, not UTF-8
    got: list[tuple[str | None, str | None, bytes]] = []
    app = build_app(tg)

    async def on_document(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        assert update.message is not None
        assert update.message.document is not None
        doc = update.message.document
        file = await context.bot.get_file(doc.file_id)
        got.append((doc.file_name, update.message.caption, bytes(await file.download_as_bytearray())))
        await update.message.reply_text(f"read {doc.file_size} bytes of {doc.mime_type}")

    app.add_handler(MessageHandler(filters.Document.ALL, on_document))
    async with app:
        await app.start()
        assert app.updater is not None
        await app.updater.start_polling(poll_interval=0, timeout=dtm.timedelta(seconds=1))
        try:
            update = tg.user_sends_document(chat, pia, payload, "notes.bin", caption="  have a look  ")
            await tg.wait_for_message(chat, f"read {len(payload)} bytes of application/octet-stream")
        finally:
            await app.updater.stop()
            await app.stop()
    assert got == [("notes.bin", "have a look", payload)]
    message = update["message"]
    assert "text" not in message
    assert "caption_entities" not in message
    doc = message["document"]
    assert set(doc) == {"file_id", "file_unique_id", "file_name", "mime_type", "file_size"}
    assert doc["file_size"] == len(payload)
    assert tg.downloads == ["documents/file_0.bin"]
    assert tg.calls_to("getFile") == [{"file_id": doc["file_id"]}]


async def test_document_caption_mention_passes_privacy_mode(tg: FakeTelegram) -> None:
    quinn = tg.user("Quinn")
    group = tg.group("Readers")
    seen = tg.user_sends_document(
        group, quinn, b"%PDF-1.4", "paper.pdf", "application/pdf", caption="@parley_test_bot summarise"
    )
    unseen = tg.user_sends_document(group, quinn, b"x", "other.txt", "text/plain", caption="for humans")
    assert seen["message"]["caption_entities"] == [{"type": "mention", "offset": 0, "length": 16}]
    assert [u["update_id"] for u in tg.pending_updates] == [seen["update_id"]]
    assert [u["update_id"] for u in tg.withheld] == [unseen["update_id"]]
    reply = tg.user_sends_document(group, quinn, b"y", "y.txt", reply_to=seen["message"]["message_id"])
    assert reply["message"]["reply_to_message"]["message_id"] == seen["message"]["message_id"]
    assert "caption" not in reply["message"]


async def test_get_file_errors_and_download_auth(tg: FakeTelegram) -> None:
    rui = tg.user("Rui")
    chat = tg.private_chat(rui)
    small = tg.user_sends_document(chat, rui, b"hello file", "a.txt", "text/plain")["message"]["document"]
    big = tg.user_sends_document(chat, rui, b"tiny", "huge.zip", file_size=20 * 1024 * 1024 + 1)["message"]
    assert big["document"]["file_size"] == 20 * 1024 * 1024 + 1
    async with build_app(tg) as app:
        with pytest.raises(BadRequest, match=r"(?i)invalid file_id"):
            await app.bot.get_file("no-such-file")
        with pytest.raises(BadRequest, match=r"(?i)file is too big"):
            await app.bot.get_file(big["document"]["file_id"])
        file = await app.bot.get_file(small["file_id"])
        assert (file.file_id, file.file_unique_id, file.file_size) == (small["file_id"], small["file_unique_id"], 10)
        assert file.file_path == f"{tg.base_file_url}{TOKEN}/documents/file_0.txt"
        assert bytes(await file.download_as_bytearray()) == b"hello file"
    status, body = await raw(tg, "getFile", file_id="nope")
    assert (status, body) == (400, {"ok": False, "error_code": 400, "description": "Bad Request: invalid file_id"})
    status, body = await raw(tg, "getFile", file_id=small["file_id"])
    assert status == 200
    assert body["result"] == {
        "file_id": small["file_id"],
        "file_unique_id": small["file_unique_id"],
        "file_size": 10,
        "file_path": "documents/file_0.txt",
    }
    async with aiohttp.ClientSession() as session:
        base = tg.base_file_url
        async with session.get(f"{base}{TOKEN}/documents/file_0.txt") as resp:
            assert (resp.status, await resp.read()) == (200, b"hello file")
        async with session.get(f"{base}{TOKEN}/documents/file_9.txt") as resp:
            assert (resp.status, await resp.json()) == (
                404,
                {"ok": False, "error_code": 404, "description": "Not Found"},
            )
        async with session.get(f"{base}999:wrongtoken/documents/file_0.txt") as resp:
            assert resp.status == 401
        async with session.get(f"{base}not-a-token/documents/file_0.txt") as resp:
            assert resp.status == 404
    assert tg.downloads == ["documents/file_0.txt", "documents/file_0.txt"]
