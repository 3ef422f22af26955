"""The text layer of a PDF, page by page (pypdf). Scanned pages have none: there is no OCR here."""

from __future__ import annotations

import io

from pypdf import PasswordType, PdfReader
from pypdf.errors import DependencyError

from engine.documents.document import DocumentLimits
from engine.documents.text import TextSink
from engine.errors import DocumentRejected

ENCRYPTED = "this PDF is encrypted with a password: send a copy without the password"
SCANNED = "this PDF has no text, it looks scanned: only PDFs with a text layer can be read"


def read_pdf(data: bytes, limits: DocumentLimits, sink: TextSink) -> int:
    """Adds the text to sink and returns the number of pages."""
    reader = PdfReader(io.BytesIO(data), strict=False)
    if reader.is_encrypted:
        # Many PDFs are encrypted only to restrict printing or copying, with an empty password to open them.
        try:
            opened = reader.decrypt("") != PasswordType.NOT_DECRYPTED
        except DependencyError:
            opened = False
        if not opened:
            raise DocumentRejected(ENCRYPTED)
    pages = len(reader.pages)
    if pages == 0:
        raise DocumentRejected("this PDF has no pages: it may be damaged")
    if pages > limits.max_pages:
        raise DocumentRejected(f"this PDF has {pages} pages: the limit is {limits.max_pages}")
    for page in reader.pages:
        if not sink.wants_more():
            break
        sink.add(page.extract_text() + "\n\n")
    return pages
