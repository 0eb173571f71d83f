"""/ask (deferred "thinking…", then the diagnosis) and follow-ups in an incident thread."""

from __future__ import annotations

import discord

from bots.discord.commands import send_diagnosis
from devmesh_core.reason.models import Diagnosis, Evidence
from devmesh_core.runtime import Core
from tests.bots.discord.conftest import Running, interact
from tests.bots.discord.fake_discord import FakeDiscord
from tests.bots.discord.test_incidents import open_incident


async def test_ask_defers_then_answers_with_cited_evidence(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    payload = fake.command("ask", {"question": "why does nginx time out?"})
    body = await interact(fake, payload)
    assert body["type"] == 5  # deferred: the user sees "thinking…"
    (answer,) = await fake.wait_for("POST", rf"/webhooks/\d+/{payload['token']}$", wait=60)
    (embed,) = answer.json["embeds"]
    assert embed["title"] == "Diagnosis"
    assert embed["description"]  # the root cause
    shown = {f["name"]: f["value"] for f in embed["fields"]}
    assert shown["Confidence"].endswith("%") or "%" in shown["Confidence"]
    assert "Evidence" in shown and "`" in shown["Evidence"]
    assert "hunter2secret" not in str(answer.json)


async def test_follow_up_in_thread_keeps_incident_context(
    running: Running, core: Core, fake: FakeDiscord
) -> None:
    incident_id, _, thread_id = await open_incident(core, fake)
    payload = fake.command("ask", {"question": "what is wrong?"}, channel_id=thread_id)
    body = await interact(fake, payload)
    assert body["type"] == 5
    (answer,) = await fake.wait_for("POST", rf"/webhooks/\d+/{payload['token']}$", wait=60)
    assert answer.json["embeds"][0]["title"] == f"Diagnosis · {incident_id}"
    # ask() attaches the diagnosis to the incident it was about.
    assert core.incidents is not None
    assert core.incidents.get(incident_id).diagnosis is not None
    conversation = running.bot.notifier._conversations[thread_id]
    assert len(conversation) == 1

    # A mention in the thread is a follow-up in the same conversation.
    message = fake.user_message(thread_id, f"<@{running.bot.user.id}> and since when?")  # type: ignore[union-attr]
    await fake.dispatch("MESSAGE_CREATE", message)
    replies = await fake.wait_for("POST", rf"/channels/{thread_id}/messages", count=2, wait=60)
    reply = replies[-1].json
    assert str(reply["message_reference"]["message_id"]) == message["id"]
    assert reply["embeds"][0]["title"] == f"Diagnosis · {incident_id}"
    assert len(conversation) == 2


async def test_long_diagnosis_is_attached_as_a_file(running: Running, fake: FakeDiscord) -> None:
    diagnosis = Diagnosis(
        question="q",
        root_cause="disk full on nas",
        confidence=0.8,
        evidence=[
            Evidence(id=f"event:{i}", kind="event", text="No space left on device " * 20)
            for i in range(40)
        ],
    )
    sent: list[dict[str, object]] = []

    async def send(**kwargs: object) -> None:
        sent.append(kwargs)

    await send_diagnosis(running.bot, send, diagnosis, None)
    (kwargs,) = sent
    file = kwargs["file"]
    assert isinstance(file, discord.File) and file.filename == "diagnosis.md"
    text = file.fp.read().decode()
    assert text.count("[event:") == 40  # every cited piece of evidence, in full
    embed = kwargs["embed"]
    assert isinstance(embed, discord.Embed)
    assert len(embed.fields[-1].value or "") <= 1024
