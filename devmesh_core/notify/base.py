"""The ``Notifier`` port and the hub that fans incident events out to notifiers.

Bots (Discord, Telegram) and the webhook implement :class:`Notifier`; the hub applies each
channel's rate limit and quiet hours, drops repeats of the same change, and isolates the
notifiers from each other: one that fails or hangs is logged and never blocks the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from devmesh_core.detect.models import IncidentEvent
from devmesh_core.errors import ConfigError
from devmesh_core.log import get_logger
from devmesh_core.notify.settings import ChannelLimits

log = get_logger(__name__)


class Notifier(ABC):
    """A channel incident events are sent to (a chat, a webhook)."""

    name: str = "notifier"

    @abstractmethod
    async def send(self, event: IncidentEvent) -> None:
        """Deliver one event; raise on failure (the hub logs it)."""


def parse_quiet_hours(text: str) -> tuple[dtime, dtime]:
    """``"22:00-07:00"`` → (start, end); ``ConfigError`` on a malformed value."""
    try:
        start, end = (part.strip() for part in text.split("-", 1))
        return dtime.fromisoformat(start), dtime.fromisoformat(end)
    except ValueError as exc:
        raise ConfigError(f"quiet hours {text!r}: use HH:MM-HH:MM") from exc


def parse_timezone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name`` (``None``/empty → UTC); ``ConfigError`` for an unknown one."""
    try:
        return ZoneInfo((name or "UTC").strip())
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ConfigError(
            f"unknown time zone {name!r}: use an IANA name such as Europe/Berlin or UTC"
        ) from exc


def in_quiet_hours(text: str | None, now: datetime, timezone: str | None = None) -> bool:
    """Whether ``now`` falls in the quiet hours read on the wall clock of ``timezone``
    (default UTC; the hours may wrap past midnight)."""
    if not text:
        return False
    start, end = parse_quiet_hours(text)
    current = now.astimezone(parse_timezone(timezone)).time()
    if start <= end:
        return start <= current < end
    return current >= start or current < end


@dataclass
class _Channel:
    notifier: Notifier
    limits: ChannelLimits
    sent: deque[float] = field(default_factory=deque)  # monotonic send times, last hour
    dropped: int = 0


class NotifierHub:
    """Subscribers and delivery. ``publish`` is async; :meth:`submit` is the thread-safe
    entry the (sync) incident service calls from the detection thread."""

    def __init__(
        self,
        *,
        default_limits: ChannelLimits | None = None,
        timeout: float = 15.0,
        timezone: str = "UTC",
    ) -> None:
        self._channels: list[_Channel] = []
        self._default = default_limits or ChannelLimits()
        self._timezone = parse_timezone(timezone).key
        self._timeout = timeout
        self._seen: OrderedDict[tuple[str, str, str], None] = OrderedDict()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def subscribe(self, notifier: Notifier, limits: ChannelLimits | None = None) -> None:
        """Send incident events to ``notifier`` (with its own rate limit/quiet hours)."""
        self._channels.append(_Channel(notifier, limits or self._default))

    @property
    def notifiers(self) -> list[Notifier]:
        return [c.notifier for c in self._channels]

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop :meth:`submit` hands events to (the API server's)."""
        self._loop = loop

    def submit(self, event: IncidentEvent) -> None:
        """Publish from any thread: on the attached loop if there is one (not waiting for
        delivery), else right here in a fresh loop (CLI, replays)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.publish(event), loop)
            return
        if self._channels:
            asyncio.run(self.publish(event))

    def _fresh(self, event: IncidentEvent) -> bool:
        key = (event.incident.id, event.kind, event.at.isoformat())
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            while len(self._seen) > 10_000:
                self._seen.popitem(last=False)
        return True

    def _admit(self, channel: _Channel, event: IncidentEvent, now: float) -> str | None:
        """Why the channel must skip this event, or ``None`` to send it."""
        critical = event.incident.severity == "critical"
        zone = channel.limits.timezone or self._timezone
        if not critical and in_quiet_hours(channel.limits.quiet_hours, datetime.now(UTC), zone):
            return "quiet_hours"
        with self._lock:
            while channel.sent and now - channel.sent[0] > 3600:
                channel.sent.popleft()
            if len(channel.sent) >= channel.limits.rate_per_hour:
                return "rate_limited"
            channel.sent.append(now)
        return None

    async def publish(self, event: IncidentEvent) -> None:
        """Deliver to every admitted channel concurrently; failures are logged."""
        if not self._fresh(event):
            return
        now = time.monotonic()
        sends = []
        for channel in self._channels:
            reason = self._admit(channel, event, now)
            if reason is not None:
                channel.dropped += 1
                log.info(
                    "notification_skipped",
                    channel=channel.notifier.name,
                    incident=event.incident.id,
                    kind=event.kind,
                    reason=reason,
                )
                continue
            sends.append(self._send(channel.notifier, event))
        if sends:
            await asyncio.gather(*sends)

    async def _send(self, notifier: Notifier, event: IncidentEvent) -> None:
        try:
            await asyncio.wait_for(notifier.send(event), self._timeout)
        except Exception as exc:  # one failing notifier never blocks the others
            log.warning(
                "notification_failed",
                channel=notifier.name,
                incident=event.incident.id,
                kind=event.kind,
                error=repr(exc),
            )

    async def aclose(self) -> None:
        """Close notifiers that hold resources (an HTTP client)."""
        for channel in self._channels:
            close = getattr(channel.notifier, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
