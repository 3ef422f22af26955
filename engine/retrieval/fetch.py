"""Fetching web pages for a person's question without letting a URL reach into the host's own network.

The guard against server-side request forgery sits where the connection is made: `guarded_session()`
builds an aiohttp session whose resolver drops every address that is not public (or explicitly allowed),
so the socket can only ever be opened to an address that passed the check. Checking a name first and
connecting later would let a DNS answer change in between (DNS rebinding). aiohttp connects to literal IP
hosts without asking the resolver, so `fetch()` checks those itself, and it follows redirects one by one
so that every hop goes through both checks again.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ipaddress
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from html.parser import HTMLParser

import aiohttp
from aiohttp import hdrs
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

from engine.errors import ConfigError, FetchError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = HTML_TYPES | {"text/plain", "application/pdf"}  # PDF bytes are passed on untouched

USER_AGENT = "Parley/0.1 (self-hosted chat assistant; fetches pages people ask about)"
_ACCEPT = "text/html, application/xhtml+xml, text/plain;q=0.9, application/pdf;q=0.8"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TITLE_SCAN_BYTES = 64 * 1024  # the title lives in <head>; parsing megabytes for it would stall the event loop
_TITLE_MAX_CHARS = 300

REFUSED_PRIVATE = "refused: private address"


class AddressRefused(OSError):
    """Raised by the resolver when a name has no address we may connect to.

    An OSError, so aiohttp reports it as a connection error carrying this exception, which `fetch()`
    turns back into "refused: private address".
    """


@dataclass(frozen=True, slots=True)
class FetchLimits:
    """Bounds on one fetch and on a batch of them.

    A body larger than ``max_bytes`` is refused ("too large"), not truncated: a cut PDF cannot be opened
    and a cut page may end mid-sentence without anyone noticing. Reading stops as soon as the cap is
    passed, and a declared Content-Length over the cap is refused before reading anything. The cap counts
    bytes after aiohttp's decompression, so a small gzip bomb is refused as well.
    """

    timeout: float = 10.0  # one page, every redirect hop included
    deadline: float = 20.0  # a whole fetch_many() batch; pages not done by then are "timed out"
    max_bytes: int = 2 * 1024 * 1024
    max_redirects: int = 3
    concurrency: int = 8  # pages fetched at once by fetch_many()
    content_types: frozenset[str] = TEXT_TYPES


DEFAULT_LIMITS = FetchLimits()


@dataclass(frozen=True, slots=True)
class Page:
    url: str  # after redirects
    status: int
    content_type: str  # media type only, lower case ("text/html")
    charset: str | None  # from the Content-Type header, for whoever decodes the body
    body: bytes
    title: str | None  # HTML pages only, when they have one


# --- Address checks -------------------------------------------------------------------------------------

# RFC 6052's well-known NAT64 prefix embeds an IPv4 address in its last 32 bits; 64:ff9b:1::/48 is for
# local use only.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")


def parse_allow(text: str) -> frozenset[IPNetwork]:
    """Parses PARLEY_FETCH_ALLOW: comma-separated IP addresses or networks that may be fetched even though
    they are not public (an intranet wiki, a test server on 127.0.0.1)."""
    networks: set[IPNetwork] = set()
    for part in text.split(","):
        if not (part := part.strip()):
            continue
        try:
            # strict: "10.0.0.1/8" is more likely a typo than a wish to open all of 10/8
            networks.add(ipaddress.ip_network(part, strict=True))
        except ValueError:
            raise ConfigError(f"PARLEY_FETCH_ALLOW: {part!r} is not an IP address or network") from None
    return frozenset(networks)


def is_public(ip: IPAddress) -> bool:
    """True for addresses on the public internet; false for loopback, private, link-local (cloud metadata
    at 169.254.169.254), carrier-grade NAT, multicast, reserved, unique- and site-local addresses, and for
    IPv6 forms that lead to one of those IPv4 addresses (mapped, NAT64, 6to4)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return is_public(embedded)
        if ip.teredo is not None or ip in _NAT64_LOCAL or ip.is_site_local:
            return False
    # is_global alone misses multicast, and its exact lists vary between Python releases: check each kind.
    return ip.is_global and not (
        ip.is_private or ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified
    )


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)
    return ip.sixtofour


def address_allowed(ip: IPAddress, allow: frozenset[IPNetwork]) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # the packets go to the IPv4 address, so that is the one the allow list names
    return any(ip in network for network in allow) or is_public(ip)


# WHATWG URL parsing (what browsers do): a host whose last label is a number is an IPv4 address, written
# in any of the legacy forms inet_aton() accepts: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
_ENDS_IN_NUMBER = re.compile(r"[0-9]+|0[xX][0-9a-fA-F]*")


