"""Pings with threads (the bot as the core's Notifier) and the incident commands."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from pathlib import Path

from devmesh_core.runtime import Core
from tests.bots.discord.conftest import (
    Running,
    interact,
    make_incident,
    make_settings,
    open_core,
    seed_logs,
    start_bot,
)
from tests.bots.discord.fake_discord import CHANNEL_ID, FakeDiscord


async def open_incident(core: Core, fake: FakeDiscord, **kw: object) -> tuple[str, int, int]:
    """Create an incident the way the detector does (from another thread) and wait for the
    ping and its thread; return (incident id, ping message id, thread id)."""
    incident = await asyncio.to_thread(make_incident, core, datetime.now(UTC), **kw)  # type: ignore[arg-type]
    (thread_req,) = await fake.wait_for("POST", rf"/channels/{CHANNEL_ID}/messages/\d+/threads")
    message_id = int(thread_req.path.split("/")[4])
    thread_id = max(cid for cid, c in fake.channels.items() if c.get("type") == 11)
    await fake.wait_for("POST", rf"/channels/{thread_id}/messages")
    return incident.id, message_id, thread_id


async def test_new_incident_posts_embed_and_opens_thread(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    incident_id, message_id, thread_id = await open_incident(core, fake)
    ping = fake.messages[message_id]
    assert int(ping["channel_id"]) == CHANNEL_ID
    (embed,) = ping["embeds"]
    assert embed["title"] == f"{incident_id} · nginx upstream timeouts"
    assert embed["color"] == 0xE67E22  # high → orange
    assert incident_id in embed["description"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Severity"] == "high" and fields["Origin"] == "nginx @ web1"
    thread = fake.channels[thread_id]
    assert thread["name"].startswith(incident_id)
    assert thread["parent_id"] == str(CHANNEL_ID)
    (welcome,) = fake.find("POST", rf"/channels/{thread_id}/messages")
    assert f"/ack {incident_id}" in welcome.json["content"]
    assert running.bot.state.incident_of_thread(thread_id) == incident_id


async def test_ack_in_thread_updates_thread_and_ping(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    incident_id, message_id, thread_id = await open_incident(core, fake)
    body = await interact(fake, fake.command("ack", {"id": incident_id}, channel_id=thread_id))
    assert body["type"] == 4
    assert f"{incident_id} acknowledged by <@1001>" in body["data"]["content"]
    assert core.incidents is not None
    stored = core.incidents.get(incident_id)
    assert stored.state == "acknowledged" and stored.acknowledged_by == "discord:1001"
    # The listener puts the change in the thread and refreshes the ping.
    posts = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", count=2)
    assert f"**{incident_id}** acknowledged by discord:1001" in posts[-1].json["content"]
    (edit,) = await fake.wait_for("PATCH", rf"/channels/{CHANNEL_ID}/messages/{message_id}")
    fields = {f["name"]: f["value"] for f in edit.json["embeds"][0]["fields"]}
    assert fields["State"] == "acknowledged"

    # Acknowledging twice is refused by the core, and the user is told why, privately.
    body = await interact(fake, fake.command("ack", {"id": incident_id}, channel_id=thread_id))
    assert body["data"]["flags"] == 64
    assert body["data"]["content"].startswith("Invalid input:")


async def test_incidents_incident_resolve(running: Running, core: Core, fake: FakeDiscord) -> None:
    first, _, _ = await open_incident(core, fake, title="disk full on nas")
    body = await interact(fake, fake.command("incidents"))
    (embed,) = body["data"]["embeds"]
    assert embed["title"] == "Incidents (active)"
    assert f"**{first}** open" in embed["description"]

    body = await interact(fake, fake.command("incident", {"id": first.lower()}))
    (embed,) = body["data"]["embeds"]
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert "error_spike" in fields["Timeline"] and "10 errors in 5 minutes" in fields["Timeline"]
    assert fields["Evidence"] == "event:1, event:4, event:7"

    body = await interact(fake, fake.command("incident", {"id": "INC-999"}))
    assert body["data"]["flags"] == 64 and body["data"]["content"].startswith("Not found:")

    body = await interact(fake, fake.command("incident", {"id": "disk"}, focused="id"))
    assert [c["value"] for c in body["data"]["choices"]] == [first]

    body = await interact(fake, fake.command("resolve", {"id": first, "note": "freed space"}))
    assert f"{first} resolved by <@1001>" in body["data"]["content"]
    assert core.incidents is not None
    assert core.incidents.get(first).state == "resolved"
    body = await interact(fake, fake.command("incidents", {"state": "resolved"}))
    assert f"**{first}** resolved" in body["data"]["embeds"][0]["description"]
    body = await interact(fake, fake.command("incidents"))
    assert body["data"]["embeds"][0]["description"] == "No active incidents."


async def test_new_incident_gets_a_diagnosis_in_its_thread(
    tmp_path: Path, fake: FakeDiscord
) -> None:
    core = open_core(make_settings(tmp_path, diagnose_new_incidents=True))
    seed_logs(core, datetime.now(UTC))
    run = await start_bot(core)
    try:
        incident_id, _, thread_id = await open_incident(core, fake)
        posts = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", count=2, wait=60)
        (embed,) = posts[-1].json["embeds"]
        assert embed["title"] == f"Diagnosis · {incident_id}"
        assert core.incidents is not None
        assert core.incidents.get(incident_id).diagnosis is not None
    finally:
        await run.stop()
        core.store.close()
