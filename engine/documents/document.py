"""What reading a document gives back, the limits it runs under and the one error it raises."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["pdf", "docx", "html", "email", "text", "markdown", "csv", "json", "code"]

# How each kind is named in a message to a person.
LABELS: dict[Kind, str] = {
    "pdf": "PDF",
    "docx": "Word document",
    "html": "web page",
    "email": "e-mail",
    "text": "file",
    "markdown": "file",
    "csv": "file",
    "json": "file",
    "code": "file",
}

SUPPORTED = (
    "send a PDF, a Word document (.docx), a web page (.html), an e-mail (.eml) "
    "or text (plain, Markdown, CSV, JSON or source code)"
)


@dataclass(frozen=True, slots=True)
class Document:
    name: str | None
    kind: Kind
    # Headings as Markdown "# ..." lines where the format has them, so later code can split on structure.
    text: str
    pages: int | None
    # Extraction stopped at DocumentLimits.max_chars: text is the beginning of the document only.
    truncated: bool

    @classmethod
    def of_text(cls, text: str, name: str | None = None) -> Document:
        """A message's own text, worked on as a document (a pasted e-mail, a chat's transcript)."""
        return cls(name=name, kind="text", text=text, pages=None, truncated=False)


@dataclass(frozen=True, slots=True)
class DocumentLimits:
    # Telegram's Bot API lets a bot download files up to 20 MB; larger ones never reach us from there.
    max_bytes: int = 20_000_000
    max_pages: int = 300
    max_chars: int = 2_000_000
    # A DOCX is a zip: what it unpacks to, not its size, is what parsing it costs.
    max_unpacked_bytes: int = 100_000_000
    timeout_seconds: float = 30.0

    def __post_init__(self) -> None:
        for field in ("max_bytes", "max_pages", "max_chars", "max_unpacked_bytes", "timeout_seconds"):
            if getattr(self, field) <= 0:
                raise ValueError(f"DocumentLimits.{field} must be positive")


DEFAULT_LIMITS = DocumentLimits()


def megabytes(size: int) -> str:
    return f"{size / 1_000_000:.1f}".removesuffix(".0") + " MB"
