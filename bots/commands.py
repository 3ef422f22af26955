"""The commands every front end offers, written once: who may run each, what it changes through the engine,
and what it answers. A front end turns its platform's input into a ``Place`` (and the command's
arguments), calls the command, and renders the ``Answer``: Telegram replies, Discord answers privately
(ephemeral) unless the answer is for everyone, the terminal prints it. Refusals and outages raise
``ParleyError``; each front end turns those into text in its one error funnel (``replies.explain``)."""

from __future__ import annotations

import importlib.metadata
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from bots.replies import limits_text, parse_limit, usage_text
from engine.contract import ChatEvent, Reply
from engine.conversation.chatlog import LOG_TTL
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.reading import DEFAULT_INSTRUCTION
from engine.documents import Document
from engine.retrieval.kb import GLOBAL, KbDocument

# name -> what it does, as menus and help texts show it. A front end registers the ones it offers.
COMMANDS: dict[str, str] = {
    "ask": "Ask me something (in groups and channels: /ask your question)",
    "search": "Search the web and answer with sources: /search your question",
    "chat": "Open a thread and talk there",
    "new": "Start the conversation over",
    "retry": "Answer the last question again",
    "stop": "Stop the answer being written",
    "system": "Show or set this conversation's persona",
    "usage": "Your usage and what is left",
    "limits": "Show or set this chat's limits (admins)",
    "forget": "Erase what I store about you (admins: this whole chat)",
    "summarize": "Summarise a message or file you reply to, or catch up on this chat's recent messages",
    "reply": "Reply with it to an e-mail: I draft the answer (add how, if you like)",
    "learn": "Add a document to this community's knowledge base (admins): attach it, or reply with /learn",
    "kb": "What the knowledge base holds (admins: /kb remove ID)",
    "model": "Which model answers",
    "about": "Version, model, uptime and sources",
    "help": "How to talk to me",
}
INTRO = "I'm Parley, a chat assistant running its own language model."
# What /summarize and /reply ask of the model about the message they answer (extra words are added).
SUMMARIZE = DEFAULT_INSTRUCTION  # the same as for a document sent with no words
REPLY = (
    "Draft a reply to this e-mail or message, in its language: greet the sender by name, answer each "
    "question it asks, and sign off. Write only the reply."
)


# A chat's recent messages, numbered, as one document: read whole or map-reduce like any other.
CATCH_UP = (
    "Summarise this chat for someone who missed it, as a short list of its topics. For each topic write one "
    "line: what was discussed or decided and who said what, ending with the number of the topic's first "
    "message in square brackets, like [12]."
)
MAX_CATCH_UP = 500  # messages read for one catch-up
_MESSAGE_NUMBER = re.compile(r"\[(\d{1,3})\]")


@dataclass(frozen=True, slots=True)
class ChatLine:
    author: str
    text: str
    link: str | None = None  # where the message can be opened (Discord's jump URL)


def transcript(lines: Sequence[ChatLine], name: str) -> Document:
    """Messages as a document, numbered from 1, oldest first, one paragraph each (so a long chat is cut
    between messages, never inside one)."""
    text = "\n\n".join(f"[{n}] {line.author}: {' '.join(line.text.split())}" for n, line in enumerate(lines, 1))
    return Document.of_text(text, name)


def link_messages(text: str, lines: Sequence[ChatLine]) -> str:
    """``[12]`` in a catch-up made a link to message 12 where it has one (numbers that match no message
    are left as the model wrote them)."""

    def link(match: re.Match[str]) -> str:
        n = int(match[1])
        target = lines[n - 1].link if 1 <= n <= len(lines) else None
        return f"[[{n}]](<{target}>)" if target else match[0]

    return _MESSAGE_NUMBER.sub(link, text)


async def linked(events: AsyncIterator[ChatEvent], lines: Sequence[ChatLine]) -> AsyncIterator[ChatEvent]:
    """A catch-up's events, its final reply with the message numbers made links (the streamed text keeps
    them as numbers until the reply is complete)."""
    async for event in events:
        yield replace(event, text=link_messages(event.text, lines)) if isinstance(event, Reply) else event


def quoted_instruction(base: str, extra: str) -> str:
    return f"{base} Also: {extra.strip()}" if extra.strip() else base


def help_lines(names: Iterable[str], *, prefix: str = "/") -> str:
    return "\n".join(f"{prefix}{name} – {COMMANDS[name]}" for name in names)  # noqa: RUF001


