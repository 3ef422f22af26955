"""Model Markdown → the HTML subset Telegram accepts (parse_mode=HTML), and a plain-text fallback.

Split first (`split_message(markdown, 4096, utf16_len)`), then convert each chunk: conversion only
removes characters from the visible text, and a chunk's fences are already balanced, so every
converted chunk is balanced HTML within Telegram's 4096-unit limit.

The output is always well formed whatever the input: everything not emitted by us is escaped, code
is atomic, and emphasis is paired with a delimiter stack (a simplified CommonMark algorithm) whose
unmatched markers fall back to literal text, so tags can only nest properly.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from html.parser import HTMLParser

from bots.text.split import Fence, scan_lines, utf16_len

ALLOWED_TAGS = frozenset({"b", "i", "u", "s", "code", "pre", "a", "blockquote", "tg-spoiler"})
TELEGRAM_LIMIT = 4096

_HEADING = re.compile(r"[ \t]{0,3}#{1,6}(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_QUOTE = re.compile(r"[ \t]{0,3}> ?")
_URL = re.compile(r"(?:https?://|tg://|mailto:)[^\s\x00-\x1f\x7f]+", re.IGNORECASE)
_AUTOLINK = re.compile(r"<((?:https?://|mailto:)[^\s<>\x00-\x1f\x7f]+)>", re.IGNORECASE)  # CommonMark <url>
_ASCII_PUNCT = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


def to_telegram_html(markdown: str) -> str:
    """Telegram HTML for one message's worth of Markdown."""
    return _render(markdown, as_html=True)


def strip_markdown(markdown: str) -> str:
    """Plain text for when Telegram still rejects the entities: markers gone, code verbatim."""
    return _render(markdown, as_html=False)


def telegram_visible_length(html_text: str) -> int:
    """Length of the message text after Telegram parses the entities, in UTF-16 units."""
    counter = _TextCollector()
    counter.feed(html_text)
    counter.close()
    return utf16_len("".join(counter.parts))


class _TextCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def _esc(text: str) -> str:
    return html.escape(text, quote=False)


# ---------------------------------------------------------------------------------------------- blocks


def _render(markdown: str, *, as_html: bool) -> str:
    lines = scan_lines(markdown)
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        raw = markdown[line.start : line.end]
        if line.kind == "open" and line.fence is not None:
            body: list[str] = []
            i += 1
            while i < len(lines) and lines[i].kind == "code":
                body.append(markdown[lines[i].start : lines[i].end])
                i += 1
            i += 1  # the closing fence line, if any (an unclosed block just runs to the end)
            out.append(_code_block(line.fence, "\n".join(body), as_html))
            continue
        if _QUOTE.match(raw):
            quoted: list[str] = []
            while i < len(lines) and lines[i].kind == "prose":
                text = markdown[lines[i].start : lines[i].end]
                if not _QUOTE.match(text):
                    break
                while match := _QUOTE.match(text):  # Telegram has no nested quotes: flatten them
                    text = text[match.end() :]
                quoted.append(_render_line(text, as_html))
                i += 1
            inner = "\n".join(quoted)
            out.append(f"<blockquote>{inner}</blockquote>" if as_html and inner.strip() else inner)
            continue
        out.append(_render_line(raw, as_html))
        i += 1
    return "\n".join(out)


def _code_block(fence: Fence, code: str, as_html: bool) -> str:
    if not as_html:
        return code
    if not code:
        return ""  # Telegram rejects empty entities; an empty block shows nothing anyway
    if fence.language:
        return f'<pre><code class="language-{html.escape(fence.language)}">{_esc(code)}</code></pre>'
    return f"<pre>{_esc(code)}</pre>"


def _render_line(text: str, as_html: bool) -> str:
    heading = _HEADING.fullmatch(text)
    if heading is not None:
        # Bold inside a heading would nest <b> in <b>: drop those markers instead.
        inner = _inline(heading.group(1) or "", as_html, bold=False, in_link=False)
        return f"<b>{inner}</b>" if as_html and inner.strip() else inner
    return _inline(text, as_html, bold=True, in_link=False)


# ---------------------------------------------------------------------------------------------- inline


@dataclass
class _Atom:
    """Already rendered and self-contained (text, code span, link): nothing can pair across it."""

    html: str
    plain: str


@dataclass
class _Delim:
    char: str
    count: int
    can_open: bool
    can_close: bool
    opens: list[str] = field(default_factory=list)  # tags opened after the remaining literal markers
    closes: list[str] = field(default_factory=list)  # tags closed before them