def literal_address(host: str) -> IPAddress | None:
    """The IP address a URL's host names literally, or None for a DNS name.

    Raises FetchError for a host that looks like an address but is not a valid one.
    """
    if ":" in host:  # only IPv6 literals contain colons (yarl strips the brackets)
        try:
            return ipaddress.ip_address(host)
        except ValueError:
            raise FetchError("refused: invalid address") from None
    labels = host.split(".")
    if len(labels) > 1 and labels[-1] == "":
        labels.pop()  # a trailing dot (fully qualified)
    if not _ENDS_IN_NUMBER.fullmatch(labels[-1]):
        return None
    try:
        numbers = [_ipv4_number(label) for label in labels]
    except ValueError:
        raise FetchError("refused: invalid address") from None
    *leading, last = numbers
    if len(numbers) > 4 or any(n > 255 for n in leading) or last >= 256 ** (5 - len(numbers)):
        raise FetchError("refused: invalid address")
    value = last + sum(n << (8 * (3 - i)) for i, n in enumerate(leading))
    return ipaddress.IPv4Address(value)


def _ipv4_number(label: str) -> int:
    if label[:2].lower() == "0x":
        return int(label[2:] or "0", 16)
    if len(label) > 1 and label.startswith("0"):
        return int(label, 8)
    return int(label, 10)  # raises ValueError for "", "abc" and non-ASCII digits alike


class GuardedResolver(AbstractResolver):
    """Wraps a resolver and keeps only the addresses we may connect to.

    The connector connects to what this returns and nothing else, so the address that was checked is the
    address that is used: a second DNS answer cannot slip in between.
    """

    def __init__(self, allow: frozenset[IPNetwork], inner: AbstractResolver | None = None) -> None:
        self.allow = allow
        # ThreadedResolver (getaddrinfo) has nothing to close, so the connector not owning it leaks nothing.
        self._inner = inner if inner is not None else ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        kept = [result for result in results if self._allowed(result["host"])]
        if not kept:
            raise AddressRefused(f"{host} has no public address")
        return kept

    def _allowed(self, address: str) -> bool:
        try:
            return address_allowed(ipaddress.ip_address(address), self.allow)
        except ValueError:
            return False

    async def close(self) -> None:
        await self._inner.close()


class _GuardedConnector(aiohttp.TCPConnector):
    def __init__(self, allow: frozenset[IPNetwork], resolver: AbstractResolver | None) -> None:
        super().__init__(resolver=GuardedResolver(allow, resolver))
        self.allow = allow


def guarded_session(
    allow: frozenset[IPNetwork] = frozenset(), *, resolver: AbstractResolver | None = None
) -> aiohttp.ClientSession:
    """The only kind of session `fetch()` accepts: use it as ``async with guarded_session(allow) as s:``.

    ``allow`` (see `parse_allow`) is given here once, because it must reach the resolver inside the
    connector; `fetch()` reads it back from the session, so the two checks cannot disagree. ``resolver``
    is the one to wrap (aiohttp's threaded getaddrinfo by default; tests pass a fake DNS).
    """
    return aiohttp.ClientSession(
        connector=_GuardedConnector(allow, resolver),
        # A proxy from the environment would resolve and connect on our behalf, past the guard.
        trust_env=False,
        # Cookies one site sets must not travel to the next page a person asks about.
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={hdrs.USER_AGENT: USER_AGENT, hdrs.ACCEPT: _ACCEPT},
    )


def _session_allow(session: aiohttp.ClientSession) -> frozenset[IPNetwork]:
    connector = session.connector
    if not isinstance(connector, _GuardedConnector):
        # Fail closed: a plain session would connect anywhere a URL or a DNS answer points.
        raise TypeError("fetch() needs a session made by guarded_session()")
    return connector.allow


def _checked(url: URL, allow: frozenset[IPNetwork]) -> URL:
    """The URL to request (literal IPv4 hosts in canonical form), or FetchError if it may not be fetched."""
    if url.scheme not in ("http", "https"):
        raise FetchError("refused: not http or https")
    if url.raw_user is not None or url.raw_password is not None:
        raise FetchError("refused: credentials in URL")
    host = url.raw_host
    if not host:
        raise FetchError("refused: no host")
    ip = literal_address(host)
    if ip is None:
        return url  # a name: the resolver checks every address it resolves to
    if not address_allowed(ip, allow):
        raise FetchError(REFUSED_PRIVATE)
    if ip.version == 4 and host != str(ip):
        # What a browser would do; aiohttp would otherwise refuse the form or hand it to getaddrinfo.
        url = url.with_host(str(ip))
    return url


