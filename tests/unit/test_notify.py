"""Notifier hub (rate limits, quiet hours, isolation) and the webhook against a real server."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from devmesh_core.detect.models import Incident, IncidentEvent, IncidentSummary, Severity
from devmesh_core.notify.base import Notifier, NotifierHub, in_quiet_hours
from devmesh_core.notify.settings import ChannelLimits
from devmesh_core.notify.webhook import SIGNATURE_HEADER, WebhookNotifier, verify_signature

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def event(number: int, kind: str = "opened", severity: Severity = "high") -> IncidentEvent:
    incident = Incident(
        id=f"INC-{number}",
        number=number,
        title="db down",
        severity=severity,
        opened_at=T0,
        updated_at=T0,
    )
    return IncidentEvent(
        kind=kind,  # type: ignore[arg-type]
        incident=incident,
        summary=IncidentSummary(headline="db down"),
        at=T0,
    )


class Recorder(Notifier):
    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.got: list[str] = []

    async def send(self, event: IncidentEvent) -> None:
        if self.fail:
            raise RuntimeError("chat is down")
        self.got.append(f"{event.incident.id}:{event.kind}")


def test_rate_limit_dedup_and_isolation() -> None:
    hub = NotifierHub()
    broken, limited, free = Recorder("broken", fail=True), Recorder("limited"), Recorder("free")
    hub.subscribe(broken)
    hub.subscribe(limited, ChannelLimits(rate_per_hour=2))
    hub.subscribe(free, ChannelLimits(rate_per_hour=100))

    async def run() -> None:
        for n in range(1, 5):
            await hub.publish(event(n))
        await hub.publish(event(1))  # the same change again: dropped everywhere

    asyncio.run(run())
    assert limited.got == ["INC-1:opened", "INC-2:opened"]
    assert free.got == [f"INC-{n}:opened" for n in range(1, 5)]


def test_quiet_hours_let_only_critical_through() -> None:
    assert in_quiet_hours("22:00-07:00", datetime(2026, 1, 1, 23, 30, tzinfo=UTC))
    assert in_quiet_hours("22:00-07:00", datetime(2026, 1, 1, 6, 59, tzinfo=UTC))
    assert not in_quiet_hours("22:00-07:00", datetime(2026, 1, 1, 12, 0, tzinfo=UTC))
    hub = NotifierHub()
    sleepy = Recorder("sleepy")
    hub.subscribe(sleepy, ChannelLimits(quiet_hours="00:00-23:59"))
    asyncio.run(hub.publish(event(1, severity="high")))
    asyncio.run(hub.publish(event(2, severity="critical")))
    assert sleepy.got == ["INC-2:opened"]


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[dict[str, str], bytes]]]]:
    got: list[tuple[dict[str, str], bytes]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            got.append((dict(self.headers.items()), body))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", got
    server.shutdown()
    server.server_close()


def test_webhook_posts_signed_json(
    receiver: tuple[str, list[tuple[dict[str, str], bytes]]],
) -> None:
    url, got = receiver

    async def run() -> None:
        hook = WebhookNotifier(url, secret="s3cret")
        try:
            await hook.send(event(7))
        finally:
            await hook.aclose()

    asyncio.run(run())
    ((headers, body),) = got
    assert verify_signature(body, "s3cret", headers[SIGNATURE_HEADER])
    assert not verify_signature(body, "other", headers[SIGNATURE_HEADER])
    assert json.loads(body)["incident"]["id"] == "INC-7"


def test_quiet_hours_follow_the_configured_time_zone() -> None:
    from pydantic import ValidationError

    from devmesh_core.errors import ConfigError
    from devmesh_core.notify.settings import NotifySettings

    # 21:30 UTC in January is 22:30 in Berlin (quiet) but 16:30 in New York (not)
    winter = datetime(2026, 1, 15, 21, 30, tzinfo=UTC)
    assert not in_quiet_hours("22:00-07:00", winter)
    assert in_quiet_hours("22:00-07:00", winter, "Europe/Berlin")
    assert not in_quiet_hours("22:00-07:00", winter, "America/New_York")
    # daylight saving time is followed: 20:30 UTC in July is 22:30 in Berlin
    assert in_quiet_hours("22:00-07:00", datetime(2026, 7, 15, 20, 30, tzinfo=UTC), "Europe/Berlin")
    with pytest.raises(ConfigError, match="time zone"):
        in_quiet_hours("22:00-07:00", winter, "Mars/Olympus")
    with pytest.raises(ValidationError):
        ChannelLimits(quiet_hours="22:00-07:00", timezone="Mars/Olympus")
    with pytest.raises(ValidationError):
        NotifySettings(timezone="Nowhere/Land")
    settings = NotifySettings(default_quiet_hours="22:00-07:00", timezone="Europe/Berlin")
    assert settings.timezone == "Europe/Berlin"


def test_hub_reads_quiet_hours_in_its_zone_unless_the_channel_names_one() -> None:
    now = datetime.now(UTC)
    # a one-hour quiet window around the current wall-clock hour of Asia/Tokyo
    from zoneinfo import ZoneInfo

    tokyo = now.astimezone(ZoneInfo("Asia/Tokyo"))
    window = f"{tokyo.hour:02d}:00-{(tokyo.hour + 1) % 24:02d}:00"
    hub = NotifierHub(timezone="Asia/Tokyo")
    by_hub, own_zone = Recorder("by-hub"), Recorder("own-zone")
    hub.subscribe(by_hub, ChannelLimits(quiet_hours=window))
    far = "Europe/London"  # 8 or 9 hours behind Tokyo: never in the same one-hour window
    hub.subscribe(own_zone, ChannelLimits(quiet_hours=window, timezone=far))
    asyncio.run(hub.publish(event(1, severity="high")))
    assert by_hub.got == []  # quiet in Tokyo
    assert own_zone.got == ["INC-1:opened"]  # not quiet on its own clock
