"""The main text of a web page, without its navigation, menus and footers (trafilatura)."""

from __future__ import annotations

import trafilatura

from engine.documents.detect import looks_like_html
from engine.documents.text import TextSink

# trafilatura costs about 50 µs a tag (over 30 s for a 10 MB page) and cannot be interrupted. Past this many
# "<", take all of the page's text instead: about ten times faster, navigation included.
MAX_TAGS_FOR_MAIN_TEXT = 100_000


def read_html(html: str, sink: TextSink) -> None:
    if not looks_like_html(html):
        # A fragment (an e-mail's HTML body, a snippet saved as .html) parses as a page once it is in one.
        html = f"<html><body>{html}</body></html>"
    text = None
    if html.count("<") <= MAX_TAGS_FOR_MAIN_TEXT:
        text = trafilatura.extract(
            html,
            output_format="markdown",  # keeps headings as "#" lines and tables as rows
            include_formatting=True,
            include_tables=True,
            include_comments=False,
            include_links=False,
            include_images=False,
        )
    if not (text and text.strip()):
        # Short pages have no "main text" for trafilatura to find: then all of their text is the content.
        text = trafilatura.html2txt(html)
    sink.add(text)
