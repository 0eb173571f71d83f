"""Cursor tokens, time expressions, settings, batch validation, token hashing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devmesh_core import services
from devmesh_core.config import Settings
from devmesh_core.errors import ConfigError, InvalidCursor, InvalidInput
from devmesh_core.store import open_store
from devmesh_core.store.base import Cursor
from devmesh_core.store.sql import like_pattern
from devmesh_core.timeparse import parse_duration, parse_time


def test_cursor_round_trip_and_rejects_garbage() -> None:
    c = Cursor("desc", 1_767_000_000_123_456, 42)
    assert Cursor.decode(c.encode(), "desc") == c
    for bad in ("", "abc", "W10", "eyJ4IjoxfQ"):
        with pytest.raises(InvalidCursor):
            Cursor.decode(bad, "desc")
    with pytest.raises(InvalidCursor, match="order=desc"):
        Cursor.decode(c.encode(), "asc")


def test_like_pattern_escapes_wildcards() -> None:
    assert like_pattern("50%_a!b") == "%50!%!_a!!b%"


def test_time_expressions() -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert parse_duration("15m") == timedelta(minutes=15)
    assert parse_duration("2 hours") == timedelta(hours=2)
    assert parse_time("3d", now=now) == datetime(2026, 1, 7, tzinfo=UTC)
    assert parse_time("2026-01-05T10:00:00Z") == datetime(2026, 1, 5, 10, tzinfo=UTC)
    assert parse_time("2026-01-05T10:00:00") == datetime(2026, 1, 5, 10, tzinfo=UTC)
    with pytest.raises(InvalidInput, match="not a time"):
        parse_time("last tuesday")
    with pytest.raises(InvalidInput, match="not a duration"):
        parse_duration("soon")


def test_settings_from_env_and_default_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("DEVMESH_DATA_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("DEVMESH_API_TOKENS", "a, b,")
    monkeypatch.setenv("DEVMESH_RETENTION_DAYS", "30")
    s = Settings()
    assert s.data_dir == tmp_path / "state"
    assert [t.get_secret_value() for t in s.api_tokens] == ["a", "b"]
    assert s.retention_days == 30
    assert s.effective_database_url == f"sqlite:///{tmp_path / 'state' / 'devmesh.db'}"
    assert "a" not in repr(s.api_tokens)  # secrets do not leak into logs


def test_settings_from_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DEVMESH_DATA_DIR", raising=False)
    (tmp_path / ".env").write_text(
        "DEVMESH_DATABASE_URL=mysql://root@db/x\nDEVMESH_API_PORT=9999\n"
    )
    s = Settings()
    assert s.effective_database_url == "mysql://root@db/x" and s.api_port == 9999


def test_unknown_store_scheme() -> None:
    with pytest.raises(ConfigError, match="unsupported"):
        open_store("postgres://x/y")
    with pytest.raises(ConfigError, match="in-memory"):
        open_store("sqlite:///:memory:")


def test_validate_events_keeps_going_after_bad_items() -> None:
    items = [
        {"timestamp": "2026-01-01T00:00:00Z", "service": "a", "host": "h", "message": "ok"},
        None,
        [1],
        {"timestamp": "2026-01-01T00:00:00Z", "service": "a", "host": "h"},
        {
            "timestamp": "2026-01-01T00:00:00Z",
            "service": "a",
            "host": "h",
            "message": "ok2",
            "source": "syslog",
        },
    ]
    events, rejected = services.validate_events(items, default_source="http")
    assert [e.message for e in events] == ["ok", "ok2"]
    assert [e.source for e in events] == ["http", "syslog"]
    assert [(r.index, r.error) for r in rejected] == [
        (1, "expected a JSON object, got null"),
        (2, "expected a JSON object, got an array"),
        (3, "message: Field required"),
    ]


def test_token_hash_is_not_the_token() -> None:
    digest = services.hash_token("dm_secret")
    assert len(digest) == 64 and "secret" not in digest
