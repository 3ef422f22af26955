"""How one reply appears in a Telegram chat: drafts or edited messages, HTML with a plain fallback."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from telegram import Bot, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest

from bots.text.telegram_html import strip_markdown, to_telegram_html

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass
class Draft:
    """A private chat's streamed draft (Bot API sendMessageDraft); becomes a Message when final."""

    draft_id: int


class TelegramSurface:
    def __init__(
        self,
        bot: Bot,
        chat_id: int,
        *,
        thread_id: int | None = None,
        reply_to: int | None = None,
        draft_id: int | None = None,
    ) -> None:
        self.bot = bot
        self.chat_id = chat_id
        self.thread_id = thread_id
        self.reply_to = reply_to  # the person's message: the first piece answers it
        self.draft_id = draft_id  # set in private chats, where drafts stream best

    async def typing(self) -> None:
        await self.bot.send_chat_action(self.chat_id, ChatAction.TYPING, message_thread_id=self.thread_id)

    async def notice(self, text: str) -> None:
        await self.bot.send_message(self.chat_id, f"ℹ️ {text}", message_thread_id=self.thread_id)  # noqa: RUF001

    async def post(self, text: str, *, final: bool) -> object:
        if not final and self.draft_id is not None and await self._draft(text):
            return Draft(self.draft_id)
        return await self._send(text, final=final)

    async def edit(self, handle: object, text: str, *, final: bool) -> object:
        if isinstance(handle, Draft):
            if not final and await self._draft(text):
                return handle
            return await self._send(text, final=final)
        assert isinstance(handle, Message)
        try:
            if final:
                return await self._formatted(lambda html, mode: handle.edit_text(html, parse_mode=mode), text)
            return await handle.edit_text(text)
        except BadRequest as exc:
            if "not modified" in str(exc).lower():
                return handle  # the same text again: nothing to do, and nothing to tell anyone
            raise

    async def _draft(self, text: str) -> bool:
        assert self.draft_id is not None
        try:
            await self.bot.send_message_draft(self.chat_id, self.draft_id, text, message_thread_id=self.thread_id)
            return True
        except BadRequest as exc:
            # A Bot API server without drafts (older self-hosted ones): stream by edits from now on.
            log.info("drafts unavailable in chat %s (%s); using message edits", self.chat_id, exc)
            self.draft_id = None
            return False

    async def _send(self, text: str, *, final: bool) -> Message:
        reply = ReplyParameters(self.reply_to, allow_sending_without_reply=True) if self.reply_to else None
        self.reply_to = None

        async def send(body: str, mode: str | None) -> Message:
            return await self.bot.send_message(
                self.chat_id, body, parse_mode=mode, message_thread_id=self.thread_id, reply_parameters=reply
            )

        if final:
            return await self._formatted(send, text)
        return await send(text, None)

    async def _formatted(self, call: Callable[[str, str | None], Awaitable[_T]], markdown: str) -> _T:
        """The Markdown as Telegram HTML; as plain text if Telegram still rejects the entities."""
        try:
            return await call(to_telegram_html(markdown), ParseMode.HTML)
        except BadRequest as exc:
            if "can't parse entities" not in str(exc).lower():
                raise
            log.warning("Telegram rejected the formatted reply (%s); sending it as plain text", exc)
            return await call(strip_markdown(markdown), None)
