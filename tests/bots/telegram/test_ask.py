"""Questions: /ask and plain messages (private chat, or a reply to an incident message in a
group) answered by the real ``reason.ask`` (rule-based, no model), with a bounded
conversation per chat and incident."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bots.telegram import bot_of
from bots.telegram.app import subscribe
from devmesh_core.notify.base import NotifierHub
from devmesh_core.runtime import Core
from tests.bots.telegram.conftest import CHAT, GROUP, OPERATOR, PING, feed, open_incident, seed_logs
from tests.bots.telegram.fake_telegram import FakeTelegram, message_update
from tests.bots.telegram.htmlcheck import check_html

LOGS = [
    ("postgres", "db1", "ERROR", "could not write to file: No space left on device"),
    ("postgres", "db1", "ERROR", "could not write to file: No space left on device"),
    ("api", "web1", "ERROR", "connection to <db1:5432> refused & retrying"),
    ("nginx", "web1", "ERROR", "upstream timed out while reading response header"),
]


def _answers(fake: FakeTelegram, chat: int, after: int) -> list[Any]:
    return [
        c
        for c in fake.calls[after:]
        if c.method in ("sendMessage", "sendDocument") and c.params["chat_id"] == str(chat)
    ]


async def test_ask_answers_with_a_diagnosis_and_keeps_a_conversation(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    core.settings.reason.llm = "none"
    seed_logs(core, LOGS)
    before = len(fake.calls)
    await feed(app, message_update("/ask why is postgres failing", chat_id=CHAT, user_id=OPERATOR))
    answers = _answers(fake, CHAT, before)
    assert answers and answers[0].method == "sendMessage"
    visible = "\n".join(check_html(a.params["text"]) for a in answers)
    assert "why is postgres failing" in visible and "Root cause" in visible
    assert "answered by none" in visible
    assert any(c.method == "sendChatAction" for c in fake.calls[before:])

    # A plain message in the private chat is a follow-up in the same conversation.
    bot = bot_of(app)
    before = len(fake.calls)
    await feed(app, message_update("what should I do about it?", chat_id=CHAT, user_id=OPERATOR))
    visible = "\n".join(check_html(a.params["text"]) for a in _answers(fake, CHAT, before))
    assert "what should I do about it?" in visible and "Root cause" in visible
    conversation = bot.conversations.get(f"{CHAT}:")
    assert conversation is not None and len(conversation) == 2

    # Group chatter that is not a reply to an incident message is ignored.
    before = len(fake.calls)
    await feed(
        app, message_update("lunch?", chat_id=GROUP, user_id=OPERATOR, chat_type="supergroup")
    )
    assert not _answers(fake, GROUP, before)

    # /ask without a question explains itself.
    before = len(fake.calls)
    await feed(app, message_update("/ask", chat_id=CHAT, user_id=OPERATOR))
    (answer,) = _answers(fake, CHAT, before)
    assert "ask a question" in check_html(answer.params["text"])


async def test_reply_to_an_incident_ping_asks_about_that_incident(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    core.settings.reason.llm = "none"
    seed_logs(core, LOGS)
    hub = NotifierHub()
    hub.attach(asyncio.get_running_loop())
    core.notifiers = hub
    assert core.incidents is not None
    core.incidents.add_listener(hub.submit)
    bot = bot_of(app)
    subscribe(core, bot)
    incident = open_incident(
        core,
        title="postgres disk full",
        origin_service="postgres",
        origin_host="db1",
        services=["postgres", "api"],
    )
    await fake.until(lambda: bot.messages.first_message(incident.id, PING) is not None)
    ping_id = bot.messages.first_message(incident.id, PING)
    assert ping_id is not None

    before = len(fake.calls)
    await feed(
        app,
        message_update(
            "what broke first?",
            chat_id=PING,
            user_id=OPERATOR,
            chat_type="supergroup",
            reply_to=ping_id,
        ),
    )
    answers = _answers(fake, PING, before)
    assert answers
    visible = "\n".join(check_html(a.params["text"]) for a in answers)
    assert f"({incident.id})" in visible and "Root cause" in visible
    # The answer replies to the question; the diagnosis is attached to the incident.
    assert "reply_parameters" in answers[0].params
    assert json.loads(answers[0].params["reply_parameters"])["message_id"] > 0
    assert core.incidents.get(incident.id).diagnosis is not None
    assert bot.conversations.get(f"{PING}:{incident.id}") is not None

    # /incident as a reply to the ping needs no id.
    before = len(fake.calls)
    await feed(
        app,
        message_update(
            "/incident", chat_id=PING, user_id=OPERATOR, chat_type="supergroup", reply_to=ping_id
        ),
    )
    visible = "\n".join(check_html(a.params["text"]) for a in _answers(fake, PING, before))
    assert f"{incident.id}: postgres disk full" in visible and "Diagnosis" in visible
