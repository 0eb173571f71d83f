"""The real bot over real discord.py against the fake Discord: registration and commands."""

from __future__ import annotations

from bots.discord.access import RateLimiter
from tests.bots.discord.conftest import Running, interact
from tests.bots.discord.fake_discord import GUILD_ID, OTHER_CHANNEL_ID, FakeDiscord

EXPECTED = {
    "status",
    "logs",
    "search",
    "ask",
    "runbook",
    "incidents",
    "incident",
    "fix",
    "ack",
    "resolve",
}


async def test_registers_commands_in_allowed_guild(running: Running, fake: FakeDiscord) -> None:
    (put,) = fake.find("PUT", rf"/applications/\d+/guilds/{GUILD_ID}/commands")
    commands = {c["name"]: c for c in put.json}
    assert set(commands) == EXPECTED
    logs = {o["name"]: o for o in commands["logs"]["options"]}
    assert logs["service"]["autocomplete"] is True
    assert logs["host"]["autocomplete"] is True
    assert [c["value"] for c in logs["level"]["choices"]] == [
        "DEBUG",
        "INFO",
        "WARNING",
        "ERROR",
        "CRITICAL",
    ]
    assert all(not o.get("required") for o in logs.values())
    fix = {o["name"]: o for o in commands["fix"]["options"]}
    assert fix["incident"]["required"] and fix["incident"]["autocomplete"]
    assert fix["action"]["required"] and fix["action"]["autocomplete"]
    assert {o["name"] for o in commands["incident"]["options"]} == {"id"}
    # Not registered globally when guilds are configured (guild commands show at once).
    assert not fake.find("PUT", r"/applications/\d+/commands$")


async def test_status_embed(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("status"))
    assert body["type"] == 4
    (embed,) = body["data"]["embeds"]
    assert embed["title"] == "Fleet status"
    text = str(embed)
    assert "web1" in text and "db1" in text
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert embed["description"] == "**1** host(s) online, **1** offline"
    assert "`web1` last seen <t:" in fields["Offline"]
    assert "`db1`" in fields["Online"]
    assert "`nginx` **10** errors / 30 events" in fields["Most errors, last hour"]


async def test_logs_filters_and_pages(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("logs", {"service": "nginx", "level": "ERROR"}))
    assert body["type"] == 4
    (embed,) = body["data"]["embeds"]
    lines = embed["description"].splitlines()
    assert len(lines) == 10  # ten errors of nginx, one page
    assert all("upstream timed out" in line and "**nginx**@web1" in line for line in lines)
    assert "page 1" in embed["footer"]["text"]
    buttons = body["data"]["components"][0]["components"]
    assert [b["label"] for b in buttons] == ["◀ Newer", "Older ▶"]
    assert buttons[0]["disabled"] is True and buttons[1]["disabled"] is True

    body = await interact(fake, fake.command("logs", {"service": "nginx"}))
    (embed,) = body["data"]["embeds"]
    first_page = embed["description"]
    recorded = fake.find("POST", r"/interactions/.*/callback")[-1]
    original = max(fake.messages)  # the message the fake stored for that reply
    assert fake.messages[original]["embeds"][0]["description"] == first_page
    older = fake.messages[original]["components"][0]["components"][1]
    assert older["disabled"] is False and recorded.json["type"] == 4
    click = fake.click(original, older["custom_id"])
    body = await interact(fake, click)
    assert body["type"] == 7  # message updated in place
    (page2,) = body["data"]["embeds"]
    assert "page 2" in page2["footer"]["text"]
    assert page2["description"] != first_page
    assert body["data"]["components"][0]["components"][0]["disabled"] is False


async def test_logs_redacts_secrets(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("logs", {"service": "postgres"}))
    text = str(body["data"]["embeds"])
    assert "checkpoint took" in text
    assert "hunter2secret" not in text and "REDACTED" in text


async def test_bad_since_is_an_ephemeral_error(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("logs", {"since": "yesterday-ish"}))
    assert body["type"] == 4
    assert body["data"]["flags"] == 64
    assert body["data"]["content"].startswith("Invalid input:")


async def test_runbook_and_autocomplete(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("runbook", {"name": "disk"}, focused="name"))
    assert body["type"] == 8
    values = [c["value"] for c in body["data"]["choices"]]
    expected = [
        r.id for r in running.bot.core.runbooks if "disk" in r.id or "disk" in r.title.lower()
    ]
    assert "disk-full" in values and sorted(values) == sorted(expected)
    body = await interact(fake, fake.command("runbook", {"name": "disk-full"}))
    (embed,) = body["data"]["embeds"]
    assert embed["title"].startswith("Disk full") or "disk-full" in embed["title"]
    assert len(embed["description"]) <= 4096
    body = await interact(fake, fake.command("runbook", {"name": "nope"}))
    assert body["data"]["flags"] == 64 and "no runbook 'nope'" in body["data"]["content"]


async def test_service_and_host_autocomplete(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("logs", {"service": "ng"}, focused="service"))
    assert [c["value"] for c in body["data"]["choices"]] == ["nginx"]
    body = await interact(fake, fake.command("logs", {"host": ""}, focused="host"))
    assert [c["value"] for c in body["data"]["choices"]] == ["db1", "web1"]


async def test_other_channel_is_refused(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("status", channel_id=OTHER_CHANNEL_ID))
    assert body["data"]["flags"] == 64
    assert "does not answer in this channel" in body["data"]["content"]


async def test_search_without_index_says_so(running: Running, fake: FakeDiscord) -> None:
    body = await interact(fake, fake.command("search", {"query": "disk is full"}))
    assert body["data"]["flags"] == 64
    assert "Semantic search is off" in body["data"]["content"]


def test_rate_limiter_window() -> None:
    limiter = RateLimiter(2, window=60)
    assert limiter.check(1, now=0) == 0
    assert limiter.check(1, now=1) == 0
    assert limiter.check(1, now=2) == 58  # third within the minute: wait for the first to age
    assert limiter.check(2, now=2) == 0  # per user
    assert limiter.check(1, now=60.5) == 0
