"""A strict check of Telegram HTML, as the Bot API parses it: only its tags, balanced, and
every ``<``, ``>``, ``&`` outside a tag written as an entity. The fake server does not
parse HTML, so the tests run every sent text through this."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

ALLOWED = {
    "b",
    "strong",
    "i",
    "em",
    "u",
    "ins",
    "s",
    "strike",
    "del",
    "code",
    "pre",
    "a",
    "tg-spoiler",
    "blockquote",
    "span",
}
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#\d+|#x[0-9a-fA-F]+);")


class _Checker(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=False)
        self.stack: list[str] = []
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ALLOWED:
            self.problems.append(f"tag <{tag}> is not Telegram HTML")
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.problems.append(f"unbalanced </{tag}> (open: {self.stack})")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if "<" in data or ">" in data:
            self.problems.append(f"raw angle bracket in {data[:40]!r}")


def check_html(text: str) -> str:
    """Raise ``AssertionError`` if Telegram would refuse ``text``; return its visible text."""
    stripped = _ENTITY.sub("", text)
    assert "&" not in re.sub(r"<[^>]*>", "", stripped), f"bare & in {text[:200]!r}"
    checker = _Checker()
    checker.feed(text)
    checker.close()
    assert not checker.problems, checker.problems
    assert not checker.stack, f"unclosed tags {checker.stack}"
    return html.unescape(re.sub(r"<[^>]*>", "", text))
