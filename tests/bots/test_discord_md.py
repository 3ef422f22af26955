from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.text.discord_md import DISCORD_LIMIT, discord_messages, sanitize_discord
from tests.bots.markdown import markdown_text

Z = "\u200b"

# Discord's code rules as the test sees them: ``` blocks (non-greedy, anywhere) and backtick spans.
_DISCORD_CODE = re.compile(r"```[\s\S]*?```|(`+)[\s\S]*?[^`]\1(?!`)")
_LIVE = re.compile(r"@(everyone|here)|<@[!&]?\d+>|<#\d+>", re.IGNORECASE)


def outside_code(text: str) -> str:
    """What Discord parses for mentions: the text with code blocks and spans cut out."""
    out, i = [], 0
    while (tick := text.find("`", i)) >= 0:
        out.append(text[i:tick])
        code = _DISCORD_CODE.match(text, tick)
        i = code.end() if code else tick + 1
        if code is None:
            out.append("`")
        out.append("\x00")  # a code span separates what is around it
    return "".join(out) + text[i:]


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("hi @everyone and @here", f"hi @{Z}everyone and @{Z}here"),
        ("@Everyone @HERE", f"@{Z}Everyone @{Z}HERE"),
        ("<@123> <@!45> <@&67> <#89>", f"<{Z}@123> <{Z}@!45> <{Z}@&67> <{Z}#89>"),
        ("mail me: a@b.c, **bold** _it_", "mail me: a@b.c, **bold** _it_"),
        ("`<@1> @everyone` stays", "`<@1> @everyone` stays"),
        ("```py\nping('@here', '<@1>')\n```\n@here", f"```py\nping('@here', '<@1>')\n```\n@{Z}here"),
        ("Cut off:\n```py\nx = '@everyone'", "Cut off:\n```py\nx = '@everyone'\n```"),
        ("ends in a newline\n```\ncode\n", "ends in a newline\n```\ncode\n```"),
        ("lonely ` tick @here", f"lonely ` tick @{Z}here"),
    ],
)
def test_sanitize(markdown: str, expected: str) -> None:
    assert sanitize_discord(markdown) == expected


def test_long_messages_fit_after_sanitising() -> None:
    markdown = "<@1> @everyone " * 400 + "\n```\n" + "code\n" * 300
    messages = discord_messages(markdown)
    assert len(messages) > 3
    assert all(len(m) <= DISCORD_LIMIT for m in messages)
    assert all(not _LIVE.search(outside_code(m)) for m in messages)


@settings(max_examples=300, deadline=None)
@given(markdown_text)
def test_sanitised_text_never_pings(markdown: str) -> None:
    clean = sanitize_discord(markdown)
    assert not _LIVE.search(outside_code(clean))
    assert sanitize_discord(clean) == clean
    # Nothing is lost: only zero-width spaces and a closing fence are added.
    assert clean.replace(Z, "").startswith(markdown.replace(Z, ""))
    assert "```" not in outside_code(clean), "a code block left open"


@settings(max_examples=300, deadline=None)
@given(markdown_text, st.integers(min_value=60, max_value=400))
def test_messages_fit_and_never_ping(markdown: str, limit: int) -> None:
    for message in discord_messages(markdown, limit):
        assert len(message) <= limit
        assert message.strip()
        assert not _LIVE.search(outside_code(message))