def _is_punct(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "PS"


def _ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _flanking(char: str, prev: str, nxt: str) -> tuple[bool, bool]:
    """(can open, can close) after CommonMark's flanking rules, stricter about intraword markers."""
    left = not nxt.isspace() and (not _is_punct(nxt) or prev.isspace() or _is_punct(prev))
    right = not prev.isspace() and (not _is_punct(prev) or nxt.isspace() or _is_punct(nxt))
    # Intraword markers (snake_case, 2*3*4, a**b) stay literal, except `*` between non-ASCII letters,
    # where CJK text has no spaces to put around emphasis.
    intraword_ok = char == "*" and not (_ascii_alnum(prev) or _ascii_alnum(nxt))
    can_open = left and (not right or _is_punct(prev) or intraword_ok)
    can_close = right and (not left or _is_punct(nxt) or intraword_ok)
    return can_open, can_close


def _inline(text: str, as_html: bool, *, bold: bool, in_link: bool) -> str:
    tokens: list[_Atom | _Delim] = []

    def literal(s: str) -> None:
        tokens.append(_Atom(_esc(s), s))

    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch == "\\" and i + 1 < n and text[i + 1] in _ASCII_PUNCT:
            literal(text[i + 1])
            i += 2
        elif ch == "`":
            run = _run_length(text, i)
            close = _find_run(text, "`", run, i + run)
            if close < 0:
                literal(text[i : i + run])
            else:
                code = text[i + run : close]
                if len(code) > 2 and code[0] == code[-1] == " " and code.strip():
                    code = code[1:-1]
                # Telegram does not allow code inside a link: keep it as plain text there.
                tokens.append(_Atom(_esc(code) if in_link else f"<code>{_esc(code)}</code>", code))
            i = (close + run) if close >= 0 else i + run
        elif ch == "[" and not in_link and (link := _link_at(text, i)) is not None:
            label, url, i = link
            inner_html = _inline(label, True, bold=bold, in_link=True) if label else _esc(url)
            inner_plain = _inline(label, False, bold=bold, in_link=True)
            href = html.escape(url, quote=True)
            tokens.append(_Atom(f'<a href="{href}">{inner_html}</a>', f"{inner_plain} ({url})".lstrip()))
        elif ch == "<" and (auto := _AUTOLINK.match(text, i)) is not None:
            url = auto[1]
            href = html.escape(url, quote=True)
            tokens.append(_Atom(_esc(url) if in_link else f'<a href="{href}">{_esc(url)}</a>', url))
            i = auto.end()
        elif ch in "*_~|":
            run = _run_length(text, i)
            if ch in "~|" and run != 2:  # only ~~strike~~ and ||spoiler||
                literal(text[i : i + run])
            else:
                prev = text[i - 1] if i > 0 else " "
                nxt = text[i + run] if i + run < n else " "
                tokens.append(_Delim(ch, run, *_flanking(ch, prev, nxt)))
            i += run
        else:
            j = i + 1
            while j < n and text[j] not in "\\`[*_~|<":
                j += 1
            literal(text[i:j])
            i = j
    _pair(tokens, bold)
    return "".join(_emit(token, as_html) for token in tokens)


def _pair(tokens: list[_Atom | _Delim], bold: bool) -> None:
    """Match closers with the nearest compatible opener; openers in between are dropped so that
    every pair is nested inside or around every other pair."""
    stack: list[_Delim] = []
    for token in tokens:
        if not isinstance(token, _Delim):
            continue
        if token.can_close:
            while token.count > 0:
                k = len(stack) - 1
                while k >= 0 and stack[k].char != token.char:
                    k -= 1
                if k < 0:
                    break
                opener = stack[k]
                use = 2 if opener.count >= 2 and token.count >= 2 else 1
                tag = {"~": "s", "|": "tg-spoiler"}.get(token.char) or ("b" if use == 2 else "i")
                if tag == "b" and not bold:
                    tag = ""  # markers consumed, no tag
                opener.count -= use
                token.count -= use
                opener.opens.append(tag)
                token.closes.append(tag)
                del stack[k + 1 :]
                if opener.count == 0:
                    stack.pop()
        if token.can_open and token.count > 0:
            stack.append(token)


def _emit(token: _Atom | _Delim, as_html: bool) -> str:
    if isinstance(token, _Atom):
        return token.html if as_html else token.plain
    literal = token.char * token.count
    if not as_html:
        return literal
    closes = "".join(f"</{tag}>" for tag in token.closes if tag)
    opens = "".join(f"<{tag}>" for tag in reversed(token.opens) if tag)
    return closes + _esc(literal) + opens


def _run_length(text: str, i: int) -> int:
    j = i
    while j < len(text) and text[j] == text[i]:
        j += 1
    return j - i


def _find_run(text: str, char: str, size: int, start: int) -> int:
    """Index of the next run of exactly `size` `char`s at or after start, or -1."""
    i = text.find(char, start)
    while i >= 0:
        run = _run_length(text, i)
        if run == size:
            return i
        i = text.find(char, i + run)
    return -1


def _link_at(text: str, i: int) -> tuple[str, str, int] | None:
    """[label](url) starting at i with an allowed scheme: (label, url, index after it), else None."""
    depth, j = 0, i
    while j < len(text):
        if text[j] == "\\":
            j += 2
            continue
        if text[j] == "[":
            depth += 1
        elif text[j] == "]":
            depth -= 1
            if depth == 0:
                break
        j += 1
    if j >= len(text) or not text.startswith("(", j + 1):
        return None
    depth, k = 0, j + 1
    while k < len(text):
        if text[k] == "(":
            depth += 1
        elif text[k] == ")":
            depth -= 1
            if depth == 0:
                break
        k += 1
    if k >= len(text):
        return None
    url = text[j + 2 : k]
    if url.startswith("<") and url.endswith(">"):
        url = url[1:-1]  # CommonMark's <destination> form (Discord uses it to suppress previews)
    # Other schemes (javascript:, relative paths) are not links: the Markdown is kept as text.
    if not _URL.fullmatch(url):
        return None
    return text[i + 1 : j], url, k + 1
