"""Token choice from one row of logits (greedy at temperature 0, else temperature/top-k/top-p), where the
defaults come from, and the guard that ends a reply stuck repeating itself."""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.contract import SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SamplingDefaults:
    """The sampling fields one source sets (a setting, a model's generation_config.json); None leaves the
    field to the next source."""

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None

    def over(self, below: SamplingDefaults | None) -> SamplingDefaults:
        """These fields, each one unset here taken from ``below``."""
        if below is None:
            return self
        return SamplingDefaults(*(
            getattr(self, f.name) if getattr(self, f.name) is not None else getattr(below, f.name)
            for f in fields(self)
        ))  # fmt: skip

    @property
    def empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def params(self, *, max_tokens: int, seed: int | None) -> SamplingParams:
        """Complete parameters: the fields unset here take FALLBACK's."""
        f = FALLBACK
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=f.temperature if self.temperature is None else self.temperature,
            top_p=f.top_p if self.top_p is None else self.top_p,
            top_k=f.top_k if self.top_k is None else self.top_k,
            repetition_penalty=f.repetition_penalty if self.repetition_penalty is None else self.repetition_penalty,
            seed=seed,
        )


# For a model whose folder sets no sampling field (every GGUF import: transformers writes only token ids
# there), Parley does what transformers does with such a file: greedy. Measured on the bundled SmolLM2
# (README, "Sampling"), sampling did not make its replies loop less and made its answers wrong more often;
# the LoopGuard is what ends its loops.
FALLBACK = SamplingParams(temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0)


# generation_config.json's sampling fields (transformers' names and meanings) and the values each may take.
_GENERATION_FIELDS: dict[str, tuple[float, float]] = {
    "temperature": (0.0, 100.0),
    "top_p": (0.0, 1.0),  # 0 excluded
    "top_k": (0, 1 << 31),
    "repetition_penalty": (0.0, 100.0),  # 0 excluded
}


def generation_defaults(config: Mapping[str, Any]) -> SamplingDefaults | None:
    """The sampling fields of a parsed generation_config.json; None when it sets none. A field of the wrong
    type or out of range is ignored (logged), never fatal."""
    found: dict[str, Any] = {}
    for name, (low, high) in _GENERATION_FIELDS.items():
        value = config.get(name)
        if value is None:
            continue
        valid = isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high
        if name in ("top_p", "repetition_penalty"):
            valid = valid and value > 0
        if name == "top_k":
            valid = valid and float(value).is_integer()
        if not valid:
            log.warning("generation_config.json: ignoring %s=%r (not a valid value)", name, value)
            continue
        found[name] = int(value) if name == "top_k" else float(value)
    defaults = SamplingDefaults(**found)
    # transformers samples only with do_sample: an explicit false means the model's authors want greedy.
    if config.get("do_sample") is False:
        defaults = replace(defaults, temperature=0.0)
    return None if defaults.empty else defaults


class Sampler:
    """Per-request sampling state (its own RNG, so a seed reproduces a reply)."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._seen: set[int] = set()
        self._seen_ids: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)

    def observe(self, token_ids: list[int]) -> None:
        """Tokens the repetition penalty applies to: the prompt, then each choice (as transformers and vLLM
        do, so a model's own repetition_penalty means what its authors tuned it for)."""
        if self.params.repetition_penalty != 1.0:
            new = set(token_ids) - self._seen
            if new:
                self._seen.update(new)
                self._seen_ids = np.fromiter(self._seen, dtype=np.int64, count=len(self._seen))

    def choose(self, logits: npt.NDArray[np.float32]) -> int:
        p = self.params
        if p.logit_bias:
            logits = logits.copy()
            for token, bias in p.logit_bias:
                if token < logits.shape[0]:  # an id past the vocabulary names no token: nothing to bias
                    logits[token] += bias
        if p.repetition_penalty != 1.0 and self._seen_ids.size:
            idx = self._seen_ids[self._seen_ids < logits.shape[0]]
            vals = logits[idx]
            logits = logits.copy()
            # transformers' RepetitionPenaltyLogitsProcessor: divide positive logits, multiply negative ones
            # (either way the token gets less likely), before temperature and the top-k/top-p cuts.
            logits[idx] = np.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
        if p.temperature == 0.0:
            token = int(np.argmax(logits))
        else:
            token = self._sample(logits.astype(np.float64) / p.temperature)
        self.observe([token])
        return token

    def _sample(self, scaled: npt.NDArray[np.float64]) -> int:
        p = self.params
        if 0 < p.top_k < scaled.shape[0]:
            candidates = np.argpartition(-scaled, p.top_k - 1)[: p.top_k]
        else:
            candidates = np.arange(scaled.shape[0])
        vals = scaled[candidates]
        order = np.argsort(-vals, kind="stable")
        candidates, vals = candidates[order], vals[order]
        probs = np.exp(vals - vals[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            # Keep the smallest prefix whose mass reaches top_p (always at least one token).
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
            candidates, probs = candidates[:keep], probs[:keep] / probs[:keep].sum()
        return int(candidates[self._rng.choice(len(candidates), p=probs)])


class LoopGuard:
    """Spots a reply stuck in a loop: its newest tokens are one span of ``k`` tokens (1 <= k <=
    ``max_period``) over and over, at least ``min_copies`` times in a row and over at least ``min_span``
    tokens (so a short span needs more copies: "0, 0, 0, 0" is not a loop, 64 tokens of it are).

    Only exact repetition counts, so lines that differ in a number, a name or a word never trip it. The
    newest r tokens each equal the one k before them <=> the newest r + k tokens repeat one k-token span;
    so it keeps, for each k, that run r. A new token extends the runs of the distances at which it occurred
    before (at most ``max_period`` of them, usually a few) and ends all the others: a few microseconds a
    token, whatever the reply's length.
    """

    def __init__(self, *, max_period: int = 128, min_copies: int = 3, min_span: int = 64) -> None:
        self._max_period = max_period
        self._needed = _runs_needed(max_period, min_copies, min_span)
        self._where: dict[int, deque[int]] = {}  # token -> its positions among the last max_period
        self._runs: dict[int, int] = {}  # k -> run (absent: 0)
        self._n = 0
        self.period = 0  # the looping span's length in tokens, once one is found

    def push(self, token: int) -> bool:
        """Add the reply's next token; True when the reply is looping."""
        n = self._n
        self._n += 1
        where = self._where.setdefault(token, deque())
        while where and n - where[0] > self._max_period:
            where.popleft()
        runs: dict[int, int] = {}
        for p in reversed(where):  # nearest first: the shortest span is the one reported
            k = n - p
            runs[k] = run = self._runs.get(k, 0) + 1
            if run >= self._needed[k] and not self.period:
                self.period = k
        where.append(n)
        self._runs = runs
        return self.period > 0


@functools.cache
def _runs_needed(max_period: int, min_copies: int, min_span: int) -> tuple[int, ...]:
    """[k]: the run that makes a k-periodic tail a loop (the same for every reply: computed once)."""
    return (0, *(max((min_copies - 1) * k, min_span - k) for k in range(1, max_period + 1)))
