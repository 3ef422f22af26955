"""Catching up on a Telegram group, where bots cannot read history: admins turn on a day's log of the
group's messages (/summarize on), /summarize then summarises it as topics linking to their first message;
off and /forget delete it. Through the real python-telegram-bot against the fake Bot API."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bots.commands import CATCH_UP
from bots.telegram.bot import TelegramBot
from engine.conversation.chatlog import LOG_TTL
from engine.conversation.engine import Engine
from engine.conversation.keys import chat_key
from tests.fakes.generator import ScriptedGenerator
from tests.fakes.telegram import JSON, FakeTelegram

ONLY_ADMINS = "Only the group's admins can turn this on or off."


@pytest.fixture
def asked(scripted: ScriptedGenerator) -> list[str]:
    seen: list[str] = []

    def script(users: list[str]) -> str:
        seen.append(users[-1])
        return "- The kiln element is ordered, Ann and Bo agreed [1].\n- Bake sale help wanted [3]."

    scripted.script = script
    return seen


async def log_keys(redis: Redis, group: JSON) -> list[str]:
    names = [chat_key("telegram", str(group["id"]), kind) for kind in ("log", "log:on")]
    return [name for name in names if await redis.exists(name)]


async def test_an_admin_turns_catch_up_on_and_summarize_tells_what_was_missed(
    tg: FakeTelegram, bot: TelegramBot, fast_engine: Engine, asked: list[str], redis: Redis
) -> None:
    boss, ann, bo = tg.user("Boss"), tg.user("Ann"), tg.user("Bo")
    group = tg.group("Makers", supergroup=True, owner=boss, bot_is_admin=True)  # an admin bot sees every message
    tg.user_says(group, ann, "Before catch-up: not kept.")
    tg.user_says(group, ann, "/summarize on")
    await tg.wait_for_message(group, ONLY_ADMINS)
    tg.user_says(group, boss, "/summarize on")
    on = await tg.wait_for_message(group, "Catch-up is on")
    assert f"for {LOG_TTL // 3600} hours" in on.text

    said = ["Shall we order the kiln element?", "Yes, Fenwick quoted 340 euros.", "Who helps at the bake sale?"]
    for who, text in zip((ann, bo, ann), said, strict=True):
        tg.user_says(group, who, text)
    await tg.wait_for_idle()
    assert await redis.ttl(chat_key("telegram", str(group["id"]), "log")) > LOG_TTL - 60

    tg.user_says(group, bo, "/summarize")
    answer = await tg.wait_for_message(group, "Bake sale help wanted")
    prompt = asked[-1]
    assert prompt.startswith(f"Bo: {CATCH_UP}")
    assert "not kept" not in prompt
    assert "[1] Ann: Shall we order the kiln element?\n\n[2] Bo: Yes, Fenwick quoted 340 euros." in prompt
    assert "/summarize on" not in prompt  # commands are not conversation
    # Each topic links to its first message (a supergroup's t.me/c/ link).
    await tg.wait_for(lambda: '<a href="https://t.me/c/' in tg.messages(group)[-1].raw_text)
    first = tg.messages(group)[-1]
    assert first.message_id == answer.message_id
    assert f'href="https://t.me/c/{-group["id"] - 10**12}/' in first.raw_text

    tg.user_says(group, boss, "/summarize off")
    await tg.wait_for_message(group, "Catch-up is off")
    assert await log_keys(redis, group) == []
    tg.user_says(group, ann, "After: not kept either.")
    await tg.wait_for_idle()
    assert await log_keys(redis, group) == []


async def test_without_catch_up_summarize_says_how_to_use_it(
    tg: FakeTelegram, bot: TelegramBot, asked: list[str], redis: Redis
) -> None:
    ann = tg.user("Ann")
    group = tg.group("Quiet", bot_is_admin=True)
    tg.user_says(group, ann, "hello all")
    tg.user_says(group, ann, "/summarize")
    hint = await tg.wait_for_message(group, "Reply with /summarize to the message or file you mean.")
    assert "/summarize on" in hint.text
    assert asked == []
    assert await log_keys(redis, group) == []  # nothing is kept unless an admin turned it on

    chat = tg.private_chat(ann)
    tg.user_says(chat, ann, "/summarize")
    assert "/summarize on" not in (await tg.wait_for_message(chat, "Reply with /summarize")).text
    tg.user_says(chat, ann, "/summarize on")
    await tg.wait_for_message(chat, "There is nothing to catch up on in a private chat.")


async def test_an_admins_forget_erases_the_log(
    tg: FakeTelegram, bot: TelegramBot, asked: list[str], redis: Redis
) -> None:
    boss, ann = tg.user("Boss"), tg.user("Ann")
    group = tg.group("Rowing", supergroup=True, owner=boss, bot_is_admin=True)
    tg.user_says(group, boss, "/summarize on")
    await tg.wait_for_message(group, "Catch-up is on")
    tg.user_says(group, ann, "Training moves to 7 am.")
    await tg.wait_for_idle()
    assert len(await log_keys(redis, group)) == 2
    tg.user_says(group, boss, "/forget")
    await tg.wait_for_message(group, "Done: I've erased this group's conversations")
    assert await log_keys(redis, group) == []
