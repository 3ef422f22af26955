"""Documents in, text out: `extract` reads one document under DocumentLimits; `read_document` runs it
off the event loop with a time limit. Every failure is a DocumentRejected with a message for a person."""

from __future__ import annotations

import asyncio
import logging
import re
import time

from engine.documents.detect import detect
from engine.documents.document import (
    DEFAULT_LIMITS,
    LABELS,
    Document,
    DocumentLimits,
    Kind,
    megabytes,
)
from engine.documents.mail import read_email
from engine.documents.pdf import SCANNED, read_pdf
from engine.documents.text import TextSink, normalise, too_slow
from engine.documents.web import read_html
from engine.documents.word import read_docx
from engine.errors import DocumentRejected

log = logging.getLogger(__name__)

_PATH = re.compile(r".*[/\\]")


def extract(
    data: bytes, name: str | None = None, mime: str | None = None, *, limits: DocumentLimits = DEFAULT_LIMITS
) -> Document:
    name = _display_name(name)
    if not data:
        raise DocumentRejected("this file is empty")
    if len(data) > limits.max_bytes:
        raise DocumentRejected(f"this file is too large: the limit is {megabytes(limits.max_bytes)}")
    sink = TextSink(limits, deadline=time.monotonic() + limits.timeout_seconds)
    kind: Kind | None = None
    try:
        found = detect(data, name, mime)
        kind = found.kind
        pages = None
        if kind == "pdf":
            pages = read_pdf(data, limits, sink)
        elif kind == "docx":
            read_docx(data, limits, sink)
        elif kind == "email":
            read_email(data, sink)
        elif kind == "html":
            read_html(found.text or "", sink)
        else:
            sink.add(found.text or "")
        text, truncated = sink.result()
    except DocumentRejected:
        raise
    except Exception as exc:
        # Parsers fail on malformed input in many ways (their own errors, KeyError, RecursionError, ...):
        # the person gets one sentence, the log gets the traceback.
        log.info("could not read %s (%s)", name or "a document", kind or "unknown kind", exc_info=True)
        label = LABELS[kind] if kind is not None else "file"
        raise DocumentRejected(f"this {label} is damaged or truncated") from exc
    if not text.strip():
        raise DocumentRejected(SCANNED if kind == "pdf" else f"this {LABELS[kind]} has no text")
    return Document(name=name, kind=kind, text=text, pages=pages, truncated=truncated)


async def read_document(
    data: bytes, name: str | None = None, mime: str | None = None, *, limits: DocumentLimits = DEFAULT_LIMITS
) -> Document:
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    def work() -> Document:
        loop.call_soon_threadsafe(started.set)
        return extract(data, name, mime, limits=limits)

    reading = asyncio.ensure_future(asyncio.to_thread(work))
    reading.add_done_callback(lambda _: started.set())  # refused by the pool (shutting down): do not wait forever
    try:
        # The time limit is the document's, so it starts when a thread starts on it: a burst of reads (a web
        # search reads eight pages, and many people search at once) queues in the thread pool, and counting
        # that wait refused ordinary pages as "too slow" (113 of 1,256 with the CPU busy).
        await started.wait()
        async with asyncio.timeout(limits.timeout_seconds):
            return await reading
    except TimeoutError:
        # A thread cannot be stopped from outside: extract checks the same deadline between pages and
        # paragraphs and gives up on its own soon after.
        raise DocumentRejected(too_slow(limits.timeout_seconds)) from None
    finally:
        reading.cancel()  # cancelled while still queued: the read never starts


def _display_name(name: str | None) -> str | None:
    """The file name without any folder, cleaned for showing to a person."""
    if name is None:
        return None
    return normalise(_PATH.sub("", name)).replace("\n", " ").strip()[:255] or None
