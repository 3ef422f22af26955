"""Streaming text from a stream of token ids: never a broken character, never a lost space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: Sequence[int], skip_special_tokens: bool = ...) -> str: ...


class IncrementalDetokenizer:
    """Emits the text each new token adds.

    Decoding a token alone can drop a leading space (SentencePiece) or split a multi-byte character
    across tokens (byte-level BPE). So each step decodes a short window that starts a few tokens back
    and emits only what the window adds beyond the previous one, holding text back while the window
    ends in an incomplete UTF-8 sequence (U+FFFD). The concatenated deltas equal decoding the whole
    sequence at once.
    """

    def __init__(self, tokenizer: Decoder) -> None:
        self._tok = tokenizer
        self._ids: list[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # end of the text already emitted, in tokens

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        before = self._tok.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=True)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self._prefix, self._read = self._read, len(self._ids)
        return after[len(before) :]

    def flush(self) -> str:
        """Whatever was held back, less a character left incomplete when generation stopped."""
        before = self._tok.decode(self._ids[self._prefix : self._read], skip_special_tokens=True)
        after = self._tok.decode(self._ids[self._prefix :], skip_special_tokens=True)
        self._prefix = self._read = len(self._ids)
        return after[len(before) :].rstrip("\ufffd")


class StopMatcher:
    """Cuts the reply at the first stop string, never emitting text that could begin one."""

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = [s for s in stops if s]
        self._longest = max((len(s) for s in self._stops), default=0)
        self.text = ""
        self._sent = 0
        self.stopped = False

    def feed(self, delta: str) -> str:
        self.text += delta
        if not self._stops:
            self._sent = len(self.text)
            return delta
        window_start = max(0, self._sent - self._longest)
        hits = [i for s in self._stops if (i := self.text.find(s, window_start)) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
            self.stopped = True
            return self._emit(len(self.text))
        return self._emit(len(self.text) - self._partial_suffix())

    def flush(self) -> str:
        return self._emit(len(self.text))

    def _partial_suffix(self) -> int:
        """Length of the longest tail of the text that is a proper prefix of some stop string."""
        tail = self.text[-self._longest :]
        for n in range(min(len(tail), self._longest - 1), 0, -1):
            if any(s.startswith(tail[-n:]) for s in self._stops):
                return n
        return 0

    def _emit(self, upto: int) -> str:
        upto = max(upto, self._sent)
        out = self.text[self._sent : upto]
        self._sent = upto
        return out
