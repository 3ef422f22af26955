"""Parley on Telegram, driven the way people use it."""

from __future__ import annotations

import asyncio
import logging

import aiohttp
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis

from bots.commands import SUMMARIZE
from bots.telegram.bot import TelegramBot
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.quota import Limits
from engine.conversation.reading import DEFAULT_INSTRUCTION
from engine.errors import ConfigError, NotReady
from engine.runtime.http import HttpServer
from engine.runtime.settings import Settings
from tests.bots.conftest import captured_logs, keys_naming, long_second_answer
from tests.fakes.generator import ScriptedGenerator
from tests.fakes.telegram import FakeTelegram, random_token


async def test_private_conversation_keeps_context(
    tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator
) -> None:
    ann = tg.user("Ann", "ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "Hello there")
    await tg.wait_for_message(chat, "echo 1: Hello there")
    tg.user_says(chat, ann, "And again")
    await tg.wait_for_message(chat, "echo 2: And again")
    # the second prompt carried the first exchange
    assert "Hello there" in scripted.prompts[-1]
    assert "echo 1: Hello there" in scripted.prompts[-1]
    # streamed as drafts in the private chat, then sent for real; typing shown meanwhile
    assert tg.drafts
    assert all(d.chat_id == chat["id"] for d in tg.drafts)
    assert any(a.action == "typing" for a in tg.chat_actions)
    assert len(tg.messages(chat)) == 2


async def test_real_model_answers_in_telegram_html(
    tg: FakeTelegram, real_engine: Engine, tg_settings: Settings
) -> None:
    async with TelegramBot(real_engine, tg_settings, private_interval=0.2):
        bob = tg.user("Bob")
        chat = tg.private_chat(bob)
        tg.user_says(chat, bob, "What is the capital of France? Answer in one sentence.")
        try:
            message = await tg.wait_for_message(chat, "Paris", timeout=60)
        except AssertionError:
            print([(c.method, str(c.params)[:200]) for c in tg.calls])
            raise
        assert message.parse_mode == "HTML"


async def test_group_answers_mentions_replies_and_ask_only(tg_settings: Settings, fast_engine: Engine) -> None:
    async with FakeTelegram(token=random_token(), privacy_mode=False) as tg:
        settings = tg_settings.model_copy(
            update={"telegram_bot_token": SecretStr(tg.token), "telegram_base_url": tg.base_url}
        )
        async with TelegramBot(fast_engine, settings, private_interval=0.02, group_interval=0.02):
            ann, bob = tg.user("Ann"), tg.user("Bob")
            group = tg.group("Friends", supergroup=True)
            tg.user_says(group, ann, "just chatting among ourselves")
            tg.user_says(group, bob, "@parley_test_bot what do you think?")
            first = await tg.wait_for_message(group, "what do you think?")
            assert "@parley_test_bot" not in first.text
            assert first.reply_to_message_id is not None
            tg.user_says(group, ann, "and you?", reply_to=first.message_id)
            await tg.wait_for_message(group, "echo 2: Ann: and you?")
            tg.user_says(group, bob, "/ask is this working")
            await tg.wait_for_message(group, "is this working")
            await tg.wait_for_idle()
            # the chatter was never answered, and the model sees speakers' names in the group
            assert not any("among ourselves" in m.text for m in tg.messages(group))
            assert len(tg.messages(group)) == 3
            tg.assert_all_implemented()


async def test_forum_topics_are_separate_conversations(tg: FakeTelegram, bot: TelegramBot) -> None:
    ann = tg.user("Ann")
    forum = tg.group("Forum", forum=True)
    topic_a, topic_b = tg.create_topic(forum, "A", by=ann), tg.create_topic(forum, "B", by=ann)
    tg.user_says(forum, ann, "/ask first in A", thread_id=topic_a)
    await tg.wait_for_message(forum, "echo 1: Ann: first in A", thread_id=topic_a)
    tg.user_says(forum, ann, "/ask first in B", thread_id=topic_b)
    await tg.wait_for_message(forum, "echo 1: Ann: first in B", thread_id=topic_b)
    tg.user_says(forum, ann, "/ask second in A", thread_id=topic_a)
    await tg.wait_for_message(forum, "echo 2: Ann: second in A", thread_id=topic_a)
    assert all(m.thread_id in (topic_a, topic_b) for m in tg.messages(forum))


async def test_commands(tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine) -> None:
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    registered = {c["command"] for c in tg.calls_to("setMyCommands")[0]["commands"]}
    assert {"ask", "new", "retry", "stop", "system", "usage", "forget", "model", "about", "help"} <= registered

    async def say(text: str, expect: str) -> str:
        tg.user_says(chat, ann, text)
        return (await tg.wait_for_message(chat, expect)).text

    assert "/ask" in await say("/start", "I'm Parley")
    await say("/help", "/retry")
    await say("/ask", "Ask me something after the command")
    await say("/model", fast_engine.model.name)
    about = await say("/about", "Up for")
    assert "Parley " in about
    assert fast_engine.model.name in about
    assert "no knowledge base or web search" in about
    await say("/system You are a pirate.", "Persona set")
    await say("/system", "You are a pirate.")
    assert "You are a pirate." in "".join(m.text for m in tg.messages(chat))
    await say("hello", "echo 1: hello")
    assert "You are a pirate." in fast_engine.generator.prompts[-1]  # type: ignore[attr-defined]
    tg.user_says(chat, ann, "/retry")
    await tg.wait_for(lambda: sum("echo 1: hello" in m.text for m in tg.messages(chat)) == 2)
    await say("/usage", "2 requests")
    await say("/stop", "not writing anything")
    await say("/new", "Started over")
    await say("again", "echo 1: again")
    await say("/forget", "erased our conversation")
    assert await fast_engine.person_usage("telegram", str(ann["id"])) == {}


async def test_stop_cancels_a_long_answer(tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator) -> None:
    scripted.script = lambda users: "word " * 2000
    scripted.delay = 0.01
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "talk a lot")
    await tg.wait_for(lambda: tg.drafts)
    tg.user_says(chat, ann, "/stop")
    await tg.wait_for_message(chat, "Stopped.")
    reply = await tg.wait_for_message(chat, "(stopped)")
    assert reply.text.count("word") < 2000
    assert scripted.cancelled == 1


