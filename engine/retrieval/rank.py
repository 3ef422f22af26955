"""Ranking passages for a question with BM25, and telling "the documents answer this" from "a common word
happened to match".

BM25 scores only compare passages for one query: a score of 7 means nothing on its own. For that,
`coverage()` measures how much of the query a passage contains, each query term weighted by its IDF (rare,
telling words count more, words the documents never use count most), and `supporting()` gives an answer
its sources only when the best passage covers enough of the question. A query none of whose words occur
gets no hits at all; one that only shares a common word with the documents gets hits that cover little.

Tokenisation is deliberately simple and language-agnostic: case-folded, accents removed (people often type
French without them), runs of Unicode letters and digits, a tiny English and French stopword list, and a
light plural fold (a final "s") that suits both languages.
"""

from __future__ import annotations

import logging
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable

import bm25s  # type: ignore[import-untyped]  # no type hints shipped (0.3)
import numpy as np

from engine.retrieval.passages import Passage

# bm25s sets its own logger to DEBUG when imported: every index built would print a line past our log level.
logging.getLogger("bm25s").setLevel(logging.WARNING)

# An answer is grounded when the best of the top passages covers GATE_COVERAGE of the question; it is then
# given those of them covering FLOOR_COVERAGE. Chosen on bench/kb (python -m bench.eval_kb; the README's
# "Answers with sources" has the sweep): at 0.35/0.2 the passage holding the answer is given for 86 of 88
# one-passage questions, while 11 of 13 general-knowledge questions get no sources (and are answered as
# without a knowledge base). One threshold of 0.5 for both gave the answer's passage for only 65 of 88.
GATE_COVERAGE = 0.35
FLOOR_COVERAGE = 0.2
# The pages a web search returns were chosen for the question's words, so within them those words are
# common and weigh little, and the question's other words (which no page uses) weigh the more: the same
# passage covers less of the question among search results than in a whole knowledge base (0.34 against
# 0.41 for the passage that answers "How big a surplus did the Commons have in 2025?"). On bench/kb served
# as web pages, 0.32 passes as many answerable questions' passages as GATE_COVERAGE does in the knowledge
# base (111 of 115) and as many unanswerable ones (27 of 29); 0.35 passed 108.
WEB_GATE_COVERAGE = 0.32
# A search engine's results are different pages, but one long page can hold every passage that ranks
# best: its passages all share the question's words. At most this many passages come from one page, so
# another page the search found always gets a place. On bench/kb served as web pages, 3 of 4 changes the
# passages of 7 of 157 questions, and gives the answer's passage to one more (the council minutes that
# give last year's rowing fee, below four passages of the fees page); 2 of 4 changes 25 and trades one
# two-passage question for another. In the knowledge base, whose documents are not chosen by a search
# engine, a cap of 3 would change 8 questions' passages and give no answer's passage to one more.
WEB_PER_PAGE = 3

# Only words so common that they carry no meaning in a question; a long list would drop real terms.
_ENGLISH = (
    "a about an and are as at be by can do does for from has have how i in is it many me much my of on or our"
    " please that the there this to was we what when where which who why will with you your"
)
# Accents removed, as tokens are; the single letters come from elisions: l'adhésion, qu'il, c'est. The
# question words are here because most French questions start with one ("comment" is also English, but
# an English question about comments still has its other words).
_FRENCH = (
    "au aux avec c ce ces combien comment d dans de des du elle en est et il ils j je l la le les leur m ma mais"
    " mes mon n ne nous ou par pas pour qu quel quelle quelles quels que qui s sa se ses son sur t ta te tes ton"
    " tu un une vos votre vous y"
)
STOPWORDS = frozenset(_ENGLISH.split() + _FRENCH.split())

_WORD = re.compile(r"[^\W_]+")  # letters and digits of any script; "_" splits like punctuation


def tokenize(text: str) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    plain = "".join(char for char in decomposed if not unicodedata.combining(char))
    return [_fold_plural(word) for word in _WORD.findall(plain) if word not in STOPWORDS]


def _fold_plural(word: str) -> str:
    # "members"/"member", "membres"/"membre"; short words ("bus") and "-ss" ("class") are left alone.
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


def _indexed_text(passage: Passage) -> str:
    # The headings above a passage often name its subject when its own text does not.
    return f"{passage.title}\n{passage.section}\n{passage.text}"


def _query_terms(query: str) -> list[str]:
    return list(dict.fromkeys(tokenize(query)))  # each term once, in order: repeating a word is not asking more


class PassageIndex:
    """BM25 over a fixed set of passages (title, section path and text are all searched)."""

    def __init__(self, passages: Iterable[Passage]) -> None:
        self.passages = tuple(passages)
        documents = [tokenize(_indexed_text(passage)) for passage in self.passages]
        self._terms = [frozenset(document) for document in documents]
        self._document_frequency = Counter(term for terms in self._terms for term in terms)
        self._bm25 = bm25s.BM25()  # Lucene's variant, k1=1.5, b=0.75
        if self._document_frequency:  # bm25s cannot index a corpus without a single term
            self._bm25.index(documents, show_progress=False)

    def __len__(self) -> int:
        return len(self.passages)

    def search(self, query: str, k: int = 5) -> list[tuple[Passage, float]]:
        """The best ``k`` passages sharing at least one term with the query, best first (ties in document
        order)."""
        terms = _query_terms(query)
        known = [term for term in terms if term in self._document_frequency]
        if not known or k <= 0:
            return []
        scores = np.asarray(self._bm25.get_scores(known), dtype=np.float64)
        hits: list[tuple[Passage, float]] = []
        for i in np.argsort(-scores, kind="stable"):
            if scores[i] <= 0.0 or len(hits) == k:
                break
            hits.append((self.passages[i], float(scores[i])))
        return hits

    def supporting(
        self,
        query: str,
        k: int,
        *,
        gate: float = GATE_COVERAGE,
        floor: float = FLOOR_COVERAGE,
        per_source: int | None = None,
    ) -> list[Passage]:
        """The passages to answer ``query`` from, best first: none unless one of the best ``k`` covers
        ``gate`` of it, else those of the best ``k`` that cover ``floor``. With ``per_source``, the best
        ``k`` take at most that many passages of one document or page."""
        taken: Counter[str] = Counter()
        hits: list[tuple[Passage, float]] = []
        for passage, _ in self.search(query, len(self.passages) if per_source else k):
            if per_source and taken[passage.source] >= per_source:
                continue
            taken[passage.source] += 1
            hits.append((passage, self.coverage(query, passage)))
            if len(hits) == k:
                break
        if not hits or max(coverage for _, coverage in hits) < gate:
            return []
        return [passage for passage, coverage in hits if coverage >= floor]

    def coverage(self, query: str, passage: Passage) -> float:
        """The IDF-weighted share of the query's terms that occur in the passage, from 0 to 1."""
        return self._coverage(_query_terms(query), frozenset(tokenize(_indexed_text(passage))))

    def _coverage(self, terms: list[str], present: frozenset[str]) -> float:
        if not terms:
            return 0.0
        weights = {term: self._idf(term) for term in terms}
        return sum(weight for term, weight in weights.items() if term in present) / sum(weights.values())

    def _idf(self, term: str) -> float:
        # Lucene's IDF, the one bm25s scores with; a term no passage contains gets the highest weight.
        count, frequency = len(self.passages), self._document_frequency[term]
        return math.log(1.0 + (count - frequency + 0.5) / (frequency + 0.5))
