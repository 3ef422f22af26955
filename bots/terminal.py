"""The terminal front end: `parley chat` (interactive) and `parley ask` (one question)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TextIO

from bots.commands import Answer, Commands, Place, Wording, help_lines
from engine.contract import ChatRequest, Delta, Notice, Reply
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.documents import Document, read_document
from engine.documents.document import DEFAULT_LIMITS, megabytes
from engine.errors import DocumentRejected, InputRejected, ParleyError

HELP = (
    "Commands:\n"
    + help_lines(["search", "new", "system", "forget", "kb", "model", "about", "help"])
    + "\n/reset – the same as /new\n/export – print this conversation as JSON\n"  # noqa: RUF001
    "/file PATH [instruction] – read a document (text, PDF, DOCX, HTML, e-mail) and do what you ask\n"  # noqa: RUF001
    "/learn PATH [name] – add a document to the knowledge base (`parley kb add` does folders)\n"  # noqa: RUF001
    "/usage – tokens used in this conversation\n/quit – leave (Ctrl-D works too); Ctrl-C stops an answer"  # noqa: RUF001
)
# The terminal is one person's: it may change anything, and the wording of shared chats never shows.
WORDING = Wording(chat="conversation", threads="threads", admins="you", an_admin="you")


def terminal_key(conversation: str | None) -> ConversationKey:
    # A terminal conversation belongs to one person, like a DM.
    return ConversationKey(platform="cli", chat=conversation or "default", user=getpass.getuser())


async def answer(
    engine: Engine,
    key: ConversationKey,
    text: str,
    out: TextIO,
    *,
    cancel: threading.Event | None = None,
    stream: bool = True,
    document: Document | None = None,
    search: bool = False,
) -> Reply:
    reply: Reply | None = None
    request = ChatRequest(key=key, text=text, author=getpass.getuser(), document=document, search=search)
    async for event in engine.chat(request, cancel=cancel):
        if isinstance(event, Delta) and stream:
            out.write(event.text)
            out.flush()
        elif isinstance(event, Notice):
            print(f"({event.text})", file=sys.stderr)
        elif isinstance(event, Reply):
            reply = event
    assert reply is not None
    return reply


async def read_file(path: str) -> Document:
    """A document from disk, under the same limits as one sent in a chat."""
    name, data = await asyncio.to_thread(_read_bytes, path)
    return await read_document(data, name)


def _read_bytes(path: str) -> tuple[str, bytes]:
    file = Path(path).expanduser()
    try:
        if file.stat().st_size > DEFAULT_LIMITS.max_bytes:  # refused before reading it into memory
            raise DocumentRejected(f"{file.name} is too large: the limit is {megabytes(DEFAULT_LIMITS.max_bytes)}")
        return file.name, file.read_bytes()
    except OSError as exc:
        raise InputRejected(f"cannot read {path}: {exc.strerror or exc}") from None


async def ask(
    engine: Engine,
    text: str,
    *,
    conversation: str | None,
    as_json: bool,
    file: str | None = None,
    search: bool = False,
) -> None:
    # A one-shot question starts from an empty conversation; it is kept under a fresh id (in --json) so
    # `-c ID` can continue it. Only `-c` continues a conversation.
    name = conversation or f"ask-{uuid.uuid4().hex[:12]}"
    key = terminal_key(name)
    document = await read_file(file) if file else None
    reply = await answer(engine, key, text, sys.stdout, stream=not as_json, document=document, search=search)
    if as_json:
        print(
            json.dumps(
                {
                    "reply": reply.text,
                    "conversation_id": name,
                    "conversation": key.id,
                    "model": engine.model_name,
                    "finish_reason": reply.finish_reason,
                    "prompt_tokens": reply.prompt_tokens,
                    "completion_tokens": reply.completion_tokens,
                    "time_to_first_token_ms": round(reply.time_to_first_token_ms, 1),
                    "tokens_per_second": round(reply.tokens_per_second, 1),
                    "sources": list(reply.sources),
                },
                ensure_ascii=False,
            )
        )
    else:
        print()


async def _is_admin() -> bool:
    return True


async def chat(engine: Engine, *, conversation: str | None) -> None:
    key = terminal_key(conversation)
    place = Place(key, getpass.getuser(), True, _is_admin, WORDING)
    commands = Commands(engine, HELP)
    shared: dict[str, Callable[[str], Awaitable[Answer]]] = {
        "/help": lambda _: commands.help(place),
        "/new": lambda _: commands.new(place),
        "/reset": lambda _: commands.new(place),
        "/system": lambda arg: commands.system(place, arg),
        "/model": lambda _: commands.model(place),
        "/about": lambda _: commands.about(place),
        "/forget": lambda _: commands.forget(place),
        "/kb": lambda arg: commands.kb(place, arg.split()),
    }
    print(f"Parley ({engine.model_name}). Type a message; /help for commands, /quit to leave.", flush=True)
    while True:
        try:
            line = await asyncio.to_thread(input, "you> ")
        except (EOFError, KeyboardInterrupt):
            print()
            return
        line = line.strip()
        if not line:
            continue
        command, _, arg = line.partition(" ")
        try:
            if command in ("/quit", "/exit"):
                return
            if command in shared:
                print((await shared[command](arg)).text)
            elif command == "/file":
                path, _, instruction = arg.strip().partition(" ")
                if not path:
                    print("Usage: /file PATH [what to do with it]")
                    continue
                await _answer_interruptibly(engine, key, instruction, document=await read_file(path))
            elif command == "/search":
                if not arg.strip():
                    print("Usage: /search QUESTION")
                    continue
                await _answer_interruptibly(engine, key, arg, search=True)
            elif command == "/learn":
                path, _, name = arg.strip().partition(" ")
                if not path:
                    print("Usage: /learn PATH [name]")
                    continue
                print((await commands.learn(place, partial(read_file, path), name)).text)
            elif command == "/export":
                print(json.dumps(await engine.export(key), ensure_ascii=False, indent=2))
            elif command == "/usage":
                print(json.dumps(await engine.usage(key)))
            else:
                await _answer_interruptibly(engine, key, line)
        except ParleyError as exc:
            print(f"(error) {exc}", file=sys.stderr)


async def _answer_interruptibly(
    engine: Engine, key: ConversationKey, text: str, *, document: Document | None = None, search: bool = False
) -> None:
    cancel = threading.Event()
    print("parley> ", end="", flush=True)
    task = asyncio.ensure_future(answer(engine, key, text, sys.stdout, cancel=cancel, document=document, search=search))
    try:
        reply = await asyncio.shield(task)
    except KeyboardInterrupt:
        cancel.set()  # the partial answer is kept, marked as stopped
        reply = await task
    print("\n" if reply.finish_reason != "cancelled" else " [stopped]\n", end="", flush=True)
