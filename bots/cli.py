"""The `parley` command."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import signal
import sys
from collections.abc import Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from engine.errors import ConfigError, InputRejected, ParleyError
from engine.runtime.logs import setup_logging
from engine.runtime.settings import Settings, load_settings


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="parley", description="A self-hosted chat assistant.")
    sub = p.add_subparsers(dest="command", required=True)

    sub.add_parser("serve", help="run the configured front ends (the terminal chat when none is configured)")
    sub.add_parser("worker", help="answer generation jobs queued in Redis by front ends with PARLEY_ENGINE=remote")

    chat = sub.add_parser("chat", help="chat in the terminal")
    chat.add_argument("--conversation", "-c", help="conversation id (default: 'default')")

    ask = sub.add_parser("ask", help="print one reply")
    ask.add_argument("text", nargs="?", default="", help="the question (with --file: what to do with the file)")
    ask.add_argument("--file", "-f", help="a document to read: text, Markdown, CSV, JSON, code, HTML, PDF, DOCX, .eml")
    ask.add_argument(
        "--conversation", "-c", help="continue this conversation (default: a new one, whose id --json reports)"
    )
    ask.add_argument("--json", action="store_true", help="print the reply, its figures and its sources as JSON")
    ask.add_argument("--search", action="store_true", help="answer from a web search, with sources (PARLEY_SEARCH_URL)")

    kb = sub.add_parser("kb", help="the knowledge base: documents answers draw on, with citations")
    kbsub = kb.add_subparsers(dest="kb_command", required=True)
    scope_help = "global (the default: every conversation), discord:GUILD_ID or telegram:CHAT_ID"
    add = kbsub.add_parser("add", help="add documents (a file, or every readable file in a folder)")
    add.add_argument("path")
    add.add_argument("--name", help="the document's name (one file only; default: its file name)")
    add.add_argument("--scope", default="global", help=scope_help)
    kb_list = kbsub.add_parser("list", help="list the documents")
    kb_list.add_argument("--scope", default="global", help=scope_help)
    remove = kbsub.add_parser("remove", help="remove documents completely, by id (see list)")
    remove.add_argument("ids", nargs="+")
    remove.add_argument("--scope", default="global", help=scope_help)

    export = sub.add_parser("export", help="print a terminal conversation as JSON")
    export.add_argument("--conversation", "-c")

    model = sub.add_parser("model", help="import and list models")
    msub = model.add_subparsers(dest="model_command", required=True)
    imp = msub.add_parser("import", help="convert a GGUF file, a Hugging Face folder or a hub id to ONNX")
    imp.add_argument(
        "source",
        help="path to a .gguf file or model folder, a hub id (org/name), or a built-in model (builtin:NAME, "
        "see `parley model list --available`)",
    )
    imp.add_argument("--name", help="name of the model folder (default: from the source)")
    imp.add_argument(
        "--precision",
        default=None,
        help="gguf (a GGUF's own blocks as they are, int8 activations: the default where it applies), "
        "gguf-exact (the same blocks, fp32 activations where the kernels allow: slower, the fp32 result), "
        "fp32 (the default otherwise), int8, int4, or fp16 for CUDA",
    )
    imp.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    imp.add_argument("--force", action="store_true", help="re-import even if the folder exists")
    listing = msub.add_parser("list", help="list imported models")
    listing.add_argument("--available", action="store_true", help="list the built-in models that can be imported")
    verify = msub.add_parser("verify", help="check every file of a model against its manifest's checksums")
    verify.add_argument("name")
    return p


def _stop_event() -> asyncio.Event:
    """An event set by SIGINT or SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _until_signalled() -> None:
    await _stop_event().wait()


async def _serve(settings: Settings) -> None:
    from bots.api import ApiServer, listen_host
    from bots.terminal import chat
    from engine.runtime.app import open_engine
    from engine.runtime.http import HttpServer

    async with open_engine(settings) as engine, AsyncExitStack() as front_ends:
        print(
            f"Answering with {engine.model_summary()}. PARLEY_MODEL chooses another "
            "(`parley model list --available` lists the built-in ones).",
            flush=True,
        )
        if not (settings.api_port or settings.telegram_bot_token or settings.discord_bot_token):
            print("No front end is configured (set PARLEY_API_PORT, TELEGRAM_BOT_TOKEN or DISCORD_BOT_TOKEN):")
            print("starting the terminal chat.")
            await chat(engine, conversation=None)
            return

        # One server for the process (health, metrics, the API, Telegram's webhook), with everything
        # mounted before it starts; the platforms connect afterwards and are "not ready" until they have.
        http = HttpServer(engine.metrics, {"redis": engine.ping, "model": engine.model_ready})
        if settings.api_port:
            ApiServer(engine, settings).mount(http)
        telegram, discord = None, None
        if settings.telegram_bot_token:
            from bots.telegram.bot import TelegramBot

            telegram = TelegramBot(engine, settings, http=http)
            http.checks["telegram"] = telegram.ready
        if settings.discord_bot_token:
            from bots.discord.bot import DiscordBot

            discord = DiscordBot(engine, settings)
            http.checks["discord"] = discord.ready
        if settings.api_port:
            url = await front_ends.enter_async_context(http.serve(listen_host(settings), settings.api_port))
            print(f"Parley is serving an OpenAI-compatible API at {url}/v1.", flush=True)
        else:
            url = await front_ends.enter_async_context(http.serve(settings.http_host, settings.http_port))
        print(f"Health and metrics: {url}/healthz, {url}/readyz, {url}/metrics.", flush=True)
        if telegram is not None:
            await front_ends.enter_async_context(telegram)
            print(f"Parley is answering on Telegram as @{telegram.app.bot.username}.", flush=True)
        if discord is not None:
            await front_ends.enter_async_context(discord)
            print(f"Parley is answering on Discord as {discord.client.user}.", flush=True)
        print("Ctrl-C stops it.", flush=True)
        await _until_signalled()


