"""Incidents: proactive pings through the real notifier hub, updates threaded as replies to
the first message (remembered across a restart), and /incidents, /incident, /ack,
/resolve over the real IncidentService."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from bots.telegram import bot_of
from bots.telegram.app import subscribe
from bots.telegram.state import MessageMap
from devmesh_core.notify.base import NotifierHub
from devmesh_core.runtime import Core
from tests.bots.telegram.conftest import CHAT, OPERATOR, PING, feed, open_incident
from tests.bots.telegram.fake_telegram import FakeTelegram, message_update
from tests.bots.telegram.htmlcheck import check_html


def _hooked(core: Core, app: Any) -> NotifierHub:
    """Wire as a server does: incident service → hub → the bot's notifier."""
    hub = NotifierHub()
    hub.attach(asyncio.get_running_loop())
    core.notifiers = hub
    assert core.incidents is not None
    core.incidents.add_listener(hub.submit)
    subscribe(core, bot_of(app))
    return hub


def _sent_to(fake: FakeTelegram, chat: int, after: int = 0) -> list[Any]:
    return [
        c
        for c in fake.calls[after:]
        if c.method == "sendMessage" and c.params["chat_id"] == str(chat)
    ]


async def test_ping_then_updates_reply_to_the_first_message(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    _hooked(core, app)
    incident = open_incident(core, title="nginx <502> & timeouts")
    (ping,) = await fake.wait_for("sendMessage")
    assert ping.params["chat_id"] == str(PING)
    assert "reply_parameters" not in ping.params
    visible = check_html(ping.params["text"])
    assert f"New incident: {incident.id}" in visible and "nginx <502> & timeouts" in visible
    messages = bot_of(app).messages
    await fake.until(lambda: messages.first_message(incident.id, PING) is not None)
    first_id = messages.first_message(incident.id, PING)

    # /ack in another chat: the command is answered there, the ping chat gets a reply.
    before = len(fake.calls)
    await feed(app, message_update(f"/ack {incident.id}", chat_id=CHAT, user_id=OPERATOR))
    (answer,) = _sent_to(fake, CHAT, before)
    assert f"{incident.id} is now acknowledged" in check_html(answer.params["text"])
    await fake.wait_for("sendMessage", 2, after=before)
    (update,) = _sent_to(fake, PING, before)
    assert json.loads(update.params["reply_parameters"])["message_id"] == first_id
    visible = check_html(update.params["text"])
    assert "Acknowledged" in visible and f"telegram:{OPERATOR}" in visible

    # /resolve by number with a note: threaded under the same first message.
    before = len(fake.calls)
    await feed(app, message_update("/resolve 1 restarted nginx", chat_id=CHAT, user_id=OPERATOR))
    await fake.wait_for("sendMessage", 2, after=before)
    (update,) = _sent_to(fake, PING, before)
    assert json.loads(update.params["reply_parameters"])["message_id"] == first_id
    assert "Resolved" in check_html(update.params["text"])
    assert core.incidents is not None
    assert core.incidents.get(incident.id).state == "resolved"

    # The thread survives a restart: the map is a JSON file under the data dir.
    path = core.settings.data_dir / "telegram" / "messages.json"
    assert MessageMap(path).first_message(incident.id, PING) == first_id


async def test_ack_resolve_refusals_are_explained(app: Any, fake: FakeTelegram, core: Core) -> None:
    incident = open_incident(core)
    before = len(fake.calls)
    await feed(app, message_update("/ack INC-999", chat_id=CHAT, user_id=OPERATOR))
    (text,) = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    assert "no incident INC-999" in check_html(text)

    await feed(app, message_update(f"/resolve {incident.id}", chat_id=CHAT, user_id=OPERATOR))
    before = len(fake.calls)
    await feed(app, message_update(f"/ack {incident.id}", chat_id=CHAT, user_id=OPERATOR))
    (text,) = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    assert text.startswith("⚠️") and "resolved" in check_html(text)

    before = len(fake.calls)
    await feed(app, message_update("/ack", chat_id=CHAT, user_id=OPERATOR))
    (text,) = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    assert "which incident?" in check_html(text)


async def test_incident_list_and_detail(app: Any, fake: FakeTelegram, core: Core) -> None:
    first = open_incident(core, title="postgres disk full", origin_service="postgres")
    second = open_incident(
        core,
        title="nginx <upstream> errors",
        detail="connect() failed (111: Connection refused) while <connecting> & retrying",
        diagnosis={
            "question": "why",
            "root_cause": "postgres ran out of disk; nginx's <upstream> failed after it",
            "confidence": 0.8,
            "next_steps": ["free space on db1 & restart"],
            "evidence": [{"id": "event:7", "kind": "event", "text": "No space left <dev>"}],
            "proposed_actions": [
                {
                    "action": "clear_cache",
                    "params": {"cache": "apt"},
                    "host": "web1",
                    "runbook_id": "disk-full",
                }
            ],
            "backend": "none",
        },
    )
    assert core.incidents is not None
    core.incidents.resolve(first.id, "test")

    before = len(fake.calls)
    await feed(app, message_update("/incidents", chat_id=CHAT, user_id=OPERATOR))
    (text,) = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    visible = check_html(text)
    assert second.id in visible and "nginx <upstream> errors" in visible
    assert first.id not in visible

    before = len(fake.calls)
    await feed(app, message_update("/incidents resolved", chat_id=CHAT, user_id=OPERATOR))
    (text,) = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    assert first.id in check_html(text) and second.id not in check_html(text)

    before = len(fake.calls)
    await feed(
        app, message_update(f"/incident {second.id.lower()}", chat_id=CHAT, user_id=OPERATOR)
    )
    texts = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    visible = "\n".join(check_html(t) for t in texts)
    assert "while <connecting> & retrying" in visible
    assert "nginx's <upstream> failed" in visible and "(80% confident)" in visible
    assert "[event:7] No space left <dev>" in visible
    assert "clear_cache cache=apt on web1" in visible

    before = len(fake.calls)
    await feed(app, message_update("/incidents bogus", chat_id=CHAT, user_id=OPERATOR))
    (text,) = [c.params["text"] for c in _sent_to(fake, CHAT, before)]
    assert "unknown state" in check_html(text)


async def test_a_failing_ping_chat_does_not_stop_the_others(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    bot = bot_of(app)
    bot.settings.ping_chat_ids = [PING, CHAT]
    _hooked(core, app)
    fake.fail_chats[PING] = "Bad Request: chat not found"
    incident = open_incident(core)
    calls = await fake.wait_for("sendMessage", 2)
    assert {c.params["chat_id"] for c in calls} == {str(PING), str(CHAT)}
    await fake.until(lambda: bot.messages.first_message(incident.id, CHAT) is not None)
    assert bot.messages.first_message(incident.id, PING) is None
    # Once the chat works again, the next update there starts its thread.
    del fake.fail_chats[PING]
    assert core.incidents is not None
    core.incidents.acknowledge(incident.id, "someone")
    await fake.until(lambda: bot.messages.first_message(incident.id, PING) is not None)
