"""Split a reply into message-sized chunks without breaking its Markdown.

Guarantee (what `split_chunks` returns and the tests check): every chunk is
``reopened + original[start:end] + closed`` where ``reopened``/``closed`` are the synthetic fence lines
(empty when the chunk starts/ends outside code). The bodies ``original[start:end]`` are non-empty, in
order and do not overlap, and everything of the original outside them is whitespace. Between two
chunks inside a code block that whitespace is exactly "" or "\\n", so code survives character for
character; elsewhere any whitespace run at a split point (spaces, newlines, blank lines) is dropped,
as is leading and trailing whitespace of the whole text.

The one exception: a ```-line longer than about half the limit (an absurd info string) has to be cut,
and the pieces are then read the way each chunk sees them (a piece may open a fence of its own).
Every chunk still has balanced fences.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Literal

Length = Callable[[str], int]


def utf16_len(text: str) -> int:
    """Length as Telegram counts it: UTF-16 code units (astral characters count 2)."""
    # surrogatepass: a lone surrogate can reach us from a lossy decode and must not crash the count.
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


# Any indentation is accepted: models indent fences inside list items.
# Any whitespace counts as indentation, so that dropping whitespace at a split never changes what is a
# fence.
_FENCE = re.compile(r"\s*(`{3,}|~{3,})(.*)")
_LANGUAGE = re.compile(r"[A-Za-z0-9_+#.-]{1,32}")


@dataclass(frozen=True)
class Fence:
    char: str  # "`" or "~"
    size: int  # length of the run; the closing run must be at least as long
    language: str  # first word of the info string, "" when absent or implausible

    @property
    def opening(self) -> str:
        return self.char * self.size + self.language

    @property
    def closing(self) -> str:
        return self.char * self.size

    def is_closed_by(self, line: str) -> bool:
        body = line.strip()
        return len(body) >= self.size and body == self.char * len(body)


def fence_opened_by(line: str) -> Fence | None:
    """The fence this line opens (outside code), or None."""
    match = _FENCE.fullmatch(line)
    if match is None:
        return None
    run, info = match.group(1), match.group(2)
    if run[0] == "`" and "`" in info:  # CommonMark: that is inline code, not a fence
        return None
    words = info.split()
    # A language must be a short plain word: it is echoed into reopened fences and HTML attributes.
    language = words[0] if words and _LANGUAGE.fullmatch(words[0]) else ""
    return Fence(run[0], len(run), language)


LineKind = Literal["prose", "open", "code", "close"]


@dataclass(frozen=True)
class Line:
    start: int
    end: int  # index of the terminating "\n", or len(text) for the last line
    kind: LineKind
    fence: Fence | None  # the fence this line opens, belongs to or closes


def scan_lines(text: str) -> list[Line]:
    """Classify each line as prose, a fence opening/closing, or code inside a fence."""
    lines: list[Line] = []
    fence: Fence | None = None
    start = 0
    for raw in text.split("\n"):
        end = start + len(raw)
        if fence is None:
            fence = fence_opened_by(raw)
            lines.append(Line(start, end, "prose" if fence is None else "open", fence))
        elif fence.is_closed_by(raw):
            lines.append(Line(start, end, "close", fence))
            fence = None
        else:
            lines.append(Line(start, end, "code", fence))
        start = end + 1
    return lines


def unclosed_fence(text: str) -> Fence | None:
    """The fence still open at the end of `text` (model output is often cut off mid-block)."""
    lines = scan_lines(text)
    last = lines[-1]
    return last.fence if last.kind in ("open", "code") else None


@dataclass(frozen=True)
class Chunk:
    text: str  # what to send
    start: int  # the body is original[start:end]
    end: int
    reopened: str  # synthetic prefix: "" or the fence opening line plus "\n"
    closed: str  # synthetic suffix: "" or "\n" plus the fence closing line


# Split-point preference, best first.
PARAGRAPH, LINE, SENTENCE, SPACE = 4, 3, 2, 1
_SENTENCE_END = ".!?…。\uff01\uff1f"  # the last two: fullwidth ! and ?, which end CJK sentences


def _is_fencey(line: str) -> bool:
    return line.lstrip().startswith(("```", "~~~"))


def _is_grapheme_boundary(text: str, i: int) -> bool:
    """Approximate extended-grapheme boundary: enough to keep emoji sequences and accents whole."""
    if i <= 0 or i >= len(text):
        return True
    prev, cur = text[i - 1], text[i]
    code = ord(cur)
    if unicodedata.category(cur) in ("Mn", "Me", "Mc") or "\u200d" in (prev, cur):
        return False
    if 0xFE00 <= code <= 0xFE0F or 0x1F3FB <= code <= 0x1F3FF or 0xE0020 <= code <= 0xE01EF:
        return False  # variation selectors, skin tones, tag sequences
    if "\ud800" <= prev <= "\udbff" and "\udc00" <= cur <= "\udfff":
        return False  # a surrogate pair smuggled into a str
    if prev == "\r" and cur == "\n":
        return False
    if _is_regional(cur) and _is_regional(prev):
        run = 0
        while i - run - 1 >= 0 and _is_regional(text[i - run - 1]):
            run += 1
        return run % 2 == 0  # flags are pairs of regional indicators
    return True


def _is_regional(ch: str) -> bool:
    return 0x1F1E6 <= ord(ch) <= 0x1F1FF


class _Splitter:
    def __init__(self, text: str, limit: int, length: Length) -> None:
        self.text, self.limit, self.length = text, limit, length
        self.lines = scan_lines(text)
        self.carry: Fence | None = None  # fence the next chunk must reopen
        self.line_starts = [line.start for line in self.lines]
        # Length must be additive over code points (len and utf16_len are), so prefix sums give any slice.
        self.cum = [0, *accumulate(length(ch) for ch in text)]
        in_code = [False] * len(text)
        content = [0] * len(text)
        for line in self.lines:
            code = line.kind == "code"
            for i in range(line.start, min(line.end + 1, len(text))):
                in_code[i] = code
                # Fence lines carry no visible content: a chunk of only fences would be an empty message.
                content[i] = int(line.kind in ("prose", "code") and not text[i].isspace())
        self.in_code = in_code
        self.content = [0, *accumulate(content)]
        self.candidates = sorted(self._candidates())
        self.candidate_ends = [c[0] for c in self.candidates]

    def line_at(self, i: int) -> Line:
        return self.lines[bisect.bisect_right(self.line_starts, i) - 1]

    def droppable(self, i: int) -> bool:
        return not self.in_code[i] and self.text[i].isspace()

    def _candidates(self) -> Iterator[tuple[int, int, int]]:
        """(end of this chunk's body, start of the next body, level) for every structural split point."""
        text = self.text
        i = 0
        while i < len(text):
            if self.in_code[i]:
                line = self.line_at(i)
                if text[i] == "\n":
                    yield i, i + 1, LINE  # gap is exactly this newline
                elif (
                    text[i].isspace()
                    and not (i + 1 < len(text) and text[i + 1].isspace())
                    and not _is_fencey(text[line.start : line.end])
                ):
                    yield i + 1, i + 1, SPACE  # inside a code line: break after the spaces, drop nothing
                i += 1
                continue
            if not text[i].isspace():
                i += 1
                continue
            a = i
            while i < len(text) and self.droppable(i):
                i += 1
            run = text[a:i]
            newlines = run.count("\n")
            if newlines == 0 and i < len(text) and _is_fencey(text[self.line_at(a).start : self.line_at(a).end]):
                continue  # never split inside a fence line: the pieces would parse differently
            if newlines >= 2:
                level = PARAGRAPH
            elif newlines == 1:
                level = LINE
            elif a > 0 and (text[a - 1] in _SENTENCE_END or (a > 1 and text[a - 2] in _SENTENCE_END)):
                level = SENTENCE
            else:
                level = SPACE
            yield a, i, level

    def open_after(self, i: int) -> Fence | None:
        """Fence left open by a body whose last character is at i."""
        line = self.line_at(i)
        return line.fence if line.kind in ("open", "code") else None

    def skip_gap(self, end: int) -> int:
        """Where the next body starts after a body ending at `end`: past one newline inside code,
        past any whitespace elsewhere."""
        text, pos = self.text, end
        if pos < len(text) and self.in_code[pos] and text[pos] == "\n":
            pos += 1
        while pos < len(text) and self.droppable(pos):
            pos += 1
        return pos

    def acceptable(self, pos: int, end: int) -> bool:
        text = self.text
        if end <= pos or self.content[end] == self.content[pos]:
            return False
        last = self.line_at(end - 1)
        if last.kind == "open" and end >= last.end:
            return False  # would end on an empty code block
        if self.in_code[end - 1] and text[end - 1] == "\n":
            return False
        nxt = self.skip_gap(end)
        if nxt < len(text):
            line = self.line_at(nxt)
            if line.kind == "close" and text[line.start : nxt].strip() == "":
                return False  # the next chunk would be an empty code block
            if text[nxt : nxt + 3] in ("```", "~~~") and text[line.start : nxt].strip():
                return False  # a mid-line ``` would become a fence at the next chunk's start
        return True

    def build(self, pos: int, end: int) -> tuple[Chunk, Fence | None]:
        """The chunk for original[pos:end], and the fence it leaves open (closed by its suffix)."""
        reopened = self.carry.opening + "\n" if self.carry else ""
        body = self.text[pos:end]
        left_open = unclosed_fence(reopened + body)
        closed = "\n" + left_open.closing if left_open else ""
        return Chunk(reopened + body + closed, pos, end, reopened, closed), left_open

    def estimate(self, pos: int, end: int) -> int:
        opened = self.carry
        closing = self.open_after(end - 1)
        return (
            (self.length(opened.opening + "\n") if opened else 0)
            + self.cum[end]
            - self.cum[pos]
            + (self.length("\n" + closing.closing) if closing else 0)
        )

    def preferred_ends(self, pos: int) -> Iterator[tuple[int, int]]:
        """Candidate (end, next) pairs for a chunk starting at pos, best first."""
        limit = self.limit
        hi = bisect.bisect_right(self.cum, self.cum[pos] + limit) - 1  # no body can reach past hi
        lo_i = bisect.bisect_right(self.candidate_ends, pos)
        hi_i = bisect.bisect_right(self.candidate_ends, hi)
        window = [
            c for c in self.candidates[lo_i:hi_i] if self.estimate(pos, c[0]) <= limit and self.acceptable(pos, c[0])
        ]
        # A split at a better boundary is worth it unless it leaves the chunk nearly empty.
        for minimum in (limit // 3, 0):
            for level in (PARAGRAPH, LINE, SENTENCE, SPACE):
                ends = [c for c in window if c[2] == level and self.cum[c[0]] - self.cum[pos] >= minimum]
                for end, nxt, _ in sorted(ends, reverse=True):
                    yield end, nxt
        # Last resorts: hard split inside a word, at grapheme boundaries, then anywhere.
        for strict in (True, False):
            for end in range(hi, pos, -1):
                if strict and (not _is_grapheme_boundary(self.text, end) or self._inside_fence_line(end)):
                    continue
                if self.estimate(pos, end) <= limit and (not strict or self.acceptable(pos, end)):
                    yield end, end

    def _inside_fence_line(self, i: int) -> bool:
        line = self.line_at(i)
        return line.start < i <= line.end and _is_fencey(self.text[line.start : line.end])

    def chunks(self) -> list[Chunk]:
        text = self.text
        pos = len(text) - len(text.lstrip())
        stop = len(text.rstrip())
        out: list[Chunk] = []
        while pos < stop:
            chunk, left_open = self.build(pos, stop)
            if self.length(chunk.text) > self.limit:
                for end, _ in self.preferred_ends(pos):
                    chunk, left_open = self.build(pos, end)
                    if self.length(chunk.text) <= self.limit:
                        break
                else:
                    raise ValueError(f"limit {self.limit} is too small to make progress at offset {pos}")
            out.append(chunk)
            # Normally the fence open in the original at this point; after a forced cut through an
            # over-long fence line, whatever the previous chunk opened, so that each chunk reads alike.
            self.carry = left_open
            if left_open and self.length(f"{left_open.opening}\n\n{left_open.closing}") > self.limit // 2:
                # Fences eating half the limit leave no room for code: reopen without the language
                # (with sane limits this only follows a cut fence line, whose "language" is a fragment).
                self.carry = Fence(left_open.char, left_open.size, "")
            pos = self.skip_gap(chunk.end)
        return out


def split_chunks(text: str, limit: int, length: Length = len) -> list[Chunk]:
    """Like `split_message`, with each chunk's position in the original (see the module docstring)."""
    if limit <= 0:
        raise ValueError("limit must be positive")
    return _Splitter(text, limit, length).chunks()


def split_message(text: str, limit: int, length: Length = len) -> list[str]:
    """Chunks of at most `limit` (as measured by `length`), each with balanced code fences.

    Use ``length=len`` for Discord (code points) and ``length=utf16_len`` for Telegram. Splits prefer a
    blank line, then a line break, then a sentence end or other whitespace, and only then a hard
    break inside a word (kept off grapheme clusters). Empty or whitespace-only text gives [].
    A fence left open at the end (truncated output) is closed, even when everything fits in one chunk.
    Raises ValueError only when `limit` cannot hold a single character (plus the reopened fence).
    """
    return [chunk.text for chunk in split_chunks(text, limit, length)]
