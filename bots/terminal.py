"""The terminal front end: `parley chat` (interactive) and `parley ask` (one question)."""

from __future__ import annotations

import asyncio
import getpass
import json
import sys
import threading
import uuid
from typing import TextIO

from engine.contract import ChatRequest, Delta, Notice, Reply
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.errors import ParleyError

HELP = """Commands:
  /reset          start the conversation over (the persona stays)
  /system [TEXT]  show, or set, this conversation's persona (system prompt); `/system -` restores the default
  /export         print this conversation as JSON
  /usage          tokens used in this conversation
  /quit           leave (Ctrl-D works too); Ctrl-C stops an answer being written"""


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
) -> Reply:
    reply: Reply | None = None
    async for event in engine.chat(ChatRequest(key=key, text=text, author=getpass.getuser()), cancel=cancel):
        if isinstance(event, Delta) and stream:
            out.write(event.text)
            out.flush()
        elif isinstance(event, Notice):
            print(f"({event.text})", file=sys.stderr)
        elif isinstance(event, Reply):
            reply = event
    assert reply is not None
    return reply


async def ask(engine: Engine, text: str, *, conversation: str | None, as_json: bool) -> None:
    # A one-shot question starts from an empty conversation; it is kept under a fresh id (in --json) so
    # `-c ID` can continue it. Only `-c` continues a conversation.
    name = conversation or f"ask-{uuid.uuid4().hex[:12]}"
    key = terminal_key(name)
    reply = await answer(engine, key, text, sys.stdout, stream=not as_json)
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
                },
                ensure_ascii=False,
            )
        )
    else:
        print()


async def chat(engine: Engine, *, conversation: str | None) -> None:
    key = terminal_key(conversation)
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
            if command == "/help":
                print(HELP)
            elif command == "/reset":
                await engine.reset(key)
                print("(conversation reset)")
            elif command == "/system":
                if arg.strip():
                    persona = await engine.set_persona(key, None if arg.strip() == "-" else arg)
                else:
                    persona = await engine.persona(key)
                print(f"(persona) {persona}")
            elif command == "/export":
                print(json.dumps(await engine.export(key), ensure_ascii=False, indent=2))
            elif command == "/usage":
                print(json.dumps(await engine.usage(key)))
            else:
                await _answer_interruptibly(engine, key, line)
        except ParleyError as exc:
            print(f"(error) {exc}", file=sys.stderr)


async def _answer_interruptibly(engine: Engine, key: ConversationKey, text: str) -> None:
    cancel = threading.Event()
    print("parley> ", end="", flush=True)
    task = asyncio.ensure_future(answer(engine, key, text, sys.stdout, cancel=cancel))
    try:
        reply = await asyncio.shield(task)
    except KeyboardInterrupt:
        cancel.set()  # the partial answer is kept, marked as stopped
        reply = await task
    print("\n" if reply.finish_reason != "cancelled" else " [stopped]\n", end="", flush=True)
