"""`make eval`, third part: summarising reports and answering e-mails (/summarize and /reply), on documents
written for Parley (bench/docs/, invented organisations and figures so that no model knows them).

bench/docs/set.json lists the items: Markdown reports in English and French, from one page to a few dozen,
and .eml e-mails (plain, and multipart with an HTML part) that ask two to four explicit questions. One more
report, bench/docs/reports-long/annual-review.md (about 50 pages), is rendered to a real PDF at run time
(fpdf2, a dev dependency) and read back through the PDF reader: the engine reads it map-reduce.

Every item is read with the engine's own reader (``read_document``) and asked exactly as a chat front end
asks it: ``ChatRequest(key, instruction, document=document)`` through ``Engine.chat``, with the shared
instructions of bots/commands.py (``SUMMARIZE`` for reports, ``REPLY`` for e-mails), each item in its own
conversation, all at once, greedy, on a throwaway Redis. Scores (regexes are case-insensitive):

* a report's ``facts``: the share of its key-fact regexes (figures, names, decisions, dates) found in the
  summary; the set's score is the mean share over reports;
* an e-mail's ``questions``: a question is answered when ALL of its ``answer`` regexes match the draft; the
  score is the share answered, averaged over e-mails; the draft greets the sender when it names them (their
  first name, or their surname: "Dear Dr Adeyemi");
* language: the reply is in the item's language (``bench.eval.guess_language``).

Targets (issue 16): key facts >= 70%, questions answered >= 80%, language right >= 95%. Writes
bench/eval-docs.json and bench/eval-docs.md.

    python -m bench.eval_docs [--model NAME] [--limit N] [--language en|fr] [--items ID,ID] [--max-tokens N]
                              [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import re
import shlex
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.eval import guess_language
from bots.commands import REPLY, SUMMARIZE
from engine.contract import ChatRequest, Notice, Reply
from engine.conversation.engine import Engine
from engine.conversation.keys import ConversationKey
from engine.conversation.reading import PARALLEL_PARTS
from engine.conversation.store import Store
from engine.documents import Document, read_document
from engine.errors import ParleyError
from engine.model.catalog import resolve_model
from engine.model.generator import Generator
from engine.model.registry import load_model
from engine.model.runner import OnnxRunner
from engine.runtime.redis import connect
from engine.runtime.redis_server import EmbeddedRedis
from engine.runtime.settings import Settings, load_settings

BENCH_DIR = Path(__file__).resolve().parent
DOCS = BENCH_DIR / "docs"
SET = DOCS / "set.json"
KINDS = ("report", "email")
LANGUAGES = ("en", "fr")
TARGETS = {"key_facts": 0.70, "questions_answered": 0.80, "language_right": 0.95}
FLAGS = re.IGNORECASE | re.DOTALL
# The engine's notices of a map-reduce reading (engine/conversation/engine.py and reading.py): "I read it in N
# parts" once the answer is under way, "Reading NAME: N parts." as the parts start (kept should the answer fail).
PARTS = re.compile(r"I read it in (\d+) parts")
PARTS_STARTED = re.compile(r"^Reading .*: (\d+) parts\.$")
REPLY_CHARS = 700  # of each reply kept in eval-docs.json
NO_PDF_WRITER = "skipped: fpdf2 (a dev dependency) is not installed, so no PDF can be written"


@dataclass(frozen=True)
class Question:
    question: str
    answer: tuple[str, ...]  # every one must match the draft


@dataclass(frozen=True)
class Item:
    id: str
    kind: str  # "report" or "email"
    file: str  # relative to bench/docs
    language: str
    facts: tuple[str, ...] = ()
    sender: str = ""  # first name
    surname: str = ""
    questions: tuple[Question, ...] = ()
    as_pdf: bool = False  # rendered to a PDF before reading

    @property
    def path(self) -> Path:
        return DOCS / self.file

    @property
    def instruction(self) -> str:
        return SUMMARIZE if self.kind == "report" else REPLY


def load_items(path: Path = SET) -> list[Item]:
    """The set, checked as it is read: a typo in a pattern must fail loudly, not score silently."""
    items = []
    for raw in json.loads(path.read_text()):
        questions = tuple(Question(q["question"], tuple(q["answer"])) for q in raw.get("questions", ()))
        item = Item(
            raw["id"], raw["kind"], raw["file"], raw["language"], tuple(raw.get("facts", ())), raw.get("sender", ""),
            raw.get("surname", ""), questions, bool(raw.get("as_pdf", False)),
        )  # fmt: skip
        if item.kind not in KINDS:
            raise ValueError(f"{item.id}: unknown kind {item.kind!r}")
        if item.language not in LANGUAGES:
            raise ValueError(f"{item.id}: unknown language {item.language!r}")
        if item.kind == "report" and not item.facts:
            raise ValueError(f"{item.id}: a report needs key facts")
        if item.kind == "email" and not (item.questions and item.sender):
            raise ValueError(f"{item.id}: an e-mail needs questions and its sender's first name")
        if any(not q.answer for q in item.questions):
            raise ValueError(f"{item.id}: every question needs answer patterns")
        for pattern in (*item.facts, *(p for q in item.questions for p in q.answer)):
            re.compile(pattern)
        if not item.path.is_file():
            raise ValueError(f"{item.id}: no file {item.path}")
        items.append(item)
    if len({i.id for i in items}) != len(items):
        raise ValueError(f"{path}: item ids must be unique")
    return items


def facts_found(item: Item, reply: str) -> list[bool]:
    return [bool(re.search(p, reply, FLAGS)) for p in item.facts]


def answered(question: Question, reply: str) -> bool:
    """A question counts as answered when every one of its patterns matches the draft."""
    return all(re.search(p, reply, FLAGS) for p in question.answer)


def greets(item: Item, reply: str) -> bool:
    """The draft names the sender: their first name or their surname, as whole words."""
    names = [n for n in (item.sender, item.surname) if n]
    return any(re.search(rf"(?<!\w){re.escape(n)}(?!\w)", reply, re.IGNORECASE) for n in names)


def language_right(item: Item, reply: str) -> bool:
    return guess_language(reply) == item.language


# --- the long report as a PDF ---------------------------------------------------------------------------

# The PDF's core fonts are Latin-1: typographic marks become their plain equivalents.
_LATIN1 = str.maketrans({
    "\u2013": "-", "\u2014": "-", "\u2212": "-", "\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
    "\u2022": "-", "\u2026": "...", "\u20ac": "EUR ", "\u00a0": " ", "\u202f": " ",
})  # fmt: skip
_TABLE_RULE = re.compile(r"\|[-:| ]+\|")


def pdf_writer_missing() -> str | None:
    """Why no PDF can be written here, or None when fpdf2 is installed."""
    return None if importlib.util.find_spec("fpdf") is not None else NO_PDF_WRITER


def _plain(text: str) -> str:
    text = re.sub(r"\*\*(.+?)\*\*|\*(.+?)\*", lambda m: m.group(1) or m.group(2), text)
    return text.translate(_LATIN1).encode("latin-1", "replace").decode("latin-1")


def markdown_pdf(markdown: str, title: str) -> bytes:
    """A real A4 PDF of a Markdown report, with a text layer: headings in bold (a chapter, ``##``, starts a
    page), paragraphs and list items as wrapped text, table rows as lines of cells."""
    from fpdf import FPDF

    pdf = FPDF(format="A4")
    pdf.set_title(_plain(title))
    pdf.set_margins(20, 18, 20)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.strip().splitlines()
        if not lines:
            continue
        heading = re.match(r"(#{1,3}) (.*)", lines[0])
        if heading and len(lines) == 1:
            level = len(heading.group(1))
            if level == 2 and pdf.get_y() > 40:
                pdf.add_page()
            pdf.set_font("helvetica", "B", {1: 20, 2: 16, 3: 13}[level])
            pdf.multi_cell(0, 9, _plain(heading.group(2)), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
            continue
        pdf.set_font("helvetica", size=11)
        for line in lines:
            if _TABLE_RULE.fullmatch(line.strip()):
                continue
            if line.lstrip().startswith("|"):
                line = "   ".join(cell.strip() for cell in line.strip().strip("|").split("|"))
            pdf.multi_cell(0, 5.2, _plain(line), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(2.5)
    return bytes(pdf.output())


async def read_item(item: Item) -> Document:
    """The item as the engine's reader gives it; the long report first becomes a PDF."""
    data, name = item.path.read_bytes(), item.path.name
    if item.as_pdf:
        markdown = data.decode()
        title = markdown.splitlines()[0].lstrip("# ").strip()
        data = await asyncio.to_thread(markdown_pdf, markdown, title)
        name = item.path.with_suffix(".pdf").name
    return await read_document(data, name)


