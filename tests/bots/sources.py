"""What the answers-with-sources tests of both platforms share: documents and web pages to teach and find,
the knowledge-base keys of a scope, the sources a prompt gave (their fixtures are in conftest.py)."""

from __future__ import annotations

import re

from redis.asyncio import Redis

from bench.fakeweb import FakeWeb
from engine.runtime.settings import Settings, load_settings

FEES = "# Willowmere fees\n\nThe Willowmere membership fee is €37 a year; juniors pay €12."
HOURS = b"# Willowmere hours\n\nThe Willowmere boathouse opens at 06:30 and closes at dusk."
# No word in common with FEES: whatever the thresholds, a question about one never brings up the other.
REGATTA = "# Calderbrook regatta\n\nThe Calderbrook regatta is held on the second Saturday of June."
QUESTION = "Willowmere fee and hours?"  # matches both FEES and HOURS strongly
LIGHTHOUSE = (
    "# Brightwater Lighthouse\n\nThe Brightwater lighthouse was first lit in 1874. "
    "Its lamp can be seen 22 nautical miles out to sea."
)
KEEPERS = (
    "# Brightwater lighthouse keepers\n\nKeepers lived at the Brightwater lighthouse until 1961, "
    "when the light was automated and the keepers left."
)
BREAD = "# Sourdough at home\n\nFeed the starter twice a day and bake the loaf when the dough has doubled."


async def kb_keys(redis: Redis, scope: str) -> list[str]:
    """Every key of a scope's knowledge base (the scope is percent-quoted inside the hash tag)."""
    quoted = scope.replace(":", "%3A")
    return [key.decode() async for key in redis.scan_iter(match=f"parley:kb:{{{quoted}}}:*", count=1000)]


def source_headers(prompt: str) -> list[str]:
    """The sources a prompt gave the model, in their numbered order: 'Title > Section' of each."""
    return re.findall(r"^<<<SOURCE \[\d+\] (.*)$", prompt, flags=re.MULTILINE)


def learned_id(text: str) -> str:
    match = re.search(r"\(id ([0-9a-f]{8})\)", text)
    assert match is not None, text
    return match[1]


def searching(settings: Settings, web: FakeWeb) -> Settings:
    """The test's settings with web search on, read and checked as PARLEY_SEARCH_URL and PARLEY_FETCH_ALLOW are."""
    given = {name: getattr(settings, name) for name in settings.model_fields_set}
    return load_settings(**given, search_url=web.url, fetch_allow="127.0.0.1")
