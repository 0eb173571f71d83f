"""/fix proposals and their Confirm/Cancel buttons: approver, non-approver, two-person
rule, expiry, tampering, and buttons that still work after the bot restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from devmesh_core.runtime import Core
from tests.bots.discord.conftest import (
    OPERATOR_ID,
    SECOND_APPROVER_ID,
    VIEWER_ID,
    Running,
    interact,
    make_incident,
    start_bot,
)
from tests.bots.discord.fake_discord import APPROVER_ROLE_ID, CHANNEL_ID, FakeDiscord


async def propose(
    fake: FakeDiscord, core: Core, action: str, params: str
) -> tuple[str, int, dict[str, Any]]:
    """An incident and a /fix for it by the operator; return (request id, message id,
    buttons by label)."""
    incident = await asyncio.to_thread(make_incident, core, datetime.now(UTC))
    body = await interact(
        fake,
        fake.command(
            "fix",
            {"incident": incident.id, "action": action, "params": params},
            user_id=OPERATOR_ID,
            user_name="ops",
        ),
    )
    assert body["type"] == 4, body
    message_id = max(fake.messages)
    message = fake.messages[message_id]
    buttons = {b["label"]: b for b in message["components"][0]["components"]}
    footer = message["embeds"][0]["footer"]["text"]
    request_id = footer.split(" · ")[0]
    return request_id, message_id, buttons


def fields(embed: dict[str, Any]) -> dict[str, str]:
    return {f["name"]: f["value"] for f in embed["fields"]}


async def test_fix_confirm_by_approver_refusal_for_others(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    request_id, message_id, buttons = await propose(
        fake, core, "restart_unit", "unit=nginx.service"
    )
    embed = fake.messages[message_id]["embeds"][0]
    shown = fields(embed)
    assert shown["Action"] == "`restart_unit`" and shown["Host"] == "`web1`"
    assert shown["Risk"] == "LOW" and shown["Parameters"] == "unit=`nginx.service`"
    assert shown["Approvals"] == "0/1" and shown["Expires"].startswith("<t:")
    assert set(buttons) == {"Confirm", "Cancel"}
    assert all(len(b["custom_id"]) <= 100 for b in buttons.values())
    assert buttons["Confirm"]["custom_id"].startswith("devmesh:a|" + request_id)

    # A member without an approver role is refused privately; nothing changes.
    body = await interact(
        fake, fake.click(message_id, buttons["Confirm"]["custom_id"], user_id=VIEWER_ID)
    )
    assert body["type"] == 4 and body["data"]["flags"] == 64
    assert "You cannot do that" in body["data"]["content"]
    assert core.actions is not None
    assert core.actions.get(request_id).status == "pending"

    # A tampered custom id is refused (the signature does not match).
    genuine = buttons["Confirm"]["custom_id"]
    forged = genuine[:-3] + ("AAA" if not genuine.endswith("AAA") else "BBB")
    stored = fake.messages[message_id]["components"][0]["components"][0]
    stored["custom_id"] = forged
    body = await interact(
        fake, fake.click(message_id, forged, user_id=SECOND_APPROVER_ID, user_name="bob")
    )
    assert body["data"]["flags"] == 64 and "not valid" in body["data"]["content"]
    stored["custom_id"] = genuine
    assert core.actions.get(request_id).status == "pending"

    # An approver (by Discord role) confirms: the message updates in place, no buttons.
    body = await interact(
        fake,
        fake.click(
            message_id, buttons["Confirm"]["custom_id"], user_id=3001, roles=(APPROVER_ROLE_ID,)
        ),
    )
    assert body["type"] == 7, body
    shown = fields(body["data"]["embeds"][0])
    assert shown["Status"] == "approved" and shown["Approvals"].startswith("1/1 · discord:3001")
    assert body["data"]["components"] == []
    assert core.actions.get(request_id).status == "approved"


async def test_high_risk_needs_two_people(running: Running, core: Core, fake: FakeDiscord) -> None:
    request_id, message_id, buttons = await propose(fake, core, "stop_unit", "unit=php-fpm")
    embed = fake.messages[message_id]["embeds"][0]
    assert "Two-person rule" in fields(embed)
    assert fields(embed)["Risk"] == "HIGH"
    confirm = next(label for label in buttons if label.startswith("Confirm"))
    assert confirm == "Confirm (1/2)"
    custom_id = buttons[confirm]["custom_id"]
    body = await interact(
        fake, fake.click(message_id, custom_id, user_id=3001, roles=(APPROVER_ROLE_ID,))
    )
    assert body["type"] == 7, body
    assert fields(body["data"]["embeds"][0])["Approvals"].startswith("1/2")
    labels = [b["label"] for b in body["data"]["components"][0]["components"]]
    assert labels == ["Confirm (2/2)", "Cancel"]
    # The same person cannot be the second approver.
    body = await interact(
        fake, fake.click(message_id, custom_id, user_id=3001, roles=(APPROVER_ROLE_ID,))
    )
    assert body["data"]["flags"] == 64
    body = await interact(
        fake, fake.click(message_id, custom_id, user_id=SECOND_APPROVER_ID, user_name="bob")
    )
    assert body["type"] == 7, body
    assert fields(body["data"]["embeds"][0])["Status"] == "approved"
    assert core.actions is not None and core.actions.get(request_id).status == "approved"


async def test_expired_request_is_refused_and_message_updated(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    request_id, message_id, buttons = await propose(
        fake, core, "restart_unit", "unit=nginx.service"
    )
    assert core.actions is not None
    later = datetime.now(UTC) + timedelta(hours=1)
    core.actions.clock = lambda: later  # the service's own clock: an hour passes
    body = await interact(
        fake,
        fake.click(
            message_id, buttons["Confirm"]["custom_id"], user_id=3001, roles=(APPROVER_ROLE_ID,)
        ),
    )
    assert body["data"]["flags"] == 64 and "expired" in body["data"]["content"]
    edits = await fake.wait_for("PATCH", rf"/channels/{CHANNEL_ID}/messages/{message_id}")
    last = edits[-1].json
    assert fields(last["embeds"][0])["Status"] == "expired"
    assert last["components"] == []
    assert core.actions.get(request_id).status == "expired"


async def test_cancel_by_requester(running: Running, core: Core, fake: FakeDiscord) -> None:
    request_id, message_id, buttons = await propose(
        fake, core, "restart_unit", "unit=nginx.service"
    )
    body = await interact(
        fake,
        fake.click(message_id, buttons["Cancel"]["custom_id"], user_id=OPERATOR_ID),
    )
    assert body["type"] == 7, body
    status = fields(body["data"]["embeds"][0])["Status"]
    assert core.actions is not None
    assert status == core.actions.get(request_id).status
    assert status in ("cancelled", "rejected")


async def test_fix_refuses_what_is_not_allowlisted(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    incident = await asyncio.to_thread(make_incident, core, datetime.now(UTC))
    body = await interact(
        fake,
        fake.command(
            "fix",
            {"incident": incident.id, "action": "restart_unit", "params": "unit=sshd"},
            user_id=OPERATOR_ID,
        ),
    )
    assert body["data"]["flags"] == 64
    assert body["data"]["content"].startswith("Invalid input:")
    body = await interact(
        fake,
        fake.command(
            "fix",
            {"incident": incident.id, "action": "restart_unit", "params": "unit=nginx"},
            user_id=VIEWER_ID,
        ),
    )
    assert body["data"]["flags"] == 64 and body["data"]["content"].startswith("Not allowed:")
    body = await interact(
        fake,
        fake.command("fix", {"incident": incident.id, "action": "re"}, focused="action"),
    )
    names = [c["value"] for c in body["data"]["choices"]]
    assert "restart_unit" in names and all("re" in n for n in names)


async def test_buttons_survive_a_restart(core: Core, fake: FakeDiscord) -> None:
    first = await start_bot(core)
    try:
        request_id, message_id, buttons = await propose(
            fake, core, "restart_unit", "unit=nginx.service"
        )
    finally:
        await first.stop()
    second = await start_bot(core)  # a new process would rebuild the same way
    try:
        assert second.bot is not first.bot
        body = await interact(
            fake,
            fake.click(
                message_id,
                buttons["Confirm"]["custom_id"],
                user_id=3001,
                roles=(APPROVER_ROLE_ID,),
            ),
        )
        assert body["type"] == 7
        assert fields(body["data"]["embeds"][0])["Status"] == "approved"
        assert core.actions is not None and core.actions.get(request_id).status == "approved"
    finally:
        await second.stop()
