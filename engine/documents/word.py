"""A Word document (.docx) as Markdown-ish text: heading styles become "#" headings, tables become rows."""

from __future__ import annotations

import io
import re
import zipfile

import docx
from docx.table import Table
from docx.text.paragraph import Paragraph

from engine.documents.document import DocumentLimits, megabytes
from engine.documents.text import TextSink
from engine.errors import DocumentRejected

_HEADING = re.compile(r"Heading ([1-9])")
_CHUNK = 1 << 20


def read_docx(data: bytes, limits: DocumentLimits, sink: TextSink) -> None:
    _check_unpacked_size(data, limits, sink)
    document = docx.Document(io.BytesIO(data))
    # Paragraph.style scans every style for the default on each call (seconds per thousand paragraphs):
    # look the names up once, by the style id each paragraph carries.
    styles = {style.style_id: style.name or "" for style in document.styles}
    for block in document.iter_inner_content():
        if not sink.wants_more():
            break
        if isinstance(block, Paragraph):
            style_id = block._p.style
            text = _paragraph(block.text, styles.get(style_id, "") if style_id else "")
        else:
            text = _table(block)
        if text:
            sink.add(text + "\n\n")


def _check_unpacked_size(data: bytes, limits: DocumentLimits, sink: TextSink) -> None:
    """Refuses a zip bomb before python-docx inflates every part into memory."""
    limit = limits.max_unpacked_bytes
    too_large = f"this Word document is too large once unpacked: the limit is {megabytes(limit)}"
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = archive.infolist()
        if sum(member.file_size for member in members) > limit:
            raise DocumentRejected(too_large)
        # The sizes above are what the archive claims. Count what actually comes out, a chunk at a time
        # so memory stays flat; zipfile stops a member at its claimed size and fails its checksum, so a
        # forged size ends here as a damaged file rather than inside python-docx.
        unpacked = 0
        for member in members:
            with archive.open(member) as stream:
                while chunk := stream.read(_CHUNK):
                    unpacked += len(chunk)
                    if unpacked > limit:
                        raise DocumentRejected(too_large)
                    sink.check_time()


def _paragraph(text: str, style: str) -> str:
    text = text.strip()
    if not text:
        return ""
    if style == "Title":
        return "# " + " ".join(text.split())
    if heading := _HEADING.fullmatch(style):
        return "#" * min(int(heading[1]), 6) + " " + " ".join(text.split())
    if style.startswith("List"):
        return "- " + text
    return text


def _table(table: Table) -> str:
    rows = ["| " + " | ".join(_cell(cell.text) for cell in row.cells) + " |" for row in table.rows]
    if len(rows) > 1:
        # Markdown tables need a separator under the first row; Word's first row is usually the header.
        rows.insert(1, "|" + " --- |" * len(table.rows[0].cells))
    return "\n".join(rows)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
