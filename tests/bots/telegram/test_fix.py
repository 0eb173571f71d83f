"""Remediation from Telegram over the real ActionService: /fix proposals with signed
Confirm/Cancel buttons, approval by role, refusal for non-approvers, the two-person rule,
expiry, forged callback data, and messages edited with the outcome."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

from bots.telegram import bot_of
from bots.telegram.app import subscribe
from devmesh_core.actions.models import Identity
from devmesh_core.actions.service import ActionService
from devmesh_core.runtime import Core
from tests.bots.telegram.conftest import (
    APPROVER,
    APPROVER2,
    CHAT,
    OPERATOR,
    PING,
    STRANGER,
    VIEWER,
    feed,
    open_incident,
)
from tests.bots.telegram.fake_telegram import FakeTelegram, callback_update, message_update
from tests.bots.telegram.htmlcheck import check_html


async def _propose(app: Any, fake: FakeTelegram, text: str, user: int = OPERATOR) -> Any:
    before = len(fake.calls)
    await feed(app, message_update(text, chat_id=CHAT, user_id=user))
    sent = [c for c in fake.calls[before:] if c.method == "sendMessage"]
    assert len(sent) == 1, [c.params.get("text") for c in sent]
    return sent[0]


def _actions(core: Core) -> ActionService:
    assert core.actions is not None
    return core.actions


def _buttons(call: Any) -> dict[str, str]:
    (row,) = call.json("reply_markup")["inline_keyboard"]
    return {b["text"]: b["callback_data"] for b in row}


async def _press(
    app: Any, fake: FakeTelegram, data: str, user: int, message_id: int = 700, chat: int = CHAT
) -> tuple[Any, list[Any]]:
    """Press a button; return the callback answer and any message edits."""
    before = len(fake.calls)
    await feed(app, callback_update(data, chat_id=chat, user_id=user, message_id=message_id))
    calls = fake.calls[before:]
    (answer,) = [c for c in calls if c.method == "answerCallbackQuery"]
    return answer, [c for c in calls if c.method == "editMessageText"]


def _request_id(call: Any) -> str:
    visible = check_html(call.params["text"])
    return visible.split("Fix ", 1)[1].split(":", 1)[0]


async def test_low_risk_fix_refused_for_viewer_then_approved(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    sent = await _propose(app, fake, "/fix clear_cache web1 cache=apt")
    visible = check_html(sent.params["text"])
    assert "clear_cache" in visible and "web1" in visible and "Risk: low" in visible
    buttons = _buttons(sent)
    assert set(buttons) == {"✅ Confirm", "✖️ Cancel"}
    assert all(len(data.encode()) <= 64 for data in buttons.values())
    request_id = _request_id(sent)
    message_id = int(sent.params.get("message_id", 0)) or 100

    # A viewer (allowed to chat, no approver role) gets an alert; nothing changes.
    answer, edits = await _press(app, fake, buttons["✅ Confirm"], VIEWER)
    assert answer.params["show_alert"] == "true"
    assert "no role that may approve" in answer.params["text"]
    assert not edits
    assert _actions(core).get(request_id).status == "pending"

    # A stranger in a chat that is not allowed is refused before anything is looked at.
    answer, edits = await _press(app, fake, buttons["✅ Confirm"], STRANGER, chat=31337)
    assert answer.params["show_alert"] == "true" and "only answers" in answer.params["text"]

    # The operator approves: the proposal message is edited, buttons gone.
    answer, edits = await _press(app, fake, buttons["✅ Confirm"], OPERATOR, message_id)
    assert "approved" in answer.params["text"]
    assert _actions(core).get(request_id).status == "approved"
    assert edits and all("reply_markup" not in e.params for e in edits)
    assert "status approved" in check_html(edits[-1].params["text"])
    assert {e.params["message_id"] for e in edits} == {str(message_id)}

    # Pressing again: the request is decided; the alert says so.
    answer, _ = await _press(app, fake, buttons["✅ Confirm"], APPROVER, message_id)
    assert answer.params["show_alert"] == "true" and "approved" in answer.params["text"]


async def test_high_risk_needs_two_approvers(app: Any, fake: FakeTelegram, core: Core) -> None:
    sent = await _propose(app, fake, "/fix restart_unit web1 unit=nginx")
    assert "Risk: high" in check_html(sent.params["text"])
    assert "approvals 0/2" in check_html(sent.params["text"])
    confirm = _buttons(sent)["✅ Confirm"]
    request_id = _request_id(sent)

    answer, edits = await _press(app, fake, confirm, APPROVER)
    assert "1 more approver" in answer.params["text"]
    assert "approvals 1/2" in check_html(edits[-1].params["text"])
    assert "reply_markup" in edits[-1].params  # still waiting: buttons stay

    answer, _ = await _press(app, fake, confirm, APPROVER)
    assert answer.params["show_alert"] == "true" and "already approved" in answer.params["text"]

    # The requester may not be the second approver of a high-risk request.
    answer, _ = await _press(app, fake, confirm, OPERATOR)
    assert answer.params["show_alert"] == "true"

    answer, edits = await _press(app, fake, confirm, APPROVER2)
    request = _actions(core).get(request_id)
    assert request.status == "approved"
    assert request.approvals == [f"telegram:{APPROVER}", f"telegram:{APPROVER2}"]
    assert "status approved" in check_html(edits[-1].params["text"])


async def test_forged_and_tampered_callback_data_is_refused(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    sent = await _propose(app, fake, "/fix clear_cache web1 cache=apt")
    confirm = _buttons(sent)["✅ Confirm"]
    request_id = _request_id(sent)
    other = _actions(core).propose(
        "clear_cache", {"cache": "apt"}, host="web1", incident_id=None, requested_by="cli:x"
    )
    for forged in (
        confirm.replace(request_id, other.id),  # valid mac of another request
        "r" + confirm[1:],  # a Confirm turned into a Cancel
        confirm[:-3] + "AAA",
        f"a|{request_id}|",
        "totally-made-up",
    ):
        answer, edits = await _press(app, fake, forged, APPROVER)
        assert answer.params["show_alert"] == "true"
        assert "not valid" in answer.params["text"]
        assert not edits
    assert _actions(core).get(request_id).status == "pending"
    assert _actions(core).get(other.id).status == "pending"


async def test_expired_request_cannot_be_confirmed(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    sent = await _propose(app, fake, "/fix clear_cache web1 cache=apt")
    confirm = _buttons(sent)["✅ Confirm"]
    request_id = _request_id(sent)
    real_clock = _actions(core).clock
    _actions(core).clock = lambda: real_clock() + timedelta(hours=2)
    answer, edits = await _press(app, fake, confirm, APPROVER, message_id=100)
    assert answer.params["show_alert"] == "true" and "expired" in answer.params["text"]
    assert _actions(core).get(request_id).status == "expired"
    assert edits and "status expired" in check_html(edits[-1].params["text"])
    assert "reply_markup" not in edits[-1].params


async def test_cancel_by_requester_and_outcome_edits_from_elsewhere(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    bot = bot_of(app)
    subscribe(core, bot)
    sent = await _propose(app, fake, "/fix clear_cache web1 cache=apt")
    answer, edits = await _press(app, fake, _buttons(sent)["✖️ Cancel"], OPERATOR, 100)
    assert "cancelled" in answer.params["text"]
    assert "status cancelled" in check_html(edits[-1].params["text"])

    # A decision made elsewhere (the web UI, another thread) edits the Telegram message.
    sent = await _propose(app, fake, "/fix clear_cache web1 cache=apt")
    request_id = _request_id(sent)
    await fake.until(lambda: bot.messages.request_messages(request_id))
    before = len(fake.calls)
    core.settings.actions.roles["web:alice"] = ["approver"]
    await asyncio.to_thread(
        _actions(core).reject, request_id, Identity(platform="web", user_id="alice"), "not now"
    )
    (edit,) = await fake.wait_for("editMessageText", after=before)
    visible = check_html(edit.params["text"])
    assert "status rejected" in visible and "not now" in visible


async def test_fix_incident_proposes_the_diagnosis_actions(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    incident = open_incident(
        core,
        diagnosis={
            "question": "why",
            "root_cause": "apt cache filled the disk",
            "confidence": 0.7,
            "proposed_actions": [
                {
                    "action": "clear_cache",
                    "params": {"cache": "apt"},
                    "host": "web1",
                    "runbook_id": "disk-full",
                },
                {
                    "action": "restart_unit",
                    "params": {"unit": "sshd"},
                    "host": "web1",
                    "runbook_id": "disk-full",
                },
            ],
        },
    )
    before = len(fake.calls)
    await feed(app, message_update(f"/fix {incident.id}", chat_id=CHAT, user_id=OPERATOR))
    texts = [check_html(c.params["text"]) for c in fake.calls[before:] if c.method == "sendMessage"]
    assert len(texts) == 2
    assert "clear_cache" in texts[0] and f"Incident {incident.id}" in texts[0]
    assert "restart_unit not proposed" in texts[1] and "sshd" in texts[1]
    (pending,) = _actions(core).pending()
    assert pending.incident_id == incident.id and pending.requested_by == f"telegram:{OPERATOR}"

    # A viewer cannot propose (no proposer role); a bad action is explained.
    sent = await _propose(app, fake, "/fix clear_cache web1 cache=apt", user=VIEWER)
    assert "no role that may propose" in check_html(sent.params["text"])
    sent = await _propose(app, fake, "/fix format_disk web1")
    assert "format_disk" in check_html(sent.params["text"])
    sent = await _propose(app, fake, "/fix")
    assert "Fix" in check_html(sent.params["text"])  # the pending one, with buttons


async def test_fixes_proposed_by_the_diagnosis_are_posted_in_the_incident_thread(
    app: Any, fake: FakeTelegram, core: Core
) -> None:
    bot = bot_of(app)
    subscribe(core, bot)
    incident = open_incident(core)
    bot.messages.remember_incident(incident.id, PING, 4321)  # its announcement
    diagnosis = {
        "proposed_actions": [
            {
                "action": "clear_cache",
                "params": {"cache": "apt"},
                "host": "web1",
                "runbook_id": "disk-full",
            }
        ]
    }
    made, refused = await asyncio.to_thread(
        _actions(core).propose_from_diagnosis, diagnosis, incident_id=incident.id
    )
    assert len(made) == 1 and not refused
    sent = await fake.wait_for("sendMessage", 2)  # the incident's ping and the request
    (post,) = [c for c in sent if "reply_markup" in c.params]
    assert post.params["chat_id"] == str(PING)
    assert json.loads(post.params["reply_parameters"])["message_id"] == 4321
    assert set(_buttons(post)) == {"✅ Confirm", "✖️ Cancel"}
    await fake.until(lambda: bot.messages.request_messages(made[0].id))

    # An approver confirms right there; the message is edited with the outcome.
    ((_chat_id, message_id),) = bot.messages.request_messages(made[0].id)
    before = len(fake.calls)
    await feed(
        app,
        callback_update(
            _buttons(post)["✅ Confirm"], chat_id=PING, user_id=APPROVER, message_id=message_id
        ),
    )
    edits = [c for c in fake.calls[before:] if c.method == "editMessageText"]
    assert edits and "status approved" in check_html(edits[-1].params["text"])