async def test_forget_mid_answer_leaves_nothing_behind(
    tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator, redis: Redis
) -> None:
    scripted.script, scripted.delay = long_second_answer, 0.01
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "hello")
    await tg.wait_for_message(chat, "a short answer")
    tg.user_says(chat, ann, "talk a lot")
    await tg.wait_for(lambda: any("word word" in d.text for d in tg.drafts))
    tg.user_says(chat, ann, "/forget")
    await tg.wait_for_message(chat, "erased our conversation")
    await tg.wait_for_idle()
    await asyncio.sleep(0.3)  # a late write would land by now
    assert scripted.cancelled == 1
    assert await keys_naming(redis, ann["id"], chat["id"]) == []


async def test_documents_are_read_and_answered(tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator) -> None:
    scripted.script = lambda users: "read: " + ("PELICAN" if "PELICAN" in users[-1] else "nothing")
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_sends_document(chat, ann, b"Trip note. The code word is PELICAN.", "note.txt", "text/plain")
    await tg.wait_for_message(chat, "read: PELICAN")
    assert DEFAULT_INSTRUCTION in scripted.prompts[-1]  # no caption: reading it is the request
    tg.user_sends_document(chat, ann, b"<html><body><p>PELICAN</p></body></html>", "page.html", caption="Code word?")
    await tg.wait_for(lambda: sum("read: PELICAN" in m.text for m in tg.messages(chat)) == 2)
    assert "Code word?" in scripted.prompts[-1]
    # what cannot be read is said, and nothing is asked of the model
    asked = len(scripted.prompts)
    tg.user_sends_document(chat, ann, b"", "empty.txt")
    await tg.wait_for_message(chat, "this file is empty")
    tg.user_sends_document(chat, ann, bytes(range(256)) * 40, "data.bin")
    await tg.wait_for_message(chat, "supported")
    tg.user_sends_document(chat, ann, b"%PDF-1.7 cut", "big.pdf", file_size=30_000_000)
    await tg.wait_for_message(chat, "too large")
    assert len(scripted.prompts) == asked


