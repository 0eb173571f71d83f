"""Fleet status at a glance: which hosts are heard from, open incidents, error leaders.

What ``/status`` shows in the bots, the web page and ``GET /status``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from devmesh_core.detect.loop import incident_service
from devmesh_core.models import LEVEL_RANK, Level, from_micros, to_micros

if TYPE_CHECKING:
    from devmesh_core.runtime import Core


class HostStatus(BaseModel):
    """A host and when it was last heard from (any event, heartbeats included)."""

    host: str
    last_seen: datetime
    online: bool


class ErrorRate(BaseModel):
    """Errors (level ≥ ERROR) and all events of a service in the last hour."""

    service: str
    errors_last_hour: int
    events_last_hour: int


class FleetStatus(BaseModel):
    """The whole fleet in one answer."""

    hosts: list[HostStatus] = Field(default_factory=list)
    open_incidents: dict[str, int] = Field(default_factory=dict)
    error_leaders: list[ErrorRate] = Field(default_factory=list)


def fleet_status(core: Core, *, now: datetime | None = None) -> FleetStatus:
    """Hosts seen in the last day (online = heard within the heartbeat timeout), counts of
    not-resolved incidents by severity, and the ten services with most errors this hour."""
    now = now or datetime.now(UTC)
    store: Any = core.store
    p = store.placeholder
    day = to_micros(now - timedelta(days=1))
    hour = to_micros(now - timedelta(hours=1))
    error = LEVEL_RANK[Level.ERROR]

    def read(cur: Any) -> tuple[list[Any], list[Any]]:
        cur.execute(f"SELECT host, MAX(ts) FROM logs WHERE ts >= {p} GROUP BY host", (day,))
        hosts = list(cur.fetchall())
        cur.execute(
            f"SELECT service, SUM(CASE WHEN level >= {p} THEN 1 ELSE 0 END), COUNT(*) "
            f"FROM logs WHERE ts >= {p} GROUP BY service",
            (error, hour),
        )
        return hosts, list(cur.fetchall())

    hosts, rates = store.run(read, write=False)
    timeout = timedelta(seconds=core.settings.detect.heartbeat_timeout)
    leaders = sorted(
        (
            ErrorRate(service=s, errors_last_hour=int(e or 0), events_last_hour=int(n))
            for s, e, n in rates
        ),
        key=lambda r: (-r.errors_last_hour, -r.events_last_hour, r.service),
    )
    return FleetStatus(
        hosts=sorted(
            (
                HostStatus(
                    host=h,
                    last_seen=from_micros(int(ts)),
                    online=now - from_micros(int(ts)) <= timeout,
                )
                for h, ts in hosts
            ),
            key=lambda s: s.host,
        ),
        open_incidents=incident_service(core).repo.counts_by_severity(),
        error_leaders=[r for r in leaders if r.errors_last_hour > 0][:10],
    )
