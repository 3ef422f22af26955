"""Delivering model-written Markdown safely: splitting to platform limits, Telegram HTML, Discord hygiene.

Telegram: ``[to_telegram_html(c) for c in split_message(md, TELEGRAM_LIMIT, utf16_len)]`` (fall back
to ``strip_markdown(c)`` when Telegram rejects the entities). Discord: ``discord_messages(md)``.
"""

from bots.text.discord_md import DISCORD_LIMIT, discord_messages, sanitize_discord
from bots.text.split import split_message, utf16_len
from bots.text.telegram_html import TELEGRAM_LIMIT, strip_markdown, telegram_visible_length, to_telegram_html

__all__ = [
    "DISCORD_LIMIT",
    "TELEGRAM_LIMIT",
    "discord_messages",
    "sanitize_discord",
    "split_message",
    "strip_markdown",
    "telegram_visible_length",
    "to_telegram_html",
    "utf16_len",
]
