"""Input hygiene: what is stripped from a person's text before it reaches the prompt or the store."""

from __future__ import annotations

import re
import unicodedata

from engine.errors import InputRejected

# Invisible characters that change how text is read without being seen: C0/C1 controls (except tab
# and newline), zero-width and bidi controls, the tag block (used to smuggle hidden instructions) and
# variation selectors.
_INVISIBLE = re.compile(
    "["
    "\x00-\x08\x0b-\x1f\x7f-\x9f"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufe00-\ufe0f"
    "\U000e0000-\U000e007f"
    "\U000e0100-\U000e01ef"
    "]"
)


def clean_text(text: str) -> str:
    text = unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))
    return _INVISIBLE.sub("", text).strip()


def check_input(text: str, *, max_chars: int) -> str:
    """The cleaned text, or InputRejected with a message that says what to change."""
    if not isinstance(text, str):
        raise InputRejected("the message must be text")
    if len(text) > max_chars * 4:
        # Refuse pathological sizes before spending time cleaning them.
        raise InputRejected(f"your message is too long: the limit is {max_chars} characters")
    cleaned = clean_text(text)
    if not cleaned:
        raise InputRejected("your message is empty: there is nothing to answer")
    if len(cleaned) > max_chars:
        raise InputRejected(
            f"your message is too long ({len(cleaned)} characters): the limit is {max_chars} characters"
        )
    return cleaned
