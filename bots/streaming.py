"""Showing a reply while it is written, the same way on every platform.

The engine's deltas accumulate into Markdown text; at most once per ``interval`` it is split at the
platform's limit and each piece is posted or edited in place. Pieces before the last are complete the
moment a later one starts, so they are finalised (formatted) at once; the growing last piece is shown
as plain text until the reply ends (half-written Markdown would not parse). A platform supplies only a
``Surface``: how to post, edit and show "typing".
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from engine.contract import ChatEvent, Delta, Notice, Reply

STOPPED_MARK = "\n\n*(stopped)*"
EMPTY_REPLY = "*(no answer)*"


class Surface(Protocol):
    async def post(self, text: str, *, final: bool) -> object:
        """Show a new message; returns whatever ``edit`` needs to change it later."""
        ...

    async def edit(self, handle: object, text: str, *, final: bool) -> object:
        """Replace a message's text; returns the (possibly new) handle."""
        ...

    async def typing(self) -> None: ...

    async def notice(self, text: str) -> None: ...


@dataclass
class _Piece:
    handle: object
    shown: str
    final: bool


async def _keep_typing(surface: Surface, every: float) -> None:
    while True:
        with contextlib.suppress(Exception):  # a lost typing indicator is not worth failing a reply for
            await surface.typing()
        await asyncio.sleep(every)


async def stream_reply(
    events: AsyncIterator[ChatEvent],
    surface: Surface,
    *,
    split: Callable[[str], list[str]],
    interval: float,
    typing_every: float = 4.0,
) -> Reply | None:
    """Drive ``surface`` from the engine's events; the engine's Reply (None if the stream ended early)."""
    pieces: list[_Piece] = []
    text = ""
    last_flush = 0.0

    async def flush(final: bool) -> None:
        chunks = split(text)
        for i, chunk in enumerate(chunks):
            done = final or i < len(chunks) - 1
            if i == len(pieces):
                pieces.append(_Piece(await surface.post(chunk, final=done), chunk, done))
            elif pieces[i].shown != chunk or (done and not pieces[i].final):
                piece = pieces[i]
                piece.handle = await surface.edit(piece.handle, chunk, final=done)
                piece.shown, piece.final = chunk, done

    typing = asyncio.create_task(_keep_typing(surface, typing_every))
    reply: Reply | None = None
    try:
        async for event in events:
            if isinstance(event, Delta):
                text += event.text
                now = time.monotonic()
                if now - last_flush >= interval and text.strip():
                    last_flush = now
                    await flush(final=False)
            elif isinstance(event, Notice):
                await surface.notice(event.text)
            elif isinstance(event, Reply):
                reply = event
    finally:
        typing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await typing
    if reply is not None:
        text = reply.text if reply.text.strip() else EMPTY_REPLY
        if reply.finish_reason == "cancelled":
            text += STOPPED_MARK
        await flush(final=True)
    return reply
