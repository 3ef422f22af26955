"""Cutting a document into passages small enough to rank and to quote to the model.

Tokens are approximated by words (whitespace-separated), which is close enough for English and French
prose and needs no tokenizer; text without spaces (Chinese, Japanese) counts as few very long "words".
Cuts follow the document's structure: a passage never spans two sections, paragraphs are kept whole when
they fit, and only a paragraph too long for one passage is cut between sentences (and a run-on
"sentence" too long for one passage between words).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import groupby, pairwise
from typing import Literal, NamedTuple

TARGET_WORDS = 180
MAX_WORDS = 300
SECTION_SEPARATOR = " > "

# CommonMark ATX headings: 1 to 6 '#' then a space or the end of the line ("#hashtag" is not a heading),
# with an optional closing run of '#'.
_HEADING = re.compile(r"(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*")
_FENCES = ("```", "~~~")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


@dataclass(frozen=True, slots=True)
class Passage:
    source: str  # document name or URL
    title: str
    section: str  # heading path, "Rules > Membership"; "" before the first heading
    index: int  # position in the document, from 0
    text: str


def split_passages(
    text: str,
    *,
    source: str,
    title: str | None = None,
    target_words: int = TARGET_WORDS,
    max_words: int = MAX_WORDS,
) -> list[Passage]:
    """Passages of about ``target_words`` words and never more than ``max_words``.

    ``title`` defaults to the document's first level-1 heading, else to ``source``. Heading lines are not
    repeated in the passages' text: they are in ``section``.
    """
    if not 0 < target_words <= max_words:
        raise ValueError("need 0 < target_words <= max_words")
    lines = _lines(text)
    if title is None:
        title = next((line.text for line in lines if line.kind == "heading" and line.level == 1 and line.text), source)
    passages: list[Passage] = []
    for section, section_blocks in groupby(_blocks(lines), key=lambda block: block[0]):
        units = [(n, unit) for n, (_, paragraph) in enumerate(section_blocks) for unit in _units(paragraph, max_words)]
        for chunk in _pack(units, target_words, max_words):
            passages.append(Passage(source, title, section, len(passages), chunk))
    return passages


class _Line(NamedTuple):
    kind: Literal["heading", "blank", "text"]
    text: str  # a heading's title without the '#'s
    level: int = 0  # headings only


def _lines(text: str) -> list[_Line]:
    """Classifies lines; fenced code is all text (a "# comment" in a shell snippet is not a heading, and
    a blank line in code does not end its paragraph)."""
    lines: list[_Line] = []
    fence: str | None = None
    for line in text.splitlines():
        stripped = line.strip()
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            lines.append(_Line("text", line))
        elif stripped.startswith(_FENCES):
            fence = stripped[:3]
            lines.append(_Line("text", line))
        elif match := _HEADING.fullmatch(line):
            lines.append(_Line("heading", (match[2] or "").strip(), len(match[1])))
        elif not stripped:
            lines.append(_Line("blank", ""))
        else:
            lines.append(_Line("text", line))
    return lines


def _blocks(lines: list[_Line]) -> list[tuple[str, str]]:
    """(section path, paragraph) for every paragraph, in document order."""
    blocks: list[tuple[str, str]] = []
    path: list[_Line] = []  # the headings above the current line, outermost first
    paragraph: list[str] = []
    for line in [*lines, _Line("blank", "")]:
        if line.kind == "text":
            paragraph.append(line.text)
            continue
        if paragraph:
            section = SECTION_SEPARATOR.join(heading.text for heading in path if heading.text)
            blocks.append((section, "\n".join(paragraph)))
            paragraph = []
        if line.kind == "heading":
            path = [*(heading for heading in path if heading.level < line.level), line]
    return blocks


def _words(text: str) -> int:
    return len(text.split())


def _units(paragraph: str, max_words: int) -> list[str]:
    if _words(paragraph) <= max_words:
        return [paragraph]
    units: list[str] = []
    for sentence in _SENTENCE_END.split(paragraph):
        words = sentence.split()
        units.extend(" ".join(words[start : start + max_words]) for start in range(0, len(words), max_words))
    return units


def _pack(units: list[tuple[int, str]], target_words: int, max_words: int) -> list[str]:
    """Greedy: a passage takes units until it reaches the target or the next unit would pass the maximum.

    ``units`` are (paragraph number, text): pieces of one paragraph are joined by a space, paragraphs by a
    blank line, so a passage keeps the document's layout.
    """
    groups: list[list[tuple[int, str]]] = []
    count = 0
    for unit in units:
        words = _words(unit[1])
        if not groups or count >= target_words or count + words > max_words:
            groups.append([])
            count = 0
        groups[-1].append(unit)
        count += words
    return [_join(group) for group in groups]


def _join(group: list[tuple[int, str]]) -> str:
    text = group[0][1]
    for (previous, _), (paragraph, unit) in pairwise(group):
        text += (" " if paragraph == previous else "\n\n") + unit
    return text
