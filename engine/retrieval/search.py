"""Web research through the community's own search engine: SearXNG's JSON API for the results, the pages
fetched behind the SSRF guard (`fetch.py`), their main text read like any document, cut into passages and
ranked for the question.

The search engine itself is configured by the operator (``PARLEY_SEARCH_URL``, usually a private address
such as ``http://searxng:8080``), so it is asked through a plain session; only the result pages, whose
addresses come from the web, go through the guard.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

import aiohttp
from yarl import URL

from engine.documents import DocumentLimits, read_document
from engine.errors import DocumentRejected, ParleyError
from engine.retrieval.fetch import FetchLimits, IPNetwork, Page, fetch_many, guarded_session
from engine.retrieval.passages import Passage, split_passages
from engine.retrieval.rank import WEB_PER_PAGE, PassageIndex

log = logging.getLogger(__name__)

# Result pages fetched per question. Five missed the page that answers for 16 of bench/kb's 115 answerable
# questions served as web pages (a search engine's fifth-best hit is often not the best page); eight miss 6.
PAGES = 8
SEARCH_TIMEOUT = 10.0
MAX_QUERY_CHARS = 400
# A page is read like a sent document, under tighter limits: five of them are read for every question.
PAGE_LIMITS = DocumentLimits(max_bytes=2 * 1024 * 1024, max_pages=40, max_chars=300_000, timeout_seconds=10.0)


class SearchUnavailable(ParleyError):
    """The search engine could not be asked."""


@dataclass(frozen=True, slots=True)
class Result:
    url: str
    title: str
    snippet: str


class WebSearch:
    def __init__(
        self,
        url: str,
        *,
        allow: frozenset[IPNetwork] = frozenset(),
        limits: FetchLimits | None = None,
        pages: int = PAGES,
    ) -> None:
        self.url = URL(url.rstrip("/") + "/search")
        self.allow = allow
        self.limits = limits or FetchLimits()
        self.pages = pages

    async def results(self, query: str) -> list[Result]:
        params = {"q": query[:MAX_QUERY_CHARS], "format": "json", "safesearch": "1"}
        timeout = aiohttp.ClientTimeout(total=SEARCH_TIMEOUT)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout, trust_env=False) as session,
                session.get(self.url, params=params) as response,
            ):
                if response.status == 403:
                    # SearXNG answers 403 to format=json unless its settings.yml lists json in search.formats.
                    raise SearchUnavailable("the search engine refuses JSON queries (enable json in its formats)")
                if response.status != 200:
                    raise SearchUnavailable(f"the search engine answered HTTP {response.status}")
                data = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            log.warning("search engine at %s failed: %s", self.url.origin(), type(exc).__name__)
            raise SearchUnavailable("the search engine cannot be reached right now; try again later") from None
        results = []
        for item in data.get("results", []) if isinstance(data, dict) else []:
            if not isinstance(item, dict) or not isinstance(item.get("url"), str):
                continue
            title, snippet = item.get("title"), item.get("content")
            results.append(
                Result(
                    item["url"], title if isinstance(title, str) else "", snippet if isinstance(snippet, str) else ""
                )
            )
        return results

    async def passages(self, query: str) -> list[Passage]:
        """Every passage of the top pages (and, for a page that could not be read, its snippet)."""
        results = list({r.url: r for r in await self.results(query)}.values())[: self.pages]  # each page once
        if not results:
            return []
        async with guarded_session(self.allow) as session:
            pages = await fetch_many([r.url for r in results], session=session, limits=self.limits)
        texts = await asyncio.gather(*(_page_text(page) for page in pages))
        passages: list[Passage] = []
        for result, page, text in zip(results, pages, texts, strict=True):
            if text is None:
                reason = page.reason if not isinstance(page, Page) else "unreadable"
                log.info("result page %s not used: %s", result.url, reason)
                if result.snippet.strip():
                    passages.append(Passage(result.url, result.title or result.url, "", 0, result.snippet.strip()))
                continue
            assert isinstance(page, Page)
            title = page.title or result.title or result.url
            passages.extend(split_passages(text, source=page.url, title=title))
        return passages


async def _page_text(page: Page | Exception) -> str | None:
    if not isinstance(page, Page):
        return None
    try:
        document = await read_document(page.body, URL(page.url).name or None, page.content_type, limits=PAGE_LIMITS)
    except DocumentRejected:
        return None
    return document.text


def best_passages(passages: list[Passage], question: str, k: int, gate: float) -> list[Passage]:
    """The passages of the pages found to answer from (`PassageIndex.supporting`), best first."""
    return PassageIndex(passages).supporting(question, k, gate=gate, per_source=WEB_PER_PAGE)
