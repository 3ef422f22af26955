"""A fake web for the eval and the tests: a SearXNG-compatible search endpoint (``GET /search?q=…&format=json``
answered like SearXNG's JSON API) over pages this same server hosts, on 127.0.0.1.

Pages are added as Markdown (served as HTML) or as raw responses (any body, type, delay or redirect), so
the tests can serve slow, huge, binary, redirecting and hostile pages beside good ones. Search ranks the
pages by how many of the query's words they contain, the way a keyword engine would; pages marked
``listed=False`` never appear in results (they are only reached by redirects).
"""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

_WORD = re.compile(r"[^\W_]+")
_STRONG = re.compile(r"\*\*(\S(?:.*?\S)?)\*\*")
_EMPHASIS = re.compile(r"\*(\S(?:.*?\S)?)\*")


@dataclass
class FakePage:
    title: str
    body: bytes
    content_type: str = "text/html"
    text: str = ""  # what search matches against
    delay: float = 0.0
    redirect: str | None = None  # a Location answered with 302 instead of the body
    listed: bool = True
    snippet: str = ""


def _inline(text: str) -> str:
    # Emphasis as a real page marks it up: served as literal asterisks, it reached the model as trafilatura's
    # escaped "\*", noise no real page has.
    text = _STRONG.sub(r"<strong>\1</strong>", html.escape(text))
    return _EMPHASIS.sub(r"<em>\1</em>", text)


def markdown_page(markdown: str) -> tuple[str, bytes]:
    """A Markdown document as a simple HTML page (headings, paragraphs, lists, emphasis): its title and bytes."""
    title = next((line[2:].strip() for line in markdown.splitlines() if line.startswith("# ")), "Untitled")
    parts, items = [], []
    for block in re.split(r"\n\s*\n", markdown.strip()):
        lines = block.strip().splitlines()
        for line in lines:
            if match := re.match(r"(#{1,6}) (.*)", line):
                level = len(match[1])
                parts.append(f"<h{level}>{_inline(match[2])}</h{level}>")
            elif match := re.match(r"\s*[-*] (.*)", line):
                items.append(f"<li>{_inline(match[1])}</li>")
            else:
                if items:
                    parts.append(f"<ul>{''.join(items)}</ul>")
                    items = []
                parts.append(f"<p>{_inline(line)}</p>")
        if items:
            parts.append(f"<ul>{''.join(items)}</ul>")
            items = []
    page = (
        f"<!doctype html><html><head><title>{html.escape(title)}</title></head><body>"
        "<nav><a href='/'>Home</a> | <a href='/about'>About</a></nav>"
        f"<main><article>{''.join(parts)}</article></main><footer>Community pages</footer></body></html>"
    )
    return title, page.encode()


@dataclass
class FakeWeb:
    pages: dict[str, FakePage] = field(default_factory=dict)
    url: str = ""  # http://127.0.0.1:PORT once serving
    queries: list[str] = field(default_factory=list)
    results_per_query: int = 10  # a page of results; SearXNG merges its engines' first pages, tens of them
    search_status: int = 200  # another status makes the search endpoint fail like a broken SearXNG
    json_enabled: bool = True  # SearXNG's default settings answer format=json with 403

    def page_url(self, slug: str) -> str:
        return f"{self.url}/page/{slug}"

    def add_markdown(self, slug: str, markdown: str) -> str:
        title, body = markdown_page(markdown)
        snippet = " ".join(markdown.split()[:30])
        self.pages[slug] = FakePage(title, body, text=markdown, snippet=snippet)
        return self.page_url(slug)

    def add(self, slug: str, page: FakePage) -> str:
        self.pages[slug] = page
        return self.page_url(slug)

    def search(self, query: str) -> list[tuple[str, FakePage]]:
        terms = {w for w in _WORD.findall(query.casefold()) if len(w) > 2}
        scored = []
        for slug, page in self.pages.items():
            words = set(_WORD.findall((page.title + " " + page.text).casefold()))
            if page.listed and (hits := len(terms & words)):
                scored.append((-hits, slug, page))
        scored.sort(key=lambda item: item[:2])
        return [(slug, page) for _, slug, page in scored[: self.results_per_query]]

    async def _search(self, request: web.Request) -> web.Response:
        if request.query.get("format") != "json" or not self.json_enabled:
            return web.Response(status=403, text="format not allowed")  # as SearXNG answers without json enabled
        if self.search_status != 200:
            return web.Response(status=self.search_status, text="unavailable")
        query = request.query.get("q", "")
        self.queries.append(query)
        results = [
            {"url": self.page_url(slug), "title": page.title, "content": page.snippet, "engine": "fake"}
            for slug, page in self.search(query)
        ]
        return web.json_response({"query": query, "number_of_results": len(results), "results": results})

    async def _page(self, request: web.Request) -> web.StreamResponse:
        page = self.pages.get(request.match_info["slug"])
        if page is None:
            return web.Response(status=404, text="not found")
        if page.delay:
            await asyncio.sleep(page.delay)
        if page.redirect is not None:
            raise web.HTTPFound(page.redirect)
        return web.Response(body=page.body, content_type=page.content_type)

    @asynccontextmanager
    async def serve(self) -> AsyncIterator[FakeWeb]:
        app = web.Application()
        app.router.add_get("/search", self._search)
        app.router.add_get("/page/{slug}", self._page)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        try:
            yield self
        finally:
            await runner.cleanup()
