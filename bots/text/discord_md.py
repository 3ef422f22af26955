"""Make model Markdown safe to post on Discord: no pings, no code block left open.

Discord renders Markdown itself, so text passes through unchanged except for mention syntax, which
gets a zero-width space that breaks it both for Discord's mention parser and for the renderer while
looking the same. The adapter also sends with allowed_mentions=none; this is defence in depth.
"""

from __future__ import annotations

import re

from bots.text.split import split_message

DISCORD_LIMIT = 2000
ZWSP = "\u200b"

# Discord's own view of code (its code block and inline code rules): ``` pairs anywhere, non-greedy,
# then backtick runs closed by a run of the same length. Mentions there are not parsed, so they stay.
_CODE = re.compile(r"```[\s\S]*?```|(`+)[\s\S]*?[^`]\1(?!`)")
_EVERYONE = re.compile(r"@(?=everyone|here)", re.IGNORECASE)
_MENTION = re.compile(r"<(?=[@#])")  # <@user>, <@!user>, <@&role>, <#channel>


def _neutralise(text: str) -> str:
    return _MENTION.sub("<" + ZWSP, _EVERYONE.sub("@" + ZWSP, text))


def sanitize_discord(markdown: str) -> str:
    """`markdown` with mentions defused outside code and an unclosed ``` block closed. Idempotent."""
    out: list[str] = []
    i = 0
    while (tick := markdown.find("`", i)) >= 0:
        out.append(_neutralise(markdown[i:tick]))
        code = _CODE.match(markdown, tick)
        if code is not None:
            out.append(code.group())
            i = code.end()
        elif markdown.startswith("```", tick):
            # Cut-off output: the block runs to the end; close it rather than let it swallow nothing.
            rest = markdown[tick:]
            out.append(rest + ("" if rest.endswith("\n") else "\n") + "```")
            return "".join(out)
        else:
            run = len(markdown[tick:]) - len(markdown[tick:].lstrip("`"))
            out.append(markdown[tick : tick + run])
            i = tick + run
    out.append(_neutralise(markdown[i:]))
    return "".join(out)


def discord_messages(markdown: str, limit: int = DISCORD_LIMIT) -> list[str]:
    """Split then sanitise each message (per message, because that is what Discord renders).

    Sanitising adds a character per defused mention and maybe a closing fence, so the split budget
    shrinks by the overshoot until every message fits.
    """
    budget = limit
    while True:
        messages = [sanitize_discord(chunk) for chunk in split_message(markdown, budget)]
        over = max((len(m) for m in messages), default=0) - limit
        if over <= 0:
            return messages
        budget -= over
