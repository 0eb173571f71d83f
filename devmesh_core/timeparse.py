"""Parsing of the time expressions people type: ``15m``, ``2h``, ``3d``, ``1w`` or ISO 8601."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from devmesh_core.errors import InvalidInput
from devmesh_core.models import to_utc

_RELATIVE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|wks?|w)\s*$",
    re.I,
)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str) -> timedelta:
    """``90s``, ``15m``, ``2h``, ``3d``, ``1w`` → a timedelta."""
    match = _RELATIVE.match(value)
    if not match:
        raise InvalidInput(f"not a duration: {value!r} (use e.g. 30s, 15m, 2h, 3d, 1w)")
    amount, unit = match.groups()
    return timedelta(seconds=float(amount) * _UNIT_SECONDS[unit.lower()[0]])


def parse_time(value: str, *, now: datetime | None = None) -> datetime:
    """A point in time: a duration ago (``15m``) or an ISO 8601 timestamp (naive = UTC)."""
    if _RELATIVE.match(value):
        return (now or datetime.now(UTC)) - parse_duration(value)
    try:
        return to_utc(datetime.fromisoformat(value.strip().replace("Z", "+00:00")))
    except ValueError as exc:
        raise InvalidInput(
            f"not a time: {value!r} (use a duration such as 15m or an ISO 8601 timestamp)"
        ) from exc
