"""Read-only commands through the real handler chain (``process_update``), answered over
HTTP to the fake Bot API: /help, /status, /logs, /search, /runbook — with hostile log text
escaped, secrets redacted, long answers split or sent as a document, and pages turned."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bots.telegram import bot_of
from bots.telegram.formatting import MESSAGE_LIMIT, utf16_len
from devmesh_core.reason.runbooks import parse_runbook
from devmesh_core.runtime import Core
from tests.bots.telegram.conftest import CHAT, GROUP, OPERATOR, STRANGER, feed, seed_logs
from tests.bots.telegram.fake_telegram import FakeTelegram, callback_update, message_update
from tests.bots.telegram.htmlcheck import check_html

HOSTILE = "<script>alert('x')</script> *_[]()~` && a<b> & c > d \\ #+-=|{}.!"


async def _command(app: Any, fake: FakeTelegram, text: str, **kw: Any) -> list[Any]:
    before = len(fake.calls)
    await feed(
        app,
        message_update(text, chat_id=kw.get("chat_id", CHAT), user_id=kw.get("user_id", OPERATOR)),
    )
    return fake.calls[before:]


def _texts(calls: list[Any], method: str = "sendMessage") -> list[str]:
    return [c.params["text"] for c in calls if c.method == method]


async def test_help_lists_every_command(app: Any, fake: FakeTelegram) -> None:
    calls = await _command(app, fake, "/help")
    (text,) = _texts(calls)
    visible = check_html(text)
    for command in (
        "/status",
        "/incidents",
        "/incident",
        "/logs",
        "/search",
        "/ask",
        "/runbook",
        "/fix",
        "/ack",
        "/resolve",
    ):
        assert command in visible


async def test_status_shows_hosts_and_error_leaders(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    seed_logs(
        core,
        [
            ("nginx", "web1", "ERROR", "upstream timed out"),
            ("nginx", "web1", "ERROR", "upstream timed out again"),
            ("postgres", "db1", "INFO", "checkpoint complete"),
        ],
    )
    calls = await _command(app, fake, "/status")
    (text,) = _texts(calls)
    visible = check_html(text)
    assert "Hosts: 2/2 online" in visible
    assert "web1" in visible and "db1" in visible
    assert "nginx: 2 error(s) of 2" in visible


async def test_logs_escape_hostile_text_and_redact_secrets(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    seed_logs(
        core,
        [
            ("web<app>", "host&1", "ERROR", HOSTILE),
            ("auth", "web1", "WARNING", "login failed password=hunter2 for admin"),
        ],
    )
    calls = await _command(app, fake, "/logs")
    (text,) = _texts(calls)
    assert "<script>" not in text
    assert "&lt;script&gt;" in text
    visible = check_html(text)
    assert HOSTILE in visible  # shown exactly, not interpreted
    assert "web<app>" in visible and "host&1" in visible
    assert "hunter2" not in text and "password=[REDACTED" in visible


async def test_logs_filters_and_rejects_unknown_ones(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    seed_logs(
        core,
        [
            ("nginx", "web1", "ERROR", "upstream timed out"),
            ("nginx", "web1", "INFO", "GET / 200"),
            ("postgres", "db1", "ERROR", "could not write: No space left on device"),
        ],
    )
    (text,) = _texts(await _command(app, fake, "/logs service=nginx level=error"))
    visible = check_html(text)
    assert "upstream timed out" in visible
    assert "GET / 200" not in visible and "No space left" not in visible

    (text,) = _texts(await _command(app, fake, "/logs level=error space"))
    visible = check_html(text)
    assert "No space left" in visible and "upstream" not in visible

    (text,) = _texts(await _command(app, fake, "/logs colour=red"))
    assert "unknown filter 'colour'" in check_html(text)
    (text,) = _texts(await _command(app, fake, "/logs level=loud"))
    assert "level" in check_html(text)


async def test_long_lists_are_paged_under_the_limit_and_pages_turn(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    # 60 lines of 300 '&' each: 1,500 characters each once escaped.
    seed_logs(core, [("nginx", "web1", "ERROR", f"{n:03d} " + "&" * 400) for n in range(60)])
    calls = await _command(app, fake, "/logs limit=60")
    (first,) = [c for c in calls if c.method == "sendMessage"]
    text = first.params["text"]
    assert utf16_len(text) <= MESSAGE_LIMIT
    check_html(text)
    keyboard = first.json("reply_markup")["inline_keyboard"][0]
    assert [b["text"] for b in keyboard][-1] == "next »"
    total = int(keyboard[0]["text"].split("/")[1])
    assert total >= 20  # two long lines per page at most
    assert all(len(b["callback_data"].encode()) <= 64 for b in keyboard)

    # Turn every page: each is an edit of the same message, under the limit, valid HTML.
    seen: set[str] = set()
    data = keyboard[-1]["callback_data"]
    for _ in range(total - 1):
        before = len(fake.calls)
        await feed(app, callback_update(data, chat_id=CHAT, user_id=OPERATOR, message_id=500))
        edits = [c for c in fake.calls[before:] if c.method == "editMessageText"]
        assert len(edits) == 1 and edits[0].params["message_id"] == "500"
        page = edits[0].params["text"]
        assert utf16_len(page) <= MESSAGE_LIMIT
        visible = check_html(page)
        seen.update(line.split()[4] for line in visible.splitlines()[1:])
        buttons = edits[0].json("reply_markup")["inline_keyboard"][0]
        data = buttons[-1]["callback_data"]
    assert buttons[0]["text"] == "« previous" and buttons[-1]["text"] == f"{total}/{total}"
    assert len(seen) >= 55  # the newest ~60 events, every page different

    # Pages of another chat, or unknown ones, are not served.
    before = len(fake.calls)
    await feed(app, callback_update(data, chat_id=GROUP, user_id=OPERATOR, message_id=501))
    answers = [c for c in fake.calls[before:] if c.method == "answerCallbackQuery"]
    assert answers[0].params["show_alert"] == "true" and "expired" in answers[0].params["text"]


async def test_search_falls_back_to_substring_without_vectors(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    seed_logs(
        core,
        [
            ("postgres", "db1", "ERROR", "could not extend file: No space left on device"),
            ("nginx", "web1", "INFO", "GET /health 200"),
        ],
    )
    (text,) = _texts(await _command(app, fake, "/search space level=error"))
    visible = check_html(text)
    assert "semantic search is off" in visible
    assert "No space left on device" in visible and "/health" not in visible
    (text,) = _texts(await _command(app, fake, "/search"))
    assert "say what to look for" in check_html(text)


def _runbook(body: str, rid: str = "disk-full") -> Any:
    return parse_runbook(
        "---\n"
        f"id: {rid}\ntitle: Disk <full> & friends\nservices: [postgres]\n"
        "actions:\n  - action: clear_cache\n    params: {cache: apt}\n"
        "checks: [df -h shows < 90%]\n"
        "---\n" + body,
        Path(f"{rid}.md"),
    )


async def test_runbook_list_show_split_and_document(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    short = _runbook("Check `df -h`; then <b>clear</b> the apt cache & retry.\n")
    long_body = "\n".join(f"step {n}: " + "x<y>&z " * 60 for n in range(40))
    core.runbooks = [short, _runbook(long_body, "big-one")]

    (text,) = _texts(await _command(app, fake, "/runbook"))
    visible = check_html(text)
    assert "disk-full" in visible and "big-one" in visible

    (text,) = _texts(await _command(app, fake, "/runbook disk-full"))
    visible = check_html(text)
    assert "Disk <full> & friends" in visible
    assert "<b>clear</b> the apt cache & retry" in visible
    assert "clear_cache" in visible

    # ~17,000 characters of body: split into messages under the limit, or a document when
    # that takes more than max_messages (3 by default).
    calls = await _command(app, fake, "/runbook big-one")
    docs = [c for c in calls if c.method == "sendDocument"]
    assert len(docs) == 1 and not _texts(calls)
    body = docs[0].files["document"].decode()
    assert "step 39: x<y>&z" in body
    assert docs[0].params["caption"].startswith("📘 Disk <full>")

    bot_of(app).settings.max_messages = 20
    calls = await _command(app, fake, "/runbook big-one")
    texts = _texts(calls)
    assert len(texts) > 3
    joined = "\n".join(check_html(t) for t in texts)
    assert all(utf16_len(t) <= MESSAGE_LIMIT for t in texts)
    assert "step 0: x<y>&z" in joined and "step 39: x<y>&z" in joined


async def test_strangers_are_refused_and_allowed_users_work_anywhere(
    app: Any, fake: FakeTelegram
) -> None:
    (text,) = _texts(await _command(app, fake, "/help", chat_id=123, user_id=STRANGER))
    assert "only answers" in text and "123" in text
    (text,) = _texts(await _command(app, fake, "/help", chat_id=GROUP, user_id=STRANGER))
    assert "DevMesh triage bot" in text  # the group itself is allowed
    (text,) = _texts(await _command(app, fake, "/help", chat_id=777, user_id=OPERATOR))
    assert "DevMesh triage bot" in text  # an allowed user in another chat


async def test_strangers_plain_messages_in_groups_are_only_logged(
    app: Any, fake: FakeTelegram
) -> None:
    before = len(fake.calls)
    await feed(
        app, message_update("hello bot", chat_id=-100999, user_id=STRANGER, chat_type="supergroup")
    )
    assert not [c for c in fake.calls[before:] if c.method == "sendMessage"]
    (text,) = _texts(await _command(app, fake, "hello bot", chat_id=555, user_id=STRANGER))
    assert "only answers" in text  # in a private chat the stranger is told why
