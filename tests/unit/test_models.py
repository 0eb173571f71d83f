"""LogEvent normalisation: levels, timestamps, fingerprint, extra keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from pydantic import ValidationError

from devmesh_core.models import Level, LogEvent, from_micros, to_micros

BASE = {"timestamp": "2026-01-02T03:04:05.123456Z", "service": "web", "host": "n1", "message": "hi"}


@pytest.mark.parametrize(
    ("raw", "level"),
    [
        ("debug", Level.DEBUG),
        ("TRACE", Level.DEBUG),
        ("info", Level.INFO),
        ("notice", Level.INFO),
        ("WARN", Level.WARNING),
        ("warning", Level.WARNING),
        ("err", Level.ERROR),
        ("Error", Level.ERROR),
        ("FATAL", Level.CRITICAL),
        ("crit", Level.CRITICAL),
        ("emerg", Level.CRITICAL),
        ("panic", Level.CRITICAL),
        (0, Level.CRITICAL),
        (1, Level.CRITICAL),
        (2, Level.CRITICAL),
        (3, Level.ERROR),
        (4, Level.WARNING),
        (5, Level.INFO),
        (6, Level.INFO),
        (7, Level.DEBUG),
        ("3", Level.ERROR),
        (" 6 ", Level.INFO),
        (40, Level.ERROR),
        (50, Level.CRITICAL),
    ],
)
def test_level_aliases(raw: object, level: Level) -> None:
    assert LogEvent.model_validate({**BASE, "level": raw}).level is level


@pytest.mark.parametrize("raw", ["LOUD", "", 8, 99, -1, True, None, 3.5])
def test_bad_levels_rejected_with_reason(raw: object) -> None:
    with pytest.raises(ValidationError) as info:
        LogEvent.model_validate({**BASE, "level": raw})
    assert "level" in str(info.value)


def test_level_order_for_minimum_filters() -> None:
    ranks = [lv.rank for lv in Level]
    assert ranks == sorted(ranks)
    assert Level.from_rank(Level.ERROR.rank) is Level.ERROR


def test_timestamps_normalise_to_utc() -> None:
    e = LogEvent.model_validate({**BASE, "timestamp": "2026-01-02T05:04:05.123456+02:00"})
    assert e.timestamp == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)
    assert e.timestamp.tzinfo is UTC
    naive = LogEvent.model_validate({**BASE, "timestamp": "2026-01-02T03:04:05.123456"})
    assert naive.timestamp == e.timestamp
    epoch = LogEvent.model_validate({**BASE, "timestamp": 1767323045.123456})
    assert epoch.timestamp == datetime(2026, 1, 2, 3, 4, 5, 123456, tzinfo=UTC)


def test_micros_round_trip() -> None:
    for value in (
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(2026, 5, 6, 7, 8, 9, 999999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 1, tzinfo=UTC),
    ):
        assert from_micros(to_micros(value)) == value
    plus = datetime(2026, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert to_micros(plus) == to_micros(datetime(2026, 1, 1, tzinfo=UTC))


def test_fingerprint_stable_and_sensitive() -> None:
    a = LogEvent.model_validate(BASE)
    assert a.fingerprint == LogEvent.model_validate(dict(BASE)).fingerprint
    assert len(a.fingerprint) == 32
    # same instant written with another offset is the same event
    shifted = LogEvent.model_validate({**BASE, "timestamp": "2026-01-02T04:04:05.123456+01:00"})
    assert shifted.fingerprint == a.fingerprint
    for change in (
        {"host": "n2"},
        {"service": "db"},
        {"message": "hi!"},
        {"timestamp": "2026-01-02T03:04:05.123457Z"},
        {"source_id": "c1"},
    ):
        assert LogEvent.model_validate({**BASE, **change}).fingerprint != a.fingerprint, change
    # level, source and meta are not part of identity
    same = LogEvent.model_validate({**BASE, "level": "error", "source": "x", "meta": {"a": 1}})
    assert same.fingerprint == a.fingerprint


def test_required_fields_and_limits() -> None:
    with pytest.raises(ValidationError, match="service"):
        LogEvent.model_validate({**BASE, "service": "   "})
    with pytest.raises(ValidationError, match="host"):
        LogEvent.model_validate({k: v for k, v in BASE.items() if k != "host"})
    with pytest.raises(ValidationError, match="message"):
        LogEvent.model_validate({**BASE, "message": "x" * (1_048_576 + 1)})
    with pytest.raises(ValidationError, match="meta"):
        LogEvent.model_validate({**BASE, "meta": "not an object"})
    assert LogEvent.model_validate({**BASE, "service": "  web  "}).service == "web"


def test_unknown_keys_go_to_meta_and_stored_only_keys_drop() -> None:
    e = LogEvent.model_validate({**BASE, "pid": 42, "id": 7, "fingerprint": "ff", "meta": {"a": 1}})
    assert e.meta == {"pid": 42, "a": 1}
