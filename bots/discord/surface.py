"""How one reply appears on Discord: a channel message (or an interaction's response) edited as it grows,
continued in further messages, never pinging anyone."""

from __future__ import annotations

import discord

from bots.text.discord_md import discord_messages, sanitize_discord

LIMIT = 2000
NO_PINGS = discord.AllowedMentions.none()


def split_for_discord(text: str) -> list[str]:
    # Sanitising can lengthen text (a zero-width space after each "@"), so it happens inside the split.
    return discord_messages(text, LIMIT)


class ChannelSurface:
    """Replies in a channel, the first piece as a reply to the person's message."""

    def __init__(self, channel: discord.abc.Messageable, *, reply_to: discord.Message | None = None) -> None:
        self.channel = channel
        self.reply_to = reply_to
        self.pieces = 0

    async def post(self, text: str, *, final: bool) -> object:
        reference, self.reply_to = self.reply_to, None
        # With a nonce discord.py also sets enforce_nonce: a retried send returns the message already created.
        nonce = f"{reference.id if reference else id(self)}{self.pieces:02d}"[-25:]
        self.pieces += 1
        if reference is None:
            return await self.channel.send(text, allowed_mentions=NO_PINGS, nonce=nonce)
        return await self.channel.send(
            text,
            allowed_mentions=NO_PINGS,
            reference=reference.to_reference(fail_if_not_exists=False),
            mention_author=False,
            nonce=nonce,
        )

    async def edit(self, handle: object, text: str, *, final: bool) -> object:
        assert isinstance(handle, discord.Message)
        return await handle.edit(content=text, allowed_mentions=NO_PINGS)

    async def typing(self) -> None:
        await self.channel.typing()

    async def notice(self, text: str) -> None:
        await self.channel.send(f"-# {sanitize_discord(text)}", allowed_mentions=NO_PINGS)


class InteractionSurface:
    """Replies to a slash command: the deferred "thinking…" response becomes the first piece, and
    follow-ups carry the rest."""

    ORIGINAL = object()

    def __init__(self, interaction: discord.Interaction) -> None:
        self.interaction = interaction
        self.first = True

    async def post(self, text: str, *, final: bool) -> object:
        if self.first:
            self.first = False
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)
            return self.ORIGINAL
        return await self.interaction.followup.send(text, allowed_mentions=NO_PINGS, wait=True)

    async def edit(self, handle: object, text: str, *, final: bool) -> object:
        if handle is self.ORIGINAL:
            await self.interaction.edit_original_response(content=text, allowed_mentions=NO_PINGS)
            return handle
        assert isinstance(handle, discord.WebhookMessage)
        return await handle.edit(content=text, allowed_mentions=NO_PINGS)

    async def typing(self) -> None:
        return None  # the deferred response already shows "thinking…"

    async def notice(self, text: str) -> None:
        await self.interaction.followup.send(f"-# {sanitize_discord(text)}", ephemeral=True, allowed_mentions=NO_PINGS)
