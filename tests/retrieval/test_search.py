"""Web research against a fake SearXNG and a fake web on 127.0.0.1, over real sockets: good pages become
ranked passages; slow, huge, binary and redirecting-to-private pages are left out (their snippets stand in);
a broken search engine is a clear error. The address checks themselves are tested in test_fetch.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from bench.fakeweb import FakePage, FakeWeb
from engine.retrieval.fetch import FetchLimits, parse_allow
from engine.retrieval.passages import Passage
from engine.retrieval.rank import WEB_GATE_COVERAGE, WEB_PER_PAGE
from engine.retrieval.search import SearchUnavailable, WebSearch, best_passages

KILN = (
    "# Kiln firing at the Ropewalk\n\n## Schedule\n\nThe big kiln is fired every second Thursday to 1,240 degrees. "
    "Pieces must be bone dry and signed on the base; the firing log is kept by the steward on duty, who checks "
    "every shelf before the door is sealed.\n\n## Loading\n\nBisque loads go in on Tuesday evening between "
    "18:45 and 21:00. Glaze loads need a kiln shelf paper under every piece that could run, and nothing taller "
    "than 40 centimetres fits the top shelf.\n"
)
GARDEN = (
    "# Quarry Lane garden\n\n## Plots\n\nA garden plot costs 23 euros a season; the kiln is not there. Plots are "
    "given out in March by lot, and a plot left untended for six weeks goes back to the waiting list after one "
    "written reminder from the garden secretary.\n"
)
LOCAL = parse_allow("127.0.0.1")
FAST = FetchLimits(timeout=1.0, deadline=2.0, max_bytes=64 * 1024)


@pytest.fixture
async def web() -> AsyncIterator[FakeWeb]:
    web = FakeWeb()
    web.add_markdown("kiln", KILN)
    web.add_markdown("garden", GARDEN)
    async with web.serve():
        yield web


async def test_pages_found_are_read_and_ranked(web: FakeWeb) -> None:
    search = WebSearch(web.url, allow=LOCAL, limits=FAST)
    passages = await search.passages("When is the kiln fired?")
    assert web.queries == ["When is the kiln fired?"]
    assert {p.source for p in passages} == {web.page_url("kiln"), web.page_url("garden")}
    kiln = next(p for p in passages if p.source == web.page_url("kiln"))
    assert kiln.title == "Kiln firing at the Ropewalk"
    assert "1,240 degrees" in kiln.text
    assert "Home" not in kiln.text
    best = best_passages(passages, "When is the kiln fired?", 3, 0.5)
    assert [p.source for p in best] == [web.page_url("kiln")]


def test_one_page_cannot_take_every_place_among_the_passages_given() -> None:
    fees = [Passage("http://a/fees", "Fees", "", i, f"The rowing season fee is 149 euros, rule {i}.") for i in range(5)]
    minutes = Passage("http://b/minutes", "Minutes", "", 0, "The rowing season fee was 139 euros last year.")
    best = best_passages([*fees, minutes], "What is the rowing season fee?", 4, WEB_GATE_COVERAGE)
    assert [p.source for p in best] == ["http://a/fees"] * WEB_PER_PAGE + ["http://b/minutes"]


async def test_emphasis_on_a_page_reads_as_the_markdown_it_was_written_in() -> None:
    # The words as the knowledge base reads them from the Markdown, not escaped asterisks (\*Sorrel\*).
    rule = "**Decision:** the *Sorrel* stays ashore until March, and 3 * 4 oars go to the loft."
    web = FakeWeb()
    web.add_markdown("boats", f"# Boats\n\n## Winter\n\n{rule}\n\n{KILN}")
    async with web.serve():
        passages = await WebSearch(web.url, allow=LOCAL, limits=FAST).passages("Sorrel boat")
    assert rule.replace("3 * 4", "3 \\* 4") in passages[0].text


async def test_pages_that_cannot_be_read_give_their_snippet_or_nothing() -> None:
    private = "http://169.254.169.254/latest/meta-data/"
    web = FakeWeb()
    web.add_markdown("kiln", KILN)
    web.add("slow", FakePage("Slow kiln", b"<p>late</p>", text="kiln", delay=5, snippet="Slow kiln snippet"))
    web.add("huge", FakePage("Huge kiln", b"<p>" + b"kiln " * 40_000 + b"</p>", text="kiln"))
    web.add("binary", FakePage("Kiln photo", bytes(range(256)) * 10, "image/png", text="kiln", snippet="A photo"))
    web.add("bounce", FakePage("Kiln admin", b"", text="kiln", redirect=private, snippet="Kiln admin page"))
    web.add("garbage", FakePage("Kiln pdf", b"%PDF-1.7 garbage", "application/pdf", text="kiln"))
    web.results_per_query = 10
    async with web.serve():
        passages = await WebSearch(web.url, allow=LOCAL, limits=FAST, pages=10).passages("kiln")
    by_source = {p.source: p.text for p in passages}
    assert web.page_url("kiln") in by_source
    assert by_source[web.page_url("slow")] == "Slow kiln snippet"  # timed out: the search engine's snippet
    assert by_source[web.page_url("binary")] == "A photo"  # not text
    assert by_source[web.page_url("bounce")] == "Kiln admin page"  # redirected to a private address: refused
    assert web.page_url("huge") not in by_source  # too large, and no snippet
    assert web.page_url("garbage") not in by_source  # a damaged PDF
    assert all("late" not in text and "meta-data" not in text for text in by_source.values())


async def test_nothing_found_is_an_empty_list(web: FakeWeb) -> None:
    assert await WebSearch(web.url, allow=LOCAL).passages("zebra xylophone") == []


async def test_private_result_pages_are_refused_without_the_allow_list(web: FakeWeb) -> None:
    # The search engine itself is the operator's (a private address is fine), the pages it finds are not.
    passages = await WebSearch(web.url, limits=FAST).passages("kiln fired")
    assert {p.text for p in passages} <= {" ".join(KILN.split()[:30]), " ".join(GARDEN.split()[:30])}


async def test_a_broken_search_engine_is_a_clear_error(web: FakeWeb) -> None:
    web.search_status = 502
    with pytest.raises(SearchUnavailable, match="HTTP 502"):
        await WebSearch(web.url, allow=LOCAL).results("kiln")
    with pytest.raises(SearchUnavailable, match="cannot be reached"):
        await WebSearch("http://127.0.0.1:9", allow=LOCAL).results("kiln")


async def test_a_search_engine_without_json_says_how_to_fix_it(web: FakeWeb) -> None:
    web.json_enabled = False
    with pytest.raises(SearchUnavailable, match="enable json in its formats"):
        await WebSearch(web.url, allow=LOCAL).results("kiln")