# --- Fetching -------------------------------------------------------------------------------------------


async def fetch(url: str, *, session: aiohttp.ClientSession, limits: FetchLimits = DEFAULT_LIMITS) -> Page:
    """Fetches one page, following up to ``limits.max_redirects`` redirects; raises FetchError."""
    allow = _session_allow(session)
    try:
        async with asyncio.timeout(limits.timeout):
            return await _fetch(url, session, limits, allow)
    except FetchError as err:
        err.url = err.url or url
        raise
    except TimeoutError:
        raise FetchError("timed out", url) from None
    except aiohttp.ClientConnectorError as err:
        if isinstance(err.os_error, AddressRefused):
            raise FetchError(REFUSED_PRIVATE, url) from None
        if isinstance(err.os_error, socket.gaierror):
            raise FetchError("could not resolve host", url) from err
        raise FetchError("could not connect", url) from err
    except aiohttp.ClientError as err:
        raise FetchError("connection failed", url) from err


async def _fetch(url: str, session: aiohttp.ClientSession, limits: FetchLimits, allow: frozenset[IPNetwork]) -> Page:
    try:
        target = _checked(URL(url), allow)
    except ValueError:
        raise FetchError("refused: invalid URL") from None
    redirects = 0
    while True:
        # Redirects are followed here, not by aiohttp, so that each hop is checked before it is requested.
        async with session.get(target, allow_redirects=False) as response:
            if response.status not in _REDIRECTS:
                return await _read(response, target, limits)
            location = response.headers.get(hdrs.LOCATION)
            if location is None:
                raise FetchError(f"HTTP {response.status}")
        if redirects == limits.max_redirects:
            raise FetchError("too many redirects")
        redirects += 1
        try:
            target = _checked(target.join(URL(location)), allow)
        except ValueError:
            raise FetchError("refused: invalid redirect") from None


async def _read(response: aiohttp.ClientResponse, url: URL, limits: FetchLimits) -> Page:
    if not 200 <= response.status < 300:
        raise FetchError(f"HTTP {response.status}")
    content_type = response.content_type  # aiohttp lower-cases it and drops the parameters
    if content_type not in limits.content_types:
        raise FetchError("not text or HTML")
    if response.content_length is not None and response.content_length > limits.max_bytes:
        raise FetchError("too large")
    body = bytearray()
    async for chunk in response.content.iter_chunked(64 * 1024):
        body += chunk
        if len(body) > limits.max_bytes:
            raise FetchError("too large")  # leaving the response unread closes the connection
    charset = response.charset
    title = _title(bytes(body[:_TITLE_SCAN_BYTES]), charset) if content_type in HTML_TYPES else None
    return Page(str(url), response.status, content_type, charset, bytes(body), title)


async def fetch_many(
    urls: Sequence[str], *, session: aiohttp.ClientSession, limits: FetchLimits = DEFAULT_LIMITS
) -> list[Page | FetchError]:
    """Fetches pages concurrently; one result per URL, in order. Pages still loading when
    ``limits.deadline`` passes are cancelled and reported as "timed out"."""
    _session_allow(session)  # a wrong session is a bug: raise it here rather than once per URL
    gate = asyncio.Semaphore(limits.concurrency)
    results: list[Page | FetchError] = [FetchError("timed out", url) for url in urls]

    async def one(i: int, url: str) -> None:
        async with gate:
            try:
                results[i] = await fetch(url, session=session, limits=limits)
            except FetchError as err:
                results[i] = err

    try:
        async with asyncio.timeout(limits.deadline), asyncio.TaskGroup() as group:
            for i, url in enumerate(urls):
                group.create_task(one(i, url))
    except TimeoutError:
        pass  # the task group has cancelled and awaited what was still running; those stay "timed out"
    return results


class _TitleParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.state = "before"  # before -> inside -> done: the first <title> only (an SVG may have its own)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.state == "before":
            self.state = "inside"

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self.state == "inside":
            self.state = "done"

    def handle_data(self, data: str) -> None:
        if self.state == "inside":
            self.parts.append(data)


def _title(head: bytes, charset: str | None) -> str | None:
    encoding = "utf-8"
    # A made-up charset name: utf-8 with replacement characters still gives a readable title.
    with contextlib.suppress(LookupError):
        encoding = codecs.lookup(charset or encoding).name
    parser = _TitleParser()
    parser.feed(head.decode(encoding, errors="replace"))
    title = " ".join("".join(parser.parts).split())
    return title[:_TITLE_MAX_CHARS] or None
