import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.conversation.keys import ConversationKey


def test_scopes_are_distinct() -> None:
    keys = {
        ConversationKey("discord", "1").id,
        ConversationKey("discord", "1", thread="2").id,
        ConversationKey("discord", "1", user="3").id,
        ConversationKey("telegram", "1").id,
    }
    assert len(keys) == 4


@given(st.text(min_size=1), st.text(min_size=1))
def test_no_part_can_forge_another_conversation_or_hash_tag(a: str, b: str) -> None:
    key = ConversationKey("cli", a, user=b)
    redis_key = key.redis_key("turns")
    # exactly one hash tag, and nothing from the parts leaks separators or braces
    assert redis_key.count("{") == 1
    assert redis_key.count("}") == 1
    assert re.fullmatch(r"parley:\{[A-Za-z0-9_.%:\-]+\}:turns", redis_key)
    if (a, b) != ("x", "y"):
        assert key.id != ConversationKey("cli", "x", user="y").id


def test_empty_parts_are_refused() -> None:
    with pytest.raises(ValueError, match="platform and a chat"):
        ConversationKey("cli", "")
