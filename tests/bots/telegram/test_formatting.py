"""The pure parts: HTML packing under the limit (counted in UTF-16 as Telegram does), the
bounded message map, and the settings read from flat environment variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.telegram.bot import paginate
from bots.telegram.formatting import MESSAGE_LIMIT, Formatter, pack, to_plain, utf16_len
from bots.telegram.parsing import parse_filters
from bots.telegram.state import MessageMap
from devmesh_core.config import Settings
from devmesh_core.errors import InvalidInput
from devmesh_core.models import Level
from tests.bots.telegram.htmlcheck import check_html


def test_pack_never_cuts_a_block_and_counts_utf16() -> None:
    fmt = Formatter()
    # 🔥 is one Python character but two UTF-16 units: 1,500 of them are 3,000 units.
    blocks = [f"<b>{n}</b> <code>{fmt.t('🔥' * 1500)}</code>" for n in range(5)]
    messages = pack(blocks)
    assert len(messages) == 5  # two blocks would be over 4,096 units
    for message in messages:
        assert utf16_len(message) <= MESSAGE_LIMIT
        check_html(message)
    assert "".join(to_plain(m) for m in messages).count("🔥") == 7500


def test_pack_joins_small_blocks_and_degrades_an_oversized_one() -> None:
    assert pack(["a", "b", "c"]) == ["a\nb\nc"]
    assert pack([]) == ["(nothing)"]
    giant = "<pre>" + "x" * 10_000 + "</pre>"
    (message,) = pack([giant])
    assert utf16_len(message) <= MESSAGE_LIMIT and "<pre>" not in message


def test_escaping_and_redaction_order() -> None:
    fmt = Formatter(lambda text: text.replace("hunter2", "[REDACTED]"))
    assert fmt.t("a<b>&c password=hunter2") == "a&lt;b&gt;&amp;c password=[REDACTED]"
    # Cutting happens on the raw text, so an entity is never split.
    cut = fmt.t("&" * 10, limit=4)
    assert cut == "&amp;&amp;&amp;…"
    for block in fmt.paragraphs("line <1>\n" + "y&" * 2000):
        check_html(block)


def test_paginate_respects_page_size_and_limit() -> None:
    items = [f"item {n}" for n in range(25)]
    pages = paginate("<b>List</b>", items, 10)
    assert len(pages) == 3 and pages[0].startswith("<b>List</b> · page 1/3")
    assert pages[2].count("item") == 5
    big = ["&amp;" * 700 for _ in range(4)]  # 3,500 characters each
    assert len(paginate("h", big, 10)) == 4


def test_message_map_is_bounded_and_persistent(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    messages = MessageMap(path, limit=10)
    for n in range(15):
        messages.remember_incident(f"INC-{n}", -1, 100 + n)
        messages.remember_incident(f"INC-{n}", -1, 999)  # the first message stays
    reloaded = MessageMap(path, limit=10)
    assert reloaded.first_message("INC-0", -1) is None  # forgotten: oldest beyond the limit
    assert reloaded.first_message("INC-14", -1) == 114
    assert reloaded.incident_of(-1, 110) == "INC-10"
    path.write_text("{not json", encoding="utf-8")
    assert MessageMap(path).first_message("INC-14", -1) is None  # unreadable: start afresh


def test_filters_grammar() -> None:
    found = parse_filters(["svc=nginx", "level=warn", "since=2h", "limit=5", "timed", "out"])
    assert (found.service, found.level, found.limit, found.text) == (
        "nginx",
        Level.WARNING,
        5,
        "timed out",
    )
    assert found.since is not None
    for bad in (["limit=0"], ["limit=x"], ["since=yesterday-ish"], ["host="], ["colour=red"]):
        with pytest.raises(InvalidInput):
            parse_filters(bad)


def test_settings_from_flat_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEVMESH_TELEGRAM__TOKEN", "123:abc")
    monkeypatch.setenv("DEVMESH_TELEGRAM__ALLOWED_CHAT_IDS", "-1001, 42")
    monkeypatch.setenv("DEVMESH_TELEGRAM__ALLOWED_USER_IDS", "[7, 8]")
    monkeypatch.setenv("DEVMESH_TELEGRAM__PING_CHAT_IDS", "-1001")
    monkeypatch.setenv("DEVMESH_TELEGRAM__WEBHOOK_SECRET", "shh")
    telegram = Settings().telegram
    assert telegram.token is not None and telegram.token.get_secret_value() == "123:abc"
    assert telegram.allowed_chat_ids == [-1001, 42]
    assert telegram.allowed_user_ids == [7, 8]
    assert telegram.ping_chat_ids == [-1001]
    assert "shh" not in repr(telegram)
