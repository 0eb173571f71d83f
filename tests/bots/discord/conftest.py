"""Fixtures: a fake Discord on 127.0.0.1, a real Core over SQLite with seeded data, and the
real bot (real discord.py) logged in to the fake."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import discord
import pytest
import yarl

from bots.discord.bot import DevMeshBot
from devmesh_core import services
from devmesh_core.actions.service import ActionService
from devmesh_core.actions.settings import ActionSettings, HostAllow
from devmesh_core.chat_settings import DiscordSettings
from devmesh_core.config import Settings
from devmesh_core.detect.models import Incident, Signal
from devmesh_core.detect.service import IncidentService
from devmesh_core.notify.base import NotifierHub
from devmesh_core.reason.runbooks import bundled_runbooks_dir, load_runbooks
from devmesh_core.runtime import Core
from devmesh_core.store import open_store
from tests.bots.discord.fake_discord import (
    APP_ID,
    APPROVER_ROLE_ID,
    CHANNEL_ID,
    GUILD_ID,
    FakeDiscord,
)

APPROVER_ID = 2001
SECOND_APPROVER_ID = 2002
OPERATOR_ID = 2003
VIEWER_ID = 2004


@pytest.fixture
async def fake(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    server = FakeDiscord()
    await server.start()
    # Both are process-global: monkeypatch restores them after the test.
    monkeypatch.setattr(discord.http.Route, "BASE", server.api_base)
    monkeypatch.setattr(
        discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(server.gateway_url)
    )
    yield server
    await server.stop()


def make_settings(tmp_path: Path, **discord_overrides: Any) -> Settings:
    discord_settings = {
        "token": "TEST-TOKEN",
        "application_id": APP_ID,
        "ping_channel_id": CHANNEL_ID,
        "allowed_guild_ids": [GUILD_ID],
        "allowed_channel_ids": [CHANNEL_ID],
        "rate_limit_per_minute": 100,
        "diagnose_new_incidents": False,
        **discord_overrides,
    }
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'devmesh.db'}",
        vectors_enabled=False,
        discord=DiscordSettings.model_validate(discord_settings),
        actions=ActionSettings(
            allow={"web1": HostAllow(units=["nginx.service", "php-fpm.service"])},
            roles={
                f"discord-role:{APPROVER_ROLE_ID}": ["approver"],
                f"discord:{SECOND_APPROVER_ID}": ["approver"],
                f"discord:{OPERATOR_ID}": ["operator"],
            },
        ),
    )


def open_core(settings: Settings) -> Core:
    """A Core like the server's: store, runbooks, incidents, notifier hub, actions."""
    settings.ensure_data_dir()
    core = Core(settings, open_store(settings.effective_database_url))
    core.runbooks = load_runbooks(bundled_runbooks_dir())
    core.incidents = IncidentService(core.store)
    core.notifiers = NotifierHub()
    core.incidents.add_listener(core.notifiers.submit)
    core.actions = ActionService.from_core(core)
    return core


def seed_logs(core: Core, now: datetime) -> None:
    """Events of two services on two hosts (web1 silent for 21 minutes: offline; db1
    heard a minute ago: online), mined into templates (for autocomplete)."""
    items = []
    for i in range(30):
        items.append(
            {
                "timestamp": (now - timedelta(minutes=50 - i)).isoformat(),
                "service": "nginx",
                "host": "web1",
                "level": "ERROR" if i % 3 == 0 else "INFO",
                "message": f"upstream timed out while connecting to php-fpm request {i}"
                if i % 3 == 0
                else f"GET /index.php 200 {i}ms",
            }
        )
    for i in range(5):
        items.append(
            {
                "timestamp": (now - timedelta(minutes=5 - i)).isoformat(),
                "service": "postgres",
                "host": "db1",
                "level": "WARNING",
                "message": f"checkpoint took {i + 3}s password=hunter2secret",
            }
        )
    miner = services.open_miner(core.settings, core.store)
    report = services.ingest(core.store, items, miner=miner)
    assert report.accepted == len(items)
    if miner is not None:
        miner.close()


def make_incident(core: Core, now: datetime, *, title: str = "nginx upstream timeouts") -> Incident:
    def build(number: int, label: str) -> Incident:
        return Incident(
            id=label,
            number=number,
            title=title,
            severity="high",
            origin_service="nginx",
            origin_host="web1",
            services=["nginx", "php-fpm"],
            hosts=["web1"],
            correlation_id=f"corr-{number}",
            opened_at=now,
            updated_at=now,
            signals=[
                Signal(
                    kind="error_spike",
                    at=now,
                    service="nginx",
                    host="web1",
                    count=10,
                    severity="high",
                    detail="10 errors in 5 minutes",
                    event_ids=[1, 4, 7],
                )
            ],
        )

    assert core.incidents is not None
    created: Incident = core.incidents.create(build, at=now)
    return created


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path)


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    core = open_core(settings)
    seed_logs(core, datetime.now(UTC))
    yield core
    core.store.close()


class Running:
    """The bot and the task running ``client.start``."""

    def __init__(self, bot: DevMeshBot, task: asyncio.Task[None]) -> None:
        self.bot = bot
        self.task = task

    async def stop(self) -> None:
        await self.bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            # Exceptions while parsing events end this task: awaiting it surfaces them.
            await asyncio.wait_for(self.task, 10)


async def start_bot(core: Core) -> Running:
    bot = DevMeshBot(core)
    task = asyncio.create_task(bot.start("TEST-TOKEN"))
    ready = asyncio.create_task(bot.wait_until_ready())
    done, _ = await asyncio.wait({ready, task}, timeout=15, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        ready.cancel()
        task.result()  # raises the start failure
    assert ready in done, "bot did not become ready"
    return Running(bot, task)


@pytest.fixture
async def running(core: Core, fake: FakeDiscord) -> AsyncIterator[Running]:
    run = await start_bot(core)
    yield run
    await run.stop()


async def interact(fake: FakeDiscord, payload: dict[str, Any]) -> dict[str, Any]:
    """Push an interaction and return the body of the bot's callback to it."""
    before = len(fake.find("POST", rf"/interactions/{payload['id']}/"))
    await fake.dispatch("INTERACTION_CREATE", payload)
    found = await fake.wait_for(
        "POST", rf"/interactions/{payload['id']}/{payload['token']}/callback", count=before + 1
    )
    body: dict[str, Any] = found[-1].json
    return body
