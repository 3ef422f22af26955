"""Bytes to text for the plain-text kinds, the clean-up every extracted text gets, and the collector that
stops extraction at the character limit and the deadline."""

from __future__ import annotations

import re
import time

import charset_normalizer

from engine.documents.document import DocumentLimits
from engine.errors import DocumentRejected

# Line breaks in all their spellings (CR, form feed between PDF pages, Unicode separators) become "\n".
_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e\x85\u2028\u2029]")
# Controls other than tab and newline, stray byte-order marks, and the Unicode tag block: invisible
# characters a document can use to hide instructions from the person who sends it. Zero-width joiners and
# bidi marks stay: scripts such as Persian and Hindi need them.
_INVISIBLE = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f\ufeff\U000e0000-\U000e007f]")
# Lone surrogates (from undecodable bytes in e-mail headers or PDF strings) cannot be encoded as UTF-8.
_SURROGATES = re.compile("[\ud800-\udfff]")
_BLANK_LINES = re.compile(r"\n[ \t]*(?=\n)")
_BLANK_RUNS = re.compile(r"\n{3,}")
# Text with this many controls in it is a binary file that happened to decode. Bytes that are not UTF-8 must
# look cleaner: any byte decodes in a legacy encoding, and a PDF's compressed streams read that way are ~5%
# controls.
_CONTROLS = re.compile("[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f-\x9f]")
_MAX_CONTROL_SHARE = {True: 0.05, False: 0.01}
_SAMPLE = 65_536
# The legacy encoding most non-UTF-8 text is in (Windows' Western European); charset-normalizer ranks it
# below look-alikes (cp1250, cp1257) on short French or German text, so it is preferred whenever it fits.
_USUAL_LEGACY = "cp1252"


def normalise(text: str) -> str:
    text = _SURROGATES.sub("\ufffd", _INVISIBLE.sub("", _BREAKS.sub("\n", text)))
    return _BLANK_RUNS.sub("\n\n", _BLANK_LINES.sub("\n", text)).strip("\n")


def decode(data: bytes) -> tuple[str, bool] | None:
    """The text and whether it was UTF-8, or None when the bytes are not text."""
    try:
        text, utf8 = data.decode("utf-8-sig"), True
    except UnicodeDecodeError as error:
        if error.reason == "unexpected end of data":
            # UTF-8 cut inside its last character (a cut-off download): not a reason to guess another encoding.
            text, utf8 = data[: error.start].decode("utf-8-sig"), True
        else:
            text, utf8 = _decode_legacy(data), False
    sample = text[:_SAMPLE]
    if len(_CONTROLS.findall(sample)) > _MAX_CONTROL_SHARE[utf8] * len(sample):
        return None
    return text, utf8


def _decode_legacy(data: bytes) -> str:
    results = charset_normalizer.from_bytes(data)
    if any(match.encoding == _USUAL_LEGACY for match in results):
        return data.decode(_USUAL_LEGACY, errors="replace")
    best = results.best()
    # latin-1 decodes any bytes: binary content then fails the control-character test in decode().
    return str(best) if best is not None else data.decode("latin-1")


class TextSink:
    """Collects extracted pieces until max_chars; raises DocumentRejected once past the deadline."""

    def __init__(self, limits: DocumentLimits, deadline: float) -> None:
        self._max_chars = limits.max_chars
        self._timeout = limits.timeout_seconds
        self._deadline = deadline
        self._parts: list[str] = []
        self._size = 0
        self._skipped = False

    def wants_more(self) -> bool:
        """Asked before extracting each piece (page, paragraph), so a long extraction stops on time."""
        self.check_time()
        if self._size > self._max_chars:
            self._skipped = True
            return False
        return True

    def check_time(self) -> None:
        if time.monotonic() > self._deadline:
            raise DocumentRejected(too_slow(self._timeout))

    def add(self, piece: str) -> None:
        self._parts.append(piece)
        self._size += len(piece)

    def result(self) -> tuple[str, bool]:
        """The normalised text and whether it was cut at max_chars."""
        text = normalise("".join(self._parts))
        if len(text) > self._max_chars:
            return text[: self._max_chars].rstrip(), True
        return text, self._skipped


def too_slow(timeout: float) -> str:
    return f"reading this document took too long (over {timeout:g} seconds)"
