"""What the front ends' fuzz tests share: hostile text, and what counts as a proper answer."""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

HOSTILE = st.one_of(
    st.text(min_size=0, max_size=300),
    st.text(alphabet=st.sampled_from("_*[]()~`>#+-=|{}.!<>&@\\\n\u200b\u202e\ufe0f\U000e0041\x00\x1b🎉é"),
            max_size=200),
    st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(min_value=500, max_value=1500)),
)  # fmt: skip
FUZZ = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


def answered_or_refused(text: str) -> bool:
    return text.startswith(("echo ", "Sorry: ", "I don't know /", "I'm Parley")) or "I can only read text" in text
