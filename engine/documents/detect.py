"""Which kind a document is: by its content first (magic bytes, e-mail headers, HTML tags), then by the
name and MIME type it was sent with, so a PDF named .txt is still read as a PDF."""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from engine.documents.document import LABELS, SUPPORTED, Kind
from engine.documents.text import decode
from engine.errors import DocumentRejected

DOCX_MAIN = "word/document.xml"

_EXTENSIONS: dict[str, Kind] = {
    ".pdf": "pdf",
    ".docx": "docx",
    ".html": "html",
    ".htm": "html",
    ".xhtml": "html",
    ".eml": "email",
    ".txt": "text",
    ".text": "text",
    ".log": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".csv": "csv",
    ".tsv": "csv",
    ".json": "json",
}
_CODE_EXTENSIONS = frozenset({
    ".py", ".pyi", ".ipynb", ".js", ".mjs", ".cjs", ".ts", ".tsx", ".jsx", ".java", ".kt", ".kts", ".scala",
    ".groovy", ".gradle", ".go", ".rs", ".c", ".h", ".cc", ".cpp", ".cxx", ".hpp", ".hh", ".cs", ".fs", ".swift",
    ".m", ".mm", ".rb", ".php", ".pl", ".pm", ".lua", ".r", ".jl", ".hs", ".ml", ".ex", ".exs", ".erl", ".clj",
    ".dart", ".zig", ".nim", ".sh", ".bash", ".zsh", ".fish", ".ps1", ".bat", ".cmd", ".sql", ".yaml", ".yml",
    ".toml", ".ini", ".cfg", ".conf", ".env", ".xml", ".xsd", ".css", ".scss", ".sass", ".less", ".vue",
    ".svelte", ".proto", ".graphql", ".tf", ".nix", ".cmake", ".mk", ".diff", ".patch", ".jsonl", ".ndjson",
})  # fmt: skip
_CODE_NAMES = frozenset({"dockerfile", "makefile", "containerfile", "justfile", "rakefile", "gemfile"})
_MIMES: dict[str, Kind] = {
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "message/rfc822": "email",
    "text/plain": "text",
    "text/markdown": "markdown",
    "text/x-markdown": "markdown",
    "text/csv": "csv",
    "text/tab-separated-values": "csv",
    "application/json": "json",
    "application/javascript": "code",
    "text/javascript": "code",
    "application/xml": "code",
    "text/xml": "code",
    "application/x-sh": "code",
    "application/x-yaml": "code",
    "application/toml": "code",
}

_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
# Formats people often send that are not read, named so the refusal can say what the file is.
_NOT_READ: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF87a", "a GIF image"),
    (b"GIF89a", "a GIF image"),
    (_OLE, "an old-style Office file (.doc, .xls or .ppt)"),
)
_ZIP_CONTENTS = (("xl/workbook.xml", "an Excel workbook"), ("ppt/presentation.xml", "a PowerPoint presentation"))

# An RFC 5322 header line: a field name of printable ASCII other than the colon, then a colon.
_HEADER = re.compile(r"([!-9;-~]+):")
_MAIL_HEADERS = frozenset({"from", "to", "cc", "subject", "date", "message-id", "mime-version", "received"})


@dataclass(frozen=True, slots=True)
class Detected:
    kind: Kind
    # The decoded text, for every kind but PDF and DOCX.
    text: str | None = None


def detect(data: bytes, name: str | None, mime: str | None) -> Detected:
    hint = _hint(name, mime)
    if data.startswith(b"%PDF-") or (hint == "pdf" and b"%PDF-" in data[:1024]):
        # Readers accept a PDF header anywhere in the first KiB; only trust that when the name agrees.
        return Detected("pdf")
    if data.startswith(b"PK\x03\x04"):
        return Detected(_zip_kind(data, hint))
    if data[8:12] == b"WEBP" and data.startswith(b"RIFF"):
        raise DocumentRejected(unsupported("a WebP image"))
    if data.startswith(_OLE) and hint == "docx":
        # Word saves a password-protected .docx inside an old-style Office container.
        raise DocumentRejected("this Word document is encrypted with a password: send a copy without the password")
    for magic, what in _NOT_READ:
        if data.startswith(magic):
            raise DocumentRejected(unsupported(what))
    decoded = decode(data)
    if hint in ("pdf", "docx") and (decoded is None or not decoded[1]):
        # A misnamed text file is almost always UTF-8; anything else named .pdf is a damaged PDF, not text.
        raise DocumentRejected(f"this file is named like a {LABELS[hint]} but is not one: it may be damaged")
    if decoded is None:
        raise DocumentRejected(unsupported(None))
    text, utf8 = decoded
    if hint in ("markdown", "csv", "json", "code"):
        # Headers or tags at the top of a file named as one of these (YAML with "from:" and "to:" keys, a PHP
        # template) are its content, not a sign that it is an e-mail or a web page.
        return Detected(hint if utf8 or hint != "code" else "text", text)
    if _looks_like_email(text):
        return Detected("email", text)
    if hint == "html" or looks_like_html(text):
        return Detected("html", text)
    # Named as text, not named, or named as a format the content did not match: it is text.
    return Detected("text", text)


def unsupported(what: str | None) -> str:
    if what is None:
        return f"this type of file is not supported: {SUPPORTED}"
    return f"this file is {what}, which is not supported: {SUPPORTED}"


def _hint(name: str | None, mime: str | None) -> Kind | None:
    if name:
        path = PurePosixPath(name.lower())
        if path.suffix in _EXTENSIONS:
            return _EXTENSIONS[path.suffix]
        if path.suffix in _CODE_EXTENSIONS or path.name in _CODE_NAMES:
            return "code"
    if mime:
        base = mime.split(";", 1)[0].strip().lower()
        if base in _MIMES:
            return _MIMES[base]
        if base.startswith("text/x-"):
            return "code"
    return None


def _zip_kind(data: bytes, hint: Kind | None) -> Kind:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as exc:
        what = "Word document" if hint == "docx" else "zip archive"
        raise DocumentRejected(f"this {what} is damaged or truncated") from exc
    if DOCX_MAIN in names:
        return "docx"
    what = next((what for part, what in _ZIP_CONTENTS if part in names), "a zip archive")
    raise DocumentRejected(unsupported(what))


def _looks_like_email(text: str) -> bool:
    head = text[:65_536].replace("\r\n", "\n").lstrip("\n")
    block, blank, _ = head.partition("\n\n")
    lines = block.split("\n")
    if not blank:
        lines = lines[:-1]  # the header block may go on past the sample: its last line can be cut
    fields = set()
    for line in lines:
        if line[:1] in (" ", "\t"):
            continue  # a folded header's continuation
        match = _HEADER.match(line)
        if match is None:
            return False
        fields.add(match[1].lower())
    return len(fields & _MAIL_HEADERS) >= 2


def looks_like_html(text: str) -> bool:
    head = text[:4096].lstrip().lower()
    return head.startswith(("<!doctype html", "<html")) or (head.startswith("<") and "<html" in head)
