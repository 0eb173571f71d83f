"""Fixtures for the Telegram bot tests: the fake Bot API, a real SQLite-backed Core with
the real incident and action services, and the bot's Application pointed at the fake."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from telegram import Update

from bots.telegram import build_application
from devmesh_core import services
from devmesh_core.actions.service import ActionService
from devmesh_core.actions.settings import ActionSettings, HostAllow
from devmesh_core.chat_settings import TelegramSettings
from devmesh_core.config import Settings
from devmesh_core.detect.models import Incident, Signal
from devmesh_core.detect.service import IncidentService
from devmesh_core.detect.settings import DetectSettings
from devmesh_core.reason.settings import ReasonSettings
from devmesh_core.runtime import Core
from devmesh_core.store import open_store
from tests.bots.telegram.fake_telegram import FakeTelegram

TOKEN = "999:TEST"
CHAT = 4242  # an allowed private chat (of OPERATOR)
GROUP = -100777  # an allowed group
PING = -100555  # where incident notifications go
OPERATOR = 11  # may propose and approve low-risk fixes
APPROVER = 22  # approver
APPROVER2 = 33  # second approver (two-person rule)
VIEWER = 44  # allowed to use the bot, no role for fixes
STRANGER = 66  # not allowed at all


def make_settings(tmp_path: Path, base_url: str, **telegram: Any) -> Settings:
    config: dict[str, Any] = {
        "token": TOKEN,
        "base_url": base_url,
        "allowed_chat_ids": [CHAT, GROUP, PING],
        "allowed_user_ids": [OPERATOR, APPROVER, APPROVER2, VIEWER],
        "ping_chat_ids": [PING],
        **telegram,
    }
    return Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'devmesh.db'}",
        vectors_enabled=False,
        # The bot is tested without the knowledge graph: retrieval would otherwise start an
        # embedded FalkorDB per test (the graph has its own tests).
        reason=ReasonSettings(use_graph=False, llm="none"),
        detect=DetectSettings(use_graph=False),
        telegram=TelegramSettings(**config),
        actions=ActionSettings(
            allow={"web1": HostAllow(units=["nginx"], caches=["apt"])},
            caches={"apt": tmp_path / "cache"},
            risk={"restart_unit": "high"},
            roles={
                f"telegram:{OPERATOR}": ["operator"],
                f"telegram:{APPROVER}": ["approver"],
                f"telegram:{APPROVER2}": ["approver"],
            },
        ),
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeTelegram]:
    server = FakeTelegram(TOKEN)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def settings(tmp_path: Path, fake: FakeTelegram) -> Settings:
    return make_settings(tmp_path, fake.base_url)


@pytest.fixture
def core(settings: Settings) -> Iterator[Core]:
    settings.ensure_data_dir()
    store = open_store(settings.effective_database_url)
    core = Core(settings, store)
    core.incidents = IncidentService(store)
    core.actions = ActionService.from_core(core)
    try:
        yield core
    finally:
        store.close()


@pytest.fixture
async def app(core: Core, fake: FakeTelegram) -> AsyncIterator[Any]:
    """The real Application, initialised against the fake (no updater running): tests feed
    updates with :func:`feed`."""
    application = build_application(core)
    async with application:
        yield application


_update_ids = itertools.count(1000)


async def feed(app: Any, payload: dict[str, Any]) -> None:
    """Process one update through the real handler chain."""
    update = Update.de_json({"update_id": next(_update_ids), **payload}, app.bot)
    await app.process_update(update)


def seed_logs(core: Core, messages: list[tuple[str, str, str, str]]) -> None:
    """Store events (service, host, level, message), one second apart, newest last."""
    now = datetime.now(UTC)
    items = [
        {
            "timestamp": (now - timedelta(seconds=len(messages) - n)).isoformat(),
            "service": service,
            "host": host,
            "level": level,
            "message": message,
        }
        for n, (service, host, level, message) in enumerate(messages)
    ]
    report = services.ingest(core.store, items)
    assert report.accepted == len(items), report


def open_incident(core: Core, title: str = "nginx 502 errors", **fields: Any) -> Incident:
    """Create an incident through the real IncidentService (publishes ``opened``)."""
    at = datetime.now(UTC)
    service = core.incidents
    assert service is not None

    def build(number: int, incident_id: str) -> Incident:
        return Incident(
            id=incident_id,
            number=number,
            title=title,
            severity=fields.get("severity", "high"),
            origin_service=fields.get("origin_service", "nginx"),
            origin_host=fields.get("origin_host", "web1"),
            services=fields.get("services", ["nginx"]),
            hosts=fields.get("hosts", ["web1"]),
            opened_at=at,
            updated_at=at,
            signals=[
                Signal(
                    kind="error_spike",
                    at=at,
                    service="nginx",
                    host="web1",
                    count=12,
                    severity="high",
                    detail=fields.get("detail", "upstream <backend> timed out & failed"),
                )
            ],
            diagnosis=fields.get("diagnosis"),
        )

    incident: Incident = service.create(build, at=at)
    return incident
