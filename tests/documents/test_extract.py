"""Documents in, text out: real files of every supported kind, and hostile ones refused with a clear message."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import struct
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from email import policy
from email.message import EmailMessage
from unittest.mock import patch

import docx
import pytest
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter

from engine.documents import Document, DocumentLimits, extract, read_document, web
from engine.errors import DocumentRejected, InputRejected

ARTICLE = (
    "Tides are the rise and fall of sea levels caused by the gravitational pull of the Moon and the Sun "
    "and by the rotation of the Earth."
)


def _pdf(pages: int = 3) -> bytes:
    pdf = FPDF()
    for number in range(1, pages + 1):
        pdf.add_page()
        pdf.set_font("helvetica", "B", 16)
        pdf.cell(text=f"Chapter {number}: Tides", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", size=11)
        pdf.multi_cell(0, 6, text=f"Body of chapter {number}. {ARTICLE}")
    return bytes(pdf.output())


def _scanned_pdf() -> bytes:
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 120, 80, style="F")  # what a scan is to a text extractor: marks, no text
    return bytes(pdf.output())


def _encrypted_pdf(user_password: str) -> bytes:
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(_pdf(pages=2))))
    writer.encrypt(user_password, "owner-secret", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def _docx() -> bytes:
    document = docx.Document()
    document.add_heading("Tide report", level=0)
    document.add_heading("Introduction", level=1)
    document.add_paragraph(ARTICLE)
    document.add_paragraph("Check the tables twice", style="List Bullet")
    document.add_heading("Measurements", level=2)
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Tide", "Range"), ("Spring", "large"), ("Neap", "small")], strict=True):
        for cell, text in zip(row.cells, cells, strict=True):
            cell.text = text
    document.add_paragraph("Written after the table.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _zip_bomb(unpacked: int) -> bytes:
    """A DOCX-shaped zip whose document.xml inflates to `unpacked` bytes, written in chunks."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w") as member:
            chunk = b"<w:p/>" * (1 << 17)
            for _ in range(unpacked // len(chunk)):
                member.write(chunk)
    return out.getvalue()


def _forge_sizes(data: bytes, member: str, size: int) -> bytes:
    """The zip with `member`'s uncompressed size rewritten in its local and central headers."""
    forged = bytearray(data)
    name = member.encode()
    for signature, size_at, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        header = forged.find(signature)
        while forged[header + name_at : header + name_at + len(name)] != name:
            header = forged.find(signature, header + 1)
            assert header != -1
        struct.pack_into("<I", forged, header + size_at, size)
    return bytes(forged)


def _email(*, plain: bool = True, crlf: bool = False) -> bytes:
    message = EmailMessage()
    message["From"] = "Alice Martin <alice@example.com>"
    message["To"] = "Bob <bob@example.com>"
    message["Subject"] = "Tide tables for March"
    message["Date"] = "Mon, 02 Mar 2026 09:30:00 +0000"
    if plain:
        message.set_content("Hi Bob,\n\nThe spring tides are on the 3rd and the 18th.\n\nAlice")
    html = "<html><body><p>Hi Bob,</p><p>The <b>spring tides</b> are on the 3rd and the 18th.</p></body></html>"
    if plain:
        message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    message.add_attachment(b"date,height\n2026-03-03,5.1\n", maintype="text", subtype="csv", filename="tides.csv")
    return message.as_bytes(policy=policy.SMTP if crlf else policy.default)


HTML_PAGE = f"""<!DOCTYPE html>
<html><head><title>Tides explained</title></head><body>
<nav><ul><li><a href="/">Home</a></li><li><a href="/shop">Shop our catalogue</a></li>
<li><a href="/about">About us</a></li></ul></nav>
<main><article>
<h1>How tides work</h1>
<p>{ARTICLE}</p>
<h2>Spring and neap tides</h2>
<p>When the Sun and the Moon are aligned their pulls add up and the tidal range is largest: these are spring tides,
which have nothing to do with the season.</p>
<p>When they are at right angles the range is smallest: these are neap tides, and they also come twice a month.</p>
</article></main>
<footer><p>Copyright 2026 Example Corp. All rights reserved. Privacy policy. Cookie settings.</p></footer>
</body></html>"""


# Readable documents


def test_pdf_text_layer_is_read_with_its_page_count() -> None:
    document = extract(_pdf(pages=3), "tides.pdf")
    assert (document.kind, document.pages, document.truncated, document.name) == ("pdf", 3, False, "tides.pdf")
    for number in (1, 2, 3):
        assert f"Chapter {number}: Tides" in document.text
        assert f"Body of chapter {number}." in document.text
    assert document.text.index("Chapter 1") < document.text.index("Chapter 2") < document.text.index("Chapter 3")


def test_pdf_with_an_empty_user_password_is_opened() -> None:
    document = extract(_encrypted_pdf(user_password=""), "locked-for-printing.pdf")
    assert document.pages == 2
    assert "Chapter 2: Tides" in document.text


def test_pdf_stops_at_the_character_limit_between_pages() -> None:
    document = extract(_pdf(pages=5), "tides.pdf", limits=DocumentLimits(max_chars=300))
    assert document.truncated
    assert len(document.text) <= 300
    assert document.text.startswith("Chapter 1: Tides")
    assert "Chapter 5" not in document.text
    assert document.pages == 5


def test_docx_headings_become_markdown_headings_and_tables_rows() -> None:
    document = extract(_docx(), "report.docx")
    assert (document.kind, document.pages, document.truncated) == ("docx", None, False)
    assert document.text == (
        "# Tide report\n\n"
        "# Introduction\n\n"
        f"{ARTICLE}\n\n"
        "- Check the tables twice\n\n"
        "## Measurements\n\n"
        "| Tide | Range |\n| --- | --- |\n| Spring | large |\n| Neap | small |\n\n"
        "Written after the table."
    )


def test_email_has_its_headers_plain_body_and_attachment_names() -> None:
    document = extract(_email(), "message.eml")
    assert document.kind == "email"
    assert document.text.startswith(
        "From: Alice Martin <alice@example.com>\n"
        "To: Bob <bob@example.com>\n"
        "Subject: Tide tables for March\n"
        "Date: Mon, 02 Mar 2026 09:30:00 +0000\n"
        "Attachments: tides.csv\n\n"
        "Hi Bob,\n\nThe spring tides are on the 3rd and the 18th."
    )
    assert "<b>" not in document.text
    assert "2026-03-03,5.1" not in document.text  # attachments are named, not read


def test_email_with_only_an_html_body_is_read_through_the_html_path() -> None:
    document = extract(_email(plain=False, crlf=True))  # no name: recognised by its headers
    assert document.kind == "email"
    assert "Subject: Tide tables for March" in document.text
    assert "Hi Bob,\n\nThe **spring tides** are on the 3rd and the 18th." in document.text
    assert "<p>" not in document.text
    assert "Attachments: tides.csv" in document.text


def test_email_without_a_charset_is_decoded_like_a_text_file() -> None:
    body = "Marée haute à 6h40, très forte.".encode("latin-1")
    raw = b"From: Ren\xe9 <rene@example.com>\nTo: b@example.com\nSubject: tides\n\n" + body
    document = extract(raw, "maree.eml")
    assert "Marée haute à 6h40, très forte." in document.text
    assert "From: Ren\ufffd <rene@example.com>" in document.text  # undecodable header bytes are marked, not kept
    document.text.encode()


def test_html_keeps_the_article_and_drops_navigation_and_footer() -> None:
    document = extract(HTML_PAGE.encode(), "tides.html")
    assert document.kind == "html"
    assert "# How tides work" in document.text
    assert "## Spring and neap tides" in document.text
    assert "neap tides, and they also come twice a month" in document.text
    for boilerplate in ("Shop our catalogue", "About us", "Copyright 2026", "Cookie settings"):
        assert boilerplate not in document.text


def test_html_fragment_is_read_as_a_page() -> None:
    document = extract(b"<p>Low tide at <b>6:40</b></p><table><tr><td>High</td><td>12:55</td></tr></table>", "t.html")
    assert (document.kind, document.text) == ("html", "Low tide at **6:40**\n\n| High | 12:55 |")


def test_html_without_a_main_text_falls_back_to_all_its_text() -> None:
    # trafilatura takes a block classed "comments" for readers' comments and finds no main text.
    document = extract(b'<html><body><div class="comments">Low tide at 6:40</div></body></html>', "t.html")
    assert (document.kind, document.text) == ("html", "Low tide at 6:40")


def test_html_too_large_for_main_text_extraction_gives_all_its_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(web, "MAX_TAGS_FOR_MAIN_TEXT", HTML_PAGE.count("<") - 1)
    document = extract(HTML_PAGE.encode(), "big.html")
    assert "neap tides, and they also come twice a month" in document.text
    assert "Shop our catalogue" in document.text


def test_html_named_file_without_tags_is_its_text() -> None:
    assert extract(b"Low tide at 6:40", "times.html").text == "Low tide at 6:40"


@pytest.mark.parametrize(
    ("name", "mime", "content", "kind"),
    [
        ("notes.md", None, "# Tides\n\nSome *notes*.\n\n## Spring\n\nBig range.", "markdown"),
        ("tides.csv", None, "date,height\n2026-03-03,5.1\n2026-03-18,5.3", "csv"),
        ("tides.json", None, '{"tides": [{"date": "2026-03-03", "height": 5.1}]}', "json"),
        ("tides.py", None, "def height(day: int) -> float:\n    return 5.1 if day == 3 else 1.2", "code"),
        ("Dockerfile", None, "FROM python:3.11\nRUN pip install parley", "code"),
        ("notes.txt", None, "Plain notes about tides.\n\tIndented line.", "text"),
        (None, "text/csv", "a,b\n1,2", "csv"),
        (None, "text/x-python; charset=utf-8", "print('tide')", "code"),
        (None, None, "No name, no type: plain text.", "text"),
    ],
)  # fmt: skip
def test_text_kinds_are_kept_as_written(name: str | None, mime: str | None, content: str, kind: str) -> None:
    document = extract(content.encode(), name, mime)
    assert (document.kind, document.text, document.pages, document.truncated) == (kind, content, None, False)


def test_yaml_with_mail_like_keys_stays_code() -> None:
    content = "from: 2026-03-01\nto: 2026-03-31\nsubject: tides\n"
    assert extract(content.encode(), "range.yaml").kind == "code"
    assert extract(content.encode(), "range.txt").kind == "email"  # no name to say otherwise: content decides


def test_utf8_byte_order_mark_is_dropped() -> None:
    assert extract(b"\xef\xbb\xbfTide \xe2\x80\x94 high", "bom.txt").text == "Tide \u2014 high"


def test_latin1_text_is_decoded() -> None:
    text = "Marée haute à Saint-Malo: élevée, très forte. Ça coûte cher, où que l'on soit, garçon."
    document = extract(text.encode("latin-1"), "maree.txt")
    assert (document.kind, document.text) == ("text", text)


def test_utf8_cut_inside_its_last_character_stays_utf8() -> None:
    text = "Marée haute à Saint-Malo, très forte: élevée"
    assert extract(text.encode()[:-1], "maree.txt").text == text[:-1]


def test_cyrillic_legacy_text_is_decoded() -> None:
    text = "Прилив и отлив: уровень моря поднимается и опускается дважды в сутки."
    assert extract(text.encode("cp1251"), "tides.txt").text == text


def test_source_file_that_is_not_utf8_is_read_as_text() -> None:
    document = extract("# marée haute\nprint('élevée')".encode("latin-1"), "tide.py")
    assert document.kind == "text"
    assert "marée" in document.text


def test_controls_are_stripped_and_blank_runs_collapsed() -> None:
    raw = "Tide\x00 table\r\n\r\n\r\n\r\n  \n\x07High\ttide\x0cLow\U000e0041\ufeff tide\n\n\n"
    assert extract(raw.encode(), "t.txt").text == "Tide table\n\nHigh\ttide\nLow tide"
    # the same in a legacy encoding, where controls count against being text sooner
    legacy = "Marée " * 40 + "Tide\x00 table\r\n\r\n\r\n  \n\x07High\ttide\x0cLow tide\n\n\n"
    assert extract(legacy.encode("cp1252"), "t.txt").text == "Marée " * 40 + "Tide table\n\nHigh\ttide\nLow tide"


def test_text_past_the_character_limit_is_cut_and_marked() -> None:
    document = extract(b"tide " * 1000, "long.txt", limits=DocumentLimits(max_chars=100))
    assert document.truncated
    assert len(document.text) <= 100
    assert document.text.startswith("tide tide")


def test_name_is_shown_without_folders_or_controls() -> None:
    assert extract(b"tide", "C:\\Users\\me\\notes\x07.txt").name == "notes.txt"
    assert extract(b"tide", "../../etc/passwd").name == "passwd"
    assert extract(b"tide", " ").name is None


def test_document_is_frozen() -> None:
    document = extract(b"tide", "t.txt")
    assert isinstance(document, Document)
    with pytest.raises(AttributeError):
        document.text = "changed"  # type: ignore[misc]


async def test_read_document_runs_off_the_event_loop() -> None:
    document = await read_document(_docx(), "report.docx")
    assert document.kind == "docx"
    assert "## Measurements" in document.text


async def test_read_document_past_its_time_limit_is_refused() -> None:
    with pytest.raises(DocumentRejected, match="took too long"):
        await read_document(_pdf(pages=20), "tides.pdf", limits=DocumentLimits(timeout_seconds=1e-6))


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """asyncio.to_thread's pool reduced to one worker, the loop's own restored after (tests share a loop)."""
    loop = asyncio.get_running_loop()
    previous = loop._default_executor  # type: ignore[attr-defined]  # asyncio has no public getter
    with ThreadPoolExecutor(max_workers=1) as pool:
        loop.set_default_executor(pool)
        try:
            yield
        finally:
            loop._default_executor = previous  # type: ignore[attr-defined]


async def test_waiting_for_a_thread_does_not_count_against_the_time_limit() -> None:
    # One worker, busy longer than the limit: the document waits its turn, then is read in time.
    with _one_thread():
        busy = asyncio.ensure_future(asyncio.to_thread(time.sleep, 1.0))
        await asyncio.sleep(0)  # the worker is taken
        document = await read_document(b"The tide turns at noon.", "t.txt", limits=DocumentLimits(timeout_seconds=0.5))
        await busy
    assert document.text == "The tide turns at noon."


async def test_a_read_cancelled_while_queued_never_starts() -> None:
    started: list[str] = []
    with _one_thread():
        busy = asyncio.ensure_future(asyncio.to_thread(time.sleep, 0.5))
        await asyncio.sleep(0)
        with patch("engine.documents.extract.extract", side_effect=lambda *a, **k: started.append("read")):
            waiting = asyncio.ensure_future(read_document(b"tide", "t.txt"))
            await asyncio.sleep(0.1)
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await busy
            await asyncio.to_thread(lambda: None)  # anything still queued has had its turn
    assert started == []


async def test_a_read_the_pool_refuses_fails_instead_of_waiting() -> None:
    loop = asyncio.get_running_loop()
    previous = loop._default_executor  # type: ignore[attr-defined]
    with ThreadPoolExecutor(max_workers=1) as pool:
        pass  # shut down, as when the loop is closing
    loop.set_default_executor(pool)
    try:
        with pytest.raises(RuntimeError, match="shutdown"):
            await asyncio.wait_for(read_document(b"tide", "t.txt"), timeout=5)
    finally:
        loop._default_executor = previous  # type: ignore[attr-defined]


def test_extract_gives_up_at_its_deadline() -> None:
    with pytest.raises(DocumentRejected, match="took too long"):
        extract(_pdf(pages=20), "tides.pdf", limits=DocumentLimits(timeout_seconds=1e-6))


# Content over name: a file is read as what it is


def test_pdf_named_txt_is_read_as_pdf() -> None:
    document = extract(_pdf(pages=1), "notes.txt", "text/plain")
    assert document.kind == "pdf"
    assert "Chapter 1: Tides" in document.text


def test_docx_named_pdf_is_read_as_docx() -> None:
    document = extract(_docx(), "report.pdf", "application/pdf")
    assert document.kind == "docx"
    assert "# Tide report" in document.text


def test_html_named_txt_is_read_as_html() -> None:
    document = extract(HTML_PAGE.encode(), "page.txt")
    assert document.kind == "html"
    assert "Shop our catalogue" not in document.text


def test_text_named_pdf_is_read_as_text() -> None:
    document = extract(b"Not a PDF at all, just notes.", "notes.pdf", "application/pdf")
    assert (document.kind, document.text) == ("text", "Not a PDF at all, just notes.")


# Refusals


def _refused(data: bytes, name: str | None = None, limits: DocumentLimits | None = None) -> str:
    with pytest.raises(DocumentRejected) as refusal:
        extract(data, name, limits=limits or DocumentLimits())
    assert isinstance(refusal.value, InputRejected)
    return str(refusal.value)


def test_scanned_pdf_is_refused_as_scanned() -> None:
    assert _refused(_scanned_pdf(), "scan.pdf").startswith("this PDF has no text, it looks scanned")


def test_password_protected_pdf_is_refused_as_encrypted() -> None:
    assert "encrypted" in _refused(_encrypted_pdf(user_password="tide"), "secret.pdf")


@pytest.mark.parametrize("keep", [0.5, 0.9, 0.99])
def test_truncated_pdf_is_refused_as_damaged(keep: float) -> None:
    data = _pdf(pages=3)
    assert _refused(data[: int(len(data) * keep)], "cut.pdf") == "this PDF is damaged or truncated"


def test_pdf_over_the_page_limit_is_refused() -> None:
    message = _refused(_pdf(pages=4), "long.pdf", DocumentLimits(max_pages=3))
    assert message == "this PDF has 4 pages: the limit is 3"


def test_zip_bomb_docx_is_refused_by_its_declared_size() -> None:
    message = _refused(_zip_bomb(unpacked=2_000_000), "bomb.docx", DocumentLimits(max_unpacked_bytes=1_000_000))
    assert message == "this Word document is too large once unpacked: the limit is 1 MB"


def test_zip_bomb_at_the_default_limit_is_refused_without_unpacking() -> None:
    bomb = _zip_bomb(unpacked=110_000_000)
    assert len(bomb) < 1_000_000
    assert "too large once unpacked: the limit is 100 MB" in _refused(bomb, "bomb.docx")


def test_zip_bomb_that_understates_its_size_is_refused() -> None:
    bomb = _forge_sizes(_zip_bomb(unpacked=2_000_000), "word/document.xml", 1000)
    message = _refused(bomb, "bomb.docx", DocumentLimits(max_unpacked_bytes=1_000_000))
    assert message == "this Word document is damaged or truncated"


def test_empty_file_is_refused() -> None:
    assert _refused(b"", "empty.pdf") == "this file is empty"


def test_whitespace_only_file_is_refused_as_having_no_text() -> None:
    assert _refused(b" \n\n\t\n", "blank.txt") == "this file has no text"


def test_file_over_the_size_limit_is_refused_with_the_limit() -> None:
    assert _refused(b"a" * 20_000_001, "big.txt") == "this file is too large: the limit is 20 MB"
    assert _refused(b"a" * 2_500_001, "big.txt", DocumentLimits(max_bytes=2_500_000)).endswith("limit is 2.5 MB")


def test_random_binary_is_refused_with_the_supported_types() -> None:
    message = _refused(random.Random(16).randbytes(4096), "data.bin")
    assert message.startswith("this type of file is not supported: send a PDF, a Word document (.docx)")


def test_small_binary_without_nul_bytes_is_refused() -> None:
    data = bytes(b for b in random.Random(7).randbytes(300) if b)
    assert "not supported" in _refused(data)


def test_windows_program_is_refused() -> None:
    assert "not supported" in _refused(b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(500), "setup.exe")


def test_png_is_refused_as_an_image() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    message = _refused(png, "photo.pdf")
    assert message.startswith("this file is a PNG image, which is not supported: send a PDF")


def test_password_protected_docx_is_refused_as_encrypted() -> None:
    ole = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504)  # how Word stores an encrypted .docx
    assert "encrypted" in _refused(ole, "secret.docx")
    assert _refused(ole, "old.doc").startswith("this file is an old-style Office file (.doc, .xls or .ppt)")


def test_zip_that_is_not_a_docx_is_refused() -> None:
    message = _refused(_zip({"notes.txt": b"tides"}), "archive.docx")
    assert message.startswith("this file is a zip archive, which is not supported")


def test_binary_named_pdf_is_refused_as_not_a_pdf() -> None:
    assert (
        _refused(bytes(range(256)) * 4, "report.pdf")
        == "this file is named like a PDF but is not one: it may be damaged"
    )


def test_damaged_files_raise_nothing_but_document_rejected() -> None:
    samples = [_pdf(pages=2), _docx(), _email(), _encrypted_pdf(user_password="")]
    noise = random.Random(3)
    for data in samples:
        for _ in range(15):
            corrupt = bytearray(data)
            for _ in range(20):
                corrupt[noise.randrange(len(corrupt))] = noise.randrange(256)
            cut = bytes(corrupt[: noise.randrange(1, len(corrupt) + 1)])
            for candidate in (bytes(corrupt), cut):
                with contextlib.suppress(DocumentRejected):
                    extract(candidate, "sample")