async def test_summarize_and_reply_work_on_the_message_they_answer(
    tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator
) -> None:
    scripted.script = lambda users: "done"
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "/summarize")
    await tg.wait_for_message(chat, "Reply with /summarize to the message or file you mean")
    mail = tg.user_says(chat, ann, "Hi Ann, can you send the budget by Friday? Thanks, Bob")["message"]
    await tg.wait_for_message(chat, "done")
    tg.user_says(chat, ann, "/reply say yes, politely", reply_to=mail["message_id"])
    await tg.wait_for(lambda: sum(m.text == "done" for m in tg.messages(chat)) == 2)
    prompt = scripted.prompts[-1]
    assert "Draft a reply" in prompt
    assert "say yes, politely" in prompt
    assert "send the budget by Friday" in prompt
    report = tg.user_sends_document(chat, ann, b"# Report\n\nSales rose 12% in May.", "report.md")["message"]
    await tg.wait_for(lambda: sum(m.text == "done" for m in tg.messages(chat)) == 3)
    tg.user_says(chat, ann, "/summarize", reply_to=report["message_id"])
    await tg.wait_for(lambda: sum(m.text == "done" for m in tg.messages(chat)) == 4)
    assert SUMMARIZE in scripted.prompts[-1]
    assert "Sales rose 12% in May." in scripted.prompts[-1]


async def test_group_documents_only_when_addressed(tg_settings: Settings, fast_engine: Engine) -> None:
    async with FakeTelegram(token=random_token(), privacy_mode=False) as tg:
        settings = tg_settings.model_copy(
            update={"telegram_bot_token": SecretStr(tg.token), "telegram_base_url": tg.base_url}
        )
        async with TelegramBot(fast_engine, settings, private_interval=0.02, group_interval=0.02):
            ann = tg.user("Ann")
            group = tg.group("Friends", supergroup=True)
            tg.user_sends_document(group, ann, b"not for the bot", "notes.txt")
            tg.user_sends_document(group, ann, b"Agenda: PELICAN", "agenda.txt", caption="@parley_test_bot summary?")
            reply = await tg.wait_for_message(group, "summary?")
            await tg.wait_for_idle()
            assert len(tg.messages(group)) == 1
            assert reply.reply_to_message_id is not None
            assert "not for the bot" not in fast_engine.generator.prompts[-1]  # type: ignore[attr-defined]


async def test_group_persona_is_admin_only(tg: FakeTelegram, bot: TelegramBot) -> None:
    boss, ann = tg.user("Boss"), tg.user("Ann")
    group = tg.group("Team", supergroup=True, owner=boss)
    tg.user_says(group, ann, "/system You are evil.")
    await tg.wait_for_message(group, "Only the group's admins")
    tg.user_says(group, boss, "/system You are kind.")
    await tg.wait_for_message(group, "Persona set")
    tg.user_says(group, ann, "/forget")
    await tg.wait_for_message(group, "an admin can /forget it")


LONG_REPLY = (
    "Here is the plan.\n\n" + "A paragraph of prose that goes on. " * 60 + "\n\n```python\n"
    + "\n".join(f"print('line {i}')  # a fairly long line of code to fill the block" for i in range(120))
    + "\n```\n\nAnd a closing remark with **bold**."
)  # fmt: skip


async def test_long_reply_is_split_without_breaking_code(tg: FakeTelegram, bot: TelegramBot,
                                                         scripted: ScriptedGenerator) -> None:  # fmt: skip
    scripted.script = lambda users: LONG_REPLY
    scripted.piece = 400
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "give me the long plan")
    await tg.wait_for_message(chat, "closing remark")
    await tg.wait_for_idle()
    messages = tg.messages(chat)
    assert len(messages) >= 3
    for m in messages:
        assert len(m.text.encode("utf-16-le")) // 2 <= 4096
        assert m.parse_mode == "HTML"
        assert m.raw_text.count("<pre>") == m.raw_text.count("</pre>")
    shown = "".join(m.text for m in messages)
    for i in range(120):
        assert f"print('line {i}')" in shown
    assert shown.index("Here is the plan") < shown.index("line 0") < shown.index("line 119") < shown.index("closing")


HOSTILE = "_*[]()~`>#+-=|{}.!\n<b>not a tag</b> & <script>x</script> @everyone\n```\nunclosed fence *bold"