@dataclass(frozen=True, slots=True)
class Wording:
    """How a platform names a shared chat and the people who may change its settings."""

    chat: str  # "group", "channel"
    threads: str  # its sub-conversations: "topics", "threads"
    admins: str  # who may change its settings: "the group's admins", "members who can manage this server"
    an_admin: str  # one of them: "an admin", "a manager"


@dataclass(frozen=True, slots=True)
class Place:
    """Where a command was given, and by whom."""

    key: ConversationKey  # the conversation it was given in (its ``chat`` is the chat its limits belong to)
    person: str
    private: bool  # a chat of one person: a DM, a private chat, the terminal
    is_admin: Callable[[], Awaitable[bool]]  # asked only when a command needs it (Telegram asks its API)
    wording: Wording
    scope: str = GLOBAL  # the knowledge base of its community: "discord:GUILD", "telegram:CHAT"


@dataclass(frozen=True, slots=True)
class Answer:
    text: str
    public: bool = False  # for everyone in the chat (Discord posts it; otherwise only the caller sees it)


class Commands:
    """One front end's commands: the engine, and the help text the front end shows."""

    def __init__(self, engine: Engine, help_text: str) -> None:
        self.engine = engine
        self.help_text = help_text
        self.started = time.monotonic()

    async def help(self, place: Place) -> Answer:
        return Answer(self.help_text)

    async def _may_change(self, place: Place) -> bool:
        return place.private or await place.is_admin()

    async def new(self, place: Place) -> Answer:
        await self.engine.reset(place.key)
        return Answer("Started over: I've forgotten our earlier messages here.", public=True)

    async def stop(self, place: Place) -> Answer:
        stopped = self.engine.stop(place.key)
        return Answer("Stopped." if stopped else "I'm not writing anything here right now.")

    async def system(self, place: Place, text: str | None) -> Answer:
        """Show the persona (no text), set it, or with ``-`` restore the default."""
        if not text or not text.strip():
            return Answer(f"This conversation's persona:\n{await self.engine.persona(place.key)}")
        if not await self._may_change(place):
            return Answer(f"Only {place.wording.admins} can change the persona here.")
        persona = await self.engine.set_persona(place.key, None if text.strip() == "-" else text)
        return Answer(f"Persona set:\n{persona}", public=True)

    async def usage(self, place: Place) -> Answer:
        used = await self.engine.person_usage(place.key.platform, place.person)
        left = await self.engine.limits_left(place.key.platform, place.person, place.key.chat)
        return Answer(usage_text(used, left))

    async def limits(self, place: Place, requests_per_minute: str | None, tokens_per_day: str | None) -> Answer:
        """Show the chat's limits, or (admins) set them: a number (0 = unlimited), ``-`` for the default."""
        platform, chat = place.key.platform, place.key.chat
        if requests_per_minute is not None or tokens_per_day is not None:
            if not await self._may_change(place):
                return Answer(f"Only {place.wording.admins} can change its limits.")
            try:
                rpm, tpd = parse_limit(requests_per_minute), parse_limit(tokens_per_day)
            except ValueError as exc:
                return Answer(f"Usage: /limits REQUESTS_PER_MINUTE [TOKENS_PER_DAY]: {exc}.")
            await self.engine.set_chat_limits(platform, chat, requests_per_minute=rpm, tokens_per_day=tpd)
        return Answer(limits_text(*await self.engine.chat_limits(platform, chat)))

    async def forget(self, place: Place) -> Answer:
        """Private chat: the person and the whole chat. Admins: the whole shared chat (threads too) and
        their usage. Anyone else: their usage (a shared conversation is not theirs alone to erase)."""
        platform, person = place.key.platform, place.person
        if place.private:
            await self.engine.forget_person(platform, person, private=place.key)
            return Answer("Done: I've erased our conversation and your usage.")
        if await place.is_admin():
            await self.engine.forget_person(platform, person)
            await self.engine.forget_chat(platform, place.key.chat)
            words = place.wording
            return Answer(
                f"Done: I've erased this {words.chat}'s conversations ({words.threads} included) and your usage."
            )
        await self.engine.forget_person(platform, person)
        return Answer(
            f"Done: I've erased your usage. This {place.wording.chat}'s conversation is shared; "
            f"{place.wording.an_admin} can /forget it."
        )

    async def model(self, place: Place) -> Answer:
        return Answer(f"Answering with {self.engine.model_summary()}.")

    async def about(self, place: Place) -> Answer:
        try:
            version = importlib.metadata.version("parley")
        except importlib.metadata.PackageNotFoundError:
            version = "unknown"
        documents = len(await self._documents(place))
        sources = [f"a knowledge base of {documents} document(s) (/kb)"] if documents else []
        if self.engine.can_search:
            sources.append("web search (/search)")
        return Answer(
            f"Parley {version}, answering with {self.engine.model_summary()}.\n"
            f"Up for {_duration(time.monotonic() - self.started)}.\n"
            + (
                f"Sources: {' and '.join(sources)}."
                if sources
                else "Sources: no knowledge base or web search is configured, so answers come from the model alone."
            )
        )

    async def _documents(self, place: Place) -> list[KbDocument]:
        scopes = dict.fromkeys((GLOBAL, place.scope))
        return [d for scope in scopes for d in await self.engine.kb_documents(scope)]

    async def learn(
        self, place: Place, read: Callable[[], Awaitable[Document | None]], name: str | None = None
    ) -> Answer:
        """Add a document (a file, or a message's text) to the knowledge base of the place's community.
        ``read`` fetches it, once the person is known to be allowed: nobody else's file is downloaded."""
        if not await self._may_change(place):
            return Answer(f"Only {place.wording.admins} can add to the knowledge base here.")
        document = await read()
        if document is None:
            return Answer("Attach a document to /learn, or reply with /learn to the message or file to learn.")
        first_line = next((line.strip() for line in document.text.splitlines() if line.strip()), "message")
        title = (name or "").strip() or document.name or first_line.lstrip("# ")[:60]
        learned, replaced = await self.engine.learn(place.scope, title, document.text, added_by=place.person)
        cut = " (only its beginning: it was too long to read whole)" if document.truncated else ""
        return Answer(
            f"{'Updated' if replaced else 'Learned'} {learned.name}{cut}: {learned.passages} passage(s), "
            f"{learned.words} words (id {learned.id}). Questions here now draw on it.",
            public=True,
        )

    async def catch_up_log(self, place: Place, on: bool) -> Answer:
        """Where bots cannot read history (Telegram), admins may have the group's messages kept for a day so
        /summarize can tell someone what they missed; off deletes what was kept."""
        if place.private:
            return Answer("There is nothing to catch up on in a private chat.")
        if not await place.is_admin():
            return Answer(f"Only {place.wording.admins} can turn this on or off.")
        await self.engine.chat_log.turn(place.key.platform, place.key.chat, on)
        if not on:
            return Answer(
                "Catch-up is off: I no longer keep this group's messages, and I deleted those I had.", public=True
            )
        return Answer(
            f"Catch-up is on: I now keep the messages I can see in this {place.wording.chat} for "
            f"{LOG_TTL // 3600} hours, so /summarize can tell anyone what they missed. /summarize off stops it "
            "and deletes them; /forget by an admin erases them too.",
            public=True,
        )

    async def kb(self, place: Place, args: list[str]) -> Answer:
        """List the knowledge base (the community's and the global one); ``remove ID…`` (admins) removes."""
        if args and args[0].lower() == "remove":
            if not args[1:]:
                return Answer("Usage: /kb remove ID (the ids are in /kb).")
            if not await self._may_change(place):
                return Answer(f"Only {place.wording.admins} can remove documents here.")
            removed = [i for i in args[1:] if await self.engine.kb_remove(place.scope, i)]
            missing = [i[:16] for i in args[1:] if i not in removed]
            text = f"Removed {', '.join(removed)}." if removed else "Nothing removed."
            if missing:
                text += f" No document here has the id {', '.join(missing)}."
            return Answer(text, public=bool(removed))
        if args:
            return Answer("Usage: /kb to list, /kb remove ID to remove a document.")
        labels = {place.scope: f"This {place.wording.chat}'s knowledge base", GLOBAL: "The global knowledge base"}
        if place.scope == GLOBAL:
            labels = {GLOBAL: "The knowledge base"}
        lines: list[str] = []
        for scope, label in labels.items():
            documents = await self.engine.kb_documents(scope)
            lines.append(f"{label}: {len(documents) or 'no'} document(s).")
            lines.extend(f"- {d.name} ({d.passages} passages, id {d.id})" for d in documents)
        return Answer("\n".join(lines))


def _duration(seconds: float) -> str:
    minutes, hours, days = int(seconds // 60), int(seconds // 3600), int(seconds // 86400)
    if days:
        return f"{days} d {hours % 24} h"
    if hours:
        return f"{hours} h {minutes % 60} min"
    return f"{minutes} min"
