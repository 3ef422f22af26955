"""Fetching pages safely: a fake web on 127.0.0.1 (allowed explicitly) and a fake DNS, over real sockets."""

from __future__ import annotations

import asyncio
import gzip
import ipaddress
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

from engine.errors import ConfigError, FetchError
from engine.retrieval.fetch import (
    REFUSED_PRIVATE,
    AddressRefused,
    FetchLimits,
    GuardedResolver,
    IPNetwork,
    Page,
    address_allowed,
    fetch,
    fetch_many,
    guarded_session,
    literal_address,
    parse_allow,
)

LOCAL = parse_allow("127.0.0.1")  # the fake web; nothing else on this machine
NOTHING: frozenset[IPNetwork] = frozenset()
FAST = FetchLimits(timeout=2.0, deadline=3.0, max_bytes=64 * 1024)
HTML = "<html><head><title>Hello &amp;\n  welcome</title></head><body>Host: {host}</body></html>"


# --- The fake web and the fake DNS ----------------------------------------------------------------------


@dataclass
class FakeWeb:
    port: int

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


@pytest.fixture(scope="module")
async def fake_web() -> AsyncIterator[FakeWeb]:
    release = asyncio.Event()  # lets the slow page finish at teardown instead of holding the server open

    async def good(request: web.Request) -> web.Response:
        return web.Response(text=HTML.format(host=request.host), content_type="text/html")

    async def sized(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * int(request.match_info["size"]), content_type="text/plain")

    async def stream(request: web.Request) -> web.StreamResponse:
        # No Content-Length: only counting while reading can stop this one.
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for _ in range(16):
            await response.write(b"y" * 16 * 1024)
        await response.write_eof()
        return response

    bomb = gzip.compress(bytes(8 << 20))  # 8 MiB of zeros in about 8 KiB

    async def gzip_bomb(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Type": "text/html", "Content-Encoding": "gzip"})

    async def slow(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/html"})
        await response.prepare(request)
        try:
            await response.write(b"<html><title>Slow</title>")  # headers and a first bit, then nothing
            await asyncio.wait_for(release.wait(), 5)
            await response.write_eof()
        except ConnectionError:
            pass  # the client gave up, as it should
        return response

    async def hop(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return await good(request)
        raise web.HTTPFound(f"/hop/{left - 1}")  # relative, as many servers send them

    async def to(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["location"])

    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=302)

    app = web.Application()
    app.router.add_get("/good", good)
    app.router.add_get("/plain", _static(b"just text", "text/plain"))
    app.router.add_get("/doc.pdf", _static(b"%PDF-1.7\n\x00\xff", "application/pdf"))
    app.router.add_get("/binary", _static(b"\x00\x01", "application/octet-stream"))
    app.router.add_get("/sized/{size}", sized)
    app.router.add_get("/stream", stream)
    app.router.add_get("/bomb", gzip_bomb)
    app.router.add_get("/slow", slow)
    app.router.add_get("/hop/{n}", hop)
    app.router.add_get("/to", to)
    app.router.add_get("/no-location", no_location)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield FakeWeb(port=runner.addresses[0][1])
    release.set()
    await runner.cleanup()


def _static(body: bytes, content_type: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type=content_type)

    return handler


class FakeDNS(AbstractResolver):
    """Answers from a table; any other name fails as an unknown name does."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, f"fake DNS: no such name {host}")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass


DNS = {
    "wiki.test": ["127.0.0.1"],
    "intranet.test": ["10.1.2.3"],
    "metadata.test": ["169.254.169.254"],
    "mixed.test": ["10.0.0.7", "::1", "127.0.0.1"],  # only the last may be used
}


async def _fetch(url: str, allow: frozenset[IPNetwork] = LOCAL, limits: FetchLimits = FAST) -> Page:
    async with guarded_session(allow, resolver=FakeDNS(DNS)) as session:
        return await fetch(url, session=session, limits=limits)


async def _reason(url: str, allow: frozenset[IPNetwork] = LOCAL, limits: FetchLimits = FAST) -> str:
    with pytest.raises(FetchError) as caught:
        await _fetch(url, allow, limits)
    assert caught.value.url == url
    return caught.value.reason


# --- Pages ----------------------------------------------------------------------------------------------


async def test_an_html_page_comes_back_with_its_title(fake_web: FakeWeb) -> None:
    page = await _fetch(fake_web.url("/good"))

    assert page.url == fake_web.url("/good")
    assert (page.status, page.content_type, page.charset) == (200, "text/html", "utf-8")
    assert page.title == "Hello & welcome"
    assert f"Host: 127.0.0.1:{fake_web.port}".encode() in page.body


async def test_plain_text_and_pdf_come_back_as_they_are(fake_web: FakeWeb) -> None:
    text = await _fetch(fake_web.url("/plain"))
    pdf = await _fetch(fake_web.url("/doc.pdf"))

    assert (text.content_type, text.body, text.title) == ("text/plain", b"just text", None)
    assert (pdf.content_type, pdf.body, pdf.title) == ("application/pdf", b"%PDF-1.7\n\x00\xff", None)


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/binary", "not text or HTML"),
        ("/nowhere", "HTTP 404"),
        ("/no-location", "HTTP 302"),
        (f"/sized/{FAST.max_bytes + 1}", "too large"),  # refused from its Content-Length
        ("/stream", "too large"),  # 256 KiB without a Content-Length: refused while reading
        ("/bomb", "too large"),  # the cap counts decompressed bytes
    ],
)
async def test_pages_we_cannot_use_are_refused_with_a_reason(fake_web: FakeWeb, path: str, reason: str) -> None:
    assert await _reason(fake_web.url(path)) == reason


async def test_a_page_exactly_at_the_byte_cap_is_accepted(fake_web: FakeWeb) -> None:
    page = await _fetch(fake_web.url(f"/sized/{FAST.max_bytes}"))

    assert len(page.body) == FAST.max_bytes


async def test_a_page_that_stalls_times_out(fake_web: FakeWeb) -> None:
    started = time.monotonic()

    assert await _reason(fake_web.url("/slow"), limits=replace(FAST, timeout=0.3)) == "timed out"
    assert time.monotonic() - started < 2


async def test_a_closed_port_cannot_be_connected_to() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free once closed, and nothing listens on it

    assert await _reason(f"http://127.0.0.1:{port}/") == "could not connect"


# --- Redirects ------------------------------------------------------------------------------------------


async def test_up_to_three_redirects_are_followed(fake_web: FakeWeb) -> None:
    page = await _fetch(fake_web.url("/hop/3"))

    assert page.url == fake_web.url("/hop/0")
    assert page.title == "Hello & welcome"


async def test_a_fourth_redirect_is_refused(fake_web: FakeWeb) -> None:
    assert await _reason(fake_web.url("/hop/4")) == "too many redirects"


@pytest.mark.parametrize(
    ("location", "reason"),
    [
        ("http://10.0.0.1/", REFUSED_PRIVATE),
        ("http://169.254.169.254/latest/meta-data/", REFUSED_PRIVATE),
        ("http://[::1]/", REFUSED_PRIVATE),
        ("http://[::ffff:169.254.169.254]/", REFUSED_PRIVATE),
        ("http://2852039166/", REFUSED_PRIVATE),  # 169.254.169.254 as one number
        ("http://intranet.test/", REFUSED_PRIVATE),  # a name that resolves to a private address
        ("http://metadata.test/", REFUSED_PRIVATE),
        ("file:///etc/passwd", "refused: not http or https"),
        ("gopher://127.0.0.1:25/", "refused: not http or https"),
        ("http://user:secret@127.0.0.1/", "refused: credentials in URL"),
    ],
)
async def test_a_redirect_to_a_place_we_may_not_go_is_refused(fake_web: FakeWeb, location: str, reason: str) -> None:
    url = f"{fake_web.url('/to')}?{urlencode({'location': location})}"

    assert await _reason(url) == reason


# --- Hosts: literal addresses and names -----------------------------------------------------------------


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.1", "0x7F000001", "0177.0.0.1", "127.1", "127.0.0.1."]
)
async def test_every_spelling_of_an_allowed_address_is_fetched_at_its_canonical_form(
    fake_web: FakeWeb, host: str
) -> None:
    page = await _fetch(fake_web.url("/good", host=host))

    assert page.url == fake_web.url("/good")


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "2130706433", "0x7f.1", "0177.0.0.1", "127.1", "[::1]", "[::ffff:127.0.0.1]", "localhost"]
)
async def test_every_spelling_of_loopback_is_refused_when_not_allowed(fake_web: FakeWeb, host: str) -> None:
    if host == "localhost":  # through the real resolver (getaddrinfo and /etc/hosts), not the fake DNS
        url = fake_web.url("/good", host=host)
        with pytest.raises(FetchError, match=REFUSED_PRIVATE):
            async with guarded_session(NOTHING) as session:
                await fetch(url, session=session, limits=FAST)
        return
    assert await _reason(fake_web.url("/good", host=host), allow=NOTHING) == REFUSED_PRIVATE


async def test_a_name_keeps_its_host_header_while_connecting_to_the_checked_address(fake_web: FakeWeb) -> None:
    page = await _fetch(fake_web.url("/good", host="wiki.test"))

    assert f"Host: wiki.test:{fake_web.port}".encode() in page.body


async def test_only_the_allowed_addresses_of_a_name_are_connected_to(fake_web: FakeWeb) -> None:
    page = await _fetch(fake_web.url("/good", host="mixed.test"))

    assert page.status == 200


async def test_an_unknown_name_is_reported_as_such() -> None:
    assert await _reason("http://nowhere.test/") == "could not resolve host"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.org/", "refused: not http or https"),
        ("example.org/page", "refused: not http or https"),
        ("http://user@example.org/", "refused: credentials in URL"),
        ("http:///path", "refused: no host"),
        ("http://999.0.0.1/", "refused: invalid address"),
        ("http://[not-an-address]/", "refused: invalid URL"),
    ],
)
async def test_urls_we_will_not_request_are_refused_before_connecting(url: str, reason: str) -> None:
    assert await _reason(url) == reason


async def test_fetch_insists_on_a_guarded_session(fake_web: FakeWeb) -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(TypeError, match="guarded_session"):
            await fetch(fake_web.url("/good"), session=plain)


# --- Batches --------------------------------------------------------------------------------------------


async def test_a_batch_returns_one_result_per_url_in_order_within_its_deadline(fake_web: FakeWeb) -> None:
    urls = [fake_web.url("/good"), fake_web.url("/slow"), fake_web.url("/binary"), fake_web.url("/hop/1")]
    started = time.monotonic()

    async with guarded_session(LOCAL) as session:
        results = await fetch_many(urls, session=session, limits=replace(FAST, timeout=10, deadline=0.5))

    assert time.monotonic() - started < 2
    assert isinstance(results[0], Page)
    assert isinstance(results[3], Page)
    assert [str(r) for r in results[1:3]] == ["timed out", "not text or HTML"]
    assert [r.url for r in results[1:3] if isinstance(r, FetchError)] == urls[1:3]


async def test_an_empty_batch_is_empty() -> None:
    async with guarded_session(LOCAL) as session:
        assert await fetch_many([], session=session) == []


# --- The address check itself ---------------------------------------------------------------------------

REFUSED = [
    "127.0.0.1", "127.255.255.254", "10.0.0.1", "172.16.0.1", "192.168.1.1", "169.254.169.254", "100.64.0.1",
    "0.0.0.0", "224.0.0.1", "239.255.255.250", "255.255.255.255", "240.0.0.1", "198.18.0.1", "192.0.2.1",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "fec0::1", "ff02::1", "ff0e::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",  # NAT64 of loopback / metadata; local-use NAT64
    "2002:7f00:1::1", "2002:a00:1::1",  # 6to4 of 127.0.0.1 / 10.0.0.1
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "::127.0.0.1",  # deprecated IPv4-compatible form
]  # fmt: skip
PUBLIC = [
    "8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2a00:1450:4007:80e::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",
]  # fmt: skip


@pytest.mark.parametrize("address", REFUSED)
def test_non_public_addresses_are_refused(address: str) -> None:
    assert not address_allowed(ipaddress.ip_address(address), NOTHING)


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert address_allowed(ipaddress.ip_address(address), NOTHING)


def test_the_allow_list_opens_exactly_what_it_names() -> None:
    allow = parse_allow("127.0.0.1, 10.0.0.0/8 ,fd00::/8,")

    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow)
    assert address_allowed(ipaddress.ip_address("::ffff:127.0.0.1"), allow)  # the same address, mapped
    assert address_allowed(ipaddress.ip_address("10.200.0.1"), allow)
    assert address_allowed(ipaddress.ip_address("fd00::5"), allow)
    assert not address_allowed(ipaddress.ip_address("127.0.0.2"), allow)
    assert not address_allowed(ipaddress.ip_address("169.254.169.254"), allow)
    assert not address_allowed(ipaddress.ip_address("::1"), allow)


def test_parse_allow_reads_the_setting_and_refuses_nonsense() -> None:
    assert parse_allow("") == frozenset()
    assert parse_allow(" 192.168.1.0/24 ") == {ipaddress.ip_network("192.168.1.0/24")}
    with pytest.raises(ConfigError, match="'intranet'"):
        parse_allow("127.0.0.1,intranet")
    with pytest.raises(ConfigError, match=r"10\.0\.0\.1/8"):  # host bits set: probably not what was meant
        parse_allow("10.0.0.1/8")


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0X7F.0.0.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("10.1", "10.0.0.1"),
        ("169.254.43518", "169.254.169.254"),
        ("127.0.0.1.", "127.0.0.1"),
        ("::1", "::1"),
        ("::ffff:7f00:1", "::ffff:127.0.0.1"),
    ],
)
def test_literal_addresses_are_read_in_every_legacy_form(host: str, address: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.org", "localhost", "1.example", "x1", "0x7f.example", "0xzz"])
def test_names_are_not_addresses(host: str) -> None:
    # As in browsers: only a host whose last label is a number (decimal, or hex "0x...") is an address.
    assert literal_address(host) is None


@pytest.mark.parametrize("host", ["999.0.0.1", "1.2.3.4.5", "08.0.0.1", "example.123", "1.256.0.0", "::zz"])
def test_malformed_addresses_are_refused(host: str) -> None:
    with pytest.raises(FetchError, match="invalid address"):
        literal_address(host)


async def test_a_name_resolving_only_to_refused_addresses_resolves_to_nothing() -> None:
    resolver = GuardedResolver(NOTHING)  # the real getaddrinfo: localhost is in /etc/hosts

    with pytest.raises(AddressRefused):
        await resolver.resolve("localhost", 80, socket.AF_UNSPEC)


async def test_the_resolver_keeps_only_allowed_addresses() -> None:
    local = await GuardedResolver(LOCAL).resolve("localhost", 80, socket.AF_UNSPEC)
    mixed = await GuardedResolver(LOCAL, FakeDNS(DNS)).resolve("mixed.test", 80, socket.AF_UNSPEC)

    assert [result["host"] for result in local] == ["127.0.0.1"]
    assert [result["host"] for result in mixed] == ["127.0.0.1"]