async def test_hostile_formatting_never_breaks_delivery(tg: FakeTelegram, bot: TelegramBot,
                                                        scripted: ScriptedGenerator) -> None:  # fmt: skip
    scripted.script = lambda users: HOSTILE
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "be nasty")
    message = await tg.wait_for_message(chat, "unclosed fence")
    assert "<b>not a tag</b>" in message.text  # shown literally, not interpreted
    # Telegram rejecting the entities anyway: the reply still arrives, as plain text
    tg.fail_next("sendMessage", 400, description="Bad Request: can't parse entities: unsupported start tag")
    tg.user_says(chat, ann, "again")
    await tg.wait_for(lambda: len(tg.messages(chat)) == 2)
    last = tg.messages(chat)[-1]
    assert last.parse_mode is None
    assert "unclosed fence" in last.text


async def test_flood_limit_mid_stream_is_waited_out(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine,
                                                    scripted: ScriptedGenerator) -> None:  # fmt: skip
    # A group allows about 20 messages a minute (edits included): stream at a pace that fits it.
    scripted.script = lambda users: " ".join(f"w{i}" for i in range(200))
    scripted.delay = 0.02
    async with TelegramBot(fast_engine, tg_settings, private_interval=0.02, group_interval=0.5):
        ann = tg.user("Ann")
        group = tg.group("G", supergroup=True)
        tg.fail_next("editMessageText", 429, retry_after=1)
        tg.user_says(group, ann, "/ask count")
        message = await tg.wait_for_message(group, "w199", timeout=30)
        assert message.text.split() == [f"w{i}" for i in range(200)]
        assert len(tg.calls_to("editMessageText")) >= 2  # the refused edit, retried, and later ones
        # private chats stream by drafts: a 429 there is waited out too
        chat = tg.private_chat(ann)
        tg.fail_next("sendMessageDraft", 429, retry_after=1)
        tg.user_says(chat, ann, "count again")
        message = await tg.wait_for_message(chat, "w199", timeout=30)
        assert message.text.split() == [f"w{i}" for i in range(200)]
    labels = {"platform": "telegram", "cause": "429"}
    assert fast_engine.metrics.registry.get_sample_value("parley_rate_limit_waits_total", labels) == 2


async def test_duplicate_update_is_answered_once(tg: FakeTelegram, bot: TelegramBot) -> None:
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    update = tg.user_says(chat, ann, "only once please", enqueue=False)
    tg.push_update(update)
    await tg.wait_for_message(chat, "only once please")
    tg.push_update(update)
    tg.user_says(chat, ann, "next")
    await tg.wait_for_message(chat, "next")
    await tg.wait_for_idle()
    assert sum("only once please" in m.text for m in tg.messages(chat)) == 1


async def test_webhook_mode_checks_the_secret(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine) -> None:
    settings = tg_settings.model_copy(
        update={"telegram_webhook_url": "https://parley.example/tg/hook", "http_host": "127.0.0.1",
                "telegram_webhook_secret": SecretStr("s3cret-Value")}
    )  # fmt: skip
    async with TelegramBot(fast_engine, settings, private_interval=0.02) as bot:
        assert tg.webhook is not None
        assert tg.webhook["url"] == "https://parley.example/tg/hook"
        assert bot.webhook_url is not None
        await bot.ready()
        tg.webhook["url"] = bot.webhook_url  # Telegram would reach the public URL; the fake uses the local one
        ann = tg.user("Ann")
        chat = tg.private_chat(ann)
        good = tg.user_says(chat, ann, "via webhook", enqueue=False)
        assert await tg.deliver_webhook(good) == 200
        await tg.wait_for_message(chat, "echo 1: via webhook")
        bad = tg.user_says(chat, ann, "forged", enqueue=False)
        assert await tg.deliver_webhook(bad, secret_token="wrong") == 403
        assert await tg.deliver_webhook(bad, secret_token=None) == 403
        await tg.wait_for_idle()
        assert not any("forged" in m.text for m in tg.messages(chat))
    assert not tg.calls_to("getUpdates")


