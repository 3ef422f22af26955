from __future__ import annotations

import html
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings

from bots.text.split import scan_lines, split_message, utf16_len
from bots.text.telegram_html import (
    ALLOWED_TAGS,
    TELEGRAM_LIMIT,
    strip_markdown,
    telegram_visible_length,
    to_telegram_html,
)
from tests.bots.markdown import markdown_text

_ATTRIBUTES = {"a": {"href"}, "code": {"class"}}


class _Checker(HTMLParser):
    """Fails on anything Telegram would reject: unknown tags or attributes, bad nesting, bare '&'."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.hrefs: list[str] = []
        self.stream: list[str] = []  # visible text and attribute values, in document order

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        assert tag in ALLOWED_TAGS, tag
        assert {name for name, _ in attrs} <= _ATTRIBUTES.get(tag, set()), (tag, attrs)
        if tag == "a":
            assert dict(attrs)["href"]
        self.stack.append(tag)
        # In Markdown a link's URL follows its text, a code block's language precedes it.
        self.hrefs.append(dict(attrs).get("href") or "")
        self.stream.extend(value or "" for name, value in attrs if name != "href")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        raise AssertionError(f"self-closing <{tag}/>")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack[-1:] == [tag], (self.stack, tag)
        self.stack.pop()
        self.stream.append(self.hrefs.pop())

    def handle_data(self, data: str) -> None:
        self.stream.append(data)


def check_html(markup: str) -> str:
    """Assert `markup` is Telegram-safe HTML; return its visible text plus attribute values."""
    checker = _Checker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == [], f"unclosed {checker.stack}"
    # Every '&' we emit starts one of the entities Telegram knows.
    assert markup.replace("&amp;", "").replace("&lt;", "").replace("&gt;", "").replace("&quot;", "").count("&") == 0
    return "".join(checker.stream)


def alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def without_fence_info(markdown: str) -> str:
    """The input minus fence info strings: only the language survives, as a class attribute."""
    out, last = [], 0
    for line in scan_lines(markdown):
        if line.kind == "open":
            out.append(markdown[last : line.start])
            last = line.end
    return "".join(out) + markdown[last:]


def is_subsequence(needle: str, haystack: str) -> bool:
    it = iter(haystack)
    return all(ch in it for ch in needle)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*it* and _it_", "<i>it</i> and <i>it</i>"),
        ("~~gone~~ ||secret||", "<s>gone</s> <tg-spoiler>secret</tg-spoiler>"),
        ("***both***", "<i><b>both</b></i>"),
        ("**a *b* c**", "<b>a <i>b</i> c</b>"),
        ("snake_case_word and 2*3*4 and a * b * c", "snake_case_word and 2*3*4 and a * b * c"),
        ("这是**粗体**文字", "这是<b>粗体</b>文字"),
        ("use `a < b && c` here", "use <code>a &lt; b &amp;&amp; c</code> here"),
        ("`` a `tick` ``", "<code>a `tick`</code>"),
        ("`**not bold**`", "<code>**not bold**</code>"),
        (r"\*literal\* and \_x\_", "*literal* and _x_"),
        ("x < y > z & <b>raw</b>", "x &lt; y &gt; z &amp; &lt;b&gt;raw&lt;/b&gt;"),
        ("[site](https://example.com/?a=1&b=\"2\")", '<a href="https://example.com/?a=1&amp;b=&quot;2&quot;">site</a>'),
        ("[**bold** link](http://x.org)", '<a href="http://x.org"><b>bold</b> link</a>'),
        ("[me](tg://user?id=1) [m](mailto:a@b.c)", '<a href="tg://user?id=1">me</a> <a href="mailto:a@b.c">m</a>'),
        ("[bad](javascript:alert(1)) [rel](/path)", "[bad](javascript:alert(1)) [rel](/path)"),
        ("[`code`](https://x.org)", '<a href="https://x.org">code</a>'),
        ("# Title", "<b>Title</b>"),
        ("## Title with **bold** ##", "<b>Title with bold</b>"),
        ("#hashtag", "#hashtag"),
        ("- item *one*\n* item two\n1. three", "- item <i>one</i>\n* item two\n1. three"),
        ("> quoted *x*\n> more\n\nafter", "<blockquote>quoted <i>x</i>\nmore</blockquote>\n\nafter"),
        ("```python\nif a < b:\n    print('**x**')\n```",
         "<pre><code class=\"language-python\">if a &lt; b:\n    print('**x**')</code></pre>"),
        ("```\nplain & simple\n```\ntext", "<pre>plain &amp; simple</pre>\ntext"),
        ("Cut off:\n```js\nlet x = 1 <", "Cut off:\n<pre><code class=\"language-js\">let x = 1 &lt;</code></pre>"),
        ("**unclosed *mess", "**unclosed *mess"),
        ("*a **b* c**", "<i>a <i><i>b</i> c</i></i>"),
    ],
)  # fmt: skip
def test_conversion(markdown: str, expected: str) -> None:
    assert to_telegram_html(markdown) == expected
    check_html(expected)


def test_strip_markdown_keeps_code_and_drops_markers() -> None:
    markdown = "# Head\n**b** _i_ [site](https://x.org) `a*b`\n> q\n```py\nx = '**'\n```"
    assert strip_markdown(markdown) == "Head\nb i site (https://x.org) a*b\nq\nx = '**'"


def test_visible_length_counts_entities_once_and_utf16() -> None:
    assert telegram_visible_length("<b>a&amp;b</b> 😀") == 6
    assert telegram_visible_length('<a href="https://very.long/url">x</a>') == 1


def test_long_replies_split_before_conversion_fit_telegram() -> None:
    paragraph = "Some **bold** text & <stuff> with `code` and 😀 emoji. " * 20
    code = "```python\n" + "\n".join(f"print({i!r} * 2)  # <&>" for i in range(400)) + "\n```"
    markdown = "\n\n".join([paragraph, code, paragraph * 5, "```sh\n" + "echo hi\n" * 900])
    chunks = split_message(markdown, TELEGRAM_LIMIT, utf16_len)
    assert len(chunks) > 3
    for chunk in chunks:
        converted = to_telegram_html(chunk)
        check_html(converted)
        assert 0 < telegram_visible_length(converted) <= TELEGRAM_LIMIT
        assert utf16_len(strip_markdown(chunk)) <= TELEGRAM_LIMIT


@settings(max_examples=300, deadline=None)
@given(markdown_text)
def test_html_is_always_well_formed_and_loses_no_text(markdown: str) -> None:
    stream = check_html(to_telegram_html(markdown))
    assert is_subsequence(alnum(without_fence_info(markdown)), alnum(html.unescape(stream)))


@settings(max_examples=300, deadline=None)
@given(markdown_text)
def test_plain_fallback_loses_no_text(markdown: str) -> None:
    plain = strip_markdown(markdown)
    assert is_subsequence(alnum(without_fence_info(markdown)), alnum(plain))
    assert utf16_len(plain) <= utf16_len(markdown)


@settings(max_examples=300, deadline=None)
@given(markdown_text)
def test_every_split_chunk_converts_within_the_limit(markdown: str) -> None:
    limit = 64  # small, so that hypothesis's short texts still split
    for chunk in split_message(markdown, limit, utf16_len):
        converted = to_telegram_html(chunk)
        check_html(converted)
        assert telegram_visible_length(converted) <= limit
