"""Optional moderation of what people send and what the model writes (PARLEY_MODERATION).

``off`` (the default), ``rules`` (the built-in list below), or ``package.module:function`` naming any
callable ``(text: str) -> str | None`` that returns a reason to refuse, or None: that is where a real
classifier (a hosted moderation API, a local model) plugs in. Refusals get a neutral message; the
reason goes to the log, never to the person.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable

from engine.errors import ConfigError

Moderator = Callable[[str], str | None]

REFUSAL = "I can't help with that."
WITHDRAWN = "I can't continue with that answer."

# A deliberately small, high-precision starting list: requests for the gravest harms. A community with
# other needs plugs in its own callable.
_NEAR = r"[^.!?\n]{0,60}"
_MINOR = r"(child|children|minor|minors|underage|kid|kids|preteen)"
_SEXUAL = r"(porn|pornographic|nude|naked|erotic|sexually explicit)"
RULES: dict[str, re.Pattern[str]] = {
    "sexual content involving minors": re.compile(
        rf"\b{_MINOR}\b{_NEAR}\b{_SEXUAL}|\b{_SEXUAL}{_NEAR}\b{_MINOR}\b", re.I
    ),
    "mass-casualty weapons": re.compile(
        rf"\b(make|build|synthesi[sz]e|produce|weaponi[sz]e)\b{_NEAR}"
        r"\b(nerve agent|sarin|vx gas|anthrax|bioweapon|chemical weapon|nuclear bomb|dirty bomb)",
        re.I,
    ),
    "instructions for self-harm": re.compile(
        rf"\b(how|best way|easiest way)\b{_NEAR}\b(kill myself|end my life|commit suicide)", re.I
    ),
}


def rules(text: str) -> str | None:
    for reason, pattern in RULES.items():
        if pattern.search(text):
            return reason
    return None


def load_moderator(setting: str) -> Moderator | None:
    if setting in ("", "off"):
        return None
    if setting == "rules":
        return rules
    module_name, _, attr = setting.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), attr) if attr else None
    except (ImportError, AttributeError, ValueError) as exc:
        raise ConfigError(f"invalid setting: PARLEY_MODERATION={setting!r} cannot be loaded ({exc})") from None
    if not callable(found):
        raise ConfigError("invalid setting: PARLEY_MODERATION must be off, rules, or package.module:function")
    return found  # type: ignore[no-any-return]