async def _run(args: argparse.Namespace, settings: Settings) -> None:
    from bots import terminal
    from engine.runtime.app import open_engine

    if args.command == "serve":
        await _serve(settings)
        return
    if args.command == "worker":
        from engine.scaleout.worker import run_worker

        await run_worker(settings, _stop_event())
        return
    if args.command == "kb":
        await _kb_command(args, settings)
        return
    async with open_engine(settings) as engine:
        if args.command == "chat":
            await terminal.chat(engine, conversation=args.conversation)
        elif args.command == "ask":
            await terminal.ask(
                engine,
                args.text,
                conversation=args.conversation,
                as_json=args.json,
                file=args.file,
                search=args.search,
            )
        elif args.command == "export":
            data = await engine.export(terminal.terminal_key(args.conversation))
            print(json.dumps(data, ensure_ascii=False, indent=2))


async def _kb_command(args: argparse.Namespace, settings: Settings) -> None:
    """The knowledge base needs Redis only, not the model."""
    from bots.terminal import read_file
    from engine.retrieval.kb import KnowledgeBase, check_scope
    from engine.runtime.app import open_redis

    scope = check_scope(args.scope)
    async with open_redis(settings) as redis:
        kb = KnowledgeBase(redis)
        if args.kb_command == "list":
            documents = await kb.documents(scope)
            print(f"{len(documents)} document(s) in {scope}")
            for d in documents:
                print(f"{d.id}\t{d.name}\t{d.passages} passages\t{d.words} words")
        elif args.kb_command == "remove":
            for document_id in args.ids:
                if not await kb.remove(scope, document_id):
                    raise InputRejected(f"no document {document_id[:40]!r} in {scope}")
                print(f"removed {document_id}")
        else:
            root, files = await asyncio.to_thread(_kb_files, args.path)
            if args.name and len(files) != 1:
                raise InputRejected("--name names one file; a folder's documents take their file names")
            for file in files:
                try:
                    document = await read_file(str(file))
                except ParleyError as exc:
                    print(f"skipped {file}: {exc}", file=sys.stderr)
                    continue
                name = args.name or (str(file.relative_to(root)) if root != file else file.name)
                learned, replaced = await kb.add(scope, name, document.text, added_by=getpass.getuser())
                verb = "updated" if replaced else "added"
                print(f"{verb} {learned.id}\t{learned.name}\t{learned.passages} passages")


def _kb_files(path: str) -> tuple[Path, list[Path]]:
    """The files to add: the one given, or every file in the folder given (hidden ones left out)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        return root, [root]
    files = [
        p
        for p in root.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
    ]
    return root, sorted(files)


def _model_command(args: argparse.Namespace, settings: Settings) -> None:
    from engine.model import catalog, registry
    from engine.model.convert import importer

    if args.model_command == "import":
        info = importer.import_model(
            args.source,
            settings.models_path,
            name=args.name,
            precision=args.precision,
            device=args.device,
            force=args.force,
        )
        print(info.path)
    elif args.model_command == "list" and args.available:
        imported = {m.name for m in registry.list_models(settings.models_path)}
        print("NAME\tMODEL\tSIZE\tLICENCE\tEVAL\tSPEED (2 cores)\tIMPORTED")
        for b in catalog.BUILTINS:
            size = f"{b.size / 1e6:,.0f} MB" if b.size else "installed"
            mark = "yes" if b.name in imported else "no"
            print(f"{b.name}\t{b.title}\t{size}\t{b.licence}\t{b.quality}\t{b.speed}\t{mark}")
        print("Import one with `parley model import builtin:NAME`, or set PARLEY_MODEL=NAME (imported on first use).")
    elif args.model_command == "list":
        models = registry.list_models(settings.models_path)
        if not models:
            print(f"no models in {settings.models_path} (the default one is imported on first use)")
        for m in models:
            print(f"{m.name}\t{m.precision}\t{m.device}\t{m.manifest.get('source', '?')}")
    elif args.model_command == "verify":
        folder = settings.models_path / args.name
        registry.read_model_info(folder, verify_checksums=True)
        print(f"{args.name}: all files match their checksums")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        level = settings.log_level or ("INFO" if args.command in ("serve", "worker") else "WARNING")
        setup_logging(level, settings.secrets(), settings.log_format)
        if args.command == "model":
            _model_command(args, settings)
        else:
            asyncio.run(_run(args, settings))
    except ConfigError as exc:
        print(f"parley: {exc}", file=sys.stderr)
        return 2
    except ParleyError as exc:
        print(f"parley: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
