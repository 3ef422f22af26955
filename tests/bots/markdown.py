"""Random Markdown as a small model writes it, shared by the split and formatting tests."""

from __future__ import annotations

from hypothesis import strategies as st

# Pieces a small model's Markdown is made of, plus the Unicode that breaks naive code: combining
# marks, emoji with modifiers and ZWJ, flags, astral letters, and long unbroken words.
_PIECES = [
    "\n", "\n\n", " ", "  ", "\t", ". ", "! ", "```", "```python\n", "\n```\n", "~~~\n", "\n    ```js\n",
    "**", "__", "*", "_", "~~", "||", "`", "[", "](https://example.com/a_b)", "](javascript:x)", "(", ")",
    "# ", "\n## ", "\n> ", "\n- ", "\n1. ", "<", ">", "&", '"', "\\", "snake_case_word", "2*3*4",
    "@everyone", "@here", "<@123>", "<@!45>", "<@&67>", "<#89>",
    "é", "e\u0301", "👍🏽", "👨\u200d👩\u200d👧", "🇫🇷🇩🇪", "\U0001d4b3\U0001d4b4", "日本語", "\u200b",
]  # fmt: skip

markdown_text = st.lists(
    st.one_of(
        st.sampled_from(_PIECES),
        st.text(max_size=12),
        st.text(alphabet="abcdefghij", min_size=20, max_size=150),
    ),
    max_size=60,
).map("".join)