async def test_webhook_on_the_process_server(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine) -> None:
    """As `parley serve` runs it: one server for health, metrics and the webhook, started before the bot."""
    hook = {"telegram_webhook_url": "https://parley.example/tg/hook", "telegram_webhook_secret": SecretStr("s3cret")}
    settings = tg_settings.model_copy(update=hook)
    http = HttpServer(fast_engine.metrics)
    bot = TelegramBot(fast_engine, settings, private_interval=0.02, http=http)
    http.checks["telegram"] = bot.ready
    async with http.serve("127.0.0.1", 0) as url, aiohttp.ClientSession() as client:
        async with client.get(f"{url}/readyz") as r:
            assert r.status == 503
            assert (await r.json())["checks"] == {"telegram": "not connected"}
        async with bot:
            assert bot.webhook_url == f"{url}/tg/hook"
            async with client.get(f"{url}/readyz") as r:
                assert r.status == 200
            tg.webhook["url"] = bot.webhook_url
            ann = tg.user("Ann")
            chat = tg.private_chat(ann)
            assert await tg.deliver_webhook(tg.user_says(chat, ann, "hello", enqueue=False)) == 200
            await tg.wait_for_message(chat, "echo 1: hello")
            async with client.get(f"{url}/metrics") as r:
                assert 'parley_requests_total{platform="telegram"} 1.0' in await r.text()
            async with client.post(f"{url}/tg/hook", json={}) as r:  # no secret: refused
                assert r.status == 403
            async with client.get(f"{url}/tg/hook") as r:
                assert r.status == 405


async def test_ready_only_while_receiving_updates(fast_engine: Engine, tg_settings: Settings) -> None:
    bot = TelegramBot(fast_engine, tg_settings)
    with pytest.raises(NotReady):
        await bot.ready()
    async with bot:
        await bot.ready()
    with pytest.raises(NotReady):
        await bot.ready()


async def test_restart_between_messages_keeps_context(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine,
                                                      scripted: ScriptedGenerator) -> None:  # fmt: skip
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    async with TelegramBot(fast_engine, tg_settings, private_interval=0.02):
        tg.user_says(chat, ann, "remember me")
        await tg.wait_for_message(chat, "echo 1: remember me")
    async with TelegramBot(fast_engine, tg_settings, private_interval=0.02):
        tg.user_says(chat, ann, "still there?")
        await tg.wait_for_message(chat, "echo 2: still there?")
    assert "remember me" in scripted.prompts[-1]


async def test_two_chats_at_once(tg: FakeTelegram, bot: TelegramBot, scripted: ScriptedGenerator) -> None:
    scripted.delay = 0.02
    ann, bob = tg.user("Ann"), tg.user("Bob")
    a, b = tg.private_chat(ann), tg.private_chat(bob)
    tg.user_says(a, ann, "from ann")
    tg.user_says(b, bob, "from bob")
    await asyncio.gather(tg.wait_for_message(a, "echo 1: from ann"), tg.wait_for_message(b, "echo 1: from bob"))
    assert not any("bob" in m.text for m in tg.messages(a))


async def test_invalid_token_stops_with_a_clear_message(tg: FakeTelegram, tg_settings: Settings,
                                                        fast_engine: Engine) -> None:  # fmt: skip
    wrong = "999999:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    settings = tg_settings.model_copy(update={"telegram_bot_token": SecretStr(wrong)})
    with pytest.raises(ConfigError, match="TELEGRAM_BOT_TOKEN") as err:
        async with TelegramBot(fast_engine, settings):
            pass
    assert wrong not in str(err.value)


async def test_access_lists_refuse_politely(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine) -> None:
    ann, eve = tg.user("Ann"), tg.user("Eve")
    settings = tg_settings.model_copy(update={"telegram_allowed_users": frozenset({ann["id"]})})
    async with TelegramBot(fast_engine, settings, private_interval=0.02):
        tg.user_says(tg.private_chat(eve), eve, "let me in")
        await tg.wait_for_message(tg.private_chat(eve), "private assistant")
        tg.user_says(tg.private_chat(ann), ann, "hi")
        await tg.wait_for_message(tg.private_chat(ann), "echo 1: hi")
    assert not any("let me in" in m.text for m in tg.messages(tg.private_chat(eve)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("x" * 5000, "limit is 4000 characters"), ("\u200b\u200b", "empty")],
)
async def test_bad_input_gets_a_clear_refusal(tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, text: str,
                                              expected: str) -> None:  # fmt: skip
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, text)
    await tg.wait_for_message(chat, expected)
    key = ConversationKey("telegram", str(chat["id"]), user=str(ann["id"]))
    assert await fast_engine.store.history(key) == []  # nothing stored from a refused message


async def test_malformed_updates_do_not_stop_the_bot(tg: FakeTelegram, bot: TelegramBot) -> None:
    tg.push_update({"message": {"message_id": 1, "chat": {"id": 5, "type": "private"}, "date": 0}})  # no text, no from
    tg.push_update({"edited_message": {"message_id": 2, "chat": {"id": 5, "type": "private"}, "date": 0, "text": "x"}})
    tg.push_update({"unknown_kind": {"x": 1}})
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "still alive?")
    await tg.wait_for_message(chat, "echo 1: still alive?")