# --- asking and scoring ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What the engine answered for one item (or why it did not)."""

    text: str = ""
    finish_reason: str = ""
    completion_tokens: int = 0
    parts: int | None = None  # read map-reduce in this many parts; None: the document fitted whole
    seconds: float = 0.0  # from the request to the reply, all items asked at once
    read_seconds: float = 0.0  # reading the file (and writing the PDF)
    pages: int | None = None
    error: str | None = None  # refused or failed: scored as nothing found
    skipped: str | None = None  # not asked at all (no PDF writer): left out of the scores


async def ask(engine: Engine, item: Item, document: Document) -> Outcome:
    outcome = Outcome(pages=document.pages)
    key = ConversationKey(platform="eval", chat=f"docs-{item.id}-{uuid.uuid4().hex[:8]}", user="eval")
    start = time.perf_counter()
    try:
        async for event in engine.chat(ChatRequest(key, item.instruction, document=document)):
            if isinstance(event, Notice) and (found := PARTS.search(event.text) or PARTS_STARTED.match(event.text)):
                outcome.parts = int(found.group(1))
            elif isinstance(event, Reply):
                outcome.text, outcome.finish_reason = event.text, event.finish_reason
                outcome.completion_tokens = event.completion_tokens
    except ParleyError as exc:
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.seconds = round(time.perf_counter() - start, 1)
    return outcome


