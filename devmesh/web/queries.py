"""The few reads the status page needs that the ``LogStore`` port does not offer: events
after an id watermark (the live tail), one event by id (evidence links), the newest id, and
per-service error counts in time buckets (the sparklines).

Why id and not timestamp for the tail: a shipper catching up after an outage delivers lines
with old timestamps; a timestamp cursor would skip them, an autoincrement id never does.
These run through ``SQLLogStore.run`` (the public way for siblings of the store to read the
log database, as ``detect.status`` does) with the store's own ``SELECT_COLUMNS`` and row
builder, so they follow schema changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from devmesh_core.errors import BackendError
from devmesh_core.models import LEVEL_RANK, Level, StoredEvent, to_micros
from devmesh_core.store.base import LogStore
from devmesh_core.store.sql import SELECT_COLUMNS, like_pattern, stored_event

_COLUMNS = ", ".join(SELECT_COLUMNS)


def _sql(store: LogStore) -> Any:
    if not hasattr(store, "run") or not hasattr(store, "placeholder"):
        raise BackendError(f"the {store.backend} store does not support the status page reads")
    return store


@dataclass(frozen=True, slots=True)
class TailFilter:
    """The logs page's filters that apply to the live tail (times do not: it is live)."""

    service: str | None = None
    host: str | None = None
    level: Level | None = None
    text: str | None = None


def latest_id(store: LogStore) -> int:
    """The highest event id stored (0 for an empty store): where a tail starts."""
    sql = _sql(store)

    def read(cur: Any) -> int:
        cur.execute("SELECT MAX(id) FROM logs")
        row = cur.fetchone()
        return int(row[0] or 0) if row else 0

    return int(sql.run(read, write=False))


def events_after(
    store: LogStore, after_id: int, flt: TailFilter, *, limit: int = 200
) -> list[StoredEvent]:
    """Events with id > ``after_id`` matching ``flt``, oldest id first (primary-key range)."""
    sql = _sql(store)
    p = sql.placeholder
    terms = [f"id > {p}"]
    params: list[Any] = [int(after_id)]
    if flt.service:
        terms.append(f"service = {p}")
        params.append(flt.service)
    if flt.host:
        terms.append(f"host = {p}")
        params.append(flt.host)
    if flt.level is not None:
        terms.append(f"level >= {p}")
        params.append(flt.level.rank)
    if flt.text:
        terms.append(f"message LIKE {p} ESCAPE '!'")
        params.append(like_pattern(flt.text))
    statement = (
        f"SELECT {_COLUMNS} FROM logs WHERE {' AND '.join(terms)} "
        f"ORDER BY id ASC LIMIT {int(limit)}"
    )

    def read(cur: Any) -> list[Any]:
        cur.execute(statement, params)
        return list(cur.fetchall())

    return [stored_event(row) for row in sql.run(read, write=False)]


def max_id_after(store: LogStore, after_id: int) -> int:
    """The highest id above ``after_id`` regardless of filters, so a tail whose filter
    matches nothing still advances its watermark (and does not rescan the same rows)."""
    sql = _sql(store)
    p = sql.placeholder

    def read(cur: Any) -> int:
        cur.execute(f"SELECT MAX(id) FROM logs WHERE id > {p}", (int(after_id),))
        row = cur.fetchone()
        return int(row[0]) if row and row[0] is not None else int(after_id)

    return int(sql.run(read, write=False))


def event_by_id(store: LogStore, event_id: int) -> StoredEvent | None:
    """One stored event (for evidence links), or ``None``."""
    sql = _sql(store)
    p = sql.placeholder

    def read(cur: Any) -> Any:
        cur.execute(f"SELECT {_COLUMNS} FROM logs WHERE id = {p}", (int(event_id),))
        return cur.fetchone()

    row = sql.run(read, write=False)
    return stored_event(row) if row else None


@dataclass(slots=True)
class ServiceSeries:
    """A service's errors per time bucket (oldest first) and its totals over the window."""

    service: str
    errors: list[int] = field(default_factory=list)
    events: int = 0

    @property
    def error_total(self) -> int:
        return sum(self.errors)

    @property
    def error_rate(self) -> float:
        """Share of the window's events at ERROR or above."""
        return self.error_total / self.events if self.events else 0.0


def error_series(
    store: LogStore,
    now: datetime,
    *,
    window: timedelta = timedelta(hours=1),
    buckets: int = 12,
    limit: int = 20,
) -> list[ServiceSeries]:
    """Per service with events in the window: errors per bucket. One scan of the window
    (portable CASE sums, no dialect-specific date functions). Most errors first."""
    sql = _sql(store)
    p = sql.placeholder
    end = to_micros(now)
    start = end - int(window.total_seconds() * 1_000_000)
    width = (end - start) // buckets
    bounds = [start + i * width for i in range(buckets)] + [end + 1]
    error = LEVEL_RANK[Level.ERROR]
    sums = []
    params: list[Any] = []
    for i in range(buckets):
        sums.append(f"SUM(CASE WHEN level >= {p} AND ts >= {p} AND ts < {p} THEN 1 ELSE 0 END)")
        params.extend([error, bounds[i], bounds[i + 1]])
    statement = (
        f"SELECT service, COUNT(*), {', '.join(sums)} FROM logs "
        f"WHERE ts >= {p} AND ts <= {p} GROUP BY service"
    )
    params.extend([start, end])

    def read(cur: Any) -> list[Any]:
        cur.execute(statement, params)
        return list(cur.fetchall())

    out = [
        ServiceSeries(service=row[0], events=int(row[1]), errors=[int(v or 0) for v in row[2:]])
        for row in sql.run(read, write=False)
    ]
    out.sort(key=lambda s: (-s.error_total, -s.events, s.service))
    return out[:limit]