async def test_unchanged_final_edit_is_not_an_error(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine,
                                                    scripted: ScriptedGenerator) -> None:  # fmt: skip
    # Plain words look the same formatted: the final edit is "not modified", which must stay invisible.
    scripted.script = lambda users: "plain words only"
    scripted.piece = 100
    async with TelegramBot(fast_engine, tg_settings, group_interval=0.0):
        ann = tg.user("Ann")
        group = tg.group("G", supergroup=True)
        tg.user_says(group, ann, "/ask anything")
        await tg.wait_for_message(group, "plain words only")
        await tg.wait_for_idle()
    assert [m.text for m in tg.messages(group)] == ["plain words only"]


async def test_tokens_never_reach_the_logs(tg: FakeTelegram, tg_settings: Settings, fast_engine: Engine) -> None:
    with captured_logs(tg_settings.secrets()) as stream:  # httpx logs every URL, token included, at DEBUG
        async with TelegramBot(fast_engine, tg_settings, private_interval=0.02):
            ann = tg.user("Ann")
            tg.user_says(tg.private_chat(ann), ann, "hello")
            await tg.wait_for_message(tg.private_chat(ann), "echo 1: hello")
        logging.getLogger("test").error("boom", exc_info=RuntimeError(f"request to /bot{tg.token}/getMe failed"))
    logged = stream.getvalue()
    assert "getUpdates" in logged  # the request log lines were there...
    assert "[redacted]" in logged
    assert tg.token not in logged  # ...without the token
    assert tg.token.split(":")[1] not in logged


async def test_quota_refusal_says_when_and_admins_set_limits(tg: FakeTelegram, tg_settings: Settings,
                                                             fast_engine: Engine) -> None:  # fmt: skip
    fast_engine.quotas.limits = Limits(2, 0, 0, 0)  # two requests a minute per person
    async with TelegramBot(fast_engine, tg_settings, group_interval=0.02):
        boss, ann = tg.user("Boss"), tg.user("Ann")
        group = tg.group("Team", supergroup=True, owner=boss)
        for i in range(2):
            tg.user_says(group, ann, f"/ask q{i}")
            await tg.wait_for_message(group, f"q{i}")
        tg.user_says(group, ann, "/ask one too many")
        refusal = await tg.wait_for_message(group, "limit of requests per minute for you")
        assert "try again in" in refusal.text
        tg.user_says(group, ann, "/usage")
        await tg.wait_for_message(group, "0 requests this minute")
        tg.user_says(group, ann, "/limits 5")
        await tg.wait_for_message(group, "Only the group's admins can change its limits")
        tg.user_says(group, boss, "/limits 5 1000")
        await tg.wait_for_message(group, "5 requests per minute, 1000 tokens per day")
        tg.user_says(group, boss, "/limits lots")
        await tg.wait_for_message(group, "is not a number")


async def test_unknown_commands(tg: FakeTelegram, bot: TelegramBot) -> None:
    ann = tg.user("Ann")
    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "/frobnicate now")
    await tg.wait_for_message(chat, "I don't know /frobnicate. /help lists")
    group = tg.group("G", supergroup=True)
    tg.user_says(group, ann, "/frobnicate@other_bot")
    tg.user_says(group, ann, "/frobnicate@parley_test_bot")
    await tg.wait_for_message(group, "I don't know /frobnicate")
    await tg.wait_for_idle()
    assert len(tg.messages(group)) == 1  # the other bot's command was left alone


async def test_blocked_by_one_person_others_still_answered(tg: FakeTelegram, bot: TelegramBot) -> None:
    eve, ann = tg.user("Eve"), tg.user("Ann")
    tg.block(eve)  # every send to Eve's chat now answers 403
    tg.user_says(tg.private_chat(eve), eve, "hello")
    tg.user_says(tg.private_chat(ann), ann, "hello")
    await tg.wait_for_message(tg.private_chat(ann), "echo 1: hello")
    await tg.wait_for_idle()
    assert tg.messages(tg.private_chat(eve)) == []
    tg.user_says(tg.private_chat(ann), ann, "still there?")
    await tg.wait_for_message(tg.private_chat(ann), "echo 2: still there?")