async def read_and_ask(engine: Engine, item: Item) -> Outcome:
    if item.as_pdf and (missing := pdf_writer_missing()):
        return Outcome(skipped=missing)
    start = time.perf_counter()
    try:
        document = await read_item(item)
    except ParleyError as exc:
        return Outcome(error=f"{type(exc).__name__}: {exc}", read_seconds=round(time.perf_counter() - start, 1))
    read_seconds = round(time.perf_counter() - start, 1)
    outcome = await ask(engine, item, document)
    outcome.read_seconds = read_seconds
    return outcome


def score_item(item: Item, outcome: Outcome) -> dict[str, Any]:
    reply = outcome.text
    result: dict[str, Any] = {"kind": item.kind, "language": item.language}
    if outcome.skipped:
        return result | {"status": outcome.skipped}
    if item.kind == "report":
        found = facts_found(item, reply)
        result |= {"facts": round(sum(found) / len(found), 3), "facts_found": found}
    else:
        done = [answered(q, reply) for q in item.questions]
        result |= {"questions": round(sum(done) / len(done), 3), "answered": done, "greeting": greets(item, reply)}
    result |= {
        "language_guessed": guess_language(reply),
        "language_right": language_right(item, reply),
        "parts": outcome.parts,
        "pages": outcome.pages,
        "seconds": outcome.seconds,
        "read_seconds": outcome.read_seconds,
        "finish": outcome.finish_reason,
        "tokens": outcome.completion_tokens,
        "reply": reply[:REPLY_CHARS],
    }
    if outcome.error:
        result["error"] = outcome.error
    return result


