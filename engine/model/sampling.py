"""Token choice from one row of logits: greedy at temperature 0, else temperature/top-k/top-p."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.contract import SamplingParams


class Sampler:
    """Per-request sampling state (its own RNG, so a seed reproduces a reply)."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)
        self._seen: set[int] = set()

    def observe(self, token_ids: list[int]) -> None:
        """Tokens the repetition penalty applies to (the prompt, then each choice)."""
        if self.params.repetition_penalty != 1.0:
            self._seen.update(token_ids)

    def choose(self, logits: npt.NDArray[np.float32]) -> int:
        p = self.params
        if p.repetition_penalty != 1.0 and self._seen:
            idx = np.fromiter(self._seen, dtype=np.int64)
            vals = logits[idx]
            logits = logits.copy()
            # CTRL-style: shrink positive logits, push negative ones further down.
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