def _mean(values: Sequence[float | bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def _summary(items: Sequence[Item], scored: dict[str, dict[str, Any]]) -> dict[str, Any]:
    asked = [i for i in items if "status" not in scored[i.id]]
    reports = [scored[i.id] for i in asked if i.kind == "report"]
    emails = [scored[i.id] for i in asked if i.kind == "email"]
    return {
        "reports": len(reports),
        "emails": len(emails),
        "key_facts": _mean([r["facts"] for r in reports]),
        "questions_answered": _mean([e["questions"] for e in emails]),
        "greeting": _mean([e["greeting"] for e in emails]),
        "language_right": _mean([scored[i.id]["language_right"] for i in asked]),
        "errors": sum("error" in scored[i.id] for i in asked),
    }


def score(items: Sequence[Item], outcomes: Sequence[Outcome]) -> dict[str, Any]:
    """Means over the set and per language, the long PDF case, and what each item got."""
    scored = {item.id: score_item(item, outcome) for item, outcome in zip(items, outcomes, strict=True)}
    asked = [o for o in outcomes if not o.skipped]
    result = _summary(items, scored) | {
        "by_language": {
            lang: _summary(group, scored) for lang in LANGUAGES if (group := [i for i in items if i.language == lang])
        },
        "mean_reply_tokens": round(sum(o.completion_tokens for o in asked) / len(asked), 1) if asked else None,
    }
    long = [i for i in items if i.as_pdf]
    if long:
        r = scored[long[0].id]
        result["long_pdf"] = {"id": long[0].id} | (
            {"status": r["status"]}
            if "status" in r
            else {k: r.get(k) for k in ("pages", "parts", "seconds", "read_seconds", "facts", "error")}
        )
    return result | {"items": scored}


async def run(args: argparse.Namespace, items: list[Item], settings: Settings) -> dict[str, Any]:
    info = resolve_model(args.model, settings.models_path, device="cpu")
    model = load_model(info.path)
    # Greedy, replies capped as asked; otherwise the configured settings (context, batch), as in production.
    settings = settings.model_copy(update={"temperature": 0.0, "max_reply_tokens": args.max_tokens})
    with tempfile.TemporaryDirectory() as data_dir:
        async with EmbeddedRedis(Path(data_dir)) as url, connect(url) as redis:
            runner = OnnxRunner(model, device="cpu", threads=settings.threads, max_len=settings.context_tokens,
                                rows=settings.max_batch)  # fmt: skip
            # Room for every item to wait at once, and for the parts of long documents besides.
            waiting = len(items) * (PARALLEL_PARTS + 1) + 1
            async with Generator(
                runner, max_waiting=waiting, cache_bytes=0, prefill_chunk=settings.prefill_chunk
            ) as gen:
                engine = Engine(settings, Store(redis, ttl=3600, window=2), gen, model)
                log(f"{info.name}: {len(items)} items, at most {args.max_tokens} tokens a reply")
                start = time.perf_counter()
                outcomes = await asyncio.gather(*(read_and_ask(engine, item) for item in items))
                wall = time.perf_counter() - start
    return {
        "model": info.name,
        "precision": info.precision,
        "context_tokens": settings.context_tokens,
        "wall_s": round(wall, 1),
    } | score(items, outcomes)


def log(message: str) -> None:
    print(f"eval-docs: {message}", file=sys.stderr, flush=True)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _bold(value: float | None) -> str:
    return f"**{_pct(value)}**" if value is not None else ""


def _item_row(item_id: str, r: dict[str, Any]) -> str:
    if "status" in r:
        return f"| {item_id} | {r['kind']} | {r['language']} | {r['status']} | | | | |"
    if r["kind"] == "report":
        found = r["facts_found"]
        result = f"{sum(found)}/{len(found)} facts"
    else:
        done = r["answered"]
        result = f"{sum(done)}/{len(done)} questions, {'greets' if r['greeting'] else 'no greeting'}"
    if "error" in r:
        result += f" ({r['error'][:80]})"
    language = r["language_guessed"] or "?"
    parts = r["parts"] or ""
    return (
        f"| {item_id} | {r['kind']} | {r['language']} | {result} | {language} | {parts} | {r['seconds']:.0f} "
        f"| {r['finish']} |"
    )


def render(results: dict[str, Any]) -> str:
    r = results
    long = r.get("long_pdf")
    if long is None:
        long_cell = "not in this run"
    elif "status" in long:
        long_cell = long["status"]
    elif long.get("error"):
        long_cell = f"{long['pages']} pages, {long['parts'] or '?'} parts: {long['error'][:120]}"
    else:
        long_cell = (
            f"{long['pages']} pages, {long['parts'] or 1} part(s), {_pct(long['facts'])} facts, "
            f"{long['seconds']:.0f} s (+{long['read_seconds']:.0f} s reading)"
        )
    lines = [
        "# Summaries and e-mail replies (`make eval`, third part)",
        "",
        f"{r['set']['reports']} reports and {r['set']['emails']} e-mails written for Parley (`bench/docs`, "
        "invented organisations; English and French), read with the engine's own reader and asked as a chat "
        "front end asks them: `/summarize` (`SUMMARIZE`) for reports, `/reply` (`REPLY`) for e-mails, through "
        f"`Engine.chat`, all at once. Greedy, at most {r['max_tokens']} new tokens a reply, "
        f"{r['context_tokens']}-token context. *Key facts*: share of a report's key-fact patterns found in its "
        "summary (mean over reports); *questions answered*: share of an e-mail's questions whose patterns all "
        "match the draft (mean over e-mails); *greets*: the draft names the sender; *language right*: the "
        "reply's language (guessed from its function words) is the document's. The long report (about 50 "
        "pages) is rendered to a PDF and read map-reduce by the engine.",
        "",
        "| model | key facts | questions answered | greets sender | language right | errors | long PDF "
        "| mean reply tokens | wall s |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
        f"| {r['model']} ({r['precision']}) | {_bold(r['key_facts'])} | {_bold(r['questions_answered'])} "
        f"| {_pct(r['greeting'])} | {_bold(r['language_right'])} | {r['errors']} | {long_cell} "
        f"| {r['mean_reply_tokens'] or 0:.0f} | {r['wall_s']:.0f} |",
        f"| target | {_pct(TARGETS['key_facts'])} | {_pct(TARGETS['questions_answered'])} | "
        f"| {_pct(TARGETS['language_right'])} | | | | |",
        "",
        "| language | reports | key facts | e-mails | questions answered | greets sender | language right |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for lang, s in r["by_language"].items():
        lines.append(
            f"| {lang} | {s['reports']} | {_pct(s['key_facts'])} | {s['emails']} | {_pct(s['questions_answered'])} "
            f"| {_pct(s['greeting'])} | {_pct(s['language_right'])} |"
        )
    lines += [
        "",
        "| item | kind | language | result | reply language | parts | s | finish |",
        "|---|---|---|---|---|---:|---:|---|",
        *(_item_row(item_id, item) for item_id, item in r["items"].items()),
        "",
        "Each reply (its beginning) and what it matched are in `bench/eval-docs.json`.",
        "",
        f"Command: `{r['command']}`",
    ]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="", help="model folder name (default: the configured model)")
    parser.add_argument("--limit", type=int, default=0, help="only the first N items (a quick try)")
    parser.add_argument("--max-tokens", type=int, default=320, help="new tokens per reply at most")
    parser.add_argument("--language", choices=LANGUAGES, help="only the items in this language")
    parser.add_argument("--items", default="", help="only these items (comma-separated ids)")
    parser.add_argument("--out", type=Path, default=BENCH_DIR)
    args = parser.parse_args(argv)
    settings = load_settings()
    args.model = args.model or settings.model
    if not 1 <= args.max_tokens < settings.context_tokens:
        parser.error(f"--max-tokens must be between 1 and the context ({settings.context_tokens}) minus one")
    chosen = set(filter(None, args.items.split(",")))
    items = [i for i in load_items() if args.language in (None, i.language) and (not chosen or i.id in chosen)]
    if unknown := chosen - {i.id for i in items}:
        parser.error(f"--items: no such item in this language: {', '.join(sorted(unknown))}")
    items = items[: args.limit or None]
    run_results = asyncio.run(run(args, items, settings))
    results = {
        "command": shlex.join(["python", "-m", "bench.eval_docs", *argv]),
        "set": {
            "reports": sum(i.kind == "report" for i in items),
            "emails": sum(i.kind == "email" for i in items),
            "languages": {lang: sum(i.language == lang for i in items) for lang in LANGUAGES},
        },
        "max_tokens": args.max_tokens,
        "targets": TARGETS,
    } | run_results
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "eval-docs.json").write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    (args.out / "eval-docs.md").write_text(render(results))
    print(render(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
